"""Chapter 01's claims audit: the literature's claims the sweep can test, each decided by
:func:`ibnb.book.claims.judge` on a seed-paired effect, plus calibration rows against published accuracies.

Effects are *first − second* in points of test accuracy, paired by seed (the seed draws the training subset and
the initialisation), with a Student-t 95 % interval over seeds.
"""
from __future__ import annotations

import pandas as pd

from ibnb.book.claims import Calibration, Claim, Effect, effect_of, group_effect, judge, paired_effect
from ibnb.book.page import Audit
from ibnb.chapters.architectures.presets import CNNS, NAMES

#: published anchors for the best CNN trained with crop+flip on the full CIFAR-10 training set
ANCHORS = (("ResNet-18, crop+flip, 200 epochs on 50,000 images", 93.0, "liu2017pytorchcifar"),
           ("airbench94, flip+translate, about 10 epochs on 50,000 images", 94.0, "jordan2024airbench"))
CAL_TOLERANCE = 3.0   # points
PERM_MARGIN = 2.0     # points: "no effect" on the MLP means |original − permuted| within this margin
#: the verdicts of the `cpu` profile under the earlier one-standard-deviation rule (2 seeds; commit 19229e2)
EARLIER = {"a CNN beats an MLP when data is scarce": "supported",
           "the CNN's lead over the MLP shrinks as the training set grows": "supported",
           "MLP-Mixer trails a CNN on small data": "supported",
           "crop+flip augmentation improves a CNN trained on 200 images": "contradicted",
           "crop+flip augmentation improves a CNN trained on 3,200 images": "contradicted",
           "shuffling pixel positions hurts a CNN": "supported",
           "shuffling pixel positions does not change an MLP": "consistent"}


def main_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs on unpermuted images."""
    return df[~df["permuted"].astype(bool)]


def best_augment(p: dict) -> str:
    """The augmentation compared against ``none`` (crop+flip when the profile runs it)."""
    return "crop+flip" if "crop+flip" in p["augment_options"] else p["augment_options"][-1]


def gap_change(plain: pd.DataFrame, small: int, large: int) -> Effect:
    """(CNN − MLP at ``large``) − (CNN − MLP at ``small``) images per class, paired by seed."""
    d = plain[plain["model"].isin(["cnn", "mlp"]) & plain["n_per_class"].isin([small, large])]
    acc = d.pivot_table(index="seed", columns=["n_per_class", "model"], values="test_acc")
    change = ((acc[(large, "cnn")] - acc[(large, "mlp")]) - (acc[(small, "cnn")] - acc[(small, "mlp")])).dropna()
    flags = d[d["seed"].isin(change.index)]["converged"].astype(bool).tolist()
    return effect_of(change.tolist(), converged=flags)


def pixel_control(df: pd.DataFrame, n_per_class: int) -> pd.DataFrame:
    """The control's runs with a ``pixels`` column (original / permuted)."""
    d = df[(df["n_per_class"] == n_per_class) & (df["augment"] == "none")]
    return d.assign(pixels=d["permuted"].astype(bool).map({False: "original", True: "permuted"}))


def effects(df: pd.DataFrame, p: dict) -> dict:
    """Every effect the audit and the prose use, by name."""
    main, aug = main_runs(df), best_augment(p)
    plain = main[main["augment"] == "none"]
    small, large = min(p["n_per_class"]), max(p["n_per_class"])
    e = {"cnn_mlp_small": paired_effect(plain, "model", "cnn", "mlp", where={"n_per_class": small}),
         "cnn_mlp_large": paired_effect(plain, "model", "cnn", "mlp", where={"n_per_class": large}),
         "gap_change": gap_change(plain, small, large)}
    if "mixer" in p["models"]:
        e["mixer_cnn_small"] = paired_effect(plain, "model", "mixer", "cnn", where={"n_per_class": small})
    for m in p["models"]:
        e[f"aug_{m}"] = paired_effect(main, "augment", aug, "none", where={"model": m, "n_per_class": large})
    e["aug_cnn_small"] = paired_effect(main, "augment", aug, "none", where={"model": "cnn", "n_per_class": small})
    if p["permute_n_per_class"]:
        ctrl = pixel_control(df, p["permute_n_per_class"])
        for m in p["models"]:
            e[f"perm_{m}"] = paired_effect(ctrl, "pixels", "original", "permuted", where={"model": m})
    return e


def claims(df: pd.DataFrame, p: dict, num_classes: int) -> list[Claim]:
    """The claims of the literature that the sweep tests, each through :func:`judge`."""
    e, K, aug = effects(df, p), num_classes, best_augment(p)
    small, large = min(p["n_per_class"]), max(p["n_per_class"])
    setting = f"CIFAR-10, {{}} training images, {p['seeds']} seeds, at least {p['min_steps']} steps"
    out = [judge("a CNN beats an MLP when data is scarce", "bachmann2023scaling", setting.format(K * small),
                 e["cnn_mlp_small"], direction=+1),
           judge("the CNN's lead over the MLP shrinks as the training set grows", "bachmann2023scaling",
                 setting.format(f"{K * small} vs {K * large}"), e["gap_change"], direction=-1)]
    if "mixer_cnn_small" in e:
        out.append(judge("MLP-Mixer trails a CNN on small data", "tolstikhin2021mlp", setting.format(K * small),
                         e["mixer_cnn_small"], direction=-1))
    if aug != "none":
        for size, key in ((small, "aug_cnn_small"), (large, "aug_cnn")):
            out.append(judge(f"{aug} augmentation improves a CNN trained on {K * size:,} images", "shorten2019survey",
                             setting.format(K * size), e[key], direction=+1))
    if p["permute_n_per_class"]:
        n = K * p["permute_n_per_class"]
        out.append(judge("shuffling pixel positions hurts a CNN", "zhang2017understanding", setting.format(n),
                         e["perm_cnn"], direction=+1))
        out.append(judge("shuffling pixel positions does not change an MLP", "zhang2017understanding",
                         setting.format(n) + f"; margin ±{PERM_MARGIN:g} points", e["perm_mlp"], direction=0,
                         margin=PERM_MARGIN))
    return out


def best_cnn(df: pd.DataFrame, p: dict) -> str:
    """The convolutional model with the highest mean accuracy at the largest size with augmentation."""
    d = main_runs(df)
    d = d[(d["n_per_class"] == max(p["n_per_class"])) & (d["augment"] == best_augment(p)) & d["model"].isin(CNNS)]
    return str(d.groupby("model")["test_acc"].mean().idxmax())


def calibration(df: pd.DataFrame, p: dict, num_classes: int) -> list[Calibration]:
    """The best CNN on the profile's largest training set against the published full-data accuracies."""
    model, aug = best_cnn(df, p), best_augment(p)
    n = num_classes * max(p["n_per_class"])
    ours = group_effect(main_runs(df), where={"model": model, "n_per_class": max(p["n_per_class"]),
                                              "augment": aug})
    epochs = int(df[df["n_per_class"] == max(p["n_per_class"])]["epochs"].max())
    return [Calibration(f"best CNN ({NAMES.get(model, model)}) test accuracy", ours, published, source,
                        f"ours: {n:,} images, {epochs} epochs, {aug}; theirs: {setting}", CAL_TOLERANCE,
                        note=f"{50_000 / n:.0f}× less data than the anchor")
            for setting, published, source in ANCHORS]


def audit(df: pd.DataFrame, p: dict, num_classes: int) -> Audit:
    """The chapter's :class:`~ibnb.book.page.Audit`."""
    return Audit(claims(df, p, num_classes), calibration(df, p, num_classes))
