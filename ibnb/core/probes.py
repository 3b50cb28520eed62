"""One budget-halving probe per *cell* of a sweep, not per run.

A cell is a sweep's setting less its seed (model, method, data size …). Whether doubling the budget still pays
(test 3 of :mod:`ibnb.core.convergence`) is a property of the cell's recipe, so one probe answers it for the cell:
it is trained for the cell's first run that fails tests 1–2, and, if it passes, the cell's other failing runs take
its verdict with a reason that names the seed whose doubling was measured (:func:`shared_verdict`). A failed
probe passes no one; a run that passed on its own keeps its own reason.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from ibnb.core.convergence import probe_config
from ibnb.core.parallel import prefetch
from ibnb.core.runs import train_or_load


def cell_probes(cells: list, failed: list[bool]) -> list[int]:
    """The indices of the runs that get their cell's probe: the first run of each cell (``cells[i]``, any
    hashable) with ``failed[i]``, in order."""
    out, seen = [], set()
    for i, (cell, bad) in enumerate(zip(cells, failed)):
        if bad and cell not in seen:
            seen.add(cell)
            out.append(i)
    return out


def shared_verdict(row: dict, probe_row: dict) -> dict:
    """A failing run's convergence columns (``converged``, ``convergence``) after its cell's probe, taken with
    run ``probe_row`` (which has a ``seed``), passed; ``{}`` when ``row`` passed itself or the probe failed."""
    if row["converged"] or not probe_row["converged"]:
        return {}
    return {"converged": True, "convergence": f"{row['convergence']}; the cell's budget probe (seed "
                                              f"{probe_row['seed']}): {probe_row['convergence']}"}


def probe_run(spec):
    """The budget-halving probe of a :class:`~ibnb.core.parallel.Run` (half the epochs, no snapshots); ``None``
    for a one-epoch run."""
    half = probe_config(spec.config)
    return None if half is None else dataclasses.replace(spec, config=half, snapshots=False)


def share_within_cells(rows: list[dict], cells: list, probed: list[int]) -> None:
    """Give every failing row of a probed cell that cell's verdict (:func:`shared_verdict`), in place."""
    by_cell = {cells[i]: i for i in probed}
    for row, cell in zip(rows, cells):
        if (j := by_cell.get(cell)) is not None and row is not rows[j]:
            row.update(shared_verdict(row, rows[j]))


def probe_failing_cells(rows: list[dict], cells: list, specs: list, workers: int, device,
                        order: Callable[[list], list] | None = None) -> None:
    """In place: for each cell whose runs (``rows[i]`` with ``converged``, run ``specs[i]``) fail tests 1–2, train
    one budget-halving probe (``workers`` at a time, in ``order`` if given), re-check that run with it (test 3),
    mark it ``probed`` and let the cell's other failing runs share its verdict."""
    failed = [not r["converged"] and probe_run(s) is not None for r, s in zip(rows, specs)]
    probed = cell_probes(cells, failed)
    runs = [probe_run(specs[i]) for i in probed]
    prefetch(order(runs) if order else runs, workers, device)
    for i in probed:
        s = specs[i]
        _, hist, _ = train_or_load(s.model_name, s.train, s.val, config=s.config, model_kw=s.model_kw, step=s.step,
                                   device=device, progress=False, probe=True, snapshots=s.snapshots)
        rows[i].update(hist.convergence.columns(), probed=True)
    share_within_cells(rows, cells, probed)
