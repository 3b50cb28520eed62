"""Chapter 06 — the Deep Weight Prior (Atanov et al. 2019), the chapter contract of :mod:`ibnb.chapters`.

Kernel VAEs fitted to the filters of CNNs trained on PACS sketches become the prior of a Bayesian CNN trained on a
few MNIST images, against log-uniform, N(0, 1) and learned-Gaussian priors and a deterministic net with L2; a
second experiment compares initialisations. Files: ``presets.py`` (knobs), ``method.py`` (priors, the auxiliary
bound, the train steps), ``source.py`` (source nets and VAEs), ``sweep.py`` (the target runs), ``claims_audit.py``
(claims and calibration), ``figures.py``; the networks are in :mod:`ibnb.core.models.bayesian`,
:mod:`ibnb.core.models.kernel_vae` and :mod:`ibnb.core.models.lenet`.
"""
from __future__ import annotations

import math

import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, effect_of, group_effect, tally
from ibnb.book.page import Audit, Markdown
from ibnb.book.tables import Table, table
from ibnb.chapters.deep_weight_prior import claims_audit as _audit
from ibnb.chapters.deep_weight_prior import figures as _figures
from ibnb.chapters.deep_weight_prior.presets import INIT_LABELS, NOTEBOOK
from ibnb.chapters.deep_weight_prior.source import HELD_PER_CLASS
from ibnb.chapters.deep_weight_prior.sweep import Outcome, run_sweep
from ibnb.core.models.bayesian import TRUNC_ALPHA_INIT
from ibnb.core.reference import changes

__all__ = ["NOTEBOOK", "Outcome", "run", "audit", "numbers", "figures", "tables"]
#: short glue keys per method
KEYS = {"DWP": "dwp", "log-uniform": "lu", "N(0,1)": "n01", "learned Gaussian": "lg", "L2 (deterministic)": "l2"}
INIT_KEYS = {"xavier": "xav", "learned filters": "filt", "DWP samples": "dwps"}


def run(P: dict, progress: bool = False) -> Outcome:
    """Source nets, VAEs and every target run; writes ``book/results/06_deep_weight_prior/<profile>.csv``."""
    return run_sweep(P, progress=progress)


def audit(out: Outcome, P: dict) -> Audit:
    """Claims (through :func:`ibnb.book.claims.judge`, DWP claims gated on the baselines' calibration) and
    calibration rows against the paper's MNIST table."""
    return _audit.audit(out.df, P)


def _source_numbers(out: Outcome, P: dict) -> dict:
    st = out.source_table
    return {"n_src": len(out.source), "n_nets": P["n_source_nets"], "w1": P["width1"], "w2": P["width2"],
            "src_epochs": P["source_epochs"], "src_held": HELD_PER_CLASS * len(out.source.classes),
            "n_src_classes": len(out.source.classes), "src_chance": Markdown(f"{100 / len(out.source.classes):.0f} %"),
            "src_acc": Markdown(effect_of(st["source_acc"].tolist(), unit="%",
                                          converged=st["converged"].tolist()).text(signed=False)),
            "src_converged": int(st["converged"].sum()), "zdim": P["z_dim"], "vae_steps": P["vae_steps"],
            "n_k1": len(out.kernels["conv1"]), "n_k2": len(out.kernels["conv2"]),
            "src_sd1": float(out.kernels["conv1"].std()), "src_sd2": float(out.kernels["conv2"].std())}


