"""Chapter 01's claims audit: the literature's claims the sweep can test, each decided by
:func:`ibnb.book.claims.judge` on a seed-paired effect, plus calibration rows against published accuracies.

Effects are *first − second* in points of test accuracy, paired by seed (the seed draws the training subset and
the initialisation), with a Student-t 95 % interval over seeds.
"""
from __future__ import annotations

import pandas as pd

from ibnb.book.claims import Calibration, Claim, Effect, effect_of, group_effect, judge, paired_effect
from ibnb.book.page import Audit
from ibnb.chapters.architectures.presets import CNNS, NAMES, RECIPE

#: published anchors for the best CNN trained with crop+flip on the full CIFAR-10 training set
ANCHORS = (("ResNet-18, crop+flip, 200 epochs on 50,000 images", 93.0, "liu2017pytorchcifar"),
           ("airbench94, flip+translate, about 10 epochs on 50,000 images", 94.0, "jordan2024airbench"))
CAL_TOLERANCE = 3.0   # points
#: Bachmann et al.'s standard MLP on the full CIFAR-10 training set without augmentation (%), and its tolerance
S_MLP, S_MLP_TOLERANCE = 54.2, 5.0
#: the quantity of the MLP's calibration row (the page finds the row by it)
MLP_QUANTITY = "MLP test accuracy, no augmentation"
PERM_MARGIN = 2.0     # points: "no effect" on the MLP means |original − permuted| within this margin
#: the verdicts of the earlier, shorter `cpu` run (200 / 800 / 3,200 images, 6 epochs or 100 steps, width-8 CNN,
#: one learning rate for every model; commit 3853d35). The size-specific augmentation claims changed sizes, so
#: only the size-free claims are compared.
EARLIER = {"a CNN beats an MLP when data is scarce": "not testable at this budget",
           "the CNN's lead over the MLP shrinks as the training set grows": "not testable at this budget",
           "MLP-Mixer trails a CNN on small data": "not testable at this budget",
           "shuffling pixel positions hurts a CNN": "not testable at this budget",
           "shuffling pixel positions does not change an MLP": "not testable at this budget"}


