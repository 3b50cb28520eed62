"""Chapter 02's page content: every glued number (:func:`numbers`) and every table (:func:`tables`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ibnb.book.claims import NOT_TESTABLE, group_effect, tally
from ibnb.book.page import Markdown
from ibnb.book.tables import table
from ibnb.chapters.mlp_scaling import audit as _audit
from ibnb.chapters.mlp_scaling.analysis import batch_effect
from ibnb.chapters.mlp_scaling.scaling import resolved
from ibnb.chapters.mlp_scaling.figures import LAYER_NAMES
from ibnb.chapters.mlp_scaling.sweep import RUNG_NAMES, rung_name
from ibnb.core.reference import changes


def _md(text) -> Markdown:
    return Markdown(str(text))


def _pct_interval(ci: tuple[float, float]) -> str:
    lo, hi = ci
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]" if lo == lo and hi == hi else "(no interval)"


def _effect_text(e: dict, key: str) -> Markdown:
    return _md(e[key].text() if key in e else "not run at this profile")


def _setup(o, P: dict) -> dict:
    K, ci, g = o.num_classes, o.conv, o.fits["grid"]
    kw = P["model_kw"]["conv_layer"]
    rows = o.table.drop_duplicates(subset=["model", "n_train", "seed", "epochs", "batch_size", "lr", "recipe",
                                           "width", "depth"])
    lrs = ", ".join(f"{RUNG_NAMES.get(m, m)} {lr:g}" for m, lr in P["lrs"].items())
    return {"profile_name": _md(f"`{P['profile']}`"), "n_val": K * P["val_per_class"], "n_test": int(o.ladder["n_test"].iloc[0]),
            "lr": float(P["lr"]), "lrs": _md(lrs or f"every model {P['lr']:g}"), "wd": float(P["weight_decay"]),
            "batch_size": P["batch_size"], "epochs": P["epochs"], "min_steps": P["min_steps"], "seeds": P["seeds"],
            "n_ladder": K * P["ladder_n_per_class"], "workers": P["workers"],
            "n_max_train": K * max(P["ladder_n_per_class"], *P["scaling_n_per_class"]),
            "max_params_m": max(float(g["params"].max()), float(o.ladder["params"].max())) / 1e6,
            "compute_decades": float(np.log10(g["train_flops"].max() / g["train_flops"].min())),
            "n_converged": int(rows["converged"].sum()), "n_distinct": len(rows), "n_probed": int(rows["probed"].sum()),
            "conv_c": kw["channels"], "conv_k": kw["kernel_size"], "conv_stride": kw["stride"],
            "prior_in": _md("3×32×32"), "prior_hw": _md("×".join(map(str, ci.out_hw))),
            "conv_rows": int(ci.matrix.shape[0]), "conv_cols": int(ci.matrix.shape[1]), "conv_err": ci.max_error,
            "conv_ref_scale": ci.output_scale, "conv_nnz_pct": ci.nonzero_pct, "conv_lc_weights": ci.local_weights,
            "conv_free": ci.distinct, "conv_share_factor": ci.local_weights / ci.distinct,
            "conv_dense_factor": ci.matrix.numel() / ci.distinct}


def _ladder(o, P: dict, e: dict) -> dict:
    lad, n = o.ladder, {}
    for key in ("aug_mlp", "bmlp_vs_mlp", "aug_bmlp", "flip_bmlp", "aug_cnn", "cnn_vs_bmlp", "mlp_gap",
                "batch_epochs", "batch_steps", "locality", "sharing"):
        n[f"e_{key}"] = _effect_text(e, key)
    params = lad.groupby("model")["params"].first()
    frames = [f for (r, _), f in o.ladder_hist.items() if r == rung_name("mlp", "none")]
    best = float(np.mean([int(f["val_loss"].idxmin()) + 1 for f in frames]))
    last = int(frames[0]["epoch"].iloc[-1])
    epochs = lad.groupby("model", sort=False)["epochs"].max()
    n.update(ladder_epochs=_md(", ".join(f"{RUNG_NAMES.get(m, m)} {int(v)}" for m, v in epochs.items())),
             n_rungs=len(P["ladder"]), mixup_alpha=float(P["mixup_alpha"]), smoothing=float(P["bachmann_smoothing"]),
             mlp_params_k=float(params["mlp"]) / 1e3, bmlp_params_k=float(params["bmlp"]) / 1e3,
             bmlp_width=P["model_kw"]["bmlp"]["width"], bmlp_depth=P["model_kw"]["bmlp"]["depth"],
             mlp_epochs=int(epochs["mlp"]), mlp_best_epoch=best, mlp_last_epoch=last,
             mlp_train_acc=100 * float(np.mean([f["train_acc"].iloc[-1] for f in frames])),
             mlp_val_acc=100 * float(np.mean([f["val_acc"].iloc[-1] for f in frames])),
             mlp_overfit_phrase=_md("after that its validation loss rises while its training loss keeps falling"
                                    if best < last else "its validation loss is still falling at the last epoch, so "
                                    "this run has not reached the overfitting phase"))
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
         "n_frontier": len(f["frontier"]), "n_boot": f["bootstrap"]["n"], "boot_failed": f["bootstrap"]["failed"],
         "compute_on": _md("runs on the frontier" if f["compute_on"] == "frontier" else
                           "runs (the frontier had fewer than 3)")}
    done = []
    for key, sym in (("fit_p", "α_P"), ("fit_d", "α_D"), ("fit_c", "α_C")):
        fit = f[key]
        n[key] = _md(fit.describe(sym) if fit is not None else f"{sym} not estimated (fewer than 3 points)")
        if fit is not None and resolved(fit.exponent, fit.ci):
            done.append(sym)
    if j is None:
        n.update(joint=_md("not estimated (fewer than 6 grid cells)"), cmp_pd=_md("not estimated"))
    else:
        n["joint"] = _md(f"α_P = {j.alpha_p:.2f} {_audit.interval(*j.ci_p)} and α_D = {j.alpha_d:.2f} "
                         f"{_audit.interval(*j.ci_d)} ({j.n} cells; α_P − α_D = {j.gap:+.2f} {_audit.interval(*j.ci_gap)})")
        lo, hi = j.ci_gap
        n["cmp_pd"] = _md("not comparable: with one seed per cell the bootstrap has nothing to resample"
                          if not hi > lo else
                          "smaller than the parameter exponent (the interval of the difference excludes zero)"
                          if lo > 0 else "larger than the parameter exponent (the interval excludes zero)" if hi < 0
                          else "not distinguishable from the parameter exponent at this budget")
        done += [sym for sym, v, ci in (("two-factor α_P", j.alpha_p, j.ci_p), ("two-factor α_D", j.alpha_d, j.ci_d))
                 if resolved(v, ci)]
    n["resolved"] = _md(", ".join(done) if done else "none of them")
    return n


def _batch(o, P: dict) -> dict:
    K, bs, eff = o.num_classes, sorted(P["batch_sizes"]), batch_effect(o.batch)
    ep = o.batch[o.batch["regime"] == "steps"].groupby("batch_size")["epochs"].first()
    steps = o.batch[o.batch["regime"] == "epochs"].groupby("batch_size")["steps"].first()
    n = {"batch_epochs": P["batch_epochs"], "batch_list": _md(", ".join(map(str, bs))), "b_small": bs[0],
         "b_large": bs[-1], "b_base": P["batch_size"], "n_batch": K * P["batch_n_per_class"],
         "steps_small": int(steps[bs[0]]), "steps_large": int(steps[bs[-1]]), "steps_base": int(steps[P["batch_size"]]),
         "epochs_small": int(ep[bs[0]]), "epochs_large": int(ep[bs[-1]]),
         "lr_rule": _md(P["lr_rule"]), "batch_recipe": _md(P["batch_recipe"])}
    for (regime, m) in eff.index:
        c = 100 * float(eff.loc[(regime, m), "change"])
        n[f"batch_change_{regime}_{m}"] = _md(f"{'gains' if c > 0 else 'loses'} {abs(c):.1f} points")
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
    n.update(tp_batch=int(tp["bench_batch"].iloc[0]), tp_device=_md(f"`{tp['device'].iloc[0]}`"),
             tp_resnet_size=_md(_audit._size(P, "resnet18")), tp_bmlp_size=_md(_audit._size(P, "bmlp")))
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
             shorter=_md(changes({c.claim: c.verdict for c in claims}, _audit.SHORTER)),
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
    rungs = [rung_name(m, r) for m, r in P["ladder"]]
    ladder = pd.DataFrame([{"rung": r, "parameters": int(lad[lad["rung"] == r]["params"].iloc[0]),
                            "epochs": int(lad[lad["rung"] == r]["epochs"].iloc[0]),
                            "test accuracy": group_effect(lad, where={"rung": r}).text(signed=False),
                            "converged runs": f"{int(lad[lad['rung'] == r]['converged'].sum())} of "
                                              f"{int((lad['rung'] == r).sum())}"} for r in rungs])
    f = o.fits
    fits = [("error vs parameters (largest data)", f["fit_p"]), ("error vs data (largest model)", f["fit_d"]),
            (f"error vs compute ({f['compute_on']})", f["fit_c"])]
    fit_rows = [{"fit": k, "exponent α": v.exponent, "95 % interval of α": _audit.interval(*v.ci),
                 "E∞ (%)": 100 * v.e_inf, "95 % interval of E∞": _pct_interval(v.ci_e_inf), "points": v.n,
                 "R² (log error)": v.r2, "resolved": "yes" if resolved(v.exponent, v.ci) else "no"}
                for k, v in fits if v is not None]
    if f["joint"] is not None:
        j = f["joint"]
        fit_rows += [{"fit": f"two-factor: {name}", "exponent α": v, "95 % interval of α": _audit.interval(*ci),
                      "E∞ (%)": 100 * j.e_inf, "95 % interval of E∞": "", "points": j.n, "R² (log error)": float("nan"),
                      "resolved": "yes" if resolved(v, ci) else "no"}
                     for name, v, ci in (("parameters", j.alpha_p, j.ci_p), ("data", j.alpha_d, j.ci_d))]
    eff = batch_effect(o.batch).reset_index()
    eff["model"] = eff["model"].map(lambda m: RUNG_NAMES.get(m, m))
    eff["regime"] = eff["regime"].map({"epochs": "fixed epochs", "steps": "fixed steps"})
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
            "fits": table(pd.DataFrame(fit_rows), digits={"exponent α": 2, "E∞ (%)": 1, "R² (log error)": 2}),
            "batch": table(eff, columns={"regime": "regime", "model": "model", "acc_small_batch": "smallest batch (%)",
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
