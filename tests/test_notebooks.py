"""Notebook smoke runs and the full book build (marked ``slow``), plus fast checks of the sources.

* every ``notebooks/*.ipynb`` runs end to end with ``profile="smoke"`` into ``tmp_path``,
  with ``IBNB_RUNS`` / ``IBNB_RESULTS`` pointing into ``tmp_path`` so that nothing in the
  repo changes and no trained model is reused from a cache (target 60 s, fail above 120 s);
* the book builds warning-free (``-W -n --keep-going``) from a copy of the files git
  would commit (tracked + untracked-but-not-ignored), i.e. exactly what a fresh clone has.

Run only the fast part with ``pytest -m "not slow"``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from ibnb.core.data import data_cache_dir

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SMOKE_LIMIT_S = 120  # hard limit per notebook; the target is 60 s
# The decoded-tensor cache is keyed on the source files, so sharing it is safe; read it before
# conftest's autouse fixture points IBNB_CACHE at an empty tmp dir (trained runs stay isolated).
USER_DATA_CACHE = str(data_cache_dir())


def _toc_files() -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (root included)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("chapters", toc.get("parts", [])))
    return files


# ----------------------------------------------------------------------------- fast checks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_source_notebook_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts. Source notebooks are "
                       "committed clean; fix: `jupyter nbconvert --clear-output --inplace " f"notebooks/{path.name}`.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_source_notebook_has_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one code cell tagged 'parameters', found {len(tagged)}"
    assert 'profile = "cpu"' in tagged[0].source, f"{path.name}: the parameters cell must set profile = \"cpu\""


def test_toc_experiments_have_source_notebooks():
    stems = {p.stem for p in NOTEBOOKS}
    for entry in _toc_files():
        if entry.startswith("book/experiments/"):
            stem = Path(entry).stem
            assert stem in stems, f"_toc.yml lists {entry} but notebooks/{stem}.ipynb does not exist"


# ----------------------------------------------------------------------------- slow: smoke runs
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_smoke_run(path, tmp_path, monkeypatch):
    import papermill

    shared = REPO.parent / "shared" / "data"
    if "IBNB_DATA" not in os.environ and shared.is_dir():  # same default as the Makefile
        monkeypatch.setenv("IBNB_DATA", str(shared))
    monkeypatch.setenv("IBNB_CACHE", USER_DATA_CACHE)
    monkeypatch.setenv("IBNB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IBNB_RESULTS", str(tmp_path / "results"))
    out = tmp_path / path.name
    t0 = time.perf_counter()
    papermill.execute_notebook(str(path), str(out), parameters={"profile": "smoke"}, kernel_name="python3",
                               cwd=str(REPO), progress_bar=False)
    wall = time.perf_counter() - t0
    print(f"{path.stem}: smoke run took {wall:.1f} s (target 60 s, limit {SMOKE_LIMIT_S} s)")
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert wall < SMOKE_LIMIT_S, f"{path.stem}: smoke profile took {wall:.0f} s (> {SMOKE_LIMIT_S} s); shrink it"


# ----------------------------------------------------------------------------- slow: book build
@pytest.mark.slow
def test_book_builds_without_warnings(built_book):
    """The build itself runs once per session in conftest's ``built_book`` (tests/test_browser.py reuses it)."""
    print(f"jupyter-book build took {built_book.seconds:.1f} s")
    warnings = [ln for ln in built_book.log.splitlines() if "WARNING" in ln or "ERROR" in ln]
    assert built_book.returncode == 0, ("jupyter-book build failed:\n" + "\n".join(warnings[:40])
                                        + "\n--- tail of the log ---\n" + built_book.log[-3000:])
    assert (built_book.html / "index.html").exists()
