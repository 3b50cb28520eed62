"""Sweeps on a cluster: a notebook's independent training runs as a **submitit** job array, then the notebook
itself, which finds every run in the run cache and only assembles results.

    python -m ibnb run 01_architectures --profile gpu --executor slurm --partition gpu --gpus-per-job 1 \\
        --max-parallel 64          # IBNB_RUNS must be on a file system the compute nodes share

It goes in **waves**. A wave first *plans*: it executes a temporary copy of the notebook (nothing of it is kept)
in which :func:`ibnb.core.runs.load_or_fit`, the function every cached run goes through, reads a run whose
``final.pt`` is already in the cache and, for every other run, saves a job spec (the freshly initialised model,
its training and validation data, configuration, update step and run folder) and hands the notebook a stand-in
trained for two steps on a few images (the dry run's ``fit``, never cached). The wave then submits the specs as
one job array; each job calls the real ``load_or_fit``, which trains the run (resuming from its per-epoch
checkpoint after a pre-emption) and writes its ``final.pt`` atomically into the shared cache. Runs that need
another run's result (a probe on a pretrained encoder, a prior fitted to trained kernels) are planned by the next
wave, once that result is in the cache. Planning runs with the evaluation-only knobs
(:data:`ibnb.book.dryrun.EVAL_ONLY`) at their ``smoke`` values: they change no training run, only how long the
plan takes. When a plan finds nothing missing, the notebook is executed as usual
(``--executor local``, the default, is only this last step). A job that fails is resubmitted ``retries`` times;
then the sweep stops with the failed runs named and no page is executed, so a partial sweep never looks complete.
Training that does not go through the run cache (chapter 06's target networks, chapter 07's fine-tunes) runs in
the final execution.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Sequence

import nbformat

from ibnb.book.guard import RunnerError

JOBS_VAR = "IBNB_CLUSTER_JOBS"
INSTALL_CELL = "import ibnb.book.cluster as _ibnb_cluster\n_ibnb_cluster.install_planner()  # see ibnb.book.cluster"


# ----------------------------------------------------------------------------- inside the planning kernel
def install_planner(jobs_dir: str | os.PathLike | None = None):
    """Wrap ``load_or_fit`` (a cached run loads; a missing one is saved as a job spec and stood in for) and
    ``fit`` (the dry run's two steps); returns a function that puts the real ones back."""
    import ibnb.core.runs as runs_mod
    import ibnb.core.train as train_mod
    from ibnb.book.dryrun import make_dry_fit, swap_in
    from ibnb.core.utils import atomic_torch_save

    jobs = Path(jobs_dir or os.environ[JOBS_VAR])
    jobs.mkdir(parents=True, exist_ok=True)
    dry_fit = make_dry_fit(train_mod.fit, None)

    def load_or_fit(model, folder, train, val, config, *, step=None, device, progress=True, desc="", meta=None,
                    snapshots=False):
        final = Path(folder) / "final.pt"
        if runs_mod.is_cached(Path(folder), snapshots):  # read it, never retrain here (the job's real load_or_fit handles a bad file)
            loaded, _ = runs_mod._load_final(model, final, device)
            if loaded is not None:
                return (*loaded, True)
        spec = jobs / f"{Path(folder).name}.pt"
        if not spec.exists():  # the same run planned twice in one notebook is one job
            atomic_torch_save({"model": copy.deepcopy(model).cpu(), "folder": str(folder), "train": train,
                               "val": val, "config": config, "step": step, "desc": desc, "meta": meta,
                               "snapshots": snapshots}, spec)
        hist = dry_fit(model, train, val, config, step=step, device=device, progress=False, desc=desc)
        return model, hist, False

    return swap_in([(runs_mod, "load_or_fit", load_or_fit), (train_mod, "fit", dry_fit)])


# ----------------------------------------------------------------------------- inside a job
def train_spec(spec_path: str) -> str:
    """One job of the array: train the run of ``spec_path`` into the shared run cache (or find it there)."""
    import torch

    from ibnb.core.runs import load_or_fit
    from ibnb.core.train import resolve_device

    spec = torch.load(spec_path, map_location="cpu", weights_only=False)
    load_or_fit(spec["model"], Path(spec["folder"]), spec["train"], spec["val"], spec["config"], step=spec["step"],
                device=resolve_device("auto"), progress=False, desc=spec["desc"], meta=spec["meta"],
                snapshots=spec.get("snapshots", False))
    return Path(spec["folder"]).name


def describe_spec(spec_path: Path) -> str:
    """The run a spec trains, in one line (for the operator)."""
    import torch

    from ibnb.core.runs import describe_run, run_identity

    spec = torch.load(spec_path, map_location="cpu", weights_only=False)
    return describe_run(run_identity(spec["desc"], spec["meta"], spec["config"], len(spec["train"])),
                        Path(spec["folder"]))


# ----------------------------------------------------------------------------- the runner side
def plan(src: Path, params: dict[str, Any], jobs_dir: Path, *, cwd: Path, kernel: str = "python3") -> list[Path]:
    """Execute a temporary copy of ``src`` with the planner installed; the job specs of the runs the cache lacks."""
    from ibnb.book.dryrun import execute_copy

    env = {JOBS_VAR: str(jobs_dir), "IBNB_RESULTS": "{tmp}/results", "IBNB_PROVENANCE_FILE": "{tmp}/provenance.json",
           "IBNB_OPERATOR_LOG": "{tmp}/operator.log"}
    execute_copy(src, params, INSTALL_CELL, env=env, cwd=cwd, what="planning the sweep", kernel=kernel)
    return sorted(jobs_dir.glob("*.pt"))


def make_executor(kind: str, folder: Path, *, partition: str | None = None, gpus_per_job: int = 1,
                  max_parallel: int = 16, timeout_min: int = 720, cpus_per_job: int | None = None):
    """A submitit executor: ``slurm`` (a job array on ``partition``) or ``local`` (subprocesses on this machine,
    what the tests use)."""
    import submitit

    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=timeout_min)
        return ex
    if kind != "slurm":
        raise RunnerError(f"unknown executor {kind!r}: use --executor local or --executor slurm")
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    repo = str(Path(__file__).resolve().parents[2])
    ex.update_parameters(timeout_min=timeout_min, slurm_partition=partition, gpus_per_node=gpus_per_job,
                         cpus_per_task=cpus_per_job or 8, slurm_array_parallelism=max_parallel,
                         slurm_setup=[f"export PYTHONPATH={repo}:$PYTHONPATH"])
    return ex


