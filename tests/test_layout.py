"""The package's layering, read from the source (AST), nothing imported:

* ``ibnb/core`` imports nothing from ``ibnb.chapters`` or ``ibnb.book`` (lazy imports inside functions count);
* a chapter package never imports another chapter package;
* no ``.py`` file in ``ibnb/`` is over 400 lines;
* every chapter package's ``__init__`` exposes the chapter contract (``run``, ``audit``, ``numbers``, ``figures``,
  ``tables``) and its ``presets`` module ``NOTEBOOK``, ``PRESETS`` and ``validate``;
* every notebook stem in ``ibnb.book.profiles.PAGES`` has a source notebook.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ibnb"
MAX_LINES = 400
CONTRACT = ("run", "audit", "numbers", "figures", "tables")
PRESETS_API = ("NOTEBOOK", "PRESETS", "validate")
CHAPTERS = sorted(p.parent for p in (PKG / "chapters").glob("*/__init__.py"))
PY_FILES = sorted(PKG.rglob("*.py"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, relative imports resolved (``from x import y`` also
    yields ``x.y``, which may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return found


def top_level_names(path: Path) -> set[str]:
    """Names a module binds at its top level (definitions, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _within(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def test_the_layout_exists():
    assert (PKG / "core").is_dir() and (PKG / "book").is_dir() and CHAPTERS, "ibnb/core, ibnb/book, ibnb/chapters/*"


@pytest.mark.parametrize("path", sorted((PKG / "core").rglob("*.py")), ids=lambda p: module_name(p))
def test_core_imports_neither_chapters_nor_book(path):
    bad = sorted(m for m in imports(path) if _within(m, "ibnb.chapters") or _within(m, "ibnb.book"))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: core must not depend on chapters or book"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_a_chapter_never_imports_another_chapter(chapter):
    own = f"ibnb.chapters.{chapter.name}"
    bad = {}
    for path in chapter.rglob("*.py"):
        others = sorted(m for m in imports(path)
                        if _within(m, "ibnb.chapters") and m != "ibnb.chapters" and not _within(m, own))
        if others:
            bad[str(path.relative_to(ROOT))] = others
    assert not bad, f"chapter {chapter.name} imports other chapters (move shared pieces down into ibnb/core): {bad}"


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_is_over_400_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (> {MAX_LINES}); split it"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_exposes_the_contract(chapter):
    missing = [n for n in CONTRACT if n not in top_level_names(chapter / "__init__.py")]
    assert not missing, f"ibnb/chapters/{chapter.name}/__init__.py does not expose {missing} (see ibnb/chapters/__init__.py)"
    presets = chapter / "presets.py"
    assert presets.is_file(), f"ibnb/chapters/{chapter.name}/presets.py is missing"
    missing = [n for n in PRESETS_API if n not in top_level_names(presets)]
    assert not missing, f"ibnb/chapters/{chapter.name}/presets.py does not define {missing}"


def test_every_page_in_profiles_has_a_notebook():
    from ibnb.book.profiles import PAGES

    missing = sorted(stem for stem in PAGES if not (ROOT / "notebooks" / f"{stem}.ipynb").is_file())
    assert not missing, f"profiles.PAGES lists pages without a notebook: {missing}"
    for stem, module in PAGES.items():
        path = ROOT / Path(*module.split(".")).with_suffix(".py")
        assert path.is_file(), f"profiles.PAGES[{stem!r}] = {module!r}, but {path.relative_to(ROOT)} does not exist"


# ----------------------------------------------------------------------------- the checks themselves can fail
def test_the_import_reader_resolves_relative_and_lazy_imports(tmp_path):
    core = tmp_path / "ibnb" / "core"
    core.mkdir(parents=True)
    (core / "bad.py").write_text("from ..book import claims\n\ndef f():\n    import ibnb.chapters.tta\n")
    (core / "__init__.py").write_text("from . import bad\nfrom .models import x\n")
    found = imports(core / "bad.py", root=tmp_path)
    assert "ibnb.book.claims" in found and "ibnb.chapters.tta" in found
    assert {"ibnb.core.bad", "ibnb.core.models.x"} <= imports(core / "__init__.py", root=tmp_path)
    init = tmp_path / "init.py"
    init.write_text("from .sweep import run, audit as audit\nnumbers = figures = None\ndef tables(o, P): ...\n")
    assert set(CONTRACT) <= top_level_names(init)
