"""Representations without labels: VICReg, Barlow Twins and W-MSE against a supervised encoder.

For every backbone and seed: self-supervised pretraining of each method on unlabelled CIFAR-10 images (the
study's crop+flip views), a supervised baseline with the same encoder, images and epochs; then on frozen
features a linear probe (top-1/top-5) and weighted kNN on CIFAR-10, transfer to PACS photo and sketch (linear
probe on frozen features), semi-supervised fine-tuning of the whole network on 1 % / 10 % of the labels
(against the same network trained from scratch on them), and one augmentation-recipe comparison.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ibnb.chapters.self_supervised import method as ssl
from ibnb.core.data import DATASETS, balanced_indices, class_balanced_subset, load_dataset
from ibnb.core.models import count_parameters, list_models
from ibnb.book.profiles import register_presets, require
from ibnb.core.runs import train_or_load
from ibnb.chapters.self_supervised.losses import LOSSES
from ibnb.core.train import default_device, device_name, evaluate

NOTEBOOK = "07_self_supervised"
METHODS = ["vicreg", "barlow_twins", "wmse"]
LABEL = {"vicreg": "VICReg", "barlow_twins": "Barlow Twins", "wmse": "W-MSE", "supervised": "supervised",
         "pixels": "raw pixels", "scratch": "from scratch"}

_COMMON = dict(dataset="cifar10", methods=METHODS, recipe="study", compare_method="vicreg",
               compare_recipe="standard", lr=1e-3, weight_decay=0.0,
               loss_kw={"vicreg": {"lam": 25.0, "mu": 25.0, "nu": 1.0, "gamma": 1.0}, "barlow_twins": {"lam": 5e-3},
                        "wmse": {}},
               wmse_views=2, sup_lr=0.05, probe_epochs=20, probe_batch_size=256, probe_lr=0.1, knn_k=20,
               semi_fractions=[0.01, 0.1], finetune_lr=0.02, transfer=["pacs_photo", "pacs_sketch"], device="auto")
PRESETS = {
    "smoke": {**_COMMON, "backbones": ["n1"], "backbone_kw": {"n1": {"width": 4}}, "n_per_class": 12,
              "test_per_class": 5, "epochs": 1, "batch_size": 40, "projector_dims": [32, 32, 32], "wmse_dim": 8,
              "finetune_epochs": 2, "transfer_per_class": 8, "tsne_per_class": 6, "seeds": 1, "probe_epochs": 3},
    "cpu": {**_COMMON, "backbones": ["n1"], "backbone_kw": {"n1": {"width": 16}}, "n_per_class": 150,
            "test_per_class": 200, "epochs": 6, "batch_size": 128, "projector_dims": [512, 512, 512], "wmse_dim": 64,
            "finetune_epochs": 30, "transfer_per_class": 0, "tsne_per_class": 30, "seeds": 2},
    # the study's protocol: full CIFAR-10, batch 256, 30 epochs, projector 3×1024, N1 and ResNet-18
    "gpu": {**_COMMON, "backbones": ["n1", "resnet18"], "backbone_kw": {"n1": {"width": 32}, "resnet18": {"width": 64}},
            "n_per_class": 5000, "test_per_class": 0, "epochs": 30, "batch_size": 256,
            "projector_dims": [1024, 1024, 1024], "wmse_dim": 64, "finetune_epochs": 30, "transfer_per_class": 0,
            "tsne_per_class": 50, "seeds": 2},
}


def _validate(p: dict) -> None:
    require(set(p["methods"]) <= set(LOSSES), f"unknown methods {sorted(set(p['methods']) - set(LOSSES))}")
    require(p["compare_method"] in p["methods"], "compare_method must be one of methods")
    require({p["recipe"], p["compare_recipe"]} <= set(ssl.RECIPES), f"recipes: {', '.join(ssl.RECIPES)}")
    require(set(p["backbones"]) <= set(list_models()), f"unknown backbones {p['backbones']}")
    require(set(p["backbone_kw"]) >= set(p["backbones"]), "backbone_kw needs an entry for every backbone")
    require(p["dataset"] in DATASETS and all(t in DATASETS for t in p["transfer"]), "unknown dataset")
    require(min(p["n_per_class"], p["epochs"], p["batch_size"], p["seeds"], p["probe_epochs"],
                p["finetune_epochs"], p["knn_k"]) >= 1, "sizes, epochs and seeds must be >= 1")
    require(p["batch_size"] > p["wmse_dim"], "W-MSE whitening needs batch_size > wmse_dim")
    require(p["batch_size"] <= 10 * p["n_per_class"], "batch_size exceeds the pretraining set")
    require(all(0 < f <= 1 for f in p["semi_fractions"]), "semi_fractions must be in (0, 1]")
    require(p["wmse_views"] >= 2, "W-MSE needs at least two views")


register_presets(NOTEBOOK, PRESETS, _validate)


def projector_for(method: str, p: dict) -> list[int]:
    """The study's projector; W-MSE's last layer is ``wmse_dim`` wide (whitening needs batch > dimension)."""
    return list(p["projector_dims"][:-1]) + [p["wmse_dim"]] if method == "wmse" else list(p["projector_dims"])


def encoder_of(classifier: nn.Module) -> nn.Module:
    """A copy of a registered classifier with its linear head replaced by the identity."""
    enc = copy.deepcopy(classifier)
    enc.head = nn.Identity()
    return enc


@dataclass
class Outcome:
    """Everything the notebook plots: the results table and the per-run details."""

    df: pd.DataFrame
    histories: dict = field(default_factory=dict)  # (backbone, method, recipe, seed) -> per-epoch frame
    spectra: dict = field(default_factory=dict)  # (backbone, method) -> normalised eigenvalues (seed 0)
    embeddings: dict = field(default_factory=dict)  # method -> 2-d t-SNE of test images (first backbone, seed 0)
    tsne_labels: np.ndarray | None = None
    classes: list = field(default_factory=list)


def _data(p: dict):
    pool = load_dataset(p["dataset"], "train")
    test = load_dataset(p["dataset"], "test")
    if p["test_per_class"]:
        test = class_balanced_subset(test, p["test_per_class"], seed=0)
    mean, std = DATASETS[p["dataset"]].mean, DATASETS[p["dataset"]].std
    transfer = {}
    for name in p["transfer"]:
        tr, te = load_dataset(name, "train", size=32), load_dataset(name, "test", size=32)
        if p["transfer_per_class"]:
            tr = class_balanced_subset(tr, p["transfer_per_class"], seed=0)
            te = class_balanced_subset(te, max(1, p["transfer_per_class"] // 2), seed=0)
        # the CIFAR-10 encoder sees PACS normalised like its own training images
        transfer[name] = (replace(tr, mean=mean, std=std), replace(te, mean=mean, std=std))
    return pool, test, transfer


def run(p: dict, progress: bool = True) -> Outcome:
    """The whole chapter's computation for profile parameters ``p``."""
    device = torch.device(default_device() if p["device"] == "auto" else p["device"])
    pool, test, transfer = _data(p)
    K = pool.num_classes
    out = Outcome(pd.DataFrame(), classes=list(test.classes))
    tsne_idx = balanced_indices(test, min(p["tsne_per_class"], p["test_per_class"] or 10 ** 9), seed=0)
    rows: list[dict] = []
    jobs = [(b, s) for b in p["backbones"] for s in range(p["seeds"])]
    bar = tqdm(jobs, desc="backbone × seed", disable=not progress)
    for backbone, seed in bar:
        train = class_balanced_subset(pool, p["n_per_class"], seed=seed)
        n_train, bkw = len(train), p["backbone_kw"][backbone]
        base = dict(experiment="self_supervised", model=backbone, seed=seed, n_pretrain=n_train,
                    pretrain_epochs=p["epochs"], device=device_name(device))

        def evaluate_features(method, recipe, enc, params, wall, ips, feat_fn=None):
            """Linear probe, kNN and PACS transfer of one frozen representation; returns (train, test) features."""
            feats = feat_fn or (lambda d: ssl.extract_features(enc, d, device=device))
            f_tr, f_te = feats(train), feats(test)
            y_tr, y_te = train.y.to(f_tr.device), test.y.to(f_tr.device)
            common = dict(base, method=method, recipe=recipe, params=params, wall_s=wall, images_per_s=ips,
                          epochs=p["epochs"] if method != "pixels" else 0, test_nll=float("nan"))
            lp = ssl.linear_probe(f_tr, y_tr, f_te, y_te, num_classes=K, epochs=p["probe_epochs"],
                                  batch_size=p["probe_batch_size"], lr=p["probe_lr"], seed=seed)
            rows.append(dict(common, evaluation="linear", dataset=p["dataset"], n_train=n_train, n_labels=n_train,
                             test_acc=lp["top1"], test_top5=lp["top5"]))
            knn = ssl.knn_accuracy(f_tr, y_tr, f_te, y_te, num_classes=K, k=p["knn_k"])
            rows.append(dict(common, evaluation="knn", dataset=p["dataset"], n_train=n_train, n_labels=n_train,
                             test_acc=knn, test_top5=float("nan")))
            for name, (ttr, tte) in transfer.items():
                a, b = feats(ttr), feats(tte)
                lp = ssl.linear_probe(a, ttr.y.to(a.device), b, tte.y.to(b.device), num_classes=ttr.num_classes,
                                      epochs=p["probe_epochs"], batch_size=p["probe_batch_size"], lr=p["probe_lr"],
                                      seed=seed)
                rows.append(dict(common, evaluation="transfer", dataset=name, n_train=len(ttr), n_labels=len(ttr),
                                 test_acc=lp["top1"], test_top5=lp["top5"]))
            return f_te

        def keep_embedding(method, f_te):
            if backbone == p["backbones"][0] and seed == 0:
                out.spectra[(backbone, method)] = ssl.spectrum(f_te) if method != "pixels" else None
                out.embeddings[method] = ssl.tsne(f_te[tsne_idx.to(f_te.device)].cpu().numpy(), seed=0)
                out.tsne_labels = test.y[tsne_idx].numpy()

        # raw pixels: the representation that needs no training
        f_te = evaluate_features("pixels", "-", None, 0, 0.0, float("nan"), feat_fn=lambda d: ssl.pixel_features(d, device))
        keep_embedding("pixels", f_te)

        # supervised baseline: same encoder, images and epochs, labels used, SGD, crop+flip
        sup, hist, _ = train_or_load(backbone, train, None, model_kw=dict(bkw), device=device, progress=False,
                                     epochs=p["epochs"], batch_size=p["batch_size"], optimizer="sgd", lr=p["sup_lr"],
                                     weight_decay=5e-4, schedule="cosine", augment="crop+flip", seed=seed)
        out.histories[(backbone, "supervised", "crop+flip", seed)] = hist.frame
        ev = evaluate(sup, test)
        rows.append(dict(base, method="supervised", recipe="crop+flip", evaluation="end_to_end", dataset=p["dataset"],
                         n_train=n_train, n_labels=n_train, epochs=p["epochs"], params=count_parameters(sup),
                         test_acc=ev["acc"], test_top5=ev["top5"], test_nll=ev["nll"], wall_s=hist.wall_s,
                         images_per_s=hist.images_per_s))
        sup_enc = encoder_of(sup)
        f_te = evaluate_features("supervised", "crop+flip", sup_enc, count_parameters(sup_enc), hist.wall_s,
                                 hist.images_per_s)
        keep_embedding("supervised", f_te)

        # self-supervised pretraining, each method with the study's recipe, plus one recipe comparison
        runs = [(m, p["recipe"]) for m in p["methods"]] + [(p["compare_method"], p["compare_recipe"])]
        encoders = {}
        for method, recipe in runs:
            bar.set_postfix_str(f"{method}/{recipe}")
            model, hist, _ = ssl.pretrain_or_load(
                method, train, backbone=backbone, backbone_kw=dict(bkw), projector_dims=projector_for(method, p),
                recipe=recipe, n_views=p["wmse_views"] if method == "wmse" else 2, loss_kw=p["loss_kw"][method],
                epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], weight_decay=p["weight_decay"],
                seed=seed, device=device)
            out.histories[(backbone, method, recipe, seed)] = hist.frame
            f_te = evaluate_features(method, recipe, model.encoder, count_parameters(model.encoder), hist.wall_s,
                                     hist.images_per_s)
            if recipe == p["recipe"]:
                encoders[method] = (model.encoder, model.dim)
                keep_embedding(method, f_te)

        # semi-supervised: fine-tune the whole network on a fraction of the labels vs. the same from scratch
        for frac in p["semi_fractions"]:
            labelled = class_balanced_subset(train, fraction=frac, seed=seed)
            starts = dict(encoders)
            starts["scratch"] = ssl.make_encoder(backbone, bkw, train.shape[0])
            for method, (enc, dim) in starts.items():
                net = ssl.fine_tune(enc, dim, labelled, epochs=p["finetune_epochs"], batch_size=p["batch_size"],
                                    lr=p["finetune_lr"], seed=seed, device=device)
                ev = evaluate(net, test)
                rows.append(dict(base, method=method, recipe=p["recipe"] if method != "scratch" else "crop+flip",
                                 evaluation=f"semi_{frac:g}", dataset=p["dataset"], n_train=len(labelled),
                                 n_labels=len(labelled), epochs=p["finetune_epochs"], params=count_parameters(net),
                                 test_acc=ev["acc"], test_top5=ev["top5"], test_nll=ev["nll"], wall_s=float("nan"),
                                 images_per_s=float("nan"), fraction=frac))
    out.df = pd.DataFrame(rows)
    out.df["n_test"] = [len(test) if d == p["dataset"] else len(transfer[d][1]) for d in out.df["dataset"]]
    return out



