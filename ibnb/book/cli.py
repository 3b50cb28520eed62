"""``python -m ibnb``: the command line of the runner (run, run --dry-run, run --estimate, mark-stale, build)."""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from ibnb.book.runner import DEFAULT_PROFILE, Interrupted, Paths, RunnerError, build_html, run_notebooks
from ibnb.book.stale import mark_stale


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


def make_parser() -> argparse.ArgumentParser:
    """argparse parser for ``python -m ibnb``."""
    p = argparse.ArgumentParser(
        prog="python -m ibnb",
        description="Execute the ibnb notebooks, mark stale pages and build the Jupyter Book.",
        epilog="Examples:\n  python -m ibnb run 01_architectures --profile smoke\n"
               "  python -m ibnb run -p epochs 50 --profile gpu --force\n"
               "  python -m ibnb run 08_vit_sam --profile gpu --dry-run   # every gpu run, two steps each\n"
               "  python -m ibnb run --profile gpu --estimate            # runs x FLOPs -> GPU-hours\n"
               "  python -m ibnb run 01_architectures --profile gpu --executor slurm --partition gpu\n"
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
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="build every model of the profile at full size and train each planned run for two steps "
                           "on a few images (volume knobs from smoke); writes nothing (ibnb.book.dryrun)")
    mode.add_argument("--estimate", action="store_true",
                      help="count the profile's training runs and their FLOPs, print the hours they imply and record "
                           "them in book/results/cost_estimates.csv (ibnb.book.cost)")
    c = r.add_argument_group("sweeps on a cluster (ibnb.book.cluster; IBNB_RUNS must be on a shared file system)")
    c.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                   help="local: train in the notebook (default); slurm: the notebook's training runs as a submitit "
                        "job array, then the notebook; submitit-local: the same through submitit's local executor")
    c.add_argument("--partition", default=None, help="Slurm partition of the job array")
    c.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per training job (default: %(default)s)")
    c.add_argument("--max-parallel", type=int, default=16, help="jobs of the array running at once (default: %(default)s)")
    c.add_argument("--job-timeout-min", type=int, default=720, help="time limit of one job (default: %(default)s)")
    c.add_argument("--retries", type=int, default=1, help="resubmissions of a failed job (default: %(default)s)")
    sub.add_parser("mark-stale", help="add/remove the stale warning on book/experiments/*.ipynb",
                   description="Flag executed pages whose code or source notebook changed since execution.")
    b = sub.add_parser("build", help="run (cpu) + mark-stale + jupyter-book build -W -n --keep-going",
                       description="Build the HTML book into _build/html (open _build/html/index.html).")
    add_run_options(b)
    b.add_argument("--no-run", action="store_true", help="do not execute notebooks, only mark-stale + build")
    b.add_argument("--all", action="store_true", help="rebuild every page (jupyter-book build --all)")
    return p


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ibnb``; returns the process exit code. SIGTERM (``timeout``, a CI cancel)
    cleans up like Ctrl-C instead of dying with temporary folders left behind."""
    import signal

    args = make_parser().parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return _main(args)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    paths = Paths.for_repo(args.repo)
    try:
        if args.command == "mark-stale":
            mark_stale(paths)
            return 0
        overrides = {name: parse_value(value) for name, value in args.param}
        profile = overrides.pop("profile", args.profile)
        if args.command == "run" and args.dry_run:
            from ibnb.book.dryrun import dry_run_notebooks

            dry_run_notebooks(args.notebooks, profile=profile, overrides=overrides, paths=paths)
            return 0
        if args.command == "run" and args.estimate:
            from ibnb.book.cost import estimate_notebooks

            estimate_notebooks(args.notebooks, profile=profile, overrides=overrides, paths=paths)
            return 0
        if args.command == "run" and args.executor != "local":
            from ibnb.book.cluster import run_on_cluster

            run_on_cluster(args.notebooks, profile=profile, overrides=overrides, paths=paths,
                           executor="local" if args.executor == "submitit-local" else "slurm",
                           partition=args.partition, gpus_per_job=args.gpus_per_job, max_parallel=args.max_parallel,
                           timeout_min=args.job_timeout_min, retries=args.retries)
            return 0
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
    except Interrupted as err:
        print(err, file=sys.stderr)
        return 130
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {_interrupted_what(args)}", file=sys.stderr)
        return 130


def _interrupted_what(args: argparse.Namespace) -> str:
    """What an interruption outside a notebook run leaves behind, per command."""
    if args.command == "run" and args.dry_run:
        return "the dry run stopped; its temporary folder was removed and nothing was written"
    if args.command == "run" and args.estimate:
        return ("the estimate stopped; the notebooks estimated before it are recorded in "
                "book/results/cost_estimates.csv, nothing else was written")
    if args.command == "run" and args.executor != "local":
        return ("the sweep stopped; the runs its jobs finished are in the run cache (IBNB_RUNS) and are reused by "
                "the next sweep; no page was executed")
    return "nothing was being executed; every file was left as it was"
