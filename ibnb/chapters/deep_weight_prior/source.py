"""Chapter 06's source task: the data the prior is learned from, the source nets and the kernel VAEs.

Source: PACS sketches (all 7 classes, greyscale, inverted to white strokes on black like MNIST, resized to 28×28).
``n_source_nets`` CNNs (:func:`ibnb.core.models.lenet.dwp_cnn`, one seed each, validated on 20 held-out sketches
per class) are trained on them through the run cache; one :class:`~ibnb.core.models.kernel_vae.KernelVAE` is
fitted to the 7×7 kernels of their first and one to the 5×5 kernels of their second conv layer.
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ibnb.chapters.deep_weight_prior.method import fit_vae
from ibnb.core.data import ImageData, load_dataset, split_off
from ibnb.core.image_ops import grey
from ibnb.core.runs import train_or_load
from ibnb.core.train import TrainConfig, evaluate

HELD_PER_CLASS = 20  # source images per class held out to validate the source nets


def to_grey28(data: ImageData, invert: bool) -> ImageData:
    """RGB → greyscale (luma), resized to 28×28 (antialiased bilinear), optionally inverted."""
    x = F.interpolate(grey(data.x.float()), size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    if invert:
        x = 255 - x
    x = x.round().clamp(0, 255).to(torch.uint8)
    m, s = float(x.float().mean() / 255), float(x.float().std() / 255)
    return ImageData(x=x, y=data.y, classes=data.classes, name=data.name + "_grey28", mean=(m,), std=(s,),
                     meta={**data.meta, "grey28": True, "inverted": invert})


def source_data(p: dict) -> ImageData:
    """The source images, greyscale 28×28 (PACS sketches inverted)."""
    if p["source"].startswith("pacs"):
        return to_grey28(load_dataset(p["source"], "train", size=32), invert=p["source"] == "pacs_sketch")
    return to_grey28(load_dataset(p["source"], "train"), invert=False)


def model_kw(p: dict) -> dict:
    """The widths of the target architecture (source nets, Bayesian nets and the L2 baseline alike)."""
    return {"width1": p["width1"], "width2": p["width2"]}


def train_source_nets(p: dict, progress: bool = False) -> tuple[list[nn.Module], pd.DataFrame, ImageData]:
    """Train (or load) ``n_source_nets`` CNNs on the source data, one seed each; returns the nets, a table of
    their held-out accuracy on the source task (with their convergence columns), and the source data."""
    src = source_data(p)
    train, held = split_off(src, HELD_PER_CLASS, seed=10_000)
    nets, rows = [], []
    for seed in tqdm(range(p["n_source_nets"]), desc="source nets", disable=not progress):
        config = TrainConfig.from_params(p, epochs=p["source_epochs"], batch_size=p["source_batch"], seed=seed)
        model, hist, cached = train_or_load("dwp_cnn", train, held, config=config, model_kw=model_kw(p),
                                            device=p["device"], progress=False)
        nets.append(model.cpu())
        rows.append(dict(seed=seed, source_acc=evaluate(model, held)["acc"], cached=cached, **hist.columns()))
    return nets, pd.DataFrame(rows), src


def source_kernels(nets: list[nn.Module]) -> dict[str, torch.Tensor]:
    """All k×k kernels of each conv layer over the source nets: {"conv1": N×7×7, "conv2": N×5×5}."""
    convs = [[m for m in net.modules() if isinstance(m, nn.Conv2d)] for net in nets]
    return {f"conv{i + 1}": torch.cat([c[i].weight.detach().reshape(-1, *c[i].weight.shape[-2:]) for c in convs])
            for i in range(2)}


def fit_priors(kernels: dict[str, torch.Tensor], p: dict) -> tuple[dict, dict]:
    """The fitted VAE and its training losses per conv layer."""
    vaes, losses = {}, {}
    for i, (layer, k) in enumerate(kernels.items()):
        vaes[layer], losses[layer] = fit_vae(k, z_dim=p["z_dim"], hidden=p["vae_hidden"], steps=p["vae_steps"],
                                             seed=i)
    return vaes, losses
