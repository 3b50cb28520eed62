"""Chapter 02's analysis of the trained runs: the conv-as-matrix identity, power-law fits of the scaling grid,
the batch-size effect, and the shape-vs-texture index of the probes."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from ibnb.chapters.mlp_scaling.scaling import bootstrap, fit_saturating, fit_two_factor, pareto_frontier
from ibnb.core import flops

#: the conv-as-MLP identity holds when the largest absolute difference is below this (float32 rounding)
IDENTITY_TOL = 1e-4


@dataclass
class ConvIdentity:
    """A convolution written as a dense matrix ``M`` (``shared``: which kernel entry each entry copies, −1 for a
    structural zero), checked against ``F.conv2d`` on random inputs."""

    matrix: torch.Tensor
    shared: torch.Tensor
    max_error: float
    output_scale: float
    out_hw: tuple[int, int]
    small_shared: torch.Tensor  # the 3×3 convolution on an 8×8 image, for the figure
    small_shape: tuple[int, int]

    @property
    def nonzero_pct(self) -> float:
        return 100 * flops.nonzero_fraction(self.matrix)

    @property
    def local_weights(self) -> int:
        return int((self.shared >= 0).sum())

    @property
    def distinct(self) -> int:
        return flops.distinct_weights(self.shared)


def conv_identity(kw: dict, image_hw=(32, 32), in_channels: int = 3, seed: int = 0) -> ConvIdentity:
    """The prior experiment's convolution (``kw``: channels, kernel_size, stride) as a matrix, checked."""
    torch.manual_seed(seed)
    small = torch.nn.Conv2d(1, 1, 3, padding=1)
    small_m, small_s = flops.conv_as_matrix(small, (8, 8))
    conv = torch.nn.Conv2d(in_channels, kw["channels"], kw["kernel_size"], kw["stride"], kw["kernel_size"] // 2)
    M, S = flops.conv_as_matrix(conv, image_hw)
    x = torch.randn(8, in_channels, *image_hw)
    with torch.no_grad():
        ref = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
        as_mlp = x.flatten(1) @ M.T + conv.bias.repeat_interleave(ref.shape[2] * ref.shape[3])
    err = float((as_mlp - ref.flatten(1)).abs().max())
    return ConvIdentity(M, S, err, float(ref.abs().max()), (ref.shape[2], ref.shape[3]), small_s,
                        tuple(small_m.shape))


def scaling_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Mean test error and training FLOPs per grid cell (model size × data size), over seeds, with the count."""
    return df.groupby(["size", "params", "n_train"], as_index=False).agg(
        test_error=("test_error", "mean"), train_flops=("train_flops", "mean"), n_seeds=("seed", "nunique"))


def _fits_of(g: pd.DataFrame) -> dict:
    """The fits of one table of cell means (``None`` where a fit has too few points)."""
    at_n = g[g["n_train"] == g["n_train"].max()]
    at_p = g[g["params"] == g["params"].max()]
    frontier = pareto_frontier(g)
    on = frontier if len(frontier) >= 3 else g

    def one(x, y):
        return fit_saturating(x, y) if len(x) >= 3 and x.nunique() >= 2 else None

    return dict(frontier=frontier, compute_on="frontier" if on is frontier else "all runs",
                fit_p=one(at_n["params"], at_n["test_error"]), fit_d=one(at_p["n_train"], at_p["test_error"]),
                fit_c=one(on["train_flops"], on["test_error"]),
                joint=fit_two_factor(g["params"], g["n_train"], g["test_error"])
                if len(g) >= 6 and g["n_train"].nunique() >= 2 and g["params"].nunique() >= 2 else None)


def _values(fits: dict) -> dict:
    """The bootstrapped quantities of a set of fits, by name."""
    out = {}
    for key in ("fit_p", "fit_d", "fit_c"):
        if fits[key] is not None:
            out[key], out[f"{key}_einf"] = fits[key].exponent, fits[key].e_inf
    if fits["joint"] is not None:
        out.update(joint_p=fits["joint"].alpha_p, joint_d=fits["joint"].alpha_d, joint_gap=fits["joint"].gap)
    return out


def scaling_fits(df: pd.DataFrame, seed: int = 0, n_boot: int = 1000, level: float = 0.95) -> dict:
    """Saturating power-law fits of test error (mean over seeds) against parameters (largest data size), data
    (largest model), training compute (the compute-efficient frontier, or every cell when the frontier has fewer
    than 3 points) and the two-factor law on the whole grid, each with a bootstrap interval over seeds
    (:func:`~ibnb.chapters.mlp_scaling.scaling.bootstrap`; ``n_boot`` resamples, seeded)."""
    g = scaling_grid(df)
    fits = {"grid": g, **_fits_of(g)}
    flops = g.set_index(["size", "params", "n_train"])["train_flops"]

    def refit(means: pd.DataFrame) -> dict:
        m = means.assign(train_flops=flops.loc[list(zip(means["size"], means["params"], means["n_train"]))].to_numpy())
        return _values(_fits_of(m))

    ci = bootstrap(df, ["size", "params", "n_train"], "test_error", refit, n_boot=n_boot, seed=seed, level=level)
    for key in ("fit_p", "fit_d", "fit_c"):
        if fits[key] is not None and key in ci:
            fits[key].ci, fits[key].ci_e_inf = ci[key], ci[f"{key}_einf"]
    if fits["joint"] is not None and "joint_gap" in ci:
        j = fits["joint"]
        j.ci_p, j.ci_d, j.ci_gap = ci["joint_p"], ci["joint_d"], ci["joint_gap"]
    fits["bootstrap"] = dict(n=n_boot, failed=int(ci["failed"][0]), seeds=int(g["n_seeds"].min()))
    return fits


def batch_effect(df: pd.DataFrame) -> pd.DataFrame:
    """Per regime and model: accuracy at the smallest and the largest batch (mean over seeds), the change, the
    best batch."""
    s = df.groupby(["regime", "model", "batch_size"])["test_acc"].mean().unstack()
    lo, hi = s.columns.min(), s.columns.max()
    return pd.DataFrame({"acc_small_batch": s[lo], "acc_large_batch": s[hi], "change": s[hi] - s[lo],
                         "best_batch": s.idxmax(axis=1)})


def batch_interaction(df: pd.DataFrame, regime: str, mlp: str = "bmlp", cnn: str = "cnn") -> pd.Series:
    """Per seed, in one regime (``epochs`` / ``steps``): (MLP's change from the smallest to the largest batch) −
    (the CNN's), in accuracy."""
    df = df[df["regime"] == regime]
    lo, hi = df["batch_size"].min(), df["batch_size"].max()
    acc = df.pivot_table(index="seed", columns=["model", "batch_size"], values="test_acc")
    return ((acc[(mlp, hi)] - acc[(mlp, lo)]) - (acc[(cnn, hi)] - acc[(cnn, lo)])).dropna()


def probe_table(df: pd.DataFrame, value: str = "retained") -> pd.DataFrame:
    """Long table (model, seed, probe, value) from the probe rows' ``value[<probe>]`` columns."""
    cols = [c for c in df.columns if c.startswith(f"{value}[") and c != f"{value}[clean]"]
    long = df.melt(id_vars=["model", "seed"], value_vars=cols, var_name="probe", value_name=value)
    long["probe"] = long["probe"].str.slice(len(value) + 1, -1)
    long[value] = long[value].astype(float)
    return long


def shape_index(probe_long: pd.DataFrame) -> pd.DataFrame:
    """Per model and seed: mean retained accuracy on the shape-keeping probes (low-pass, edges), on the
    texture-keeping probes (patch shuffles), and their difference (> 0: relies more on shape)."""
    shape = probe_long[probe_long["probe"].isin(["low-pass", "edges"])]
    texture = probe_long[probe_long["probe"].str.startswith("shuffle")]
    a = shape.groupby(["model", "seed"])["retained"].mean().rename("shape_kept")
    b = texture.groupby(["model", "seed"])["retained"].mean().rename("texture_kept")
    out = pd.concat([a, b], axis=1)
    out["shape_index"] = out["shape_kept"] - out["texture_kept"]
    return out.reset_index()
