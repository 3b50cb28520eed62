"""The runner's defences (issue 15): destinations checked before executing, temp folders swept, Ctrl-C as one
line, the kernel's stderr and operator warnings routed to the terminal, absolute machine paths kept out of pages,
one runner per page at a time. Used by :mod:`ibnb.book.runner`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import nbformat

from ibnb.book.results import ResultsError, read_timings
from ibnb.core.utils import file_lock


class RunnerError(RuntimeError):
    """A user-facing failure: the message says what went wrong and how to fix it."""


class Interrupted(RunnerError):
    """Ctrl-C during an execution; the message is the one line the terminal shows."""



def interrupted_line(stem: str, dest: Path, seconds: float) -> str:
    """The one line Ctrl-C prints: what stopped and what was kept."""
    prev = "its previous executed page is untouched" if dest.exists() else "no executed page was written"
    return (f"interrupted: {stem} stopped after {seconds:.0f} s; {prev}; finished training runs and per-epoch "
            "checkpoints stay in the run cache and are resumed on the next run")


def keep_failed(tmp_out: Path, paths: Paths, stem: str) -> str | None:
    """Copy a failed execution's partial notebook to ``_build/failed/<stem>.ipynb`` (relative path returned;
    ``None`` when there is nothing to keep or nowhere to keep it)."""
    if not tmp_out.exists():
        return None
    target = paths.repo / "_build" / "failed" / f"{stem}.ipynb"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_out, target)
    except OSError:
        return None
    return os.path.relpath(target, paths.repo)


def _probe_writable(folder: Path) -> None:
    """Create ``folder`` if needed and write and delete a file in it (raises ``OSError`` otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".ibnb-write-check-", dir=folder)
    os.close(fd)
    os.unlink(probe)


def check_destinations(paths: Paths, dest: Path) -> None:
    """Before executing: every folder a run writes to must be writable, and the timing log readable, so a
    problem is found in a second, not after the whole execution."""
    from ibnb.core.data import data_cache_dir
    from ibnb.core.runs import runs_dir

    targets = [(dest.parent, "executed pages", "make it writable or pass --repo a writable checkout"),
               (paths.results_dir, "results tables", "make it writable or set IBNB_RESULTS to a writable folder"),
               (runs_dir(), "run cache", "make it writable or set IBNB_RUNS to a writable folder"),
               (data_cache_dir(), "decoded-data cache", "make it writable or set IBNB_CACHE to a writable folder"),
               (Path(tempfile.gettempdir()), "temporary folder", "set TMPDIR to a writable folder")]
    for folder, what, fix in targets:
        try:
            _probe_writable(folder)
        except OSError as err:
            raise RunnerError(f"{dest.stem}: the {what} folder {folder} is not writable "
                              f"({err.strerror or err}); nothing was executed. Fix: {fix}.") from None
    try:
        read_timings(paths.results_dir)
    except ResultsError as err:
        raise RunnerError(f"{dest.stem}: {err} Nothing was executed.") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temp_folders() -> list[Path]:
    """Remove ``ibnb-<stem>-<pid>-*`` temp folders whose runner no longer exists (killed with ``kill -9``)."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob("ibnb-*"):
        m = re.fullmatch(r"ibnb-.+-(\d+)-[^-]+", folder.name)
        if folder.is_dir() and m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def machine_paths(paths: Paths) -> list[tuple[str, str]]:
    """(absolute path of this machine, what a page shows instead), longest first."""
    from ibnb.core.data import data_cache_dir, data_root
    from ibnb.core.runs import runs_dir

    pairs = [(runs_dir(), "$IBNB_RUNS"), (data_cache_dir(), "$IBNB_CACHE"), (data_root(), "$IBNB_DATA"),
             (paths.results_dir, "book/results"), (Path(tempfile.gettempdir()), "$TMPDIR"),
             (paths.repo, "."), (Path.home(), "~")]
    out = {}
    for path, shown in pairs:
        for variant in {str(path), str(Path(path).resolve())}:
            if len(variant) > 1:
                out.setdefault(variant, shown)
    return sorted(out.items(), key=lambda kv: -len(kv[0]))


_TEXT_KEYS = ("text/plain", "text/markdown", "text/html", "text/latex")


def scrub_machine_paths(nb: nbformat.NotebookNode, pairs: list[tuple[str, str]]) -> list[int]:
    """Replace absolute machine paths in the outputs of ``nb`` (in place); the indices of the cells changed."""
    def fix(text: str) -> str:
        for path, shown in pairs:
            text = re.sub(re.escape(path) + r"(?=/|\b|$)", shown, text)
        return text

    changed = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        before = json.dumps(cell.get("outputs", []))
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = fix(out["text"] if isinstance(out["text"], str) else "".join(out["text"]))
            for key in _TEXT_KEYS:
                value = out.get("data", {}).get(key)
                if value is not None:
                    out["data"][key] = fix(value if isinstance(value, str) else "".join(value))
            if "traceback" in out:
                out["traceback"] = [fix(t) for t in out["traceback"]]
        if json.dumps(cell.get("outputs", [])) != before:
            changed.append(i)
    return changed


class KernelStderr:
    """While active, file descriptor 2 (inherited by the kernel that papermill starts) points at ``log``;
    :attr:`terminal` still writes to the real terminal. :meth:`restore` puts fd 2 back (idempotent)."""

    def __init__(self, log: Path):
        self.log = log
        self.terminal = sys.stderr
        self._saved = None
        try:
            sys.stderr.flush()
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # pytest's capture or an embedded interpreter: leave fd 2
            return
        if fd != 2:
            return
        self._saved = os.dup(2)
        self.terminal = os.fdopen(os.dup(self._saved), "w", buffering=1)
        target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(target, 2)
        os.close(target)

    def restore(self) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None

    def tail(self, n: int = 6) -> list[str]:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return []
        return [ln for ln in lines if "running over TCP without encryption" not in ln][-n:]


class OperatorRelay:
    """Copy the kernel's operator warnings (``IBNB_OPERATOR_LOG``) to this terminal while it runs."""

    def __init__(self, log: Path, stem: str, stream=None, interval: float = 0.5):
        self.log, self.stem, self.interval = log, stem, interval
        self.stream = stream if stream is not None else sys.stderr
        self._offset, self._done = 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            with open(self.log) as f:
                f.seek(self._offset)
                text = f.read()
                self._offset = f.tell()
        except FileNotFoundError:
            return
        for line in text.splitlines():
            print(f"{self.stem}: {line}", file=self.stream, flush=True)

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            self._pump()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._pump()


