"""Profiles (``smoke`` / ``cpu`` / ``gpu``) and notebook parameter resolution, defined once.

Each chapter registers its presets with :func:`register_presets`: one dict of every knob per profile (all
profiles share the same keys) and optional validators. A notebook's ``parameters`` cell sets ``profile`` and
every knob to ``None`` (= the profile's value); papermill ``-p`` overrides any of them. Then

    P = ibnb.profiles.resolve("01_architectures", globals())

returns the resolved parameters, and fails with a clear message on an unknown profile, an unknown parameter
(e.g. a misspelt ``-p`` name), a value of the wrong type, or an inconsistent value.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

PROFILES = ("smoke", "cpu", "gpu")
DEFAULT_PROFILE = "cpu"
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {}
_VALIDATORS: dict[str, Callable[[dict], None]] = {}
_SIMPLE = (int, float, str, bool, list, tuple, dict, type(None))
_IGNORED = {"In", "Out", "exit", "quit", "get_ipython"}


class ParameterError(ValueError):
    """A notebook parameter is unknown, mistyped or inconsistent."""


def register_presets(notebook: str, presets: dict[str, dict[str, Any]],
                     validate: Callable[[dict], None] | None = None) -> None:
    """Register a notebook's per-profile parameters (every profile must define the same keys)."""
    if set(presets) != set(PROFILES):
        raise ValueError(f"{notebook}: presets must define exactly the profiles {PROFILES}, got {sorted(presets)}")
    keys = [set(v) for v in presets.values()]
    if any(k != keys[0] for k in keys):
        raise ValueError(f"{notebook}: profiles define different parameters: "
                         f"{ {p: sorted(set(v) ^ keys[0]) for p, v in presets.items()} }")
    _PRESETS[notebook] = presets
    if validate is not None:
        _VALIDATORS[notebook] = validate


def presets(notebook: str) -> dict[str, dict[str, Any]]:
    if notebook not in _PRESETS:
        raise KeyError(f"No presets registered for {notebook!r}; known: {', '.join(sorted(_PRESETS))}")
    return copy.deepcopy(_PRESETS[notebook])


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


def resolve(notebook: str, namespace: dict[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """Resolve the parameters of ``notebook`` from a namespace (a notebook's ``globals()``) and overrides.

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
    base = presets(notebook)[profile]
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
    if notebook in _VALIDATORS:
        try:
            _VALIDATORS[notebook](params)
        except (ValueError, KeyError, AssertionError) as e:
            raise ParameterError(f"Inconsistent parameters for {notebook} (profile {profile}): {e}") from e
    return params


def require(condition: bool, message: str) -> None:
    """Validator helper: raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)
