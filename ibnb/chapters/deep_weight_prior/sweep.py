"""Chapter 06's runs: small MNIST training sets with each prior, and the initialisation experiment.

Target: MNIST with a few training images (class-balanced, a fresh subset per seed). Every method × size × seed
trains a :class:`~ibnb.core.models.bayesian.BayesCNN` with DWP, log-uniform, N(0, 1) or learned-Gaussian priors on
its conv layers (:class:`~ibnb.chapters.deep_weight_prior.method.VIStep`), or the deterministic
:func:`~ibnb.core.models.lenet.dwp_cnn` with an L2 penalty (:class:`~ibnb.chapters.deep_weight_prior.method.L2Step`);
each run takes ``target_steps`` steps of batch ``target_batch``. A 50-image training set is one step per epoch, so
it is presented in *rounds*: the set tiled to at least ``round_images`` images and shuffled (every image appears
the same number of times per round), validated on a held-out split after every round, so the convergence check
reads validation accuracy per round and validation does not cost more than training. A second experiment trains the deterministic net from three
initialisations of its conv layers. These runs are trained in place (their priors are objects, not names), not
through the run cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ibnb.book import results
from ibnb.chapters.deep_weight_prior import source as S
from ibnb.chapters.deep_weight_prior.method import L2Step, TargetNet, VIStep, make_priors
from ibnb.chapters.deep_weight_prior.presets import NOTEBOOK
from ibnb.core.data import ImageData, class_balanced_subset
from ibnb.core.models import count_parameters, create_model
from ibnb.core.models.bayesian import BayesConv2d, BayesLayer, weight_samples
from ibnb.core.reference import splits
from ibnb.core.train import TrainConfig, device_name, evaluate, fit


@dataclass
class Outcome:
    """Everything the page shows: the results table (small-data and init runs), the init runs' histories keyed by
    ``(init, seed)``, the source nets' table, the source data, the source kernels, the VAEs and their losses."""

    df: pd.DataFrame
    init_histories: dict
    source_table: pd.DataFrame
    source: ImageData
    kernels: dict
    vaes: dict
    vae_losses: dict = field(default_factory=dict)


def tiled(data: ImageData, min_images: int) -> ImageData:
    """``data`` repeated a whole number of times to at least ``min_images`` images (one *round*)."""
    k = max(1, math.ceil(min_images / len(data)))
    return data if k == 1 else data.subset(torch.arange(len(data)).repeat(k), repeated=k)