# ----------------------------------------------------------------------------- summaries and the claims audit
STUDY = {"images": 50_000, "epochs": 30}
NICE = {"n1": "N1", "resnet18": "ResNet-18"}
#: the study's CIFAR-10 claims (top-1, top-5 in %), quoted
CLAIMS = {("n1", "supervised", "end_to_end"): (70.6, 97.6), ("resnet18", "supervised", "end_to_end"): (68.1, 96.5),
          ("n1", "vicreg", "linear"): (64.8, 96.9), ("resnet18", "vicreg", "linear"): (89.6, 99.7),
          ("resnet18", "vicreg", "semi_0.01"): (85.5, 99.2), ("resnet18", "vicreg", "semi_0.1"): (90.3, 99.7)}
#: quoted literature table (ImageNet, ResNet-50, linear top-1 %)
LITERATURE = {"supervised": 76.5, "SimCLR": 69.3, "MoCo v2": 71.1, "W-MSE": 69.4, "Barlow Twins": 73.2, "VICReg": 73.2}


def summary(df: pd.DataFrame, evaluation: str, dataset: str | None = None, value: str = "test_acc") -> pd.DataFrame:
    """Mean, std (ddof=1) and count over seeds of ``value`` per backbone × method × recipe for one evaluation."""
    sel = df[(df["evaluation"] == evaluation) & ((df["dataset"] == dataset) if dataset else True)]
    return sel.groupby(["model", "method", "recipe"], sort=False)[value].agg(
        mean="mean", std="std", n="count").reset_index()


