"""What the page of chapter 07 quotes: :func:`numbers` (every glued number and sentence), :func:`tables` (every
table, through :func:`ibnb.book.tables.table`) and :func:`summary` (the per-bar data of the figures).

Every accuracy is a mean over seeds with its Student-t 95 % interval (``36.5 [18.7, 54.3] %, n = 2``); every
comparison a seed-paired difference (``+1.6 [-0.2, 3.4] points, n = 2``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from ibnb.book import profiles
from ibnb.book.page import Markdown
from ibnb.book.tables import Table, table
from ibnb.chapters.self_supervised import claims_audit as A
from ibnb.chapters.self_supervised.presets import NOTEBOOK
from ibnb.core.models import count_parameters, create_model
from ibnb.core.models.ssl import SSLNet, make_encoder

STUDY_N1_PARAMS = 403_530  # the study's N1 (quoted)
#: NVIDIA A100's dense bf16 tensor-core peak (datasheet, quoted) and the utilisation range assumed for the estimate
A100_BF16_FLOPS, A100_UTILISATION = 312e12, (0.10, 0.40)
#: ResNet-18 on CIFAR-10, online linear top-1 after 1,000 epochs of pretraining (solo-learn's README, quoted)
SOLO_LEARN_1000 = {"vicreg": 92.07, "barlow_twins": 92.10, "wmse": 88.67}


def training_flops_per_view(backbone: str, backbone_kw: dict, projector_dims) -> float:
    """FLOPs of forward + backward of encoder and projector for one 3×32×32 view (``torch.utils.flop_counter``)."""
    net = SSLNet(backbone, backbone_kw, projector_dims, 10, 3)
    x = torch.randn(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        net.projector(net.encoder(x)).square().mean().backward()
    return counter.get_total_flops() / 2


def _cost_numbers(df, p, b) -> dict:
    """What pretraining costs here, measured, and what the study's ResNet-18 run would cost (an estimate)."""
    vic = A.select(df, p, "vicreg", "linear", backbone=b)
    per_view = training_flops_per_view(b, p["backbone_kw"][b], p["projector_dims"])
    views_per_s = 2 * float(vic["images_per_s"].mean())
    rate = per_view * views_per_s
    r18 = training_flops_per_view("resnet18", {"width": 64}, [1024, 1024, 1024])
    total = r18 * 2 * A.STUDY["images"] * A.STUDY["epochs"]
    lo, hi = (total / (A100_BF16_FLOPS * u) / 60 for u in A100_UTILISATION[::-1])
    return {"pre_gflop_view": per_view / 1e9, "pre_views_s": views_per_s, "pre_gflops": rate / 1e9,
            "r18_gflop_view": r18 / 1e9, "r18_pflop": total / 1e15, "r18_cpu_h": total / rate / 3600,
            "r18_gpu_min_lo": lo, "r18_gpu_min_hi": hi,
            "a100_util": Markdown(f"{100 * A100_UTILISATION[0]:.0f}–{100 * A100_UTILISATION[1]:.0f} %"),
            "r18_per_solo": float(100 * A.QUOTED[("resnet18", "vicreg", "linear")] / SOLO_LEARN_1000["vicreg"])}


def order(p: dict) -> list[str]:
    """The representations, baselines first."""
    return ["pixels", "supervised"] + list(p["methods"])


def summary(df: pd.DataFrame, p: dict, items, *, backbone: str, value: str = "test_acc") -> pd.DataFrame:
    """One row per ``(group, bar, select-kwargs)`` of ``items``: mean, interval half-width (0 for one seed), n."""
    rows = []
    for group, bar, kw in items:
        e = A.accuracy(df, p, backbone=backbone, value=value, **kw)
        half = (e.high - e.low) / 2 if e.n > 1 and math.isfinite(e.low) else 0.0
        rows.append(dict(group=group, bar=bar, mean=e.mean, half=half, n=e.n))
    return pd.DataFrame(rows)


def _md(effect) -> Markdown:
    return Markdown(effect.text(signed=False) if effect.n else "not measured")


def _diff_md(effect) -> Markdown:
    return Markdown(effect.text() if effect.n else "not measured")


