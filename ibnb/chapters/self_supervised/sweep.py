"""Representations without labels: VICReg, Barlow Twins and W-MSE against a supervised encoder.

For every backbone and seed: self-supervised pretraining of each method on unlabelled CIFAR-10 images (the
``recipe`` views; the compared method also with ``compare_recipe``; methods other than the compared one only for
the first ``seeds_other_methods`` seeds), a supervised baseline with the same encoder, images and epochs; then on frozen
features a linear probe (top-1/top-5) and weighted kNN on CIFAR-10, transfer to PACS photo and sketch (linear
probe on frozen features), semi-supervised fine-tuning of the whole network on 1 % / 10 % of the labels
(against the same network trained from scratch on them), and one augmentation-recipe comparison.

Every row of the results table names its ``method`` (``pixels``, ``supervised``, an SSL method, ``scratch``),
``recipe``, ``evaluation`` (``end_to_end``, ``linear``, ``knn``, ``transfer``, ``semi_<fraction>``) and
``dataset``, and carries the convergence check of the training run(s) behind it (``converged``,
``convergence``; a semi-supervised row needs both the fine-tuning and the pretraining run to pass).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ibnb.book.results import write_results
from ibnb.chapters.self_supervised import method as ssl
from ibnb.chapters.self_supervised.presets import NOTEBOOK
from ibnb.chapters.self_supervised.views import ViewAugment
from ibnb.core.augment import DeviceLoader
from ibnb.core.data import DATASETS, balanced_indices, class_balanced_subset, load_dataset, split_off
from ibnb.core.metrics import extract_features, knn_accuracy, linear_probe, pixel_features
from ibnb.core.models import count_parameters
from ibnb.core.models.ssl import encoder_of, make_encoder
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, device_name, evaluate

#: the convergence record of a representation that is not trained
UNTRAINED = {"converged": True, "convergence": "no training (raw pixels)"}


def projector_for(method: str, p: dict) -> list[int]:
    """The study's projector; W-MSE's last layer is ``wmse_dim`` wide (whitening needs batch > dimension)."""
    return list(p["projector_dims"][:-1]) + [p["wmse_dim"]] if method == "wmse" else list(p["projector_dims"])


@dataclass
class Outcome:
    """Everything the page shows: the results table and the per-run details."""

    df: pd.DataFrame
    histories: dict = field(default_factory=dict)  # (backbone, method, recipe, seed) -> per-epoch frame
    spectra: dict = field(default_factory=dict)  # (backbone, method) -> normalised eigenvalues (seed 0)
    embeddings: dict = field(default_factory=dict)  # method -> 2-d t-SNE of test images (first backbone, seed 0)
    tsne_labels: np.ndarray | None = None
    classes: list = field(default_factory=list)
    demo: dict = field(default_factory=dict)  # images, views per recipe, mean, std (the views figure)
    sizes: dict = field(default_factory=dict)  # n_val, n_test, n_lab_<fraction>


@dataclass
class _Data:
    pool: object
    val: object
    test: object
    transfer: dict


def _data(p: dict) -> _Data:
    """The training pool (minus the validation images), validation, test and transfer splits."""
    pool = load_dataset(p["dataset"], "train")
    val = None
    if p["val_per_class"]:
        pool, val = split_off(pool, p["val_per_class"], seed=0)
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
    return _Data(pool, val, test, transfer)


def _probe_rows(p: dict, feats, train, data: _Data, common: dict, seed: int) -> tuple[list[dict], torch.Tensor]:
    """Linear probe, kNN and PACS transfer of one frozen representation ``feats`` (a function of a dataset):
    the results rows and the test features. Features are computed without autograd (frozen means frozen)."""
    def frozen(d):
        with torch.no_grad():
            return feats(d)

    f_tr, f_te = frozen(train), frozen(data.test)
    y_tr, y_te = train.y.to(f_tr.device), data.test.y.to(f_tr.device)
    probe = dict(epochs=p["probe_epochs"], batch_size=p["probe_batch_size"], lr=p["probe_lr"], seed=seed)
    lp = linear_probe(f_tr, y_tr, f_te, y_te, num_classes=train.num_classes, **probe)
    knn = knn_accuracy(f_tr, y_tr, f_te, y_te, num_classes=train.num_classes, k=p["knn_k"], temperature=p["knn_t"])
    n = len(train)
    rows = [dict(common, evaluation="linear", dataset=p["dataset"], n_train=n, n_labels=n, test_acc=lp["top1"],
                 test_top5=lp["top5"], n_test=len(data.test)),
            dict(common, evaluation="knn", dataset=p["dataset"], n_train=n, n_labels=n, test_acc=knn,
                 test_top5=float("nan"), n_test=len(data.test))]
    for name, (ttr, tte) in data.transfer.items():
        a, b = frozen(ttr), frozen(tte)
        lp = linear_probe(a, ttr.y.to(a.device), b, tte.y.to(b.device), num_classes=ttr.num_classes, **probe)
        rows.append(dict(common, evaluation="transfer", dataset=name, n_train=len(ttr), n_labels=len(ttr),
                         test_acc=lp["top1"], test_top5=lp["top5"], n_test=len(tte)))
    return rows, f_te


def _views_demo(p: dict, device) -> dict:
    """One test image per class and two views of each from the study's and the compared recipe."""
    demo = class_balanced_subset(load_dataset(p["dataset"], "test"), 1, seed=0)
    x = next(iter(DeviceLoader(demo, len(demo), shuffle=False, device=device)))[0]
    views = {r: [v.cpu() for v in (aug(x), aug(x))] for r in (p["recipe"], p["compare_recipe"])
             for aug in [ViewAugment(r, demo.mean, demo.std, seed=0)]}
    return {"images": demo.x, "views": views, "mean": demo.mean, "std": demo.std}


