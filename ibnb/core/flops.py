"""Compute per image, convolutions written as matrices, and a throughput benchmark.

* :func:`flops_per_image` counts the multiply-accumulates (MACs) of every ``nn.Linear``, ``nn.Conv2d``,
  :class:`~ibnb.core.models.locally_connected.LocallyConnected2d` and the two matrix products inside self-attention
  with forward hooks, and returns ``2 × MACs`` per image. Element-wise work (biases, activations,
  normalisation, softmax, pooling) is not counted; for these models it is a small fraction.
* :func:`conv_as_matrix` writes a ``Conv2d`` on a fixed input size as the dense matrix of the same linear
  map, built from the kernel by index arithmetic (not by probing the layer), together with the index of
  the kernel entry each matrix entry copies: the sparsity and weight-sharing pattern of the convolution.
* :func:`throughput` measures training and inference images/s of a model on one device.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn

from ibnb.core.bench import bare_loop
from ibnb.core.models.locally_connected import LocallyConnected2d
from ibnb.core.models.transformers import Attention
from ibnb.core.train import autocast, sync, device_name


def _macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of ``module`` (whole batch)."""
    if isinstance(module, nn.Linear):
        return inputs[0].numel() // module.in_features * module.in_features * module.out_features
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, LocallyConnected2d):
        return output.numel() * module.in_channels * module.kernel_size ** 2
    if isinstance(module, Attention):  # q·kᵀ and weights·v: 2 · tokens² · dim per image
        b, n, d = inputs[0].shape
        return 2 * b * n * n * d
    return 0


COUNTED = (nn.Linear, nn.Conv2d, LocallyConnected2d, Attention)


@torch.no_grad()
def flops_per_image(model: nn.Module, input_shape: tuple[int, int, int], *, by_layer: bool = False):
    """Forward FLOPs (``2 × MACs``) of ``model`` for one ``C×H×W`` image; with ``by_layer`` also a dict
    ``{module name: FLOPs}`` for every counted module that ran."""
    counts: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, i, o: counts.__setitem__(
        names[mod], counts.get(names[mod], 0) + _macs(mod, i, o))) for m in model.modules() if isinstance(m, COUNTED)]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(2, *input_shape, device=device))  # batch of 2: counts divide exactly per image
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    per_layer = {k: 2 * v // 2 for k, v in counts.items()}  # 2 FLOPs per MAC, divided by the batch of 2
    total = sum(per_layer.values())
    return (total, per_layer) if by_layer else total


def training_flops(flops_fwd: float, images_seen: float) -> float:
    """Training compute ≈ 3 × forward FLOPs × images processed (backward ≈ 2 × forward)."""
    return 3.0 * flops_fwd * images_seen


def conv_as_matrix(conv: nn.Conv2d, input_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense matrix ``M`` (``C_out·H'·W' × C_in·H·W``) with ``M @ x.flatten() + b = conv(x).flatten()``
    for one image, and an integer matrix of the same shape holding the flat index of the kernel entry
    ``(o, c, u, v)`` each entry copies (``-1`` where ``M`` is structurally zero). Dilation 1, groups 1,
    zero padding."""
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError("conv_as_matrix supports groups=1, dilation=1 and zero padding only")
    c_out, c_in, kh, kw = conv.weight.shape
    h, w = input_hw
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    o, i, j, c, u, v = torch.meshgrid(*(torch.arange(n) for n in (c_out, ho, wo, c_in, kh, kw)), indexing="ij")
    y, x = i * sh - ph + u, j * sw - pw + v  # input pixel seen by kernel tap (u, v) at output (i, j)
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    rows = ((o * ho + i) * wo + j)[inside]
    cols = ((c * h + y) * w + x)[inside]
    tap = (((o * c_in + c) * kh + u) * kw + v)[inside]
    shared = torch.full((c_out * ho * wo, c_in * h * w), -1, dtype=torch.long)
    shared[rows, cols] = tap
    matrix = torch.zeros(shared.shape, dtype=conv.weight.dtype)
    matrix[rows, cols] = conv.weight.detach().flatten().cpu()[tap]
    return matrix, shared


def _images_per_s(step, n_images: int, steps: int, device: torch.device, warmup: int = 3) -> float:
    """Images/s of calling ``step()`` ``steps`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * n_images / (time.perf_counter() - start)


@torch.no_grad()
def _inference_rate(model: nn.Module, x: torch.Tensor, steps: int, device: torch.device) -> float:
    model.eval()

    def forward():
        with autocast(device):
            model(x)

    return _images_per_s(forward, len(x), steps, device)


def throughput(model: nn.Module, *, input_shape=(3, 32, 32), batch_size: int = 256, steps: int = 10,
               device=None, num_classes: int = 10) -> dict:
    """Training images/s (forward, backward, AdamW step on one resident batch) and inference images/s
    (eval mode, no gradients) of ``model`` on ``device``, plus forward FLOPs per image."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=g).to(device)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    flops = flops_per_image(model, input_shape)
    train_ips = bare_loop(model, x, y, steps, device)
    infer_ips = _inference_rate(model, x, steps, device)
    return {"flops_per_image": flops, "train_images_per_s": train_ips, "infer_images_per_s": infer_ips,
            "batch_size": batch_size, "device": device_name(device)}


def nonzero_fraction(matrix: torch.Tensor) -> float:
    return float((matrix != 0).float().mean())


def distinct_weights(shared: torch.Tensor) -> int:
    """Number of free parameters behind a structured matrix (distinct kernel taps that appear)."""
    return int(np.unique(shared[shared >= 0].numpy()).size)
