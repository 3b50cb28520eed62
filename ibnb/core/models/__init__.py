"""Model registry: ``create_model(name, **kw)`` and ``list_models()``.

Every builder takes ``num_classes``, ``in_channels`` and ``image_size`` plus its own width/depth knobs,
so the same name serves a tiny CPU run and a paper-scale GPU run.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model builder under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names or arguments raise a clear error."""
    if name not in _REGISTRY:
        raise KeyError(f"Unknown model {name!r}; available: {', '.join(list_models())}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise TypeError(f"create_model({name!r}): {e}") from e


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _import_all() -> None:
    """Import every module of this package so its ``@register`` builders exist (a new model file needs
    no edit here)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"{__name__}.{info.name}")


_import_all()

__all__ = ["create_model", "list_models", "register", "count_parameters"]