def paired(df: pd.DataFrame, a: tuple, b: tuple, backbone: str, value: str = "test_acc") -> tuple[float, float, int]:
    """Seed-paired difference ``value[a] − value[b]`` for one backbone, where ``a``/``b`` are
    ``(method, recipe, evaluation, dataset)``: returns (mean, std, n)."""
    def pick(k):
        m, r, e, d = k
        s = df[(df["model"] == backbone) & (df["method"] == m) & (df["evaluation"] == e) & (df["dataset"] == d)
               & ((df["recipe"] == r) if r else True)]
        return s.set_index("seed")[value]
    diff = (pick(a) - pick(b)).dropna()
    return float(diff.mean()) if len(diff) else float("nan"), float(diff.std()) if len(diff) > 1 else float("nan"), len(diff)


def relation_verdict(mean: float, std: float, expected: int, n: int) -> str:
    """Verdict on a signed claim (expected +1: a > b, −1: a < b) from a seed-paired difference."""
    if n == 0 or mean != mean:
        return "not measured at this profile"
    if n < 2:
        return f"undecided: one seed, no spread estimate (sign {'+' if mean > 0 else '−'})"
    s = 0.0 if std != std else std
    if abs(mean) <= s:
        return f"inconclusive (difference within one std over {n} seeds)"
    return ("consistent" if np.sign(mean) == expected else "contradicted") + f" ({n} seed{'s' * (n > 1)})"