def _small_numbers(out: Outcome, P: dict, e: dict) -> dict:
    small = _audit.small_runs(out.df)
    lo, hi = min(P["sizes"]), max(P["sizes"])
    steps = int(small["steps"].max())
    n = {"sizes_txt": Markdown(", ".join(f"{s:,}" for s in P["sizes"])), "n_seeds": P["seeds"],
         "nll_chance": Markdown(f"{math.log(10):.2f}"), "alpha_logit": Markdown(f"{TRUNC_ALPHA_INIT:g}"),
         "alpha_init": Markdown(f"{1 / (1 + math.exp(-TRUNC_ALPHA_INIT)):.2f}"),
         "steps": steps, "round_images": P["round_images"], "ls2_init": float(P["log_sigma2_init"]),
         "classifier_txt": Markdown("is deterministic (no prior, no KL), as in the authors' code"
                                    if P["classifier_prior"] == "none" else "has a N(0,1) prior"), "kl_ratio": hi // lo,
         "passes_lo": steps * min(P["target_batch"], lo) // lo, "passes_hi": steps * min(P["target_batch"], hi) // hi, "tbatch": P["target_batch"], "lr": float(P["lr"]), "n_lo": lo, "n_hi": hi,
         "n_test": int(out.df["n_test"].iloc[0]), "n_val": 10 * P["val_per_class"], "n_sizes": len(P["sizes"]),
         "n_small_converged": int(small["converged"].sum()), "n_small": len(small),
         "init_txt": Markdown("samples of the DWP of their layer, one per kernel (the authors' code does this for the "
                              "DWP and the L2 baseline; here every method starts so)"
                              if P["target_init"] == "DWP samples" else "PyTorch's default (uniform) initialisation"),
         "eval_txt": Markdown(f"that of the ensemble of {P['mc_samples']} weight samples (the mean of their softmax "
                              "outputs), as the authors report it" if P["mc_samples"] else
                              "that of the posterior mean"),
         "schedule_txt": Markdown({"linear": "decayed linearly to 0, as in the authors' code", "constant": "constant",
                                   "cosine": "cosine-decayed to 0"}[P["target_schedule"]])}
    n["best_lo"] = Markdown(_best_text(e, P["methods"], lo))
    n.update(_val_drop_numbers(small, lo))
    fin = small.groupby(["method", "n_train"])["final_nll"].mean()
    for m in P["methods"]:
        key = KEYS[m]
        for size, tag in ((lo, "lo"), (hi, "hi")):
            n[f"acc_{key}_{tag}"] = Markdown(e["acc"][(m, size)].text(signed=False))
            if m != "DWP":
                n[f"vs_{key}_{tag}"] = Markdown(e["vs"][(m, size)].text())
        if m != "DWP":
            n[f"avg_{key}"] = Markdown(e["avg"][m].text())
        n[f"nll_{key}_lo"] = float(fin.loc[(m, lo)])
    return n


def _best_text(e: dict, methods: list[str], size: int) -> str:
    """The method with the highest mean test accuracy at ``size`` and the methods whose intervals overlap its."""
    acc = {m: e["acc"][(m, size)] for m in methods}
    best = max(acc, key=lambda m: acc[m].mean)
    tied = [m for m in methods if m != best and acc[m].high >= acc[best].low and acc[best].high >= acc[m].low]
    text = f"`{best}` by its mean"
    if tied:
        text += (f", but its interval overlaps those of {', '.join(f'`{m}`' for m in tied)}: at this size the "
                 f"intervals do not separate {'them' if len(tied) > 1 else 'the two'}")
    return text


def _val_drop_numbers(small: pd.DataFrame, size: int) -> dict:
    """How far each run at ``size`` ends below its own best validation accuracy (points): the DWP's range and the
    other methods' range."""
    d = small[small["n_train"] == size].assign(drop=lambda x: 100 * (x["best_val_acc"] - x["final_val_acc"]))
    dwp, rest = d[d["method"] == "DWP"]["drop"], d[d["method"] != "DWP"]["drop"]
    rng = lambda v: f"{v.min():.1f}–{v.max():.1f}" if len(v) else "—"  # noqa: E731
    return {"drop_dwp_lo": Markdown(rng(dwp)), "drop_rest_lo": Markdown(rng(rest)), "drop_n_dwp": len(dwp)}


def _failed_text(df: pd.DataFrame) -> str:
    """Every run that failed its convergence check, named (method, training images, seed) with the check's reason."""
    bad = df[~df["converged"].astype(bool)]
    if bad.empty:
        return "none"
    return "; ".join(f"{INIT_LABELS.get(r.method, r.method)}, {int(r.n_train):,} images, seed {int(r.seed)} "
                     f"({r.convergence})" for r in bad.itertuples())


