"""Profiles (``smoke`` / ``cpu`` / ``gpu``) and notebook parameter resolution, defined once.

Each chapter registers its presets with :func:`register_presets`: one dict of every knob per profile (all
profiles share the same keys) and optional validators. A notebook's ``parameters`` cell sets ``profile`` and
every knob to ``None`` (= the profile's value); papermill ``-p`` overrides any of them. Then

    P = ibnb.book.profiles.resolve("01_architectures", globals())

returns the resolved parameters, and fails with a clear message on an unknown profile, an unknown parameter
(e.g. a misspelt ``-p`` name), a value of the wrong type, or an inconsistent value.
"""
from __future__ import annotations

import copy
import importlib
from types import ModuleType
from typing import Any, Callable

PROFILES = ("smoke", "cpu", "gpu")
DEFAULT_PROFILE = "cpu"
#: notebook stem -> the module holding its presets (the runner and the reproduce page look them up here)
PAGES = {
    "00_index": "ibnb.book.pages", "01_architectures": "ibnb.chapters.architectures.presets",
    "02_mlp_scaling": "ibnb.chapters.mlp_scaling.presets", "03_spatial_attention": "ibnb.chapters.spatial_attention.presets",
    "04_test_time_augmentation": "ibnb.chapters.tta.presets", "05_sparse_vd": "ibnb.chapters.sparse_vd.presets",
    "06_deep_weight_prior": "ibnb.chapters.deep_weight_prior.presets",
    "07_self_supervised": "ibnb.chapters.self_supervised.presets", "08_vit_sam": "ibnb.chapters.vit_sam.presets",
    "09_scorecard": "ibnb.book.pages", "10_cpu_training": "ibnb.chapters.cpu_training.presets",
    "99_reproduce": "ibnb.book.pages",
}
_SIMPLE = (int, float, str, bool, list, tuple, dict, type(None))
_IGNORED = {"In", "Out", "exit", "quit", "get_ipython"}


class ParameterError(ValueError):
    """A notebook parameter is unknown, mistyped or inconsistent."""


def _check_presets(notebook: str, presets: dict[str, dict[str, Any]]) -> None:
    """Every profile must be defined, with the same keys."""
    if set(presets) != set(PROFILES):
        raise ValueError(f"{notebook}: presets must define exactly the profiles {PROFILES}, got {sorted(presets)}")
    keys = [set(v) for v in presets.values()]
    if any(k != keys[0] for k in keys):
        raise ValueError(f"{notebook}: profiles define different parameters: "
                         f"{ {p: sorted(set(v) ^ keys[0]) for p, v in presets.items()} }")


def _module(page: str | ModuleType) -> ModuleType:
    if isinstance(page, ModuleType):
        return page
    if page not in PAGES:
        raise KeyError(f"No presets for {page!r}; known pages: {', '.join(sorted(PAGES))}")
    return importlib.import_module(PAGES[page])


def _presets_of(module: ModuleType, notebook: str) -> dict[str, dict[str, Any]]:
    table = getattr(module, "PRESETS", None)
    if isinstance(table, dict) and notebook in table:  # a module serving several pages
        table = table[notebook]
    _check_presets(notebook, table)
    return copy.deepcopy(table)


def presets(page: str | ModuleType, notebook: str | None = None) -> dict[str, dict[str, Any]]:
    """Every profile's parameters of a page: by notebook stem, or from its presets module."""
    module = _module(page)
    notebook = notebook or (page if isinstance(page, str) else module.NOTEBOOK)
    return _presets_of(module, notebook)


def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def resolve(page: str | ModuleType, namespace: dict[str, Any] | None = None, *, notebook: str | None = None,
            **overrides) -> dict[str, Any]:
    """Resolve a page's parameters (``page``: its presets module, or its notebook stem) from a namespace (a
    notebook's ``globals()``) and overrides. A ``device`` parameter is resolved here, once (``"auto"`` →
    the device this machine has), so the rest of the run sees a concrete device name.

    ``None`` values take the profile's preset. Every public, simple-valued name in ``namespace`` must be a
    known parameter, so a misspelt papermill ``-p`` fails loudly instead of being silently ignored.
    """
    given = {k: v for k, v in (namespace or {}).items()
             if not k.startswith("_") and k not in _IGNORED and isinstance(v, _SIMPLE)}
    given.update(overrides)
    profile = given.pop("profile", None) or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise ParameterError(f"Unknown profile {profile!r}; use one of {', '.join(PROFILES)} "
                             f"(e.g. papermill -p profile cpu).")
    module = _module(page)
    notebook = notebook or (page if isinstance(page, str) else module.NOTEBOOK)
    base = _presets_of(module, notebook)[profile]
    unknown = sorted(set(given) - set(base))
    if unknown:
        raise ParameterError(f"Unknown parameter(s) {unknown} for {notebook}; valid parameters: "
                             f"profile, {', '.join(sorted(base))}.")
    params = dict(base)
    for key, value in given.items():
        if value is None:
            continue
        if not _type_ok(base[key], value):
            raise ParameterError(f"Parameter {key}={value!r} has type {type(value).__name__}; "
                                 f"expected {type(base[key]).__name__} like the preset value {base[key]!r}.")
        if isinstance(base[key], dict) and isinstance(value, dict):
            merged = copy.deepcopy(base[key])
            for k, v in value.items():  # one level of merge: {"vit": {"depth": 8}} keeps the other vit knobs
                merged[k] = {**merged.get(k, {}), **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
            value = merged
        params[key] = value
    params["profile"] = profile
    validate: Callable[[dict], None] | None = getattr(module, "validate", None)
    if "device" in params:
        from ibnb.core.train import resolve_device

        try:
            params["device"] = str(resolve_device(params["device"]))
        except (ValueError, RuntimeError) as e:
            raise ParameterError(f"{notebook}: {e}") from e
    if validate is not None:
        try:
            validate(params)
        except (ValueError, KeyError, AssertionError) as e:
            raise ParameterError(f"Inconsistent parameters for {notebook} (profile {profile}): {e}") from e
    return params


def require(condition: bool, message: str) -> None:
    """Validator helper: raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)
