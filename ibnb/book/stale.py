"""Stale marks: a warning box at the top of an executed page whose code, source notebook or inputs changed
since it was executed (``python -m ibnb mark-stale``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import nbformat

from ibnb.book.provenance import code_hash as current_code_hash
from ibnb.book.runner import Paths, inputs_hash, source_hash
from ibnb.core.utils import atomic_write

STALE_TAG = "ibnb-stale"
STALE_CELL_ID = "ibnb-stale"


def stale_reasons(executed: nbformat.NotebookNode, src: Path, code: str | None = None,
                  paths: Paths | None = None) -> list[str]:
    """Why an executed notebook no longer matches its source / the ibnb code ([] when current).

    ``code`` defaults to the current hash of the modules the page recorded (``code_files``)."""
    meta = executed.metadata.get("ibnb")
    if not meta:
        return ["it was not produced by `python -m ibnb run` (no provenance metadata)"]
    if code is None:
        code = current_code_hash(files=meta.get("code_files"))
    reasons = []
    if meta.get("code_hash") != code:
        reasons.append(f"the ibnb code changed (executed with `{meta.get('code_hash')}`, now `{code}`)")
    if not src.exists():
        reasons.append(f"its source notebook `{src.name}` no longer exists")
    elif meta.get("source_hash") != source_hash(nbformat.read(src, as_version=4)):
        reasons.append(f"its source notebook `notebooks/{src.name}` changed")
    if paths is not None and meta.get("inputs_hash") and meta["inputs_hash"] != inputs_hash(paths, src.stem):
        reasons.append("the chapters' results or executed pages it summarises changed")
    return reasons


def stale_cell(reasons: Iterable[str], executed_at: str | None) -> nbformat.NotebookNode:
    """The markdown warning cell inserted at the top of a stale page."""
    when = f" on {executed_at}" if executed_at else ""
    text = ("```{warning}\n"
            f"**This page is stale.** Its outputs were computed{when}, but since then "
            + "; ".join(reasons) + ". The numbers and figures below may not match the current code.\n"
            "Refresh it with `make book` (or `python -m ibnb run` followed by `python -m ibnb build`).\n"
            "```")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.id = STALE_CELL_ID
    cell.metadata["tags"] = [STALE_TAG]
    return cell


def _after_title(nb: nbformat.NotebookNode) -> int:
    """Index just after the markdown cell holding the page's ``# title`` (0 when there is none).

    The warning cannot precede the title: Sphinx then drops the page from the sidebar.
    """
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and any(ln.startswith("# ") for ln in cell.source.splitlines()):
            return i + 1
    return 0


def mark_stale(paths: Paths | None = None, code: str | None = None,
               echo: bool = True) -> dict[str, list[str]]:
    """Insert / refresh / remove the stale warning cell of every ``experiments/*.ipynb``.

    The warning goes right after the title cell (see :func:`_after_title`).

    Returns ``{stem: reasons}`` (empty list = current).  Files are rewritten atomically
    and only when their content changes.
    """
    paths = paths or Paths.for_repo()
    report: dict[str, list[str]] = {}
    for path in sorted(paths.experiments.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        reasons = stale_reasons(nb, paths.notebooks / path.name, code, paths)
        nb.cells = [c for c in nb.cells if STALE_TAG not in c.get("metadata", {}).get("tags", [])]
        if reasons:
            at = _after_title(nb)
            nb.cells.insert(at, stale_cell(reasons, nb.metadata.get("ibnb", {}).get("executed_at")))
        after = nbformat.writes(nb)
        if after != before:
            atomic_write(path, after)
        report[path.stem] = reasons
        if echo:
            print(f"{path.stem}: " + ("STALE - " + "; ".join(reasons) if reasons else "current"))
    return report
