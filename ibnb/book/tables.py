"""One formatter for every table of the book: :func:`table`.

It renders a DataFrame as a MyST Markdown table (so citation keys become rendered citations): readable headers,
no index column, thousands separators, a fixed number of digits per column, ``—`` instead of ``NaN``, ``yes`` /
``no`` for booleans, ``|`` escaped inside cells, and nothing cut with "…". Intervals are formatted upstream by
:meth:`ibnb.book.claims.Effect.text` (``+2.9 [1.1, 4.7] points, n = 3``).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from numbers import Integral, Real

import pandas as pd

from ibnb.core.utils import repo_root

#: snake_case column names the book uses everywhere, and what a reader sees instead
HEADERS = {
    "n_train": "training images", "n_test": "test images", "test_acc": "test accuracy (%)",
    "test_nll": "test NLL (nats)", "test_error": "test error (%)", "params": "parameters", "seed": "seed",
    "seeds": "seeds", "n_seeds": "seeds", "wall_s": "wall time (s)", "images_per_s": "images/s",
    "model": "model", "augment": "augmentation", "epochs": "epochs", "steps": "steps", "source": "source",
    "claim": "claim", "setting": "setting", "measurement": "our measurement", "verdict": "verdict",
    "reason": "why", "converged": "converged", "lr": "learning rate", "weight_decay": "weight decay",
    "batch_size": "batch size", "dataset": "dataset", "gflops": "GFLOP/s", "error_pct": "error (%)",
}


@lru_cache(maxsize=1)
def bib_keys() -> frozenset[str]:
    """Citation keys of ``book/references.bib``."""
    bib = repo_root() / "book" / "references.bib"
    return frozenset(re.findall(r"^@\w+\{([^,\s]+),", bib.read_text(), flags=re.M)) if bib.exists() else frozenset()


def cite(source: str) -> str:
    """``{cite:t}`key1,key2``` for citation keys of the bibliography; other text is kept as it is."""
    keys = [k.strip() for k in str(source).split(",") if k.strip()]
    if keys and all(k in bib_keys() for k in keys):
        return "{cite:t}`" + ",".join(keys) + "`"
    return str(source) if source == source else ""


def header(name: str) -> str:
    """A readable header for a column name (:data:`HEADERS`, else underscores as spaces)."""
    return HEADERS.get(name, str(name).replace("_", " "))


def cell(value, digits: int = 1) -> str:
    """One cell as text: ints with separators, reals with ``digits``, NaN/None as ``—``, bools as yes/no."""
    if value is None or (isinstance(value, Real) and not isinstance(value, bool) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        v = float(value)
        return f"{v:,.{digits}f}" if abs(v) >= 1e-3 * 10 ** -digits or v == 0 else f"{v:.1e}"
    text = str(value)
    return "—" if text.lower() in ("nan", "none", "") else text


class Table:
    """A formatted table; displays as MyST Markdown in a notebook (and as plain text elsewhere)."""

    def __init__(self, markdown: str, frame: pd.DataFrame):
        self.markdown, self.frame = markdown, frame

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return self.frame.to_string(index=False)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(df: pd.DataFrame, *, columns: dict[str, str] | list[str] | None = None,
          digits: int | dict[str, int] = 1, percent: tuple[str, ...] = (), cite_columns=("source",),
          index: bool = False) -> Table:
    """Format ``df`` for the page.

    ``columns`` picks and orders columns (a list) or picks, orders and renames them (a dict: name → header);
    otherwise :func:`header` names them. ``digits`` is one number or one per column; ``percent`` columns
    hold fractions shown ×100; ``cite_columns`` hold citation keys; ``index=True`` keeps the index as the
    first column (it is dropped otherwise)."""
    d = df.reset_index() if index else df.reset_index(drop=True)
    if columns is not None:
        names = list(columns)
        missing = [c for c in names if c not in d.columns]
        if missing:
            raise KeyError(f"table: no column(s) {missing}; have {list(d.columns)}")
        d = d[names]
        heads = [columns[c] if isinstance(columns, dict) else header(c) for c in names]
    else:
        heads = [header(c) for c in d.columns]
    rows = []
    for _, r in d.iterrows():
        out = []
        for c in d.columns:
            v = r[c]
            if c in percent and isinstance(v, Real) and not isinstance(v, bool):
                v = 100 * v
            nd = digits.get(c, 1) if isinstance(digits, dict) else digits
            text = cite(v) if c in cite_columns and isinstance(v, str) else cell(v, nd)
            out.append(_escape(text))
        rows.append(out)
    lines = ["| " + " | ".join(_escape(h) for h in heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    shown = pd.DataFrame(rows, columns=heads)
    return Table("\n".join(lines) + "\n", shown)
