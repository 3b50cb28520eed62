"""Chapter 02's page content: every glued number (:func:`numbers`) and every table (:func:`tables`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, group_effect, tally
from ibnb.book.page import Markdown
from ibnb.book.tables import table
from ibnb.chapters.mlp_scaling import audit as _audit
from ibnb.chapters.mlp_scaling.analysis import batch_effect
from ibnb.chapters.mlp_scaling.figures import LAYER_NAMES
from ibnb.chapters.mlp_scaling.sweep import RUNG_NAMES, lr_for, rung_name
from ibnb.core.reference import changes


def _md(text) -> Markdown:
    return Markdown(str(text))


def _setup(o, P: dict) -> dict:
    K, ci, g = o.num_classes, o.conv, o.fits["grid"]
    kw = P["model_kw"]["conv_layer"]
    return {"profile_name": _md(f"`{P['profile']}`"), "n_val": K * P["val_per_class"], "n_test": int(o.ladder["n_test"].iloc[0]),
            "lr": float(P["lr"]), "wd": float(P["weight_decay"]), "batch_size": P["batch_size"], "epochs": P["epochs"],
            "min_steps": P["min_steps"], "seeds": P["seeds"], "n_ladder": K * P["ladder_n_per_class"],
            "n_max_train": K * max(P["ladder_n_per_class"], *P["scaling_n_per_class"]),
            "max_params_m": max(float(g["params"].max()), float(o.ladder["params"].max())) / 1e6,
            "compute_decades": float(np.log10(g["train_flops"].max() / g["train_flops"].min())),
            "conv_c": kw["channels"], "conv_k": kw["kernel_size"], "conv_stride": kw["stride"],
            "prior_in": _md("3×32×32"), "prior_hw": _md("×".join(map(str, ci.out_hw))),
            "conv_rows": int(ci.matrix.shape[0]), "conv_cols": int(ci.matrix.shape[1]), "conv_err": ci.max_error,
            "conv_ref_scale": ci.output_scale, "conv_nnz_pct": ci.nonzero_pct, "conv_lc_weights": ci.local_weights,
            "conv_free": ci.distinct, "conv_share_factor": ci.local_weights / ci.distinct,
            "conv_dense_factor": ci.matrix.numel() / ci.distinct}


def _ladder(o, P: dict, e: dict) -> dict:
    lad, n = o.ladder, {}
    for m, a in P["ladder"]:
        n[f"acc_{m}_{'aug' if a != 'none' else 'noaug'}"] = _md(
            group_effect(lad, where={"rung": rung_name(m, a)}).text(signed=False))
    for key in ("aug_mlp", "bmlp_vs_mlp", "aug_bmlp", "resnet_vs_bmlp", "cnn_vs_bmlp", "mlp_gap", "batch",
                "locality", "sharing"):
        n[f"e_{key}"] = _md(e[key].text())
    params = lad.groupby("model")["params"].first()
    frames = [f for (r, _), f in o.ladder_hist.items() if r == "MLP"]
    best = float(np.mean([int(f["val_loss"].idxmin()) + 1 for f in frames]))
    last = int(frames[0]["epoch"].iloc[-1])
    n.update(ladder_epochs=int(lad["epochs"].max()), mlp_params_k=float(params["mlp"]) / 1e3,
             bmlp_params_k=float(params["bmlp"]) / 1e3, bmlp_width=P["model_kw"]["bmlp"]["width"],
             bmlp_depth=P["model_kw"]["bmlp"]["depth"], mlp_best_epoch=best, mlp_last_epoch=last,
             mlp_train_acc=100 * float(np.mean([f["train_acc"].iloc[-1] for f in frames])),
             mlp_val_acc=100 * float(np.mean([f["val_acc"].iloc[-1] for f in frames])),
             mlp_overfit_phrase=_md("after that its validation loss rises while its training loss keeps falling"
                                    if best < last else "its validation loss is still falling at the last epoch, so "
                                    "this short run has not reached the overfitting phase"))
    return n


def _scaling(o, P: dict) -> dict:
    K, f, g, j = o.num_classes, o.fits, o.fits["grid"], o.fits["joint"]
    n = {"n_sizes": len(P["scaling_sizes"]), "scaling_sizes": _md(", ".join(f"{w}×{d}" for w, d in P["scaling_sizes"])),
         "n_datas": len(P["scaling_n_per_class"]), "scaling_seeds": P["scaling_seeds"], "n_grid": len(g),
         "scaling_ns": _md(", ".join(f"{K * x:,}" for x in sorted(P["scaling_n_per_class"]))),
         "p_min_k": float(g["params"].min()) / 1e3, "p_max_m": float(g["params"].max()) / 1e6,
         "p_decades": float(np.log10(g["params"].max() / g["params"].min())),
         "d_decades": float(np.log10(g["n_train"].max() / g["n_train"].min())),
         "err_min": 100 * float(g["test_error"].min()), "err_max": 100 * float(g["test_error"].max()),
         "n_frontier": len(f["frontier"]),
         "compute_on": _md("runs on the frontier" if f["compute_on"] == "frontier" else
                           "runs (the frontier had fewer than 3)")}
    for key, sym in (("fit_p", "α_P"), ("fit_d", "α_D"), ("fit_c", "α_C")):
        n[key] = _md(f[key].describe(sym))
    if j is None:
        n.update(joint=_md("not estimated (too few grid cells)"), cmp_pd=_md("not estimated"))
    else:
        n["joint"] = _md(f"α_P = {j.alpha_p:.3f} and α_D = {j.alpha_d:.3f} ({j.n} cells; α_P − α_D = {j.gap:+.3f} "
                         f"{_audit.interval(*j.ci_gap)})")
        lo, hi = j.ci_gap
        n["cmp_pd"] = _md("smaller than the parameter exponent (the interval of the difference excludes zero)"
                          if lo > 0 else "larger than the parameter exponent (the interval excludes zero)" if hi < 0
                          else "not distinguishable from the parameter exponent at this budget")
    return n


def _batch(o, P: dict) -> dict:
    bs, eff = sorted(P["batch_sizes"]), batch_effect(o.batch)
    steps = o.batch.groupby("batch_size")["steps"].first()
    n = {"batch_epochs": P["epochs"], "batch_list": _md(", ".join(map(str, bs))), "b_small": bs[0],
         "b_large": bs[-1], "steps_small": int(steps[bs[0]]), "steps_large": int(steps[bs[-1]]),
         "lr_large": float(lr_for(bs[-1], P)), "batch_seeds": P["batch_seeds"]}
    for m in eff.index:
        c = 100 * float(eff.loc[m, "change"])
        n[f"batch_change_{m}"] = _md(f"{'gains' if c > 0 else 'loses'} {abs(c):.1f} points")
        n[f"batch_best_{m}"] = int(eff.loc[m, "best_batch"])
    return n


def _prior_probe(o, P: dict) -> dict:
    K, pr, sh = o.num_classes, o.prior, o.shape
    n = {"prior_ns": _md(" and ".join(f"{K * x:,}" for x in sorted(P["prior_n_per_class"]))),
         "prior_epochs": P["prior_epochs"], "prior_n_small": int(pr["n_train"].min()),
         "probe_sigma": float(P["probe_sigma"]), "chance": 1.0 / K,
         "probe_grids": _md(", ".join(f"{k}×{k}" for k in P["probe_grids"]))}
    for m in LAYER_NAMES:
        n[f"params_{m}"] = int(pr[pr["model"] == m]["params"].iloc[0])
    mean = sh.groupby("model")[["shape_kept", "texture_kept", "shape_index"]].mean()
    for m in P["probe_models"]:
        si = group_effect(sh, value="shape_index", unit="", where={"model": m})
        n[f"si_{m}"] = _md(si.text() if si.n else "not measured (clean accuracy at chance)")
        for key, col in (("tex", "texture_kept"), ("shp", "shape_kept")):
            v = 100 * float(mean.loc[m, col]) if m in mean.index else float("nan")
            n[f"{key}_{m}"] = _md(f"{v:.0f} %" if v == v else "n/a (clean accuracy at chance)")
    n["si_order"] = _md(" > ".join(RUNG_NAMES.get(m, m) for m in mean["shape_index"].sort_values(ascending=False).index))
    n["e_shape_vit_cnn"] = _md(_audit.effects(o, P)["shape_vit_cnn"].text())
    tp = o.throughput
    n.update(tp_batch=int(tp["bench_batch"].dropna().iloc[0]), tp_device=_md(f"`{tp['device'].iloc[0]}`"))
    for m in tp.index:
        n[f"tp_train_{m}"] = float(tp.loc[m, "bench_train_images_per_s"])
        n[f"tp_infer_{m}"] = float(tp.loc[m, "infer_images_per_s"])
        n[f"tp_mflops_{m}"] = float(tp.loc[m, "flops_per_image"]) / 1e6
    n["tp_ratio_resnet"] = n["tp_train_bmlp"] / n["tp_train_resnet18"]
    n["tp_flops_ratio_resnet"] = n["tp_mflops_resnet18"] / n["tp_mflops_bmlp"]
    n["tp_params_ratio_resnet"] = float(tp.loc["bmlp", "params"] / tp.loc["resnet18", "params"])
    return n


def numbers(o, P: dict) -> dict:
    """Every number the page quotes, by glue name."""
    e = _audit.effects(o, P)
    n = {**_setup(o, P), **_ladder(o, P, e), **_scaling(o, P), **_batch(o, P), **_prior_probe(o, P)}
    claims = _audit.claims(o, P)
    t = tally(claims)
    cal = _audit.calibration(o, P)[0]
    n.update(n_claims=len(claims), n_not_testable=t[NOT_TESTABLE], n_decided=len(claims) - t[NOT_TESTABLE],
             earlier=_md(changes({c.claim: c.verdict for c in claims}, _audit.EARLIER)),
             cal_acc=_md(cal.ours.text(signed=False)), cal_gap=float(-cal.difference),
             cal_data_factor=50_000 / n["n_ladder"], n_rows=len(o.table), n_unique=o.n_unique,
             n_trained_now=o.trained_now)
    return n


def tables(o, P: dict) -> dict:
    """The chapter's tables by name (all through :func:`ibnb.book.tables.table`)."""
    ci, lad = o.conv, o.ladder
    conv = pd.DataFrame({"layer": ["dense layer (every entry free)", "locally connected (entries inside windows)",
                                   "convolution (distinct shared weights)"],
                         "free weights": [int(ci.matrix.numel()), ci.local_weights, ci.distinct]})
    rungs = [rung_name(m, a) for m, a in P["ladder"]]
    ladder = pd.DataFrame([{"rung": r, "parameters": int(lad[lad["rung"] == r]["params"].iloc[0]),
                            "test accuracy": group_effect(lad, where={"rung": r}).text(signed=False),
                            "converged runs": f"{int(lad[lad['rung'] == r]['converged'].sum())} of "
                                              f"{int((lad['rung'] == r).sum())}"} for r in rungs])
    f = o.fits
    fits = [("error vs parameters (largest data)", f["fit_p"]), ("error vs data (largest model)", f["fit_d"]),
            (f"error vs compute ({f['compute_on']})", f["fit_c"])]
    fit_rows = [{"fit": k, "exponent": v.exponent, "95 % interval": _audit.interval(*v.ci), "points": v.n,
                 "R²": v.r2} for k, v in fits]
    if f["joint"] is not None:
        j = f["joint"]
        fit_rows += [{"fit": "two-factor: parameters", "exponent": j.alpha_p, "95 % interval": _audit.interval(*j.ci_p),
                      "points": j.n, "R²": j.r2},
                     {"fit": "two-factor: data", "exponent": j.alpha_d, "95 % interval": _audit.interval(*j.ci_d),
                      "points": j.n, "R²": j.r2}]
    eff = batch_effect(o.batch).reset_index()
    eff["model"] = eff["model"].map(lambda m: RUNG_NAMES.get(m, m))
    pr = o.prior.assign(layer=o.prior["model"].map(LAYER_NAMES))
    prior = pd.DataFrame([{"layer": layer, "parameters": int(d["params"].iloc[0]),
                           **{f"{n:,} images": group_effect(d, where={"n_train": n}).text(signed=False)
                              for n in sorted(pr["n_train"].unique())}} for layer, d in pr.groupby("layer", sort=False)])
    sh = o.shape.groupby("model")[["shape_kept", "texture_kept", "shape_index"]].mean()
    sh = sh.reindex([m for m in P["probe_models"] if m in sh.index]).reset_index()
    sh["model"] = sh["model"].map(lambda m: RUNG_NAMES.get(m, m))
    tp = o.throughput.reset_index()
    tp = tp.assign(model=tp["model"].map(lambda m: RUNG_NAMES.get(m, m)), mflops=tp["flops_per_image"] / 1e6)
    return {"conv_entries": table(conv), "ladder": table(ladder),
            "fits": table(pd.DataFrame(fit_rows), digits={"exponent": 3, "R²": 2}),
            "batch": table(eff, columns={"model": "model", "acc_small_batch": "smallest batch (%)",
                                         "acc_large_batch": "largest batch (%)", "change": "change (points)",
                                         "best_batch": "best batch"}, percent=("acc_small_batch", "acc_large_batch",
                                                                               "change")),
            "prior": table(prior),
            "shape": table(sh, columns={"model": "model", "shape_kept": "kept on shape probes (%)",
                                        "texture_kept": "kept on patch shuffles (%)", "shape_index": "shape index"},
                           percent=("shape_kept", "texture_kept", "shape_index")),
            "throughput": table(tp, columns={"model": "model", "params": "parameters", "mflops": "MFLOPs per image",
                                             "bench_train_images_per_s": "training images/s",
                                             "infer_images_per_s": "inference images/s"},
                                digits={"mflops": 2, "bench_train_images_per_s": 0, "infer_images_per_s": 0})}
