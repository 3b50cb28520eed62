"""The numeric fast path of a run: bf16 autocast and the channels-last memory format, and when to use them.

**The CPU rule** (``precision="auto"``, ``channels_last=None``), from ``python -m ibnb.bench`` (issue 14):

* bf16 autocast only for *convolutional* models (any ``nn.Conv2d``) and only on a CPU with native bf16 matrix
  instructions (AVX-512 BF16 or AMX, as oneDNN reports it). On an AVX-512-BF16 Zen 4 the issue measured
  bf16 + channels-last at 2-3x the fp32 throughput of the conv nets (cnn width 32: 220 -> 700 img/s; the
  airbench-style net 640 -> 2,100 img/s); on an AVX2-only CPU (no bf16 units) bf16 is emulated and 2-20x
  *slower* for every model (measured back to back on a 2-core AVX2 machine, batch 64, training steps:
  cnn width 32 fp32 220 / channels-last 300 / bf16 14 img/s; cnn width 8 1,180 -> 210; MLP 256x2
  1,870 -> 470; ViT 48x2 1,200 -> 180), so ``auto`` stays fp32 there. MLPs (no convolution) stay fp32: at the
  book's ``cpu`` sizes they are small matrix products dominated by per-op overhead, where autocast's casts cost
  more than they save (``precision="bf16"`` forces it). The ViT and the Mixer *do* count as convolutional here
  (their patch embedding is an ``nn.Conv2d``), so they get bf16 + channels-last; measured on the Zen 4 (training
  steps, batch 128, 32x32 inputs): the Mixer 570 img/s fp32 -> 1,140 bf16 + channels-last, the ViT (dim 96,
  depth 4) 515 -> 456 (11 % slower). The rule is kept for the Mixer's sake; a chapter that trains many ViTs can
  pass ``precision="fp32"``.
* channels-last for convolutional models (oneDNN's native layout; 1.0-1.4x in fp32 on both machines, required for the bf16
  speed-up), contiguous for the others (a no-op for them) -- *unless* a convolution of the model has fewer than 8
  input channels (other than the one reading the image). PyTorch 2.15's CPU kernel computes a wrong weight
  gradient in channels-last for some such shapes (found for issue 14: a 1x1 stride-2 conv with 4 input channels
  on 8x8 or 32x32 inputs -- the skip connection of ``resnet18`` width 4 -- gets a weight gradient 60-70 % off,
  nondeterministic from run to run, and sometimes stalls for minutes), while every shape checked with >= 8 input
  channels was right; :func:`channels_last_ok` is this static rule.
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
    """Whether ``model`` has a 2-D convolution (the models for which the CPU fast path pays; the ViT and the Mixer
    count, through their patch embedding: see the module docstring)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


#: the fewest input channels a convolution (other than one reading the image) may have in channels-last on a CPU
MIN_CHANNELS_LAST_INPUTS = 8


def channels_last_ok(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> bool:
    """Whether channels-last is safe for ``model`` on a CPU: every ``Conv2d`` has at least
    :data:`MIN_CHANNELS_LAST_INPUTS` input channels, or reads the image itself (``input_shape[0]`` channels,
    default 1 or 3). A static rule, deliberately: the faulty kernel is also slow to the point of stalling for
    minutes, so it is not probed at run time."""
    image_channels = {input_shape[0]} if input_shape is not None else {1, 3}
    return all(m.in_channels >= MIN_CHANNELS_LAST_INPUTS or m.in_channels in image_channels
               for m in model.modules() if isinstance(m, nn.Conv2d))


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
