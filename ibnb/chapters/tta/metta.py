"""MeTTA (Ashukha et al., 2021): average a network's representation over augmented views of its input.

The penultimate representation (the input of the final linear layer) of ``metta_members`` trained members and
of one untrained, randomly initialised network of the same architecture is computed for the central view and
for ``max(metta_views)`` random crop+flip views. A linear probe (:func:`ibnb.core.metrics.linear_probe`) is
trained on the probe split and tested on the test set, with features built the same way on both sides: the
central feature, the mean over the first ``N`` views, or the interpolation ``(1 − a)·mean + a·central``.
"""
from __future__ import annotations

import pandas as pd
import torch

from ibnb.chapters.tta.ensembles import prediction_bank
from ibnb.chapters.tta.members import Splits
from ibnb.chapters.tta.policies import CENTRAL, CROP_FLIP
from ibnb.core.metrics import linear_probe
from ibnb.core.models import create_model
from ibnb.core.utils import seed_everything

UNTRAINED_SEED = 10_000


def _features(p: dict, encoder, data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Central features ``(N, D)`` and the random-view features ``(views, N, D)`` of ``data``."""
    views = [CENTRAL] + [CROP_FLIP] * max(p["metta_views"])
    f = prediction_bank([encoder], data, views, seed=p["aug_seed"], set_name=name,
                        batch_size=p["eval_batch_size"], features=True)[0]
    return f[0], f[1:]


def metta(p: dict, models, splits: Splits) -> pd.DataFrame:
    """Probe accuracy per encoder (``trained`` members ``0 … metta_members − 1`` and one ``untrained``
    network) and feature kind: ``central``, ``mean over views`` (per ``N`` of ``metta_views``) and
    ``interpolation`` (per ``a`` of ``metta_alphas``, at the largest ``N``)."""
    n_max = max(p["metta_views"])
    device = next(models[0].parameters()).device
    seed_everything(UNTRAINED_SEED)
    untrained = create_model(p["model"], num_classes=splits.train.num_classes, in_channels=splits.train.shape[0],
                             image_size=splits.train.shape[1], **p["model_kw"]).to(device)
    encoders = [("trained", i, models[i]) for i in range(p["metta_members"])] + [("untrained", 0, untrained)]
    ytr, yte = splits.probe.y.to(device), splits.test.y.to(device)
    rows = []
    for kind, seed, enc in encoders:
        (c_tr, v_tr), (c_te, v_te) = (_features(p, enc, d, f"metta-{part}-{kind}{seed}")
                                      for part, d in (("probe", splits.probe), ("test", splits.test)))

        def probe(make) -> float:
            return linear_probe(make(c_tr, v_tr), ytr, make(c_te, v_te), yte, num_classes=splits.train.num_classes,
                                epochs=p["probe_epochs"], lr=p["probe_lr"], batch_size=min(128, len(ytr)))["top1"]

        central = probe(lambda c, v: c)
        rows.append(dict(encoder=kind, seed=seed, features="central", views=1, alpha=1.0, probe_acc=central))
        mean = {n: probe(lambda c, v, n=n: v[:n].mean(0)) for n in sorted(set(p["metta_views"]) | {n_max})}
        rows += [dict(encoder=kind, seed=seed, features="mean over views", views=n, alpha=0.0, probe_acc=acc)
                 for n, acc in mean.items() if n in p["metta_views"]]
        for a in p["metta_alphas"]:  # a = 0: the mean over all views; a = 1: the central feature
            acc = mean[n_max] if a == 0 else central if a == 1 else probe(
                lambda c, v, a=a: (1 - a) * v.mean(0) + a * c)
            rows.append(dict(encoder=kind, seed=seed, features="interpolation", views=n_max, alpha=a, probe_acc=acc))
    return pd.DataFrame(rows)