def _init_numbers(out: Outcome, P: dict, e: dict) -> dict:
    init = _audit.init_runs(out.df)
    n = {"init_n": int(init["n_train"].iloc[0]), "init_seeds": P["init_seeds"], "init_epochs": P["init_epochs"],
         "init_failed": int((~init["converged"].astype(bool)).sum()), "init_runs": len(init)}
    for i in P["inits"]:
        d = init[init["method"] == i]
        n[f"loss1_{INIT_KEYS[i]}"] = float(d["first_epoch_loss"].mean())
        n[f"iacc_{INIT_KEYS[i]}"] = Markdown(group_effect(d).text(signed=False))
        if i in e["init"]:
            n[f"gain_{INIT_KEYS[i]}"] = Markdown(e["init"][i].text(digits=3))
    return n


def _calibration_reading(cal: list, gate: tuple[bool, str]) -> str:
    """One generated sentence: how far the baselines are from the paper's table, and what follows."""
    base = [c for c in cal if any(c.quantity.startswith(b + " ") for b in _audit.GATE_BASELINES)]
    within = sum(c.within for c in base)
    if gate[0]:
        return (f"all {len(base)} baseline rows are within ±{_audit.TOLERANCE:g} points of it, so the DWP "
                f"comparisons are decided by the claims audit below.")
    return (f"{within} of {len(base)} baseline rows are within ±{_audit.TOLERANCE:g} points of it; "
            f"{gate[1]}. **No conclusion about the DWP is drawn from these runs.**")


def _protocol_text(P: dict, steps: int) -> str:
    """Where this profile's protocol differs from the authors' code (:data:`claims_audit.AUTHORS`), generated."""
    a = _audit.AUTHORS
    mine = f"an ensemble of {P['mc_samples']} weight samples" if P["mc_samples"] else "the posterior mean"
    evaluation = f"the test accuracy of {mine}" + (", as theirs" if P["mc_samples"] == a["mc_samples"]
                                                   else f" (theirs: {a['eval']})")
    init = ("the conv kernels (posterior means) of every method initialised with samples of the DWP (theirs: "
            f"{a['init']}; their released code does not say how the other baselines were initialised)"
            if P["target_init"] == "DWP samples" else f"default initialisation of the conv kernels (theirs: {a['init']})")
    return (f"conv widths {P['width1']}/{P['width2']} (theirs {a['widths'][0]}/{a['widths'][1]}); source kernels "
            f"from {P['n_source_nets']} nets trained on PACS sketches (theirs: {a['source']}, which `shared/data` "
            f"does not hold); one VAE setting for both layers ({P['z_dim']}-dimensional latent, hidden width "
            f"{P['vae_hidden']}; theirs: {a['vae']}); {steps:,} steps of batch {P['target_batch']} per run (theirs: "
            f"{a['epochs_50']:,} full-batch epochs at 50 images, batch {a['batch']}); one weight sample per "
            f"mini-batch in training (theirs: {a['forward']}); {evaluation}; {init}; {P['seeds']} seeds (theirs: "
            f"{a['seeds']})")


