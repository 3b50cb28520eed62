"""Measuring the flatness of a trained network's minimum (instead of assuming it).

All measurements use a fixed batch ``(x, y)`` (e.g. a few hundred training images), the model in eval mode
(BatchNorm uses its running statistics, so the loss is a deterministic function of the weights) and fp32.
The weights are always restored.

- :func:`pga_sharpness`: ``max_{‖ε‖≤ρ} L(w+ε) − L(w)`` estimated by projected (normalised) gradient ascent
  from ``ε₀ = ρ·g/‖g‖`` (SAM's own one-step estimate) — a lower bound on the true maximum.
- :func:`top_hessian_eigenvalue`: the largest-magnitude eigenvalue of ∇²L(w) by power iteration on
  Hessian-vector products (double back-propagation; no Hessian is formed). :func:`power_iteration` is the
  generic routine on any symmetric linear operator.
- :func:`loss_slice`: ``L(w + α·d)`` along a random Gaussian direction ``d`` normalised filter by filter to the
  weights' filter norms (Li et al., 2018); biases and normalisation parameters are not perturbed.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Vector = list  # a list of tensors shaped like the parameters


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _norm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    return _dot(a, a).sqrt()


@contextlib.contextmanager
def _measuring(model: nn.Module):
    """Eval mode and explicit-softmax attention (double-backward safe); weights restored on exit."""
    was_training = model.training
    saved = [p.detach().clone() for p in _params(model)]
    attn = [(m, m.keep_attention) for m in model.modules() if hasattr(m, "keep_attention")]
    model.eval()
    for m, _ in attn:
        m.keep_attention = True
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(_params(model), saved):
                p.copy_(s)
        for m, keep in attn:
            m.keep_attention = keep
        model.train(was_training)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).float(), y)


def pga_sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rho: float = 0.05, steps: int = 5,
                  step_size: float | None = None) -> dict:
    """Projected gradient ascent on ``L(w+ε)`` over the ball ``‖ε‖ ≤ rho`` (global L2 norm).

    Step 0 is SAM's ``ε₀ = ρ·g/‖g‖``; each further step moves ``step_size`` (default ``rho/2``) along the
    normalised gradient at ``w+ε`` and projects back onto the ball. Returns ``loss`` (L(w)), ``sharpness``
    (the largest L(w+ε) − L(w) seen), ``one_step`` (the value at ε₀) and ``trace`` (the value at every step).
    """
    step_size = rho / 2 if step_size is None else step_size
    params = _params(model)
    with _measuring(model):
        w0 = [p.detach().clone() for p in params]
        loss0 = _loss(model, x, y)
        g = torch.autograd.grad(loss0, params)
        eps = [gi * (rho / (_norm(g) + 1e-12)) for gi in g]
        trace = []
        for i in range(steps + 1):
            with torch.no_grad():
                for p, w, e in zip(params, w0, eps):
                    p.copy_(w + e)
            loss = _loss(model, x, y)
            trace.append(float(loss.detach() - loss0.detach()))
            if i == steps:
                break
            g = torch.autograd.grad(loss, params)
            gn = _norm(g) + 1e-12
            eps = [e + step_size * gi / gn for e, gi in zip(eps, g)]
            en = _norm(eps)
            eps = [e * torch.clamp(rho / (en + 1e-12), max=1.0) for e in eps]
    return dict(loss=float(loss0.detach()), sharpness=max(trace), one_step=trace[0], trace=trace)


def power_iteration(matvec: Callable[[Vector], Vector], like: Sequence[torch.Tensor], iters: int = 20,
                    tol: float = 1e-4, seed: int = 0) -> tuple[float, list[float]]:
    """Largest-magnitude eigenvalue of a symmetric operator by power iteration from a seeded random start.

    ``matvec`` maps a list of tensors shaped like ``like`` to another such list. Returns the Rayleigh quotient
    ``vᵀAv`` at the last iterate and its value at every iteration (stops early when it changes by less than
    ``tol`` relatively)."""
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(t.shape, generator=g).to(t.device, t.dtype) for t in like]
    n = _norm(v)
    v = [vi / n for vi in v]
    history: list[float] = []
    for _ in range(iters):
        av = matvec(v)
        lam = float(_dot(v, av))
        history.append(lam)
        n = _norm(av)
        if float(n) == 0.0:
            break
        v = [a / n for a in av]
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            break
    return history[-1], history


def hvp_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[Vector], Vector]:
    """``v ↦ ∇²L(w)·v`` for the cross-entropy of ``model`` on ``(x, y)`` (use inside :func:`_measuring`)."""
    params = _params(model)
    loss = _loss(model, x, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)

    def matvec(v: Vector) -> Vector:
        return [h.detach() for h in torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)]

    return matvec


def top_hessian_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = 20,
                           tol: float = 1e-3, seed: int = 0) -> dict:
    """Top (largest-magnitude) Hessian eigenvalue of the loss at the current weights: ``eigenvalue`` and
    ``history`` (Rayleigh quotient per iteration)."""
    with _measuring(model):
        lam, history = power_iteration(hvp_operator(model, x, y), _params(model), iters=iters, tol=tol, seed=seed)
    return dict(eigenvalue=lam, history=history, iters=len(history))


def filter_normalized_direction(model: nn.Module, seed: int = 0) -> Vector:
    """A Gaussian direction with every filter (slice along dim 0 of a weight with ≥ 2 dims) rescaled to the
    norm of the matching filter of the weights; zero for biases and normalisation parameters."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in _params(model):
        d = torch.randn(p.shape, generator=g).to(p.device, p.dtype)
        if p.ndim <= 1:
            out.append(torch.zeros_like(p))
            continue
        dims = tuple(range(1, p.ndim))
        vn = torch.linalg.vector_norm
        d = d * (vn(p.detach(), dim=dims, keepdim=True) / (vn(d, dim=dims, keepdim=True) + 1e-10))
        out.append(d)
    return out


@torch.no_grad()
def loss_slice(model: nn.Module, x: torch.Tensor, y: torch.Tensor, alphas, seed: int = 0) -> np.ndarray:
    """``L(w + α·d)`` for every α in ``alphas`` along :func:`filter_normalized_direction` (seeded)."""
    params = _params(model)
    d = filter_normalized_direction(model, seed)
    out = []
    with _measuring(model):
        w0 = [p.detach().clone() for p in params]
        for a in alphas:
            for p, w, di in zip(params, w0, d):
                p.copy_(w + float(a) * di)
            out.append(float(_loss(model, x, y)))
    return np.asarray(out)
