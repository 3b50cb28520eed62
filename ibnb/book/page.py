"""What a chapter page shows, generated: the *answer at this budget* box, glued numbers and numbered figures.

A chapter notebook calls, in its first hidden cell::

    out = chapter.run(P)
    audit = chapter.audit(out, P)
    page.publish(chapter.NOTEBOOK, P, audit, chapter.numbers(out, P), chapter.figures(out, P))

which writes the claims table, glues every number and figure (``{glue:text}`name``` in the prose,
``{glue:figure}`` blocks with a ``:name:`` for ``{numref}``) and displays the answer box.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from ibnb.book.claims import (CONSISTENT, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE, SUPPORTED, Calibration,
                              Claim, tally, write_claims)

ANSWER_CLASS = "ibnb-answer"  # the browser test looks for this class in a chapter's first screen


@dataclass
class Audit:
    """A chapter's audit: its claims and its calibration rows."""

    claims: list[Claim]
    calibration: list[Calibration] = field(default_factory=list)


class Markdown:
    """Markdown output (rendered with MyST by the book)."""

    def __init__(self, text: str):
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def answer_box(audit: Audit | Sequence[Claim], profile: str) -> Markdown:
    """The *answer at this budget* admonition: the tally, every decided claim with its number, and why the
    others are undecided (reasons counted)."""
    claims = audit.claims if isinstance(audit, Audit) else list(audit)
    t = tally(claims)
    lines = [f":::{{admonition}} Answer at this budget (profile `{profile}`)", f":class: tip {ANSWER_CLASS}", ""]
    lines.append(f"{len(claims)} claims audited: **{t[SUPPORTED]} supported**, **{t[CONTRADICTED]} contradicted**, "
                 f"**{t[CONSISTENT]} consistent**, {t[INCONCLUSIVE]} inconclusive, {t[NOT_TESTABLE]} not testable "
                 f"at this budget.")
    decided = [c for c in claims if c.decided]
    if decided:
        lines.append("")
        lines += [f"- *{c.verdict}*: {c.claim} — {c.measurement}" for c in decided]
    inc = [c for c in claims if c.verdict == INCONCLUSIVE]
    if inc:
        lines.append("")
        lines.append("Inconclusive (the interval spans the threshold): " + "; ".join(
            f"{c.claim} ({c.measurement})" for c in inc) + ".")
    why = Counter(c.reason for c in claims if c.verdict == NOT_TESTABLE)
    if why:
        lines.append("")
        lines.append("Not testable at this budget, by reason:")
        lines += [f"- {reason} ({n} claim{'s' if n != 1 else ''})" for reason, n in why.most_common()]
    if isinstance(audit, Audit) and audit.calibration:
        off = [c for c in audit.calibration if not c.within]
        lines.append("")
        lines.append(f"Calibration: {len(audit.calibration) - len(off)} of {len(audit.calibration)} calibration rows "
                     f"within tolerance of their published anchors" + (
                         " (off: " + "; ".join(f"{c.quantity} {c.row()['difference']}" for c in off)
                         + ")." if off else "."))
    lines.append(":::")
    return Markdown("\n".join(lines) + "\n")


def glue_numbers(numbers: dict) -> None:
    """Glue every entry (``display=False``); :class:`Markdown` values are glued as Markdown (``{glue:md}``)."""
    from IPython.display import Markdown as IPyMarkdown
    from myst_nb import glue

    for name, value in numbers.items():
        glue(name, IPyMarkdown(value.text) if isinstance(value, Markdown) else value, display=False)


def glue_figures(figures: dict) -> None:
    """Glue every matplotlib figure under its name (for ``{glue:figure}`` blocks) and close it."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    for name, fig in figures.items():
        glue(name, fig, display=False)
        plt.close(fig)


def claims_table(audit: Audit | Sequence[Claim]):
    """The claims audit as a book table (claim, rendered source, setting, measurement, verdict, why)."""
    import pandas as pd

    from ibnb.book.tables import table

    claims = audit.claims if isinstance(audit, Audit) else list(audit)
    df = pd.DataFrame([{"claim": c.claim, "source": c.source, "setting": c.setting,
                        "measurement": c.measurement, "verdict": c.verdict, "reason": c.reason} for c in claims])
    return table(df)


def calibration_table(audit: Audit):
    """The calibration rows as a book table."""
    import pandas as pd

    from ibnb.book.tables import cite, table

    df = pd.DataFrame([c.row() for c in audit.calibration])
    if not len(df):
        return table(df)
    df = df.drop(columns=["tolerance"])
    # a column with one value in every row (of three or more) is said once, above the table
    lifted = [c for c in ("source", "setting", "note") if len(df) >= 3 and df[c].nunique() == 1]
    out = table(df.drop(columns=lifted))
    said = [f"the {c} {cite(df[c].iloc[0])}" if c == "source" else f"the {c} “{df[c].iloc[0]}”"
            for c in lifted if df[c].iloc[0]]
    if said:
        out.markdown = f"All rows share {' and '.join(said)}.\n\n{out.markdown}"
    return out


def publish(stem: str, P: dict, audit: Audit, numbers: dict | None = None, figures: dict | None = None,
            *, section: str = "claims-audit") -> Markdown:
    """Write the claims (and calibration) table, glue numbers and figures, return the answer box."""
    write_claims(audit.claims, stem, P["profile"], section=section, calibration=audit.calibration)
    glue_numbers(numbers or {})
    glue_figures(figures or {})
    return answer_box(audit, P["profile"])