def full_scale(p: dict) -> bool:
    return 10 * p["n_per_class"] >= STUDY["images"] and p["epochs"] >= STUDY["epochs"]


def claims_audit(df: pd.DataFrame, p: dict) -> pd.DataFrame:
    """Each claim of the study → our measurement (mean ± std over seeds, with its images and epochs) → a verdict
    computed from the numbers and the profile's scale."""
    n_img, ep = 10 * p["n_per_class"], p["epochs"]
    scale_note = f"{n_img:,} images, {ep} epochs"
    rows = []

    def measured(backbone, method, evaluation, recipe=None):
        s = df[(df["model"] == backbone) & (df["method"] == method) & (df["evaluation"] == evaluation)
               & (df["dataset"] == p["dataset"]) & ((df["recipe"] == recipe) if recipe else True)]
        return s

    for (backbone, method, evaluation), (t1, t5) in CLAIMS.items():
        s = measured(backbone, method, evaluation, p["recipe"] if method != "supervised" else None)
        claim = f"{LABEL[method]} {NICE[backbone]} {evaluation.replace('_', ' ').replace('semi 0.01', 'semi-sup. 1 %').replace('semi 0.1', 'semi-sup. 10 %')}: {t1} / {t5} (quoted)"
        if s.empty:
            rows.append(dict(claim=claim, ours="—", verdict=f"not measured: no {NICE[backbone]} run at this profile"))
            continue
        m1, s1, m5 = 100 * s["test_acc"].mean(), 100 * np.nan_to_num(s["test_acc"].std()), 100 * s["test_top5"].mean()
        ours = f"{m1:.1f} ± {s1:.1f} / {m5:.1f} ({int(s['n_train'].iloc[0]):,} labels; {scale_note}; {len(s)} seed{'s' * (len(s) > 1)})"
        if full_scale(p):
            verdict = "reproduced (within 3 points)" if abs(m1 - t1) <= 3 else f"not reproduced ({m1 - t1:+.1f} points)"
        else:
            verdict = f"not comparable in absolute terms ({scale_note} vs. 50,000 images, 30 epochs)"
        rows.append(dict(claim=claim, ours=ours, verdict=verdict))

    # relational claims, testable at any scale
    for backbone in p["backbones"]:
        d = paired(df, ("vicreg", p["recipe"], "linear", p["dataset"]), ("supervised", None, "end_to_end", p["dataset"]),
                   backbone)
        expected = -1 if backbone == "n1" else +1
        claim = ("VICReg N1 linear below supervised N1 (64.8 vs 70.6: −5.8 points, quoted)" if backbone == "n1" else
                 "VICReg ResNet-18 linear above supervised ResNet-18 (+21.5 points, quoted)")
        rows.append(dict(claim=claim, ours=f"{100 * d[0]:+.1f} ± {100 * np.nan_to_num(d[1]):.1f} points ({scale_note})",
                         verdict=relation_verdict(d[0], d[1], expected, d[2])))
        for frac in p["semi_fractions"]:
            d = paired(df, ("vicreg", p["recipe"], f"semi_{frac:g}", p["dataset"]),
                       ("scratch", None, f"semi_{frac:g}", p["dataset"]), backbone)
            rows.append(dict(claim=f"VICReg pretraining helps fine-tuning on {100 * frac:g} % of the labels "
                                   f"({NICE[backbone]}; implied by 85.5 / 90.3, quoted)",
                             ours=f"{100 * d[0]:+.1f} ± {100 * np.nan_to_num(d[1]):.1f} points vs. from scratch",
                             verdict=relation_verdict(d[0], d[1], +1, d[2])))
    if "resnet18" not in p["backbones"]:
        rows.append(dict(claim="VICReg ResNet-18 linear above supervised ResNet-18 (+21.5 points, quoted)",
                         ours="—", verdict="not measured: ResNet-18 runs only at the gpu profile"))
    d = paired(df, (p["compare_method"], p["compare_recipe"], "linear", p["dataset"]),
               (p["compare_method"], p["recipe"], "linear", p["dataset"]), p["backbones"][0])
    rows.append(dict(claim="colour augmentation is essential for joint-embedding SSL (SimCLR; literature, quoted)",
                     ours=f"{p['compare_recipe']} − {p['recipe']} recipe, {LABEL[p['compare_method']]} linear: "
                          f"{100 * d[0]:+.1f} ± {100 * np.nan_to_num(d[1]):.1f} points",
                     verdict=relation_verdict(d[0], d[1], +1, d[2])))
    rows.append(dict(claim="30 pretraining epochs beat 20 and 40 (quoted)", ours="—",
                     verdict="not tested: one epoch budget per profile"))
    return pd.DataFrame(rows)
