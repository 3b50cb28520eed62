"""Patch-based models with weak spatial priors: Vision Transformer and MLP-Mixer."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.models import register


class PatchEmbed(nn.Module):
    """Split into ``patch``×``patch`` patches and embed each linearly (a strided convolution)."""

    def __init__(self, in_channels: int, dim: int, patch: int, image_size: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not divisible by patch size {patch}")
        self.proj = nn.Conv2d(in_channels, dim, patch, patch)
        self.num_patches = (image_size // patch) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, dim)


class Attention(nn.Module):
    """Multi-head self-attention; ``keep_attention=True`` stores the attention weights for rollout."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.keep_attention:
            weights = torch.softmax(q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5), dim=-1)
            self.last_attention = weights.detach()
            y = weights @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al., 2021): patch embedding, learned positions, class token
    (or global average pooling with ``pool="mean"``), pre-norm encoder, linear head."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32, patch=4, dim=192, depth=6, heads=3,
                 mlp_ratio=2.0, pool="cls"):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        self.embed = PatchEmbed(in_channels, dim, patch, image_size)
        n_tokens = self.embed.num_patches + (pool == "cls")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos))
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


class MixerBlock(nn.Module):
    """Token mixing (an MLP across patches, per channel) then channel mixing (an MLP per patch)."""

    def __init__(self, num_patches: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(num_patches, token_hidden), nn.GELU(),
                                       nn.Linear(token_hidden, num_patches))
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    """MLP-Mixer (Tolstikhin et al., 2021)."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32, patch=4, dim=128, depth=4,
                 token_hidden=64, channel_hidden=256):
        super().__init__()
        self.embed = PatchEmbed(in_channels, dim, patch, image_size)
        self.blocks = nn.Sequential(*[MixerBlock(self.embed.num_patches, dim, token_hidden, channel_hidden)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))).mean(dim=1))


@register
def vit(num_classes=10, in_channels=3, image_size=32, patch=4, dim=192, depth=6, heads=3, mlp_ratio=2.0,
        pool="cls"):
    """ViT with patch 4 and learned position embeddings (small by default, for CIFAR-sized images)."""
    return ViT(num_classes, in_channels, image_size, patch, dim, depth, heads, mlp_ratio, pool)


@register
def mixer(num_classes=10, in_channels=3, image_size=32, patch=4, dim=128, depth=4, token_hidden=64,
          channel_hidden=256):
    """MLP-Mixer with patch 4."""
    return Mixer(num_classes, in_channels, image_size, patch, dim, depth, token_hidden, channel_hidden)
