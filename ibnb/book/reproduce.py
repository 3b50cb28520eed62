"""Generated parts of the reproduce page: measured time per chapter and profile, and every notebook's
papermill parameters with their value in each profile (read from the code, never typed by hand)."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pandas as pd

from ibnb.book import profiles
from ibnb.core.utils import repo_root


def timings(results_root: Path) -> pd.DataFrame:
    """``timings.csv`` written by the runner after every execution (empty frame when there is none)."""
    path = results_root / "timings.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(
        columns=["notebook", "profile", "wall_s", "executed_at", "device", "cpu_threads", "commit"])


def timing_table(t: pd.DataFrame, notebooks: list[str]) -> pd.DataFrame:
    """Minutes per notebook (rows) and profile (columns); ``not measured`` where no execution was logged."""
    rows = []
    for stem in notebooks:
        row = {"notebook": stem}
        for prof in profiles.PROFILES:
            hit = t[(t["notebook"] == stem) & (t["profile"] == prof)]
            row[f"{prof} (min)"] = (f"{hit['wall_s'].iloc[0] / 60:.1f}" if len(hit) else "not measured")
        cpu = t[(t["notebook"] == stem) & (t["profile"] == "cpu")]
        row["cpu run: device, threads, date"] = (
            f"{cpu['device'].iloc[0]}, {cpu['cpu_threads'].iloc[0]}, {str(cpu['executed_at'].iloc[0])[:10]}"
            if len(cpu) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def notebook_stems(notebooks_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (notebooks_dir or repo_root() / "notebooks").glob("*.ipynb"))


def _load_presets() -> None:
    import ibnb.experiments

    for m in pkgutil.iter_modules(ibnb.experiments.__path__):
        importlib.import_module(f"ibnb.experiments.{m.name}")


def _short(value, width: int = 60) -> str:
    text = repr(value)
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|")


def parameter_table(stem: str) -> pd.DataFrame:
    """Every knob of notebook ``stem`` with its value at each profile (``-p NAME VALUE`` overrides it)."""
    _load_presets()
    pre = profiles.presets(stem)
    return pd.DataFrame([{"parameter": f"`{k}`", **{p: f"`{_short(pre[p][k])}`" for p in profiles.PROFILES}}
                         for k in pre["cpu"]])
