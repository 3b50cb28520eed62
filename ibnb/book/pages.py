"""Presets of the synthesis pages, which train nothing: the title page with its abstract (``00_index``), the
scorecard (``09_scorecard``) and the reproduce page (``99_reproduce``). Both read the committed ``book/results`` tables and executed pages.

``results_profile`` picks which profile's tables to read; the smoke profile reads the committed ``cpu``
tables from the repository (``results_root``), so CI exercises the real code on real tables without
retraining anything. An empty ``results_root`` means ``$IBNB_RESULTS`` or ``<repo>/book/results``.
"""
from __future__ import annotations

from pathlib import Path

from ibnb.book.profiles import require
from ibnb.book.results import results_dir
from ibnb.core.utils import repo_root

INDEX, SCORECARD, REPRODUCE = "00_index", "09_scorecard", "99_reproduce"
_PRESETS = {"smoke": {"results_profile": "cpu", "results_root": "book/results"},
            "cpu": {"results_profile": "cpu", "results_root": ""},
            "gpu": {"results_profile": "gpu", "results_root": ""}}


def validate(p: dict) -> None:
    require(p["results_profile"] in ("smoke", "cpu", "gpu"), "results_profile must be smoke, cpu or gpu")


def results_root(p: dict) -> Path:
    """The folder whose ``<stem>/<profile>.csv`` tables the page reads."""
    return repo_root() / p["results_root"] if p["results_root"] else results_dir()


#: one presets table per page this module serves (``profiles.resolve(pages, globals(), notebook=INDEX)``)
PRESETS = {INDEX: _PRESETS, SCORECARD: _PRESETS, REPRODUCE: _PRESETS}
