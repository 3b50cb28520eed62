"""Ensemble and test-time-augmentation predictions that stay on the device.

A *prediction bank* holds the log-probabilities of every member on every test-time view:
``bank[k, s]`` is member ``k``'s ``(N, C)`` log-softmax output on view ``s`` of the whole set. Any
ensemble-with-TTA predictor is then a slice of the bank averaged in probability space,

    log p(y | x) = log  1/(|K|·|S|) Σ_{k∈K} Σ_{s∈S} p(y | x̂_{k,s}, θ_k),

where every member sees its own random views (:func:`combine`), as in the "TTA for ensembles" setting of
Ashukha et al. (ICLR 2020). Views are drawn with one ``torch.Generator`` per ``(seed, set, member, view)``,
so a bank is reproducible and independent of the order in which banks are computed.
"""
from __future__ import annotations

import zlib
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ibnb.core.data import ImageData
from ibnb.core.metrics import log_mean_prob
from ibnb.core.precision import autocast, fast_path, using

View = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # float [0,1] batch, generator -> batch


def view_generator(device: torch.device, *key) -> torch.Generator:
    """A generator on ``device`` seeded from ``key`` (e.g. ``(seed, "test", member, view)``)."""
    g = torch.Generator(device=device)
    g.manual_seed(zlib.crc32("/".join(map(str, key)).encode()))
    return g


def _head(model: nn.Module) -> nn.Module:
    """The last ``nn.Linear`` of ``model``: its input is the penultimate representation."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head to read features from")
    return linears[-1]


@torch.no_grad()
def predict(model: nn.Module, data: ImageData, view: View | None = None, *, generator: torch.Generator | None = None,
            batch_size: int = 500, features: bool = False) -> torch.Tensor:
    """Log-probabilities ``(N, C)`` of ``model`` on ``data`` seen through ``view`` (``None``: the image
    itself), or with ``features=True`` the penultimate representation ``(N, D)`` (the head's input).

    Images go to the model's device once, are converted to ``[0, 1]``, viewed, normalised with the
    dataset's mean/std, and fed through the model's fast path (:func:`ibnb.core.precision.fast_path`: on a CPU
    with AVX-512 BF16, bf16 autocast and channels-last for conv nets, the arithmetic they were trained in); the
    output (log-probabilities in fp32) stays on the device.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    path = fast_path(model, device, input_shape=tuple(data.x.shape[1:]))
    fmt = torch.channels_last if path.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    c = data.x.shape[1]
    mean = torch.tensor(data.mean, device=device).view(1, c, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, c, 1, 1)
    x_all = data.x.to(device)
    captured: list[torch.Tensor] = []
    hook = _head(model).register_forward_pre_hook(lambda m, inp: captured.append(inp[0])) if features else None
    out = []
    try:
        for i in range(0, len(x_all), batch_size):
            x = x_all[i:i + batch_size].float().div_(255)
            if view is not None:
                x = view(x, generator)
            x = ((x - mean) / std).contiguous(memory_format=fmt)
            with using(path), autocast(device):
                logits = model(x)
            out.append(captured.pop().float() if features else logits.float().log_softmax(-1))
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return torch.cat(out)


def prediction_bank(models: Sequence[nn.Module], data: ImageData, views: Sequence[View | None], *, seed: int = 0,
                    set_name: str = "test", batch_size: int = 500, features: bool = False) -> torch.Tensor:
    """``(K, S, N, C)`` log-probabilities (or ``(K, S, N, D)`` features) of every member on every view.

    View ``s`` of member ``k`` draws its randomness from ``view_generator(device, seed, set_name, k, s)``:
    members see independent random views, and the same call always returns the same bank.
    """
    rows = []
    for k, model in enumerate(models):
        device = next(model.parameters()).device
        rows.append(torch.stack([predict(model, data, v, generator=view_generator(device, seed, set_name, k, s),
                                         batch_size=batch_size, features=features)
                                 for s, v in enumerate(views)]))
    return torch.stack(rows)


def combine(bank: torch.Tensor, members: Sequence[int] | None = None, views: Sequence[int] | int | None = None):
    """The ensemble-with-TTA log-probabilities ``(..., N, C)`` of a bank slice ``(..., K, S, N, C)``: the log
    of the probabilities averaged over ``members`` (default all) and ``views`` (an int ``m`` = the first ``m``
    views). Leading dimensions (e.g. one per corrupted set) are kept."""
    if members is not None:
        bank = bank.index_select(-4, torch.as_tensor(list(members), device=bank.device))
    if views is not None:
        bank = bank[..., :views, :, :] if isinstance(views, int) else bank.index_select(
            -3, torch.as_tensor(list(views), device=bank.device))
    return log_mean_prob(bank, dim=(-4, -3))