def _probe_numbers(df, p, b) -> dict:
    out = {}
    for m in order(p):
        out[f"lin_{m}"] = _md(A.accuracy(df, p, m, backbone=b))
        out[f"top5_{m}"] = float(A.accuracy(df, p, m, backbone=b, value="test_top5").mean)
        out[f"knn_{m}"] = _md(A.accuracy(df, p, m, "knn", backbone=b))
    out["e2e_sup"] = _md(A.accuracy(df, p, "supervised", "end_to_end", backbone=b))
    out["e2e_sup_top5"] = float(A.accuracy(df, p, "supervised", "end_to_end", backbone=b, value="test_top5").mean)
    for m in p["methods"]:
        out[f"vs_sup_{m}"] = _diff_md(A.difference(df, p, dict(method=m), dict(method="supervised",
                                                                                 evaluation="end_to_end"), backbone=b))
        out[f"vs_pix_{m}"] = _diff_md(A.difference(df, p, dict(method=m), dict(method="pixels"), backbone=b))
        out[f"knnpix_{m}"] = _diff_md(A.knn_margin(df, p, m, backbone=b))
    knn = {m: A.accuracy(df, p, m, "knn", backbone=b).mean for m in order(p)}
    lin = {m: A.accuracy(df, p, m, backbone=b).mean for m in p["methods"]}
    out["knn_best"] = Markdown(A.LABEL[max(knn, key=lambda k: -np.inf if knn[k] != knn[k] else knn[k])])
    out["best_ssl"] = Markdown(A.LABEL[max(lin, key=lambda k: -np.inf if lin[k] != lin[k] else lin[k])])
    passed = [A.LABEL[m] for m in p["methods"] if A.gate(df, p, [(m, None)], backbone=b)[0]]
    if not passed:
        phrase = (f"none of the {len(p['methods'])} self-supervised encoders clears it: at this budget they are "
                  f"under-trained, and their comparisons are not evidence about the methods")
    elif len(passed) < len(p["methods"]):
        phrase = f"only {', '.join(passed)} of the {len(p['methods'])} self-supervised encoders clear it"
    else:
        phrase = f"all {len(p['methods'])} self-supervised encoders clear it"
    out["gate_phrase"] = Markdown(phrase)
    return out


def _monitor_numbers(out_, p, b) -> dict:
    out, collapsed = {}, []
    for m in p["methods"]:
        f = out_.histories[(b, m, p["recipe"], 0)]
        out[f"std_{m}"] = float(f["train_std"].iloc[-1])
        out[f"erank0_{m}"] = float(f["train_erank"].iloc[0])
        out[f"erank_{m}"] = float(f["train_erank"].iloc[-1])
        if out[f"std_{m}"] < 0.1:
            collapsed.append(A.LABEL[m])
    for m in list(p["methods"]) + ["supervised"]:
        s = out_.spectra[(b, m)]
        out[f"top1share_{m}"] = float(100 * s[0])
        out[f"k90_{m}"] = int(np.searchsorted(np.cumsum(s), 0.9) + 1)
    out["collapse_phrase"] = Markdown(
        "none of the self-supervised runs collapsed (normalised std, averaged over the last epoch's batches, "
        "above 0.1)" if not collapsed else f"{', '.join(collapsed)} collapsed (normalised std below 0.1)")
    return out


def _semi_transfer_numbers(df, p, b) -> dict:
    out = {}
    for frac, tag in zip(p["semi_fractions"], ("1", "10")):
        ev = f"semi_{frac:g}"
        for m in list(p["methods"]) + ["scratch"]:
            out[f"semi{tag}_{m}"] = _md(A.accuracy(df, p, m, ev, backbone=b))
        for m in p["methods"]:
            out[f"semi{tag}_gain_{m}"] = _diff_md(A.difference(df, p, dict(method=m, evaluation=ev),
                                                               dict(method="scratch", evaluation=ev), backbone=b))
    for d in p["transfer"]:
        acc = {m: A.accuracy(df, p, m, "transfer", backbone=b, dataset=d) for m in order(p)}
        for m, e in acc.items():
            out[f"tr_{d}_{m}"] = _md(e)
        out[f"tr_{d}_best"] = Markdown(A.LABEL[max(acc, key=lambda k: acc[k].mean)])
        rows = A.select(df, p, "pixels", "transfer", backbone=b, dataset=d)
        out[f"n_tr_{d}"], out[f"n_te_{d}"] = int(rows["n_train"].iloc[0]), int(rows["n_test"].iloc[0])
    cm = p["compare_method"]
    out["cmp_method"] = Markdown(A.LABEL[cm])
    for ev, dset in (("linear", None), ("knn", None)) + tuple(("transfer", d) for d in p["transfer"]):
        key = ev if dset is None else dset
        for r in (p["recipe"], p["compare_recipe"]):
            out[f"rec_{r}_{key}"] = _md(A.accuracy(df, p, cm, ev, backbone=b, recipe=r, dataset=dset))
        out[f"rec_gain_{key}"] = _diff_md(A.difference(df, p, dict(method=cm, evaluation=ev, recipe=A.COLOUR,
                                                                   dataset=dset),
                                                       dict(method=cm, evaluation=ev, recipe=A.NO_COLOUR, dataset=dset),
                                                       backbone=b))
    for r in (p["recipe"], p["compare_recipe"]):
        out[f"knnpix_{cm}_{r}"] = _diff_md(A.knn_margin(df, p, cm, backbone=b, recipe=r))
    return out


