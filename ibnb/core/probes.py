"""One budget-halving probe per *cell* of a sweep, not per run.

A cell is a sweep's setting less its seed (model, method, data size …). Whether doubling the budget still pays
(test 3 of :mod:`ibnb.core.convergence`) is a property of the cell's recipe, so one probe answers it for the cell:
it is trained for the cell's first run that fails tests 1–2, and, if it passes, the cell's other failing runs take
its verdict with a reason that names the seed whose doubling was measured (:func:`shared_verdict`). A failed
probe passes no one; a run that passed on its own keeps its own reason.
"""
from __future__ import annotations

import dataclasses

from ibnb.core.convergence import probe_config


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