def run(p: dict, progress: bool = False) -> Outcome:
    """The whole chapter's computation for resolved parameters ``p``; writes the results table."""
    device = torch.device(p["device"])
    data = _data(p)
    test = data.test
    out = Outcome(pd.DataFrame(), classes=list(test.classes))
    tsne_idx = balanced_indices(test, min(p["tsne_per_class"], p["test_per_class"] or 10 ** 9), seed=0)
    rows: list[dict] = []
    jobs = [(b, s) for b in p["backbones"] for s in range(p["seeds"])]
    for backbone, seed in tqdm(jobs, desc="backbone × seed", disable=not progress):
        train = class_balanced_subset(data.pool, p["n_per_class"], seed=seed)
        bkw = p["backbone_kw"][backbone]
        base = dict(experiment="self_supervised", model=backbone, seed=seed, n_pretrain=len(train),
                    pretrain_epochs=p["epochs"], device=device_name(device), test_nll=float("nan"),
                    n_val=len(data.val) if data.val is not None else 0)

        def keep(method, f_te):
            if backbone == p["backbones"][0] and seed == 0:
                out.spectra[(backbone, method)] = ssl.spectrum(f_te) if method != "pixels" else None
                out.embeddings[method] = ssl.tsne(f_te[tsne_idx.to(f_te.device)].cpu().numpy(), seed=0)
                out.tsne_labels = test.y[tsne_idx].numpy()

        def probe(method, recipe, encoder, params, run_cols, feats=None):
            common = dict(base, method=method, recipe=recipe, params=params, **run_cols,
                          epochs=p["epochs"] if method != "pixels" else 0)
            feats = feats or (lambda d: extract_features(encoder, d, device=device))
            new, f_te = _probe_rows(p, feats, train, data, common, seed)
            rows.extend(new)
            return f_te

        # raw pixels: the representation that needs no training
        keep("pixels", probe("pixels", "-", None, 0, dict(wall_s=0.0, images_per_s=float("nan"), **UNTRAINED),
                             feats=lambda d: pixel_features(d, device)))

        # supervised baseline: same encoder, images and epochs, labels used, SGD, crop+flip
        sup_cfg = TrainConfig.from_params(p, optimizer="sgd", lr=p["sup_lr"], weight_decay=5e-4, schedule="cosine",
                                          augment="crop+flip", seed=seed)
        sup, hist, _ = train_or_load(backbone, train, data.val, config=sup_cfg, model_kw=dict(bkw), device=device,
                                     progress=False)
        out.histories[(backbone, "supervised", "crop+flip", seed)] = hist.frame
        ev = evaluate(sup, test)
        rows.append(dict(base, method="supervised", recipe="crop+flip", evaluation="end_to_end", dataset=p["dataset"],
                         n_train=len(train), n_labels=len(train), epochs=p["epochs"], params=count_parameters(sup),
                         test_acc=ev["acc"], test_top5=ev["top5"], test_nll=ev["nll"], n_test=len(test),
                         **hist.columns()))
        sup_enc = encoder_of(sup)
        keep("supervised", probe("supervised", "crop+flip", sup_enc, count_parameters(sup_enc), hist.columns()))

        # self-supervised pretraining, each method with the main recipe, plus one recipe comparison
        methods = [m for m in p["methods"] if m == p["compare_method"] or seed < p["seeds_other_methods"]]
        runs = [(m, p["recipe"]) for m in methods] + [(p["compare_method"], p["compare_recipe"])]
        encoders = {}
        for method, recipe in runs:
            cfg = TrainConfig.from_params(p, optimizer="adamw", schedule="cosine", augment="none", seed=seed)
            model, hist, _ = ssl.pretrain_or_load(
                method, train, data.val, config=cfg, backbone=backbone, backbone_kw=dict(bkw),
                projector_dims=projector_for(method, p), recipe=recipe,
                n_views=p["wmse_views"] if method == "wmse" else 2, loss_kw=p["loss_kw"][method], device=device)
            out.histories[(backbone, method, recipe, seed)] = hist.frame
            f_te = probe(method, recipe, model.encoder, count_parameters(model.encoder), hist.columns())
            if recipe == p["recipe"]:
                encoders[method] = (model.encoder, model.dim, hist.convergence)
                keep(method, f_te)

        # semi-supervised: fine-tune the whole network on a fraction of the labels vs. the same from scratch
        for frac in p["semi_fractions"]:
            labelled = class_balanced_subset(train, fraction=frac, seed=seed)
            out.sizes[f"n_lab_{frac:g}"] = len(labelled)
            starts = dict(encoders)
            starts["scratch"] = (*make_encoder(backbone, bkw, train.shape[0]), None)
            for method, (enc, dim, pre) in starts.items():
                net, fh = ssl.fine_tune(enc, dim, labelled, data.val, epochs=p["finetune_epochs"],
                                        batch_size=p["batch_size"], lr=p["finetune_lr"], seed=seed, device=device)
                ev = evaluate(net, test)
                cols = fh.columns()
                if pre is not None:
                    cols.update(converged=bool(cols["converged"] and pre.passed),
                                convergence=f"fine-tuning: {cols['convergence']}; pretraining: {pre.reason}")
                rows.append(dict(base, method=method, recipe=p["recipe"] if method != "scratch" else "crop+flip",
                                 evaluation=f"semi_{frac:g}", dataset=p["dataset"], n_train=len(labelled),
                                 n_labels=len(labelled), epochs=p["finetune_epochs"], params=count_parameters(net),
                                 test_acc=ev["acc"], test_top5=ev["top5"], test_nll=ev["nll"], n_test=len(test),
                                 fraction=frac, **cols))
    out.df = pd.DataFrame(rows)
    out.sizes.update(n_val=base["n_val"], n_test=len(test))
    out.demo = _views_demo(p, device)
    write_results(out.df, NOTEBOOK, p["profile"])
    return out
