"""Generated parts of the reproduce page: measured time per chapter and profile, and every notebook's
papermill parameters with their value in each profile, read from its presets module (``profiles.PAGES``),
never typed by hand, and shown in full through the book's one table formatter."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ibnb.book import profiles
from ibnb.book.page import Markdown
from ibnb.book.tables import Table, table
from ibnb.core.utils import repo_root

TIMING_COLUMNS = ["notebook", "profile", "wall_s", "executed_at", "device", "cpu_threads", "commit"]


def timings(results_root: Path) -> pd.DataFrame:
    """``timings.csv`` written by the runner after every execution (empty frame when there is none)."""
    from ibnb.book.results import read_timings

    return read_timings(results_root)


def timing_frame(t: pd.DataFrame, notebooks: list[str]) -> pd.DataFrame:
    """Minutes per notebook (rows) and profile (columns); ``not measured`` where no execution was logged."""
    rows = []
    for stem in notebooks:
        row = {"notebook": f"`{stem}`"}
        for prof in profiles.PROFILES:
            hit = t[(t["notebook"] == stem) & (t["profile"] == prof)]
            row[f"{prof} (min)"] = f"{hit['wall_s'].iloc[0] / 60:.1f}" if len(hit) else "not measured"
        cpu = t[(t["notebook"] == stem) & (t["profile"] == "cpu")]
        row["cpu run: device, threads, date"] = (
            f"{cpu['device'].iloc[0]}, {cpu['cpu_threads'].iloc[0]}, {str(cpu['executed_at'].iloc[0])[:10]}"
            if len(cpu) else "—")
        rows.append(row)
    return pd.DataFrame(rows)


def timing_table(t: pd.DataFrame, notebooks: list[str]) -> Table:
    return table(timing_frame(t, notebooks))


def notebook_stems(notebooks_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (notebooks_dir or repo_root() / "notebooks").glob("*.ipynb"))


def value_text(value) -> str:
    """A parameter value as inline code, in full (``repr``; the table formatter escapes ``|``)."""
    return f"`{value!r}`"


def parameter_frame(stem: str) -> pd.DataFrame:
    """Every knob of notebook ``stem`` with its value at each profile (``-p NAME VALUE`` overrides it)."""
    pre = profiles.presets(stem)
    return pd.DataFrame([{"parameter": f"`{k}`", **{p: value_text(pre[p][k]) for p in profiles.PROFILES}}
                         for k in pre[profiles.DEFAULT_PROFILE]], columns=["parameter", *profiles.PROFILES])


def parameter_table(stem: str) -> Table:
    return table(parameter_frame(stem))


def parameter_tables(stems: list[str]) -> Markdown:
    """One section per notebook: its parameter table (every value in full)."""
    return Markdown("\n".join(f"### `{stem}`\n\n{parameter_table(stem).markdown}" for stem in stems))


def numbers(t: pd.DataFrame, stems: list[str], own: str) -> dict:
    """The numbers the reproduce page quotes: total and per-device ``cpu`` time, unmeasured chapters, the
    longest smoke run."""
    chapters = [s for s in stems if s != own]
    cpu = t[(t["profile"] == "cpu") & t["notebook"].isin(chapters)]
    missing = [s for s in chapters if s not in set(cpu["notebook"])]
    smoke = t[(t["profile"] == "smoke") & t["notebook"].isin(chapters)]
    devices = sorted(set(cpu["device"].astype(str) + " with " + cpu["cpu_threads"].astype(str)))
    return {"cpu_total_min": Markdown(f"{cpu['wall_s'].sum() / 60:.1f}"), "cpu_n": len(cpu),
            "n_chapters": len(chapters), "cpu_devices": Markdown(", ".join(devices) or "no machine yet"),
            "cpu_missing": Markdown(("Not yet measured at `cpu`: " + ", ".join(f"`{s}`" for s in missing) + ".")
                                    if missing else "Every chapter has a measured `cpu` run."),
            "smoke_longest": Markdown(f"The longest smoke run took {smoke['wall_s'].max():.0f} s." if len(smoke)
                                      else "No smoke run is logged yet.")}