def job_error(e: Exception) -> str:
    """The job's own exception line out of submitit's error (which quotes the job's traceback and its logs)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    own = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b.*", ln)
           and not ln.startswith(type(e).__name__)]
    return own[-1] if own else f"{type(e).__name__}: {lines[-1] if lines else ''}"


def run_jobs(executor, specs: list[Path], retries: int = 1, echo: bool = True) -> None:
    """Submit ``specs`` as one job array and wait; resubmit failed jobs ``retries`` times, then raise naming the
    runs that still failed."""
    pending = list(specs)
    for attempt in range(retries + 1):
        with executor.batch():
            jobs = [executor.submit(train_spec, str(s)) for s in pending]
        if echo:
            print(f"  submitted {len(jobs)} job(s)" + (f" (retry {attempt})" if attempt else ""), flush=True)
        failed = []
        for spec, job in zip(pending, jobs):
            try:
                job.result()
            except Exception as e:  # submitit re-raises the job's error (or its pre-emption / timeout)
                failed.append((spec, job_error(e)))
        if not failed:
            return
        pending = [s for s, _ in failed]
    names = "\n".join(f"  - {describe_spec(s)}: {why}" for s, why in failed)
    raise RunnerError(f"{len(failed)} training job(s) failed after {retries + 1} attempt(s); no page was executed, "
                      f"the finished runs are in the run cache and are reused next time:\n{names}")


def run_on_cluster(names: Sequence[str], *, profile: str, overrides: dict[str, Any] | None = None, paths=None,
                   executor: str = "slurm", partition: str | None = None, gpus_per_job: int = 1,
                   max_parallel: int = 16, timeout_min: int = 720, retries: int = 1, max_waves: int = 8,
                   force: bool = True, echo: bool = True):
    """Train every selected notebook's runs through ``executor`` in waves, then execute the notebook."""
    from ibnb.book.dryrun import EVAL_ONLY, dry_params
    from ibnb.book.runner import Paths, check_params, find_notebooks, reads_results, run_notebooks
    from ibnb.core.runs import runs_dir
    from ibnb.core.utils import utc_stamp

    paths = paths or Paths.for_repo()
    params = {"profile": profile, **(overrides or {})}
    outcomes = []
    for src in find_notebooks(names, paths.notebooks):
        if not reads_results(nbformat.read(src, as_version=4)):
            check_params(src, params)
            # evaluation-only knobs at their smoke values: they change no training run, only the planning time
            plan_params = (dry_params(src.stem, profile, overrides, EVAL_ONLY[src.stem]) if src.stem in EVAL_ONLY
                           else params)
            root = runs_dir() / "_sweeps" / f"{src.stem}-{profile}-{utc_stamp()}"
            for wave in range(1, max_waves + 1):
                specs = plan(src, plan_params, root / f"wave{wave}", cwd=paths.repo)
                if echo:
                    print(f"{src.stem}: wave {wave}: {len(specs)} run(s) missing from the run cache", flush=True)
                if not specs:
                    break
                ex = make_executor(executor, root / "submitit", partition=partition, gpus_per_job=gpus_per_job,
                                   max_parallel=max_parallel, timeout_min=timeout_min)
                run_jobs(ex, specs, retries=retries, echo=echo)
            else:
                raise RunnerError(f"{src.stem}: runs were still missing after {max_waves} waves; no page was executed")
        outcomes += run_notebooks([src.stem], profile=profile, overrides=overrides, force=force, paths=paths,
                                  echo=echo)
    return outcomes

