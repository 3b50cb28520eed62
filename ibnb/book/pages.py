"""The synthesis pages, which train nothing: the title page with its abstract (``00_index``), the scorecard
(``09_scorecard``) and the reproduce page (``99_reproduce``).

Their presets: ``results_profile`` picks which profile's tables to read; the smoke profile reads the committed
``cpu`` tables from the repository (``results_root``), so CI exercises the real code on real tables without
retraining anything. An empty ``results_root`` means ``$IBNB_RESULTS`` or ``<repo>/book/results``.

What they show, generated here so that the notebooks stay narrative: :func:`load` reads every chapter's results
table, claims table (``<stem>/<profile>-claims.csv``, written by :func:`ibnb.book.claims.write_claims`) and
calibration rows; :func:`index_numbers` / :func:`scorecard_numbers` are the numbers the prose glues,
:func:`scorecard_tables` the tables (through :func:`ibnb.book.tables.table`). A claims table in the format
before the claims redesign (no ``reason`` column, verdict wording instead of a verdict class) is not read; the
pages say which chapters it concerns and how to regenerate them (:func:`stale_note`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ibnb.book import claims as C
from ibnb.book import reproduce, scorecard
from ibnb.book.page import Markdown
from ibnb.book.profiles import require
from ibnb.book.results import read_all, results_dir
from ibnb.book.tables import Table, cite, table
from ibnb.core.utils import repo_root

INDEX, SCORECARD, REPRODUCE = "00_index", "09_scorecard", "99_reproduce"
_PRESETS = {"smoke": {"results_profile": "cpu", "results_root": "book/results"},
            "cpu": {"results_profile": "cpu", "results_root": ""},
            "gpu": {"results_profile": "gpu", "results_root": ""}}
#: one presets table per page this module serves
PRESETS = {INDEX: _PRESETS, SCORECARD: _PRESETS, REPRODUCE: _PRESETS}
#: the columns :func:`ibnb.book.claims.write_claims` writes
CLAIMS_COLUMNS = ["chapter", "section", *C.CLAIM_COLUMNS]


def validate(p: dict) -> None:
    require(p["results_profile"] in ("smoke", "cpu", "gpu"), "results_profile must be smoke, cpu or gpu")


def results_root(p: dict) -> Path:
    """The folder whose ``<stem>/<profile>.csv`` tables the page reads."""
    return repo_root() / p["results_root"] if p["results_root"] else results_dir()


@dataclass
class Inputs:
    """What a synthesis page reads: results tables, claims, calibration rows, effects and timings."""

    profile: str
    root: Path
    tables: dict[str, pd.DataFrame]
    claims: pd.DataFrame
    calibration: pd.DataFrame
    effects: pd.DataFrame
    timings: pd.DataFrame
    stale: list[str] = field(default_factory=list)  # chapters whose claims table has the old format


def read_claims_all(profile: str, root: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every chapter's claims (``ibnb.book.claims.read_claims``) in one frame, and the chapters whose claims
    table is in the old format (skipped)."""
    frames, stale = [], []
    for path in sorted(root.glob(f"*/{profile}-claims.csv")):
        head = pd.read_csv(path, nrows=0).columns
        if not set(CLAIMS_COLUMNS) <= set(head):
            stale.append(path.parent.name)
            continue
        frames.append(C.read_claims(path.parent.name, profile, root))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLAIMS_COLUMNS)
    return df, stale