def numbers(out: Outcome, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    e = _audit.effects(out.df, P)
    n = {**_source_numbers(out, P), **_small_numbers(out, P, e), **_init_numbers(out, P, e)}
    a = _audit.audit(out.df, P)
    t = tally(a.claims)
    gate = _audit.baseline_gate(a.calibration)
    n.update(n_claims=len(a.claims), n_not_testable=t[NOT_TESTABLE], n_decided=len(a.claims) - t[NOT_TESTABLE],
             n_cal=len(a.calibration), n_cal_within=sum(c.within for c in a.calibration),
             cal_tol=_audit.TOLERANCE, gate=Markdown(gate[1] or "the baselines are within tolerance"),
             calibration_reading=Markdown(_calibration_reading(a.calibration, gate)),
             protocol_txt=Markdown(_protocol_text(P, int(_audit.small_runs(out.df)["steps"].max()))),
             earlier=Markdown(changes({c.claim: c.verdict for c in a.claims}, _audit.EARLIER)),
             earlier_setting=Markdown(_audit.EARLIER_SETTING),
             gate_names=Markdown(_audit.names_text(_audit.GATE_BASELINES)),
             failed_runs=Markdown(_failed_text(out.df)), n_failed=int((~out.df["converged"].astype(bool)).sum()),
             n_runs=len(out.df), gpu_txt=Markdown(_gpu_text()))
    return n


def _gpu_text() -> str:
    """How far the ``gpu`` profile follows the authors' protocol (:data:`claims_audit.AUTHORS`), generated."""
    from ibnb.book.profiles import presets

    g, a = presets(NOTEBOOK)["gpu"], _audit.AUTHORS
    same_widths = (g["width1"], g["width2"]) == tuple(a["widths"])
    steps_50 = g["target_steps"] == a["epochs_50"]
    return (f"the `gpu` profile runs {'the authors’' if same_widths else 'other'} conv widths ({g['width1']}/"
            f"{g['width2']}) and {g['target_steps']:,} steps per run, which "
            + (f"equals their {a['epochs_50']:,} full-batch epochs at 50 images only" if steps_50
               else f"differs from their {a['epochs_50']:,} full-batch epochs")
            + f"; it trains {g['n_source_nets']} source nets (theirs: {a['n_source_nets']}) on PACS sketches (theirs: "
            f"notMNIST) and VAEs of hidden width {g['vae_hidden']} (theirs: {a['vae_hidden'][0]} and "
            f"{a['vae_hidden'][1]})")


def figures(out: Outcome, P: dict) -> dict:
    """The chapter's figures by glue name."""
    return {"fig_source": _figures.source_examples(out.source),
            "fig_kernels": _figures.kernels_and_samples(out.kernels, out.vaes),
            "fig_vae": _figures.vae_losses(out.vae_losses),
            "fig_small_data": _figures.accuracy_vs_size(_audit.small_runs(out.df), P["methods"], _audit.PAPER),
            "fig_init": _figures.init_curves(out.init_histories, P["inits"], P["init_seeds"])}


def _seeds_in_header(frame: pd.DataFrame, signed: bool = True) -> pd.DataFrame:
    """Effects as text; where every effect of the table has the same number of seeds, ``n`` is said once in the
    first header instead of in every cell."""
    cells = [v for col in frame.columns[1:] for v in frame[col]]
    ns = {v.n for v in cells}
    if len(ns) != 1:
        return frame.apply(lambda col: col.map(lambda v: v.text(signed=signed) if hasattr(v, "text") else v))
    n = ns.pop()
    text = frame.apply(lambda col: col.map(lambda v: v.text(signed=signed).rsplit(", n = ", 1)[0]
                                           if hasattr(v, "text") else v))
    first = text.columns[0]
    return text.rename(columns={first: f"{first} (n = {n} seed{'s' if n != 1 else ''} per cell)"})


def tables(out: Outcome, P: dict) -> dict:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    e = _audit.effects(out.df, P)
    accuracy = pd.DataFrame([{"method": m, **{f"{n:,} images": e["acc"][(m, n)] for n in P["sizes"]}}
                             for m in P["methods"]])
    versus = pd.DataFrame([{"DWP − …": m, **{f"{n:,} images": e["vs"][(m, n)] for n in P["sizes"]},
                            "averaged over sizes": e["avg"][m]} for m in P["methods"] if m != "DWP"])
    accuracy, versus = _seeds_in_header(accuracy, signed=False), _seeds_in_header(versus)
    st = out.source_table.assign(source_acc=lambda d: 100 * d["source_acc"])
    source = table(st, columns={"seed": "seed", "source_acc": "held-out accuracy (%)", "converged": "converged",
                                "convergence": "convergence check"})
    return {"accuracy": table(accuracy), "versus": table(versus), "source": source}
