"""Sharpness-Aware Minimization (Foret et al., 2021) and its adaptive variant ASAM (Kwon et al., 2021).

SAM minimises ``max_{‖ε‖≤ρ} L(w+ε)``. Each update takes two gradients of the same mini-batch:

1. ``g = ∇L(w)``; ascend to ``w + ε̂`` with ``ε̂ = ρ·g/‖g‖`` (the global L2 norm over all parameters).
   ASAM (``adaptive=True``) measures the neighbourhood relative to the weights, ``T_w = |w| + η``:
   ``ε̂ = ρ·T_w² g / ‖T_w g‖`` (elementwise products).
2. ``g_SAM = ∇L(w + ε̂)``; restore ``w`` and let the base optimiser (AdamW, SGD, ...) step with ``g_SAM``.

:class:`SAM` wraps any already-built ``torch.optim.Optimizer`` (or builds one from a class) and offers both
APIs: ``step(closure)`` and the two-step ``first_step`` / ``second_step``. It shares the base optimiser's
parameter groups, so learning-rate schedulers attached to the base optimiser act on SAM too.

**BatchNorm.** The perturbed (second) forward pass runs with :func:`frozen_bn_stats`: every BatchNorm layer's
``momentum`` is set to 0 (and ``num_batches_tracked`` restored afterwards), so its running mean/variance are
updated once per step, by the unperturbed pass only, as in plain training. Both passes normalise with the
batch's own statistics (train mode), as in the SAM paper.

**AMP.** :class:`SAMStep` runs both forward passes under bf16 autocast on CUDA (disabled on CPU) and computes
the loss in fp32. bf16 has fp32's exponent range, so no loss scaling is needed; the parameters and their
gradients stay fp32, so ``ε̂`` is computed and applied in fp32. fp16 with a ``GradScaler`` is not supported
(the first gradient would have to be unscaled before its norm is taken).

No step synchronises with the host: ``‖g‖`` stays a device tensor (``ρ/(‖g‖+1e-12)`` guards a zero gradient).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ibnb.core.batch_ops import mixed_forward_backward, soft_cross_entropy
from ibnb.core.train import StepOutput, autocast


class SAM(torch.optim.Optimizer):
    """SAM / ASAM around a base optimiser.

    ``SAM(base_optimizer_instance, rho=0.05)`` wraps an existing optimiser (sharing its parameter groups and
    state), or ``SAM(params, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)`` builds the base optimiser.
    """

    def __init__(self, params, base_optimizer=None, *, rho: float = 0.05, adaptive: bool = False,
                 eta: float = 0.01, **base_kw):
        if not rho >= 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if isinstance(params, torch.optim.Optimizer):
            if base_optimizer is not None or base_kw:
                raise ValueError("pass either an optimizer instance, or params + an optimizer class and its kwargs")
            base = params
        else:
            if base_optimizer is None:
                raise ValueError("SAM(params, base_optimizer_class, ...) needs the base optimizer class")
            base = base_optimizer(params, **base_kw)
        self.base_optimizer = base
        super().__init__(base.param_groups, dict(rho=rho, adaptive=adaptive, eta=eta))
        self.param_groups = base.param_groups  # the very same dicts: schedulers on ``base`` act on SAM

    @torch.no_grad()
    def _scaled_grad_norm(self) -> torch.Tensor:
        norms = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = (p.abs() + group["eta"]) * p.grad if group["adaptive"] else p.grad
                norms.append(g.float().norm(2))
        if not norms:
            raise RuntimeError("SAM.first_step: no parameter has a gradient; call backward() first")
        return torch.stack(norms).norm(2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> torch.Tensor:
        """Ascent: save ``w`` and move to ``w + ε̂``. Returns ``‖ε̂‖`` (a device tensor; ρ unless g = 0)."""
        grad_norm = self._scaled_grad_norm()
        e_sq = []
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                if group["adaptive"]:
                    e_w = (p.abs() + group["eta"]).pow(2) * p.grad * scale.to(p.dtype)
                else:
                    e_w = p.grad * scale.to(p.dtype)
                p.add_(e_w)
                e_sq.append(e_w.float().pow(2).sum())
        if zero_grad:
            self.zero_grad(set_to_none=True)
        return torch.stack(e_sq).sum().sqrt()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and step the base optimiser with the gradient taken at ``w + ε̂``."""
        for group in self.param_groups:
            for p in group["params"]:
                if "old_p" in self.state[p]:
                    p.copy_(self.state[p].pop("old_p"))
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Closure API: ``closure`` must zero the gradients, compute the loss and call ``backward()``; it is
        called once here (at ``w + ε̂``). The first gradient must already be in ``.grad`` (call the closure
        once before ``step``), as in the reference implementation."""
        if closure is None:
            raise ValueError("SAM.step needs a closure that re-evaluates the loss and calls backward()")
        closure = torch.enable_grad()(closure)
        self.first_step(zero_grad=True)
        loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


_BN = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module):
    """BatchNorm layers keep normalising with batch statistics but do not update their running statistics
    (``momentum`` 0; ``num_batches_tracked`` restored on exit)."""
    saved = []
    for m in model.modules():
        if isinstance(m, _BN) and m.track_running_stats:
            tracked = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
            saved.append((m, m.momentum, tracked))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@dataclass(frozen=True)
class SAMStep:
    """One SAM (or ASAM, ``adaptive=True``) update with the optimiser that ``fit`` built as the base optimiser.

    ``mix`` (optional) is a batch op of :mod:`ibnb.core.batch_ops`, applied once per step (both gradients
    see the same mixed batch). Logged terms: ``perturbed_loss`` = L(w+ε̂) on the batch and ``sharpness`` =
    L(w+ε̂) − L(w) (the one-step estimate SAM itself uses). The fields key the run cache."""

    rho: float = 0.05
    adaptive: bool = False
    eta: float = 0.01
    mix: object = None
    label_smoothing: float = 0.0
    _wrappers: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.rho > 0:
            raise ValueError(f"SAMStep needs rho > 0, got {self.rho} (rho = 0 is the base optimiser: MixStep)")

    def _sam(self, opt: torch.optim.Optimizer) -> SAM:
        sam = self._wrappers.get(id(opt))
        if sam is None or sam.base_optimizer is not opt:
            sam = self._wrappers[id(opt)] = SAM(opt, rho=self.rho, adaptive=self.adaptive, eta=self.eta)
        return sam

    def __call__(self, model, opt, x, y, epoch) -> StepOutput:
        sam = self._sam(opt)
        x, target, logits, loss = mixed_forward_backward(model, sam, x, y, self.mix, self.label_smoothing)
        sam.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            with autocast(x.device):
                perturbed = soft_cross_entropy(model(x), target, self.label_smoothing)
            perturbed.backward()
        sam.second_step(zero_grad=True)
        loss, perturbed = loss.detach(), perturbed.detach()
        return StepOutput(loss, logits.detach(), {"perturbed_loss": perturbed, "sharpness": perturbed - loss})