def read_calibration_all(profile: str, root: Path) -> pd.DataFrame:
    """Every chapter's calibration rows (``<stem>/<profile>-calibration.csv``) in one frame."""
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""])
              for p in sorted(root.glob(f"*/{profile}-calibration.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["chapter", "quantity"])


def load(P: dict) -> Inputs:
    """Read everything the synthesis pages show, at ``P["results_profile"]`` from :func:`results_root`."""
    root, profile = results_root(P), P["results_profile"]
    tables = read_all(profile, root=root)
    claims, stale = read_claims_all(profile, root)
    return Inputs(profile, root, tables, claims, read_calibration_all(profile, root), scorecard.effects(tables),
                  reproduce.timings(root), stale)


def stale_note(x: Inputs) -> Markdown:
    """A warning box naming the chapters whose claims table predates the claims format (empty otherwise)."""
    if not x.stale:
        return Markdown("")
    names = ", ".join(f"`{s}`" for s in x.stale)
    return Markdown(f":::{{warning}}\nThe claims tables of {names} are in the format before the claims redesign "
                    f"and are not counted on this page. Re-execute them: `python -m ibnb run {' '.join(x.stale)} "
                    f"--profile {x.profile}`.\n:::\n")


#: the classes of reasons a claim is not testable at a budget, by a phrase of :func:`ibnb.book.claims.judge`'s reason
REASON_CLASSES = (("fewer than", "too few seeds"), ("convergence", "runs that did not pass the convergence check"),
                  ("no runs measure", "not measured at this profile"), ("not available", "data not available offline"))


def reason_class(reason) -> str:
    """The class of a not-testable claim's reason (:data:`REASON_CLASSES`; ``"another stated reason"`` else)."""
    text = _text(reason).lower()
    return next((name for phrase, name in REASON_CLASSES if phrase in text), "another stated reason")


def untestable_breakdown(claims: pd.DataFrame) -> str:
    """``"12 for too few seeds, 3 for runs that did not pass the convergence check"`` over the not-testable
    claims, largest class first (``""`` when there are none)."""
    d = claims[claims["verdict"] == C.NOT_TESTABLE] if len(claims) else claims
    if d.empty:
        return ""
    counts = d["reason"].map(reason_class).value_counts()
    return ", ".join(f"{n} for {name}" for name, n in counts.items())


def tally_sentence(claims: pd.DataFrame) -> str:
    """``"Of the 40 claims ..., 3 are supported, ..."`` and, for the not-testable ones, their reasons by class."""
    t, n = C.tally(claims), len(claims)
    if not n:
        return "No chapter has a claims table at this profile yet."
    text = (f"Of the {n} claims audited in the chapters, {t[C.SUPPORTED]} are supported by our measurements, "
            f"{t[C.CONTRADICTED]} contradicted and {t[C.CONSISTENT]} consistent with no effect; {t[C.INCONCLUSIVE]} "
            f"are inconclusive (the interval spans the threshold) and {t[C.NOT_TESTABLE]} are not testable at this "
            f"budget")
    why = untestable_breakdown(claims)
    return text + (f" ({why})." if why else ".")


def index_numbers(x: Inputs, P: dict) -> dict:
    """Every number the title page's abstract quotes: the decided headline effects, the mechanisms left
    undecided (with the reason), the claims tally and the book's measured wall time."""
    lines = [f"* **{m}** — {h}" for m in scorecard.MECHANISMS if (h := scorecard.headline(x.effects, m))]
    undecided = [f"{m} ({scorecard.undecided_reason(x.effects, m)})" for m in scorecard.MECHANISMS
                 if not scorecard.headline(x.effects, m)]
    cpu = x.timings[(x.timings["profile"] == "cpu") & (x.timings["notebook"] != INDEX)]
    return {"abstract_effects": Markdown("\n".join(lines) or "* (no headline effect is decided at this profile)"),
            "abs_undecided": Markdown(("Not headlined, because the book's rule does not decide them at this budget: "
                                       + "; ".join(undecided) + ".") if undecided else ""),
            "abs_tally": Markdown(tally_sentence(x.claims)), "abs_claims": len(x.claims),
            "abs_profile": Markdown(f"`{x.profile}`"), "abs_cpu_min": Markdown(f"{cpu['wall_s'].sum() / 60:.0f}"),
            "abs_cpu_n": len(cpu)}


def scorecard_numbers(x: Inputs, P: dict) -> dict:
    """Every number the scorecard page quotes."""
    comp = scorecard.comparisons(x.effects)
    words = comp["at the largest set"].map(lambda v: v if v in scorecard.DIRECTION_WORDS.values() else "undecided")
    multi = x.effects[x.effects["size"].isin(["small", "large"])].pivot_table(
        index=["chapter", "comparison"], columns="size", values="mean", observed=True)
    shrinks = multi[multi["small"].abs() > multi["large"].abs()] if len(multi) else multi
    chapters = sorted(set(x.effects["chapter"]))
    missing = [m for m in scorecard.MECHANISMS if m not in set(x.effects["mechanism"].astype(str))]
    no_extractor = sorted(set(x.tables) - set(scorecard.EXTRACTORS))
    datasets = x.effects.groupby("chapter")["dataset"].agg(lambda s: ", ".join(sorted(set(s))))
    notes = comp[comp["note"].astype(str) != ""].groupby("note", sort=False)["comparison"].apply(", ".join)
    t = C.tally(x.claims)
    return {
        "n_chapters": len(x.tables), "n_effect_chapters": len(chapters), "results_profile": Markdown(f"`{x.profile}`"),
        "chapters_md": Markdown(", ".join(f"`{c}`" for c in x.tables) or "none"),
        "no_extractor_md": Markdown(("Tables without a scorecard reduction (read, not summarised): "
                                     + ", ".join(f"`{c}`" for c in no_extractor) + ".") if no_extractor
                                    else "Every table found has a scorecard reduction."),
        "missing_md": Markdown(("Mechanisms without a measured effect at this profile: " + ", ".join(missing) + ".")
                               if missing else "Every mechanism has at least one measured effect."),
        "datasets_md": Markdown("; ".join(f"`{c}`: {d}" for c, d in datasets.items()) or "none"),
        "n_comparisons": len(comp), "n_helps": int((words == "helps").sum()), "n_hurts": int((words == "hurts").sum()),
        "n_unclear": int((words == "no clear effect").sum()), "n_undecided": int((words == "undecided").sum()),
        "n_multi": len(multi), "n_shrinks": len(shrinks),
        "notes_md": Markdown("\n".join(f"* *{n}*: {c}" for n, c in notes.items()) or "* (none)"),
        "n_claims": len(x.claims), "n_claim_chapters": int(x.claims["chapter"].nunique()),
        "c_sup": t[C.SUPPORTED], "c_con": t[C.CONTRADICTED], "c_cons": t[C.CONSISTENT], "c_inc": t[C.INCONCLUSIVE],
        "c_unt": t[C.NOT_TESTABLE], "claims_tally_md": Markdown(tally_sentence(x.claims)),
        "n_calibration": len(x.calibration), "stale_md": stale_note(x),
    }


def scorecard_figures(x: Inputs, P: dict) -> dict:
    return {"fig_scorecard": scorecard.forest_plot(x.effects)}


def _text(value) -> str:
    """A cell value as text, ``""`` for a missing one (NaN, None)."""
    return "" if value is None or value != value else str(value)


def _cite_p(source) -> str:
    """A parenthetical citation for citation keys (other text as it is)."""
    return cite(_text(source)).replace("{cite:t}", "{cite:p}", 1)


def _link(chapter: str, section: str) -> str:
    return f'<a href="{chapter}.html#{section or "claims-audit"}">{chapter[:2]}</a>'


def claims_index(claims: pd.DataFrame) -> Table | Markdown:
    """All chapters' claims in four wrapping columns (a phone shows them without scrolling sideways): the
    chapter (a link to its audit section), the claim with its rendered source and setting, our measurement,
    and the verdict with its reason."""
    def claim(r) -> str:
        src, setting = _cite_p(r["source"]), _text(r["setting"])
        return r["claim"] + (f" {src}" if src else "") + (f"; *setting:* {setting}" if setting else "")

    def verdict(r) -> str:
        why = _text(r["reason"])
        return f"**{r['verdict']}**" + (f" — {why}" if why else "")

    if claims.empty:
        return Markdown("No chapter has a claims table at this profile yet.\n")
    rows = [{"chapter": _link(r["chapter"], _text(r["section"])), "claim": claim(r),
             "measurement": r["measurement"], "verdict": verdict(r)} for _, r in claims.iterrows()]
    return table(pd.DataFrame(rows, columns=["chapter", "claim", "measurement", "verdict"]), cite_columns=())


def calibration_summary(cal: pd.DataFrame) -> Table | Markdown:
    """Every chapter's baselines next to their published anchors (or a sentence when there are none)."""
    if cal.empty:
        return Markdown("No chapter has calibration rows at this profile yet.\n")

    def with_extra(main, extra, sep=" ") -> str:
        return _text(main) + (f"{sep}{extra}" if extra else "")

    def difference(r) -> str:
        where = "within" if _text(r["within tolerance"]) == "yes" else "**outside**"
        return f"{_text(r['difference'])} ({where} {_text(r['tolerance'])})"

    df = pd.DataFrame([{"chapter": _link(r["chapter"], "claims-audit"),
                        "quantity": with_extra(r["quantity"], _text(r.get("setting")), "; "), "ours": _text(r["ours"]),
                        "published": with_extra(r["published"], _cite_p(r.get("source"))),
                        "difference": difference(r), "note": _text(r.get("note"))}
                       for _, r in cal.iterrows()])
    return table(df, cite_columns=())


def scorecard_tables(x: Inputs, P: dict) -> dict:
    """The scorecard page's tables: effects per comparison, the claims index and the calibration summary."""
    return {"effects": scorecard.scorecard_table(x.effects), "claims": claims_index(x.claims),
            "calibration": calibration_summary(x.calibration)}