def main_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs on unpermuted images."""
    return df[~df["permuted"].astype(bool)]


def best_augment(p: dict) -> str:
    """The augmentation compared against ``none``: crop+flip (the one the grid runs besides ``none``)."""
    return "crop+flip"


def sizes_with(p: dict, model: str, augment: str) -> list[int]:
    """The sizes (images per class) the grid trains ``model`` on with ``augment``."""
    return list(p["grid"].get(model, {}).get(augment, []))


def compared_sizes(p: dict) -> tuple[int, int]:
    """``(small, large)``: the smallest and the largest size at which both the CNN and the MLP are trained
    without augmentation (the sizes the CNN-versus-MLP claims compare)."""
    both = sorted(set(sizes_with(p, "cnn", "none")) & set(sizes_with(p, "mlp", "none")))
    return both[0], both[-1]


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
    small, large = compared_sizes(p)
    e = {"cnn_mlp_small": paired_effect(plain, "model", "cnn", "mlp", where={"n_per_class": small}),
         "cnn_mlp_large": paired_effect(plain, "model", "cnn", "mlp", where={"n_per_class": large}),
         "gap_change": gap_change(plain, small, large)}
    if "mixer" in p["models"]:
        e["mixer_cnn_small"] = paired_effect(plain, "model", "mixer", "cnn", where={"n_per_class": small})
    for n in sizes_with(p, "mlp_small", "none"):
        if n in sizes_with(p, "cnn", "none"):
            e[f"matched_{n}"] = paired_effect(plain, "model", "cnn", "mlp_small", where={"n_per_class": n})
    for m in p["models"]:
        if (sizes := aug_sizes(p, m)) is not None:
            e[f"aug_{m}"] = paired_effect(main, "augment", aug, "none", where={"model": m, "n_per_class": sizes[1]})
            e[f"augsmall_{m}"] = paired_effect(main, "augment", aug, "none",
                                                where={"model": m, "n_per_class": sizes[0]})
    if p["permute_n_per_class"]:
        ctrl = pixel_control(df, p["permute_n_per_class"])
        for m in p["permute_models"]:
            e[f"perm_{m}"] = paired_effect(ctrl, "pixels", "original", "permuted", where={"model": m})
    return e


def aug_sizes(p: dict, model: str = "cnn") -> tuple[int, int] | None:
    """The smallest and largest sizes at which ``model`` is trained both with and without crop+flip (``None``
    where it never is)."""
    both = sorted(set(sizes_with(p, model, best_augment(p))) & set(sizes_with(p, model, "none")))
    return (both[0], both[-1]) if both else None


def claims(df: pd.DataFrame, p: dict, num_classes: int) -> list[Claim]:
    """The claims of the literature that the sweep tests, each through :func:`judge`."""
    e, K, aug = effects(df, p), num_classes, best_augment(p)
    small, large = compared_sizes(p)
    epochs = dict(zip(p["n_per_class"], p["epochs"]))

    def setting(n) -> str:
        sizes = [n] if isinstance(n, int) else list(n)
        return (f"CIFAR-10, {' vs '.join(f'{K * s:,}' for s in sizes)} training images "
                f"({' / '.join(str(epochs[s]) for s in sizes)} epochs), {p['seeds']} seeds, lr and weight decay "
                "searched per model")
    out = [judge("a CNN beats an MLP when data is scarce", "bachmann2023scaling", setting(small),
                 e["cnn_mlp_small"], direction=+1),
           judge("the CNN's lead over the MLP shrinks as the training set grows", "bachmann2023scaling",
                 setting((small, large)), e["gap_change"], direction=-1)]
    if "mixer_cnn_small" in e:
        out.append(judge("MLP-Mixer trails a CNN on small data", "tolstikhin2021mlp", setting(small),
                         e["mixer_cnn_small"], direction=-1))
    aug_small, aug_large = aug_sizes(p)
    for size, key in ((aug_small, "augsmall_cnn"), (aug_large, "aug_cnn")):
        out.append(judge(f"{aug} augmentation improves a CNN trained on {K * size:,} images", "shorten2019survey",
                         setting(size), e[key], direction=+1))
    if p["permute_n_per_class"] and {"cnn", "mlp"} <= set(p["permute_models"]):
        n = p["permute_n_per_class"]
        out.append(judge("shuffling pixel positions hurts a CNN", "zhang2017understanding", setting(n),
                         e["perm_cnn"], direction=+1))
        out.append(judge("shuffling pixel positions does not change an MLP", "zhang2017understanding",
                         setting(n) + f"; margin ±{PERM_MARGIN:g} points", e["perm_mlp"], direction=0,
                         margin=PERM_MARGIN))
    return out


def full_size(p: dict) -> int:
    """The largest size of the grid (the full training set less the validation split, at ``cpu``/``gpu``)."""
    return max(p["n_per_class"])


def best_cnn(df: pd.DataFrame, p: dict) -> tuple[str, str]:
    """``(model, augment)``: the convolutional run setting with the highest mean accuracy at the largest size,
    among those trained with augmentation (crop+flip, or the fast CNN's recipe)."""
    d = main_runs(df)
    d = d[(d["n_per_class"] == full_size(p)) & d["augment"].isin([best_augment(p), RECIPE]) & d["model"].isin(CNNS)]
    return d.groupby(["model", "augment"])["test_acc"].mean().idxmax()


def _data_note(n: int, full: int = 50_000) -> str:
    """How much of the anchor's training set ours is, when it is clearly less (not for the validation split's 2 %)."""
    return f"{n / full:.0%} of the anchor's {full:,} training images" if n < 0.9 * full else ""


def calibration(df: pd.DataFrame, p: dict, num_classes: int) -> list[Calibration]:
    """The best CNN and the MLP on the largest training set against published full-data accuracies."""
    main, n_full = main_runs(df), full_size(p)
    n = num_classes * n_full
    model, aug = best_cnn(df, p)
    ours = group_effect(main, where={"model": model, "n_per_class": n_full, "augment": aug})
    rows_at = main[(main["n_per_class"] == n_full) & (main["model"] == model) & (main["augment"] == aug)]
    epochs = int(rows_at["epochs"].max())
    how = "its recipe (flip + translate)" if aug == RECIPE else aug
    out = [Calibration(f"best CNN ({NAMES.get(model, model)}) test accuracy", ours, published, source,
                       f"ours: {n:,} images, {epochs} epochs, {how}; theirs: {setting}", CAL_TOLERANCE,
                       note=_data_note(n))
           for setting, published, source in ANCHORS]
    if n_full in sizes_with(p, "mlp", "none"):
        mlp = group_effect(main, where={"model": "mlp", "n_per_class": n_full, "augment": "none"})
        mlp_epochs = int(main[(main["n_per_class"] == n_full) & (main["model"] == "mlp")]["epochs"].max())
        out.append(Calibration(MLP_QUANTITY, mlp, S_MLP, "bachmann2023scaling",
                               f"ours: {n:,} images, {mlp_epochs} epochs, {p['model_kw']['mlp']}; theirs: S-MLP, "
                               "full training set", S_MLP_TOLERANCE))
    return out


def audit(df: pd.DataFrame, p: dict, num_classes: int) -> Audit:
    """The chapter's :class:`~ibnb.book.page.Audit`."""
    return Audit(claims(df, p, num_classes), calibration(df, p, num_classes))