def page_lock(dest: Path):
    """A file lock per executed page, so two runners never execute the same page at once."""
    digest = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / "ibnb-locks" / f"{dest.stem}-{digest}.lock"

    def waiting(holder: str) -> None:
        print(f"{dest.stem}: another runner ({holder}) is executing this page; waiting for it, then skipping the "
              "page if its result is current", file=sys.stderr, flush=True)

    return file_lock(path, on_wait=waiting)


def execute_interruptibly(execute, *, kernel: str, grace_s: float = 30.0, **kwargs) -> None:
    """Call ``execute(..., km=<kernel manager>, **kwargs)`` (``papermill.execute_notebook``) in a worker thread,
    so that Ctrl-C and SIGTERM (which the CLI turns into ``KeyboardInterrupt``) land in *this* thread.

    Why: run in the main thread, nbclient replaces the SIGINT handler by one that shuts the kernel down
    gracefully and clears its client while the cell's reply is still awaited; when the kernel exits before it
    answers (more likely on a loaded machine), the runner waited for a reply that never came (a CI flake). In a
    worker thread nbclient installs no handler: on an interrupt we kill the kernel's process group, wait at most
    ``grace_s`` for the worker to see the dead kernel, and re-raise ``KeyboardInterrupt``. The kernel manager is
    ours, so we shut the kernel down after every run, interrupted or not."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    km = AsyncKernelManager(kernel_name=kernel)
    box: dict = {}

    def work():
        try:
            execute(km=km, kernel_name=kernel, **kwargs)
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err
        finally:
            try:
                if km.has_kernel:
                    run_sync(km.shutdown_kernel)(now=True)
            except Exception:  # already dead and cleaned: nothing left to stop
                pass

    worker = threading.Thread(target=work, name="ibnb-papermill", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        _kill_kernel(km)
        worker.join(grace_s)
        raise
    if "error" in box:
        raise box["error"]


def _kill_kernel(km) -> None:
    """SIGKILL the kernel's process group (the kernel runs in its own session, with any workers it started)."""
    import signal

    provisioner = getattr(km, "provisioner", None)
    pgid, pid = getattr(provisioner, "pgid", None), getattr(provisioner, "pid", None)
    for kill, target in ((os.killpg, pgid), (os.kill, pid)):
        if target:
            try:
                kill(target, signal.SIGKILL)
                return
            except (ProcessLookupError, PermissionError):
                continue
