"""Execute the book's notebooks, flag stale pages and build the HTML book.

Command line (``python -m ibnb --help``)::

    python -m ibnb run [NOTEBOOK ...] [--profile cpu] [-p NAME VALUE ...] [--force]
    python -m ibnb mark-stale
    python -m ibnb build [--profile cpu] [--no-run] [--all]

``run`` executes ``notebooks/<stem>.ipynb`` with papermill into
``book/experiments/<stem>.ipynb``.  The output is written to a temporary folder first
and moved into place only on success, so ``book/experiments`` never holds a partial
notebook.  The executed copy records ``nb.metadata["ibnb"]`` (hashes, parameters,
timing); a notebook whose run hash (source cells + parameters + ibnb code hash) is
unchanged is skipped.  Every function takes explicit paths so tests can use tmp dirs.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import nbformat

from ibnb.book.provenance import code_hash as current_code_hash
from ibnb.core.utils import atomic_write, repo_root

DEFAULT_PROFILE = "cpu"
KERNEL = "python3"
STALE_TAG = "ibnb-stale"
STALE_CELL_ID = "ibnb-stale"


class RunnerError(RuntimeError):
    """A user-facing failure: the message says what went wrong and how to fix it."""


@dataclass(frozen=True)
class Paths:
    """Folders the runner works on (all absolute)."""

    repo: Path
    notebooks: Path
    experiments: Path
    results: Path | None = None  # results tables; None = $IBNB_RESULTS or <repo>/book/results

    @classmethod
    def for_repo(cls, repo: Path | str | None = None) -> "Paths":
        """Standard layout: ``<repo>/notebooks`` -> ``<repo>/book/experiments``."""
        root = Path(repo).resolve() if repo is not None else repo_root()
        return cls(repo=root, notebooks=root / "notebooks", experiments=root / "book" / "experiments")

    @property
    def results_dir(self) -> Path:
        if self.results is not None:
            return self.results
        env = os.environ.get("IBNB_RESULTS")
        return Path(env).expanduser() if env else self.repo / "book" / "results"


@dataclass
class Outcome:
    """What happened to one notebook."""

    stem: str
    status: str  # "executed" | "skipped"
    wall_s: float
    dest: Path

    def summary(self) -> str:
        """One line for the terminal."""
        verb = "executed" if self.status == "executed" else "skipped (unchanged)"
        when = "" if self.status == "executed" else " when last run"
        return f"{self.stem}: {verb}, wall {self.wall_s:.1f} s{when} -> {self.dest}"


# ----------------------------------------------------------------------------- parameters
def parse_value(text: str) -> Any:
    """Parse a ``-p NAME VALUE`` value like papermill: bool / None / int / float / str.

    ``True``/``False``/``None`` (Python spelling) and YAML ``true``/``false``/``null``
    are recognised; numbers become int or float; YAML lists/dicts such as ``[1, 2]``
    are accepted; anything else stays a string (``yes``/``on`` stay strings).
    """
    literals = {"True": True, "False": False, "None": None}
    if text in literals:
        return literals[text]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None and text.strip().lower() in ("null", "~"):
        return None
    if isinstance(value, bool):
        return value if text.strip().lower() in ("true", "false") else text
    if isinstance(value, (list, dict)):
        return value
    return text


def notebook_parameters(path: Path) -> dict[str, dict]:
    """Parameters declared in the notebook's cell tagged ``parameters`` (papermill)."""
    import papermill

    nb = nbformat.read(path, as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise RunnerError(f"{path}: no code cell tagged 'parameters'. Add the tag to the cell that "
                          "defines `profile = \"cpu\"` and the other knobs (Jupyter: View > Cell Toolbar > Tags).")
    return papermill.inspect_notebook(str(path))


def check_params(path: Path, params: dict[str, Any]) -> None:
    """Raise :class:`RunnerError` when ``params`` names something the notebook does not declare."""
    declared = notebook_parameters(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "(none)"
        raise RunnerError(f"{path.name}: unknown parameter(s) {', '.join(unknown)}. "
                          f"Valid names (from its 'parameters' cell): {valid}.")


# ----------------------------------------------------------------------------- hashing
def source_hash(nb: nbformat.NotebookNode) -> str:
    """sha256 (12 hex) of the cleaned source cells: type, tags and source; outputs and ids ignored."""
    cleaned = [{"type": c.cell_type, "tags": sorted(c.get("metadata", {}).get("tags", [])),
                "source": c.source if isinstance(c.source, str) else "".join(c.source)}
               for c in nb.cells]
    return hashlib.sha256(json.dumps(cleaned, sort_keys=True).encode()).hexdigest()[:12]


def run_hash(src_hash: str, params: dict[str, Any], code: str, inputs: str | None = None) -> str:
    """Hash that decides whether an executed copy is still current for these parameters (``inputs``: what a
    synthesis notebook reads, see :func:`inputs_hash`)."""
    payload = {"source": src_hash, "params": params, "code": code}
    if inputs is not None:
        payload["inputs"] = inputs
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def reads_results(nb: nbformat.NotebookNode) -> bool:
    """A synthesis notebook (``metadata.ibnb.reads_results: true``) is computed from the other chapters'
    results tables and executed pages, so those are inputs of its run hash too."""
    return bool(nb.metadata.get("ibnb", {}).get("reads_results"))


def inputs_hash(paths: Paths, own_stem: str) -> str:
    """Hash of what a synthesis notebook reads: every other chapter's results files and the run hash, profile
    and wall time recorded in every other chapter's executed page. Other synthesis pages and the timing log
    are left out (each execution updates them, so including them would re-run synthesis pages forever)."""
    h = hashlib.sha256()
    root = paths.results_dir
    for f in sorted(root.rglob("*")) if root.is_dir() else []:
        if f.is_file() and f.parent != root and f.parent.name != own_stem:
            h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    for page in sorted(paths.experiments.glob("*.ipynb")):
        meta = _recorded_meta(page)
        if page.stem != own_stem and not meta.get("inputs_hash"):
            h.update(json.dumps([page.stem, meta.get("hash"), meta.get("profile"), meta.get("wall_s")]).encode())
    return h.hexdigest()[:12]


def provenance_fields(nb: nbformat.NotebookNode) -> dict[str, str]:
    """The rows of the provenance box shown by the page's last cell (``{}`` when it has none)."""
    for cell in reversed(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = out.get("data", {}).get("text/markdown", "")
            text = text if isinstance(text, str) else "".join(text)
            if text.startswith("**Provenance of this page**"):
                rows = [ln.strip().strip("|").split("|", 1) for ln in text.splitlines() if ln.startswith("| ")]
                return {k.strip(): v.strip().strip("`") for k, v in rows if len(rows) and k.strip() != "field"}
    return {}


TIMING_COLUMNS = ["notebook", "profile", "wall_s", "executed_at", "device", "cpu_threads", "commit"]


def record_timing(paths: Paths, nb: nbformat.NotebookNode, stem: str) -> Path:
    """Upsert this execution's wall time into ``<results>/timings.csv`` (one row per notebook and profile),
    which the reproduce page shows; the device and threads come from the page's provenance box."""
    import csv
    import io

    meta, prov = nb.metadata["ibnb"], provenance_fields(nb)
    row = {"notebook": stem, "profile": meta["profile"], "wall_s": meta["wall_s"],
           "executed_at": meta["executed_at"], "device": prov.get("device", "unknown"),
           "cpu_threads": prov.get("CPU threads", "unknown"), "commit": prov.get("commit", "unknown")}
    path = paths.results_dir / "timings.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    rows = [r for r in rows if (r["notebook"], r["profile"]) != (stem, row["profile"])] + [row]
    rows.sort(key=lambda r: (r["notebook"], r["profile"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, TIMING_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buf.getvalue())


# ----------------------------------------------------------------------------- run
def find_notebooks(names: Sequence[str], notebooks_dir: Path) -> list[Path]:
    """Resolve stems / file names / paths to ``notebooks_dir/<stem>.ipynb``; all when ``names`` is empty."""
    available = sorted(notebooks_dir.glob("*.ipynb"))
    if not names:
        if not available:
            raise RunnerError(f"No notebooks found in {notebooks_dir}.")
        return available
    found = []
    for name in names:
        path = notebooks_dir / f"{Path(name).stem}.ipynb"
        if not path.exists():
            stems = ", ".join(p.stem for p in available) or "(none)"
            raise RunnerError(f"Notebook {name!r} not found in {notebooks_dir}. Available: {stems}.")
        found.append(path)
    return found


def _recorded_meta(path: Path) -> dict[str, Any]:
    """``metadata['ibnb']`` of an executed notebook ({} when missing or unreadable)."""
    try:
        return dict(nbformat.read(path, as_version=4).metadata.get("ibnb", {}))
    except Exception:  # unreadable / partial file: treat as never executed
        return {}


def _cell_summary(source: str) -> str:
    """First non-empty line of a cell, shortened, for error messages."""
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= 70 else line[:67] + "..."


HIDE_TAGS = {"remove-cell", "remove-input", "hide-cell", "hide-input"}


def hide_injected_like_parameters(nb: nbformat.NotebookNode) -> None:
    """Give papermill's ``injected-parameters`` cell the hiding tags of the ``parameters`` cell (a page that
    hides its parameters, like the title page, must not show the injected copy either)."""
    tags_of = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    hide = next((t & HIDE_TAGS for t in tags_of if "parameters" in t), set())
    for cell, tags in zip(nb.cells, tags_of):
        if "injected-parameters" in tags and hide - tags:
            cell.metadata["tags"] = sorted(tags | hide)


def execute_notebook(src: Path, dest: Path, params: dict[str, Any], *, cwd: Path,
                     force: bool = False, code: str | None = None, progress: bool = True,
                     kernel: str = KERNEL, echo: bool = False, paths: Paths | None = None) -> Outcome:
    """Execute ``src`` with ``params`` into ``dest`` unless its run hash is unchanged.

    Papermill writes into a private temporary folder; only a successful run is moved to
    ``dest`` (atomically).  On failure ``dest`` is left as it was and :class:`RunnerError`
    names the notebook and the failing cell; the partial output stays in the temp folder.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    stem = src.stem
    check_params(src, params)
    src_nb = nbformat.read(src, as_version=4)
    src_hash = source_hash(src_nb)
    paths = paths or Paths(repo=cwd, notebooks=src.parent, experiments=dest.parent)
    inputs = inputs_hash(paths, stem) if reads_results(src_nb) else None
    old = _recorded_meta(dest) if dest.exists() else {}
    key = run_hash(src_hash, params, code or current_code_hash(files=old.get("code_files")), inputs)
    if not force and old.get("hash") == key:
        return Outcome(stem, "skipped", float(old.get("wall_s", 0.0)), dest)

    if echo:
        print(f"{stem}: executing with {json.dumps(params, default=str)}", flush=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f"ibnb-{stem}-"))
    tmp_out = tmp_dir / f"{stem}.ipynb"
    sidecar = tmp_dir / "provenance.json"
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    saved_env = os.environ.get("IBNB_PROVENANCE_FILE")
    os.environ["IBNB_PROVENANCE_FILE"] = str(sidecar)  # the kernel inherits it; run.finish() writes there
    try:
        papermill.execute_notebook(str(src), str(tmp_out), parameters=params, kernel_name=kernel,
                                   cwd=str(cwd), progress_bar=progress)
    except PapermillExecutionError as err:
        raise RunnerError(
            f"{stem}: the cell starting {_cell_summary(err.source)!r} (execution count "
            f"{err.exec_count}, cell index {err.cell_index} of the executed notebook) raised "
            f"{err.ename}: {err.evalue}\n"
            f"  The previous executed copy {dest} was left untouched.\n"
            f"  Partial output for debugging: {tmp_out}") from None
    except Exception as err:  # kernel death, missing kernel, bad notebook...
        raise RunnerError(f"{stem}: execution failed before completion: {type(err).__name__}: {err}\n"
                          f"  The previous executed copy {dest} was left untouched. Check that the "
                          f"'{kernel}' kernel exists (`jupyter kernelspec list`).") from None
    finally:
        if saved_env is None:
            os.environ.pop("IBNB_PROVENANCE_FILE", None)
        else:
            os.environ["IBNB_PROVENANCE_FILE"] = saved_env
    wall = time.perf_counter() - t0
    # The page depends on the ibnb modules its kernel imported (recorded by run.finish());
    # a notebook without a provenance cell depends on the whole package.
    deps = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    code_files = deps.get("code_files")
    if code is None:
        code = current_code_hash(files=code_files)
    key = run_hash(src_hash, params, code, inputs)

    nb = nbformat.read(tmp_out, as_version=4)
    hide_injected_like_parameters(nb)
    nb.metadata["ibnb"] = {
        "hash": key, "source_hash": src_hash, "code_hash": code, "code_files": code_files, "params": params,
        "inputs_hash": inputs,
        "profile": params.get("profile", DEFAULT_PROFILE),
        "executed_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "wall_s": round(wall, 1),
    }
    pm_meta = nb.metadata.get("papermill", {})
    if pm_meta:  # do not leak the private temp path into the book
        pm_meta["input_path"] = os.path.relpath(src, cwd)
        pm_meta["output_path"] = os.path.relpath(dest, cwd)
    atomic_write(dest, nbformat.writes(nb))
    record_timing(paths, nb, stem)
    tmp_out.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    tmp_dir.rmdir()
    return Outcome(stem, "executed", wall, dest)


def run_notebooks(names: Sequence[str] = (), *, profile: str = DEFAULT_PROFILE,
                  overrides: dict[str, Any] | None = None, force: bool = False,
                  paths: Paths | None = None, progress: bool = True,
                  echo: bool = True) -> list[Outcome]:
    """Execute (or skip) every selected notebook in order; stops at the first failure."""
    paths = paths or Paths.for_repo()
    params = {"profile": profile, **(overrides or {})}
    outcomes = []
    # synthesis pages read the chapters' results, so they run after every chapter of this invocation
    ordered = sorted(find_notebooks(names, paths.notebooks),
                     key=lambda p: reads_results(nbformat.read(p, as_version=4)))
    for src in ordered:
        dest = paths.experiments / src.name
        outcome = execute_notebook(src, dest, params, cwd=paths.repo, force=force,
                                   progress=progress, echo=echo, paths=paths)
        if echo:
            print(outcome.summary(), flush=True)
        outcomes.append(outcome)
    return outcomes


# ----------------------------------------------------------------------------- stale marks
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


# ----------------------------------------------------------------------------- build
def jupyter_book_command() -> list[str]:
    """``jupyter-book`` of the running Python environment."""
    exe = Path(sys.executable).parent / ("jupyter-book.exe" if os.name == "nt" else "jupyter-book")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]


def build_html(repo: Path, full: bool = False) -> int:
    """``jupyter-book build <repo> -W -n --keep-going`` (plus ``--all`` when ``full``); exit code."""
    cmd = [*jupyter_book_command(), "build", str(repo), "-W", "-n", "--keep-going"]
    if full:
        cmd.append("--all")
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=repo)


# ----------------------------------------------------------------------------- CLI
def make_parser() -> argparse.ArgumentParser:
    """argparse parser for ``python -m ibnb``."""
    p = argparse.ArgumentParser(
        prog="python -m ibnb",
        description="Execute the ibnb notebooks, mark stale pages and build the Jupyter Book.",
        epilog="Examples:\n  python -m ibnb run 01_architectures --profile smoke\n"
               "  python -m ibnb run -p epochs 50 --profile gpu --force\n"
               "  python -m ibnb build            # run (cpu) + mark-stale + jupyter-book build",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=None, help="repository root (default: the one holding ibnb)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_run_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--profile", default=DEFAULT_PROFILE,
                        help="parameter profile passed to the notebooks: smoke, cpu or gpu (default: %(default)s)")
        sp.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override one notebook parameter (repeatable); VALUE is parsed like papermill "
                             "(int/float/True/False/None, else string)")
        sp.add_argument("--force", action="store_true", help="execute even when nothing changed")
        sp.add_argument("--no-progress", action="store_true", help="hide papermill's progress bar")

    r = sub.add_parser("run", help="execute notebooks/*.ipynb into book/experiments/ (skips unchanged ones)",
                       description="Execute notebooks with papermill into book/experiments/<stem>.ipynb.")
    r.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="stems or paths, e.g. 01_architectures (default: all notebooks/*.ipynb, sorted)")
    add_run_options(r)
    sub.add_parser("mark-stale", help="add/remove the stale warning on book/experiments/*.ipynb",
                   description="Flag executed pages whose code or source notebook changed since execution.")
    b = sub.add_parser("build", help="run (cpu) + mark-stale + jupyter-book build -W -n --keep-going",
                       description="Build the HTML book into _build/html (open _build/html/index.html).")
    add_run_options(b)
    b.add_argument("--no-run", action="store_true", help="do not execute notebooks, only mark-stale + build")
    b.add_argument("--all", action="store_true", help="rebuild every page (jupyter-book build --all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ibnb``; returns the process exit code."""
    args = make_parser().parse_args(argv)
    paths = Paths.for_repo(args.repo)
    try:
        if args.command == "mark-stale":
            mark_stale(paths)
            return 0
        overrides = {name: parse_value(value) for name, value in args.param}
        profile = overrides.pop("profile", args.profile)
        if args.command == "run":
            run_notebooks(args.notebooks, profile=profile, overrides=overrides, force=args.force,
                          paths=paths, progress=not args.no_progress)
            return 0
        if not args.no_run:
            run_notebooks((), profile=profile, overrides=overrides, force=args.force,
                          paths=paths, progress=not args.no_progress)
        mark_stale(paths)
        code = build_html(paths.repo, full=args.all)
        if code == 0:
            print(f"Book built: {paths.repo / '_build' / 'html' / 'index.html'}")
        else:
            print(f"jupyter-book build failed (exit {code}); the warnings above name the pages to fix.",
                  file=sys.stderr)
        return code
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
