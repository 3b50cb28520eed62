"""Independent runs in parallel worker processes, one share of the CPU threads each.

The book's small `cpu`-profile models cannot use two CPU threads: on the 2-core machine (AMD EPYC, AVX2, PyTorch
2.15, fp32, batch 32, forward + backward + step) the CNN of width 8 trains at 951 images/s with one thread and
1,050 with two, a ViT of dim 48 and depth 2 at 1,288 and 1,198. Two one-thread processes side by side kept
1,177 + 1,029 and 1,218 + 1,158 images/s, so a sweep of such runs finishes in about half the wall time when two
run at once. :func:`prefetch` trains the runs a sweep is about to ask for, ``workers`` at a time, into the run
cache; the sweep's own ``train_or_load`` calls then load them, so the results are those of the sequential code
(same runs, same keys). :func:`map_in_workers` does the same for whole functions (e.g. one seeded search per
model). With ``workers <= 1`` or on CUDA both do nothing / run in this process.

Workers are *spawned* (a fresh interpreter: no forked thread pools) with ``torch.set_num_threads(threads //
workers)``; they inherit the environment (``IBNB_RUNS``, ``IBNB_DATA``). A failed run stops the pool (pending runs
are cancelled, running ones finish into the cache) and is raised with the run it belongs to.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ibnb.core.data import ImageData
from ibnb.core.train import TrainConfig, resolve_device


@dataclass
class Run:
    """One run of :func:`ibnb.core.runs.train_or_load`, by its arguments."""

    model_name: str
    train: ImageData
    val: ImageData | None
    config: TrainConfig
    model_kw: dict = field(default_factory=dict)
    step: Any = None
    snapshots: bool = False

    def folder(self) -> Path:
        from ibnb.core.runs import prepare_run

        return prepare_run(self.model_name, self.train, self.val, self.config, self.model_kw, self.step)[0]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _train(run: Run) -> str:
    from ibnb.core.runs import train_or_load

    train_or_load(run.model_name, run.train, run.val, config=run.config, model_kw=run.model_kw, step=run.step,
                  device="cpu", progress=False, snapshots=run.snapshots)
    return run.folder().name


def _pool(workers: int) -> ProcessPoolExecutor:
    threads = max(1, torch.get_num_threads() // workers)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))


def _stood_in() -> bool:
    """Whether a dry run, cost estimate or sweep plan has put stand-ins for ``fit`` / ``load_or_fit`` into this
    process (:func:`ibnb.book.dryrun.swap_in`): workers would train with the real ones, so stay serial."""
    import ibnb.core.runs as runs_mod
    import ibnb.core.train as train_mod

    real = (("ibnb.core.train", "fit"), ("ibnb.core.runs", "load_or_fit"), ("ibnb.core.train", "fit"))
    now = (train_mod.fit, runs_mod.load_or_fit, runs_mod.fit)
    return any((f.__module__, f.__qualname__) != r for f, r in zip(now, real))


def _serial(workers: int, device) -> bool:
    return workers <= 1 or resolve_device(device).type != "cpu" or _stood_in()


def _gather(pool: ProcessPoolExecutor, futures: dict, what: Callable[[Any], str]) -> list:
    """The futures' results in submission order; the first failure cancels what has not started and is raised."""
    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    failed = [f for f in futures if f in done and f.exception() is not None]
    if failed:
        pool.shutdown(wait=True, cancel_futures=True)
        err = failed[0].exception()
        raise RuntimeError(f"{what(futures[failed[0]])} failed in a worker process: {type(err).__name__}: {err}") \
            from err
    return [f.result() for f in futures]


def prefetch(runs: Sequence[Run], workers: int, device="auto") -> set[str]:
    """Train the ``runs`` the run cache lacks, ``workers`` at a time (longest first: the order given); returns
    the names of the run folders trained here, so a sweep can report those runs as not cached."""
    if _serial(workers, device):
        return set()
    from ibnb.core.runs import describe_run, is_cached, run_identity

    todo, seen = [], set()
    for r in runs:
        folder = r.folder()
        if folder.name not in seen and not is_cached(folder, r.snapshots):
            seen.add(folder.name)
            todo.append(r)
    if not todo:
        return set()

    def what(r: Run) -> str:
        return "run " + describe_run(run_identity(r.model_name, {"model_kw": r.model_kw}, r.config, len(r.train)),
                                     r.folder())

    with _pool(workers) as pool:
        return set(_gather(pool, {pool.submit(_train, r): r for r in todo}, what))


def map_in_workers(fn: Callable, args: Sequence[tuple], workers: int, device="auto") -> list:
    """``[fn(*a) for a in args]``, ``workers`` calls at a time in worker processes (``fn`` and its arguments
    picklable: a module-level function); in this process when serial."""
    if _serial(workers, device) or len(args) <= 1:
        return [fn(*a) for a in args]
    with _pool(workers) as pool:
        futures = {pool.submit(fn, *a): i for i, a in enumerate(args)}
        return _gather(pool, futures, lambda i: f"{fn.__name__} (call {i + 1} of {len(args)})")
