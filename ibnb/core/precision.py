"""The numeric fast path of a run: bf16 autocast and the channels-last memory format, and when to use them.

**The CPU rule** (``precision="auto"``, ``channels_last=None``), from ``python -m ibnb.bench`` (issue 14):

* bf16 autocast only for *convolutional* models (any ``nn.Conv2d``) and only on a CPU with native bf16 matrix
  instructions (AVX-512 BF16 or AMX, as oneDNN reports it). On an AVX-512-BF16 Zen 4 the issue measured
  bf16 + channels-last at 2-3x the fp32 throughput of the conv nets (cnn width 32: 220 -> 700 img/s; the
  airbench-style net 640 -> 2,100 img/s); on an AVX2-only CPU (no bf16 units) bf16 is emulated and 2-20x
  *slower* for every model (measured back to back on a 2-core AVX2 machine, batch 64, training steps:
  cnn width 32 fp32 220 / channels-last 300 / bf16 14 img/s; cnn width 8 1,180 -> 210; MLP 256x2
  1,870 -> 470; ViT 48x2 1,200 -> 180), so ``auto`` stays fp32 there. MLPs, ViTs and Mixers at the book's
  ``cpu`` sizes are small matrix products dominated by per-op overhead, where autocast's casts cost more than
  they save; they stay fp32 until a benchmark on a bf16 machine shows otherwise (``precision="bf16"`` forces it).
* channels-last for convolutional models (oneDNN's native layout; 1.0-1.4x in fp32 on both machines, required for the bf16
  speed-up), contiguous for the others (a no-op for them).
* ``precision="fp32"`` forces fp32 everywhere, ``"bf16"`` forces bf16 autocast. Master weights, the loss and
  BatchNorm statistics stay fp32 in every case (autocast casts only matmul/conv inputs).

On CUDA the semantics are today's: bf16 autocast and channels-last for every model (``precision="fp32"``
turns autocast off).

The decision is one :class:`FastPath` per run (:func:`fast_path`); ``fit`` and ``evaluate`` make it current with
:func:`using`, and :func:`autocast` (called by every train step) follows it.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
import torch.nn as nn

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class FastPath:
    """A run's numeric fast path: bf16 autocast on or off, channels-last memory format on or off."""

    bf16: bool
    channels_last: bool

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX-512 BF16 / AMX) that oneDNN uses."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def is_conv_net(model: nn.Module) -> bool:
    """Whether ``model`` has a 2-D convolution (the models for which the CPU fast path pays)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


_CHECKED: dict[tuple, bool] = {}


def _conv_inputs(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[nn.Conv2d, tuple[int, ...]]]:
    """Every ``Conv2d`` of ``model`` with the shape of its input for one image of ``input_shape`` (one forward
    pass in eval mode without gradients, so nothing of the model changes)."""
    seen: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((mod, tuple(i[0].shape[1:]))))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return seen


def _same_gradients(conv: nn.Conv2d, shape: tuple[int, ...]) -> bool:
    """Whether a conv of ``conv``'s configuration gets the same weight and input gradients (to 1e-3 relative)
    in channels-last as in the contiguous layout, on a random batch of 4 inputs of ``shape`` (CPU, fp32)."""
    g = torch.Generator().manual_seed(0)
    ref = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    x0 = torch.randn(4, *shape, generator=g)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        c = ref.to(memory_format=layout)
        c.zero_grad()
        x = x0.clone(memory_format=layout).requires_grad_()
        y = c(x)
        (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        grads.append((c.weight.grad.clone(), x.grad.clone()))
    return all(bool(((a - b).abs().max() <= 1e-3 * a.abs().max().clamp_min(1e-6)).item())
               for a, b in zip(*grads))


def channels_last_ok(model: nn.Module, input_shape: tuple[int, ...] | None) -> bool:
    """Whether every convolution of ``model`` (inputs of ``input_shape``, one image) computes the same gradients
    in channels-last as in the contiguous layout on this CPU; each shape is checked once per process."""
    if input_shape is None:
        return True
    try:
        convs = _conv_inputs(model, tuple(input_shape))
    except Exception:  # a model that cannot take this shape: leave the layout alone
        return False
    for conv, shape in convs:
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
               conv.groups, conv.bias is not None, conv.padding_mode, shape)
        if key not in _CHECKED:
            _CHECKED[key] = _same_gradients(conv, shape)
        if not _CHECKED[key]:
            return False
    return True


def fast_path(model: nn.Module, device, precision: str = "auto", channels_last: bool | None = None,
              input_shape: tuple[int, ...] | None = None) -> FastPath:
    """The fast path of ``model`` on ``device`` under the rule of the module docstring; ``input_shape`` (one
    image, ``C×H×W``) lets the CPU rule check the model's convolutions in channels-last."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
    if device.type == "cuda":  # today's CUDA semantics: bf16 autocast and channels-last for every model
        bf16, layout = precision != "fp32", True
    elif device.type == "cpu":
        conv = is_conv_net(model)
        bf16 = precision == "bf16" or (precision == "auto" and conv and cpu_has_bf16())
        layout = conv and (channels_last is not None or channels_last_ok(model, input_shape))
    else:
        bf16, layout = precision == "bf16", False
    return FastPath(bf16, layout if channels_last is None else bool(channels_last))


#: the fast path of the run ``fit``/``evaluate`` is executing (train steps read it through :func:`autocast`)
_ACTIVE: contextvars.ContextVar[FastPath | None] = contextvars.ContextVar("ibnb_fast_path", default=None)


@contextlib.contextmanager
def using(path: FastPath):
    """Make ``path`` the fast path that :func:`autocast` follows inside the block."""
    token = _ACTIVE.set(path)
    try:
        yield path
    finally:
        _ACTIVE.reset(token)


def autocast(device: torch.device, enabled: bool | None = None):
    """The mixed-precision (bf16) context of a forward pass on ``device``.

    ``enabled=None`` follows the run being trained or evaluated (its :class:`FastPath`, set by ``fit`` /
    ``evaluate``), and outside a run the old default: on for CUDA, off elsewhere. Custom train steps call
    ``autocast(x.device)`` and so follow the run's precision."""
    if enabled is None:
        active = _ACTIVE.get()
        enabled = active.bf16 if active is not None else torch.device(device).type == "cuda"
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)