def rounds_for(n: int, p: dict) -> int:
    """Rounds (epochs of the tiled set) so that a run on ``n`` images takes at least ``target_steps`` steps."""
    per_round = max(1, math.ceil(p["round_images"] / n) * n // min(p["target_batch"], n))
    return max(1, math.ceil(p["target_steps"] / per_round))


def mc_evaluate(model: nn.Module, test: ImageData, samples: int, seed: int = 0) -> dict:
    """Accuracy and NLL of the Monte-Carlo ensemble of ``samples`` weight samples of a variational net (the mean of
    their softmax outputs; the authors report it with 10 samples), or of the posterior mean (``samples=0``, and
    any net with no variational layer)."""
    if samples < 1 or not any(isinstance(m, BayesLayer) for m in model.modules()):
        return evaluate(model, test)
    torch.manual_seed(seed)
    with weight_samples(model):
        probs = sum(evaluate(model, test, return_logits=True)["logits"].softmax(1) for _ in range(samples)) / samples
    y = test.y.to(probs.device)
    nll = -probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean()
    return {"acc": (probs.argmax(1) == y).float().mean().item(), "nll": nll.item(), "n": len(test)}


def _row(experiment: str, model_name: str, method: str, model, train, test, hist, seed: int, epochs: int,
         device, p: dict, n_train: int | None = None) -> dict:
    """One results row; ``n_train`` is the number of distinct training images (default ``len(train)``)."""
    ev = mc_evaluate(model, test, p["mc_samples"], seed)
    return dict(experiment=experiment, model=model_name, dataset="mnist", n_train=n_train or len(train), seed=seed,
                epochs=epochs, params=count_parameters(model), test_acc=ev["acc"], test_nll=ev["nll"],
                **hist.columns(), device=device_name(device), method=method, n_test=ev["n"], source=p["source"])


def run_small_data(p: dict, kernels: dict, vaes: dict, progress: bool = False) -> pd.DataFrame:
    """Every method × training-set size × seed on MNIST; one row each."""
    device = torch.device(p["device"])
    pool, val, test = splits("mnist", p["val_per_class"], p["test_per_class"])
    rows = []
    plan = [(n, s, m) for n in p["sizes"] for s in range(p["seeds"]) for m in p["methods"]]
    for n, seed, method in tqdm(plan, desc="small-data runs", disable=not progress):
        train = tiled(class_balanced_subset(pool, n // 10, seed=seed), p["round_images"])
        epochs, batch = rounds_for(n, p), min(p["target_batch"], n)
        torch.manual_seed(seed)
        if method.startswith("L2"):
            model, step = create_model("dwp_cnn", **S.model_kw(p)), L2Step(n)
        else:
            priors = make_priors(method, kernels, vaes, p["classifier_prior"])
            model = TargetNet(priors, log_sigma2_init=p["log_sigma2_init"], **S.model_kw(p))
            step = VIStep(n, method)
        if p["target_init"] == "DWP samples":  # the authors' --init_list vae vae, for every method alike
            sample_kernels(model, vaes, seed)
        config = TrainConfig.from_params(p, epochs=epochs, batch_size=batch, weight_decay=0.0,
                                         schedule=p["target_schedule"], seed=seed)
        hist = fit(model, train, val, config, step=step, device=device, progress=False)
        reg = [c for c in ("train_kl", "train_l2") if c in hist.frame][0]
        rows.append(dict(**_row("small_data", method, method, model, train, test, hist, seed, epochs, device, p, n),
                         steps=epochs * (len(train) // batch), final_nll=hist.frame["train_nll"].iloc[-1],
                         final_reg=hist.frame[reg].iloc[-1], best_val_acc=float(hist.frame["val_acc"].max()),
                         final_val_acc=float(hist.frame["val_acc"].iloc[-1])))
    return pd.DataFrame(rows)


def sample_kernels(model: nn.Module, vaes: dict, seed: int) -> nn.Module:
    """Set the two conv layers' kernels (a variational layer's means) to samples of the layer's DWP, one sample per
    kernel, and their biases to zero."""
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, BayesConv2d))]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, conv in enumerate(convs):
            n = conv.weight.shape[0] * conv.weight.shape[1]
            conv.weight.copy_(vaes[f"conv{i + 1}"].sample(n, generator=g).view_as(conv.weight))
            conv.bias.zero_()
    return model


def initialise(model: nn.Module, init: str, seed: int, nets: list[nn.Module], vaes: dict) -> nn.Module:
    """Replace the conv kernels of a fresh ``dwp_cnn``: Xavier-uniform, a source net's learned filters, or
    samples from the DWP (one sample per kernel)."""
    if init == "DWP samples":
        return sample_kernels(model, vaes, seed)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, conv in enumerate(convs):
            if init == "xavier":
                nn.init.xavier_uniform_(conv.weight, generator=g)
            elif init == "learned filters":
                src = [m for m in nets[seed % len(nets)].modules() if isinstance(m, nn.Conv2d)][i]
                conv.weight.copy_(src.weight)
            else:
                raise KeyError(init)
            conv.bias.zero_()
    return model


def run_init(p: dict, nets: list, vaes: dict, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Deterministic CNNs on ``init_n_per_class`` MNIST images per class from each initialisation."""
    device = torch.device(p["device"])
    pool, val, test = splits("mnist", p["val_per_class"], p["test_per_class"])
    rows, hists = [], {}
    for seed in tqdm(range(p["init_seeds"]), desc="init runs", disable=not progress):
        train = class_balanced_subset(pool, p["init_n_per_class"], seed=seed)
        for init in p["inits"]:
            torch.manual_seed(seed)
            model = initialise(create_model("dwp_cnn", **S.model_kw(p)), init, seed, nets, vaes)
            config = TrainConfig.from_params(p, epochs=p["init_epochs"], batch_size=p["target_batch"],
                                             weight_decay=0.0, schedule="constant", seed=seed)
            hist = fit(model, train, val, config, device=device, progress=False)
            hists[(init, seed)] = hist.frame
            rows.append(dict(**_row("init", f"dwp_cnn ({init})", init, model, train, test, hist, seed,
                                    p["init_epochs"], device, p),
                             first_epoch_loss=float(hist.frame["train_loss"].iloc[0])))
    return pd.DataFrame(rows), hists


def run_sweep(p: dict, progress: bool = False) -> Outcome:
    """Source nets → kernels → VAEs, then the small-data and the init runs; writes the results table."""
    nets, source_table, src = S.train_source_nets(p, progress=progress)
    kernels = S.source_kernels(nets)
    vaes, vae_losses = S.fit_priors(kernels, p)
    small = run_small_data(p, kernels, vaes, progress=progress)
    init, init_histories = run_init(p, nets, vaes, progress=progress)
    df = pd.concat([small, init], ignore_index=True)
    results.write_results(df, NOTEBOOK, p["profile"])
    return Outcome(df, init_histories, source_table, src, kernels, vaes, vae_losses)