def _calibration_sentence(p, audit) -> Markdown:
    off = [c for c in audit.calibration if not c.within]
    if not audit.calibration:
        return Markdown("This profile trains no N1, so there is no calibration row.")
    if not off:
        return Markdown("Both baselines lie within their tolerance of the study's numbers.")
    gaps = "; ".join(f"{c.quantity} {c.difference:+.1f} points" for c in off)
    why = ("the gap is what {} instead of the study's {:,} images and {} epochs (and N1 width {} instead of 32) "
           "costs, so nothing absolute follows from these baselines until the budget approaches the study's"
           .format(A.scale_note(p), A.STUDY["images"], A.STUDY["epochs"], p["backbone_kw"]["n1"].get("width", 32))
           if not A.full_scale(p) else
           "at the study's scale the gap is not explained by the budget: our N1 or training recipe differs from "
           "the study's, and absolute comparisons with it are suspect")
    return Markdown(f"Off their anchors: {gaps}; {why}.")


def _audit_numbers(df, p, audit) -> dict:
    n1 = next(c for c in audit.claims if c.claim.startswith("VICReg N1 linear probe below"))
    semi = [c for c in audit.claims if c.claim.startswith("VICReg pretraining helps") and "(N1" in c.claim]
    colour = next(c for c in audit.claims if c.claim.startswith("colour augmentation"))
    earlier = [(n1, A.EARLIER["n1_below_supervised"])] + list(zip(semi, (A.EARLIER["semi_0.01"], A.EARLIER["semi_0.1"])))
    earlier.append((colour, A.EARLIER["colour"]))
    changed = [f"“{c.claim}” was *{old}* and is now *{c.verdict}*" for c, old in earlier if c.verdict != old]
    decided = [c for c in audit.claims if c.decided]
    budget = ("no claim is decided at this budget: the stricter rule (at least three seeds, converged runs, the "
              "raw-pixel gate) and the small budget, not the science, leave them undecided" if not decided else
              f"{len(decided)} of {len(audit.claims)} claims are decided; the reasons of the others are in the table")
    r18 = "resnet18" in p["backbones"]
    return {
        "n1_gap": _diff_md(A.difference(df, p, dict(method="vicreg"), dict(method="supervised", evaluation="end_to_end"),
                                        backbone="n1")),
        "n1_verdict": Markdown(f"*{n1.verdict}* ({n1.reason})"),
        "budget_sentence": Markdown(budget),
        "earlier_changes": Markdown("; ".join(changed) if changed else "none changed"),
        "r18_sentence": Markdown(
            "This run includes ResNet-18; its claims are judged in the table above." if r18 else
            f"This `{p['profile']}` run trains no ResNet-18, so it says nothing direct about the +21.5-point claim."),
        "cal_vicreg": _md(A.accuracy(df, p, "vicreg", backbone="n1")),
        "cal_supervised": _md(A.accuracy(df, p, "supervised", "end_to_end", backbone="n1")),
        "cal_sentence": _calibration_sentence(p, audit),
    }


