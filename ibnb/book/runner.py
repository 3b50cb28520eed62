"""Execute the book's notebooks and build the HTML book (stale marks: :mod:`ibnb.book.stale`; the command line:
:mod:`ibnb.book.cli`; the defences against faults: :mod:`ibnb.book.guard`).

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

Faults (see :mod:`ibnb.book.guard`): destinations are checked writable before executing, Ctrl-C prints one line,
temp folders never outlive a run, operator warnings reach the terminal and never the page.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nbformat

from ibnb.book.guard import (Interrupted, KernelStderr, OperatorRelay, RunnerError, check_destinations,
                             execute_interruptibly, interrupted_line, keep_failed, machine_paths, page_lock,
                             scrub_machine_paths, sweep_stale_temp_folders)
from ibnb.book.provenance import code_hash as current_code_hash
from ibnb.book.results import TIMING_COLUMNS, ResultsError, read_timings  # noqa: F401  (TIMING_COLUMNS re-exported)
from ibnb.core.utils import OPERATOR_LOG_VAR, atomic_write, repo_root

DEFAULT_PROFILE = "cpu"
KERNEL = "python3"


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


def with_cpu_isa(device: str) -> str:
    """``device`` plus this CPU's vector instruction set and bf16 support (``cpu (x86_64; AVX512, bf16)``): two
    2-core machines of one name can differ threefold in conv-net speed (AVX-512 BF16 against AVX2)."""
    if not device.startswith("cpu"):
        return device
    import torch
    from ibnb.core.precision import cpu_has_bf16

    isa = f"{torch.backends.cpu.get_cpu_capability()}, {'bf16' if cpu_has_bf16() else 'no bf16'}"
    return device[:-1] + f"; {isa})" if device.endswith(")") else f"{device} ({isa})"


def record_timing(paths: Paths, nb: nbformat.NotebookNode, stem: str) -> Path:
    """Upsert this execution's wall time into ``<results>/timings.csv`` (one row per notebook and profile),
    which the reproduce page shows; the device and threads come from the page's provenance box."""
    import csv
    import io

    meta, prov = nb.metadata["ibnb"], provenance_fields(nb)
    row = {"notebook": stem, "profile": meta["profile"], "wall_s": meta["wall_s"],
           "executed_at": meta["executed_at"], "device": with_cpu_isa(prov.get("device", "unknown")),
           "cpu_threads": prov.get("CPU threads", "unknown"), "commit": prov.get("commit", "unknown")}
    path = paths.results_dir / "timings.csv"
    read_timings(paths.results_dir)  # a damaged log is an error naming file, row and column, never rewritten
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
    names the notebook and the failing cell; the partial output is copied to ``_build/failed/``. The
    temporary folder is removed on every exit path.
    """
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

    check_destinations(paths, dest)
    sweep_stale_temp_folders()
    if echo:
        print(f"{stem}: executing with {json.dumps(params, default=str)}", flush=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f"ibnb-{stem}-{os.getpid()}-"))
    try:
        return _execute_in(tmp_dir, src, dest, params, cwd=cwd, paths=paths, src_hash=src_hash, inputs=inputs,
                           code=code, progress=progress, kernel=kernel)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _execute_in(tmp_dir: Path, src: Path, dest: Path, params: dict[str, Any], *, cwd: Path, paths: Paths,
                src_hash: str, inputs: str | None, code: str | None, progress: bool, kernel: str) -> Outcome:
    """Execute into ``tmp_dir`` (removed by the caller) and move the result to ``dest``."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    stem = src.stem
    tmp_out = tmp_dir / f"{stem}.ipynb"
    sidecar = tmp_dir / "provenance.json"
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    env = {"IBNB_PROVENANCE_FILE": str(sidecar),  # the kernel inherits them; run.finish() writes the sidecar
           OPERATOR_LOG_VAR: str(tmp_dir / "operator.log")}  # warn_operator() appends there
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    kernel_log = tmp_dir / "kernel-stderr.log"
    redirect = KernelStderr(kernel_log)  # the kernel's own chatter (and shutdown noise) stays off the terminal
    relay = OperatorRelay(tmp_dir / "operator.log", stem, redirect.terminal)
    try:
        execute_interruptibly(papermill.execute_notebook, kernel=kernel, input_path=str(src),
                              output_path=str(tmp_out), parameters=params, cwd=str(cwd), progress_bar=progress)
    except PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":
            raise Interrupted(interrupted_line(stem, dest, time.perf_counter() - t0)) from None
        kept = keep_failed(tmp_out, paths, stem)
        raise RunnerError(
            f"{stem}: the cell starting {_cell_summary(err.source)!r} (execution count "
            f"{err.exec_count}, cell index {err.cell_index} of the executed notebook) raised "
            f"{err.ename}: {err.evalue}\n"
            f"  The previous executed copy {dest} was left untouched."
            + (f"\n  Partial output for debugging: {kept}" if kept else "")) from None
    except KeyboardInterrupt:
        raise Interrupted(interrupted_line(stem, dest, time.perf_counter() - t0)) from None
    except Exception as err:  # kernel death, missing kernel, bad notebook...
        redirect.restore()
        tail = redirect.tail()
        raise RunnerError(f"{stem}: execution failed before completion: {type(err).__name__}: {err}\n"
                          f"  The previous executed copy {dest} was left untouched. Check that the "
                          f"'{kernel}' kernel exists (`jupyter kernelspec list`)."
                          + (f"\n  Last lines the kernel wrote:\n    " + "\n    ".join(tail) if tail else "")) from None
    finally:
        redirect.restore()
        relay.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
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
    scrubbed = scrub_machine_paths(nb, machine_paths(paths))
    if scrubbed:
        print(f"{stem}: warning: replaced absolute paths of this machine in the outputs of cell(s) "
              f"{', '.join(map(str, scrubbed))}; print paths relative to the repository instead", file=sys.stderr)
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
    try:
        atomic_write(dest, nbformat.writes(nb))
        record_timing(paths, nb, stem)
    except (OSError, ResultsError) as err:
        raise RunnerError(f"{stem}: executed, but writing its outputs failed ({err}).\n  The previous copy of {dest} "
                          "is untouched unless it was replaced before the error; finished training runs are in the "
                          "run cache and are reused. Fix the destination and run again.") from None
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
        try:
            with page_lock(dest):
                outcome = execute_notebook(src, dest, params, cwd=paths.repo, force=force,
                                           progress=progress, echo=echo, paths=paths)
        except Interrupted as err:
            done = [o.stem for o in outcomes if o.status == "executed"]
            extra = f"; pages executed before it were kept: {', '.join(done)}" if done else ""
            raise Interrupted(f"{err}{extra}") from None
        if echo:
            print(outcome.summary(), flush=True)
        outcomes.append(outcome)
    return outcomes


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
