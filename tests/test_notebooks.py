"""Notebook smoke runs and the full book build (marked ``slow``), plus fast checks of the sources.

* every ``notebooks/*.ipynb`` runs end to end with ``profile="smoke"`` into ``tmp_path``,
  with ``IBNB_RUNS`` / ``IBNB_RESULTS`` pointing into ``tmp_path`` so that nothing in the
  repo changes and no trained model is reused from a cache (target 60 s, fail above 120 s);
* the notebook shape (fast): no ``def`` / ``class`` and no code cell over 15 lines (the parameters cell is
  exempt), the parameters cell hidden (``remove-cell``), and each study chapter opening with ``# Title``, with a
  ``## Claims audit`` section and a hidden (``remove-input``) cell calling ``page.publish``;
* the book builds warning-free (``-W -n --keep-going``) from a copy of the files git
  would commit (tracked + untracked-but-not-ignored), i.e. exactly what a fresh clone has.

Run only the fast part with ``pytest -m "not slow"``.
"""
from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from ibnb.book.browser_check import study_stem
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


# ----------------------------------------------------------------------------- fast: notebook shape
MAX_CELL_LINES = 15


def _code_cells(path):
    nb = nbformat.read(path, as_version=4)
    return nb, [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _python(source: str) -> str:
    """A cell's source with IPython magics and shell escapes blanked, so that ``ast`` can read it."""
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_cells_hold_no_logic(path):
    """No ``def`` or ``class`` in a notebook, and no code cell over 15 lines (the parameters cell is exempt):
    the logic lives in ``ibnb``, the notebook is narrative."""
    _, cells = _code_cells(path)
    defs, long = [], []
    for i, c in cells:
        tree = ast.parse(_python(c.source), filename=f"{path.name}[{i}]")
        defs += [f"cell {i}: {type(n).__name__} {n.name}" for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        n = len(c.source.rstrip().splitlines())
        if n > MAX_CELL_LINES and "parameters" not in _tags(c):
            long.append(f"cell {i}: {n} lines")
    assert not defs, f"{path.name}: definitions belong in the ibnb package, not the notebook: {defs}"
    assert not long, f"{path.name}: code cells over {MAX_CELL_LINES} lines (move the logic into ibnb): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parameters_cell_is_hidden(path):
    _, cells = _code_cells(path)
    tagged = [c for _, c in cells if "parameters" in _tags(c)]
    assert tagged and "remove-cell" in _tags(tagged[0]), (
        f"{path.name}: the parameters cell must be tagged ['parameters', 'remove-cell'] (the values are in the "
        f"provenance box)")


STUDIES = [p for p in NOTEBOOKS if study_stem(p.stem)]


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_chapter_opens_with_its_answer_and_has_a_claims_audit(path):
    nb, cells = _code_cells(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.match(r"# \S", first.source), (
        f"{path.name}: the first cell must be markdown starting with '# Title'")
    headings = [ln.strip() for c in nb.cells if c.cell_type == "markdown" for ln in c.source.splitlines()]
    assert "## Claims audit" in headings, f"{path.name}: needs a '## Claims audit' section"
    publish = [c for _, c in cells if re.search(r"\bpage\.publish\(", c.source)]
    assert publish, f"{path.name}: a code cell must call page.publish(...) (it displays the answer box)"
    assert "remove-input" in _tags(publish[0]), f"{path.name}: the page.publish cell must be tagged remove-input"
    assert not any(re.search(r"\bpage\.publish\(", c.source) for c in nb.cells if c.cell_type == "markdown")


def test_shape_checks_fail_on_a_bad_notebook(tmp_path, monkeypatch):
    """The shape tests above reject a notebook with a def, a long cell, a visible parameters cell and no audit."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    params = new_code_cell('profile = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("Intro without a title"), params,
                             new_code_cell("def f():\n    return 1"), new_code_cell("\n".join(["x = 1"] * 16))])
    path = tmp_path / "01_bad.ipynb"
    nbformat.write(nb, path)
    for test in (test_notebook_cells_hold_no_logic, test_parameters_cell_is_hidden,
                 test_study_chapter_opens_with_its_answer_and_has_a_claims_audit):
        with pytest.raises(AssertionError):
            test(path)


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