def numbers(out, p: dict, audit) -> dict:
    """Every number the prose quotes (glued by name)."""
    df, b = out.df, p["backbones"][0]
    bkw = p["backbone_kw"][b]
    encoder, rep_dim = make_encoder(b, bkw)
    n1_params = count_parameters(create_model("n1"))
    gpu = profiles.presets(NOTEBOOK)["gpu"]
    nums = {"backbone": Markdown(f"`{b}`"), "width": int(bkw.get("width", 0)), "enc_params": count_parameters(encoder),
            "rep_dim": rep_dim, "n1_params": n1_params,
            "n1_gap_pct": float(100 * (STUDY_N1_PARAMS - n1_params) / STUDY_N1_PARAMS),
            "n_pretrain": 10 * p["n_per_class"], "n_val": out.sizes["n_val"], "n_test": out.sizes["n_test"],
            "epochs": p["epochs"], "batch_size": p["batch_size"], "lr": float(p["lr"]),
            "proj": Markdown(" → ".join(str(d) for d in p["projector_dims"])), "wmse_dim": p["wmse_dim"],
            "n_seeds": p["seeds"], "n_seeds_other": p["seeds_other_methods"], "probe_epochs": p["probe_epochs"],
            "knn_k": p["knn_k"], "knn_t": float(p["knn_t"]), "warmup": float(p["warmup_epochs"]),
            "finetune_epochs": p["finetune_epochs"], "sup_lr": float(p["sup_lr"]),
            "finetune_lr": float(p["finetune_lr"]), "gate_points": float(p["gate_points"]),
            "gpu_backbones": Markdown(", ".join(f"`{x}`" for x in gpu["backbones"])), "gpu_epochs": gpu["epochs"],
            "n_tsne": int(len(out.tsne_labels)), "tsne_per_class": int(len(out.tsne_labels) // len(out.classes))}
    for frac, tag in zip(p["semi_fractions"], ("n_lab_1", "n_lab_10")):
        nums[tag] = int(out.sizes[f"n_lab_{frac:g}"])
    nums.update(_probe_numbers(df, p, b))
    nums.update(_monitor_numbers(out, p, b))
    nums.update(_semi_transfer_numbers(df, p, b))
    nums.update(_audit_numbers(df, p, audit))
    nums.update(_cost_numbers(df, p, b))
    # counts go to the page with thousands separators (quoted with {glue:md})
    return {k: Markdown(f"{v:,}") if isinstance(v, int) and not isinstance(v, bool) else v for k, v in nums.items()}


# ----------------------------------------------------------------------------- tables
def _effect_cell(e) -> str:
    return e.text(signed=False) if e.n else "—"


def tables(out, p: dict) -> dict[str, Table]:
    """The probes table (linear, kNN, margin over pixels, gate), the semi-supervised and the transfer table."""
    df = out.df
    probe_rows, semi_rows, tr_rows = [], [], []
    for b in p["backbones"]:
        for m in order(p):
            margin = A.knn_margin(df, p, m, backbone=b) if m != "pixels" else None
            probe_rows.append({
                "encoder": A.NICE[b], "representation": A.LABEL[m],
                "linear top-1": _effect_cell(A.accuracy(df, p, m, backbone=b)),
                "linear top-5 (%)": A.accuracy(df, p, m, backbone=b, value="test_top5").mean,
                "kNN top-1": _effect_cell(A.accuracy(df, p, m, "knn", backbone=b)),
                "kNN − raw pixels": margin.text() if margin is not None and margin.n else "—",
                "clears the gate": ("yes" if A.gate(df, p, [(m, None)], backbone=b)[0] else "no")
                if m in p["methods"] else "—"})
        probe_rows.append({"encoder": A.NICE[b], "representation": "supervised, end to end",
                           "linear top-1": _effect_cell(A.accuracy(df, p, "supervised", "end_to_end", backbone=b)),
                           "linear top-5 (%)": A.accuracy(df, p, "supervised", "end_to_end", backbone=b,
                                                          value="test_top5").mean,
                           "kNN top-1": "—", "kNN − raw pixels": "—", "clears the gate": "—"})
        for frac in p["semi_fractions"]:
            ev = f"semi_{frac:g}"
            for m in list(p["methods"]) + ["scratch"]:
                gain = A.difference(df, p, dict(method=m, evaluation=ev), dict(method="scratch", evaluation=ev),
                                    backbone=b) if m != "scratch" else None
                semi_rows.append({"encoder": A.NICE[b], "labels": f"{100 * frac:g} %", "start": A.LABEL[m],
                                  "top-1": _effect_cell(A.accuracy(df, p, m, ev, backbone=b)),
                                  "top-5 (%)": A.accuracy(df, p, m, ev, backbone=b, value="test_top5").mean,
                                  "− from scratch": gain.text() if gain is not None and gain.n else "—"})
        for d in p["transfer"]:
            for m in order(p):
                tr_rows.append({"encoder": A.NICE[b], "dataset": d.replace("pacs_", "PACS "),
                                "representation": A.LABEL[m],
                                "linear top-1": _effect_cell(A.accuracy(df, p, m, "transfer", backbone=b, dataset=d))})
    return {"probes": table(pd.DataFrame(probe_rows)), "semi": table(pd.DataFrame(semi_rows)),
            "transfer": table(pd.DataFrame(tr_rows))}
