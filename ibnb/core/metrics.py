"""Metrics, on the device: accuracy, NLL, top-k, Brier score, ECE with reliability-diagram data, temperature
scaling and the *calibrated* NLL; and probes of frozen features (linear probe, weighted kNN).

Every function takes **log-probabilities** (or logits: anything that a softmax turns into the predictive
distribution) of shape ``(..., N, C)`` and labels ``(N,)``, and returns tensors on the same device, so a whole
grid of methods is scored without a host sync. An ensemble or a test-time-augmented prediction enters as the
log of its *averaged probabilities* (:func:`log_mean_prob`); temperature scaling then divides those
log-probabilities by ``T`` and renormalises, as in Ashukha et al. (ICLR 2020).

Temperature scaling (Guo et al., ICML 2017) fits one scalar ``T > 0`` per predictor by minimising the NLL
over ``log T`` on a validation split (carved from the training data, never the test set). The NLL of
``logits / T`` is convex in ``1/T``, hence unimodal in ``log T``; :func:`fit_temperature` runs a fixed number of
golden-section steps on ``log T`` (batched over any leading dimensions, no host sync): 36 steps shrink
the search interval by a factor 0.618^36 ≈ 3e-8.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ibnb.core.augment import DeviceLoader
from ibnb.core.data import ImageData

_GOLDEN = (math.sqrt(5) - 1) / 2


def log_mean_prob(logp: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """``log(mean(exp(logp), dim))``: the log of averaged predictive probabilities (ensemble / TTA)."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    n = math.prod(logp.shape[d] for d in dims)
    return torch.logsumexp(logp, dim=dims) - math.log(n)


def nll(logits: torch.Tensor, y: torch.Tensor, temperature: torch.Tensor | float | None = None) -> torch.Tensor:
    """Mean negative log-likelihood (nats) of ``softmax(logits / T)``; batched over leading dims."""
    if temperature is not None:
        t = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
        logits = logits / t.reshape(t.shape + (1, 1))
    logp = logits.float().log_softmax(-1)
    return -logp.gather(-1, y.expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1).mean(-1)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy (fraction); batched over leading dims."""
    return (logits.argmax(-1) == y).float().mean(-1)


def brier(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Brier score: mean over examples of ``sum_c (p_c - 1[y = c])^2`` (0 = perfect, 2 = worst)."""
    p = logits.float().softmax(-1)
    onehot = F.one_hot(y, p.shape[-1]).to(p.dtype)
    return (p - onehot).pow(2).sum(-1).mean(-1)


def reliability(logits: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """Reliability-diagram data of a single predictor ``(N, C)``: per equal-width confidence bin the
    number of examples, mean confidence and accuracy (NaN for empty bins), plus the bin edges."""
    p = logits.float().softmax(-1)
    conf, pred = p.max(-1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, n_bins + 1, device=logits.device)
    idx = torch.bucketize(conf, edges[1:-1], right=True)  # bin i holds (edges[i], edges[i+1]]
    count = torch.zeros(n_bins, device=logits.device).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, device=logits.device).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins, device=logits.device).index_add_(0, idx, correct)
    nan = torch.full_like(count, float("nan"))
    return {"edges": edges, "count": count,
            "confidence": torch.where(count > 0, conf_sum / count.clamp_min(1), nan),
            "accuracy": torch.where(count > 0, acc_sum / count.clamp_min(1), nan)}


def ece(logits: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Expected calibration error with ``n_bins`` equal-width confidence bins (a fraction, 0 = calibrated):
    ``Σ_b |Σ_{i∈b} (correct_i − confidence_i)| / N``; batched over leading dims."""
    p = logits.float().softmax(-1)
    conf, pred = p.max(-1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, n_bins + 1, device=logits.device)
    onehot = F.one_hot(torch.bucketize(conf, edges[1:-1], right=True), n_bins).to(conf.dtype)  # (..., N, B)
    gap = ((correct - conf).unsqueeze(-1) * onehot).sum(-2)
    return gap.abs().sum(-1) / conf.shape[-1]


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, *, log_t_range: tuple[float, float] = (-4.0, 4.0),
                    steps: int = 36) -> torch.Tensor:
    """Temperature(s) ``T`` minimising the NLL of ``softmax(logits / T)`` on ``(logits, y)``.

    ``logits`` may carry leading batch dimensions ``(..., N, C)``: one temperature is fitted per leading
    index (returned with shape ``...``). Golden-section search on ``log T`` within ``log_t_range``.
    """
    logits = logits.float()
    lead = logits.shape[:-2]
    lo = torch.full(lead, log_t_range[0], device=logits.device)
    hi = torch.full(lead, log_t_range[1], device=logits.device)
    a = hi - _GOLDEN * (hi - lo)
    b = lo + _GOLDEN * (hi - lo)
    fa, fb = nll(logits, y, a.exp()), nll(logits, y, b.exp())
    for _ in range(steps):
        left = fa < fb  # the minimum lies in [lo, b]
        hi = torch.where(left, b, hi)
        lo = torch.where(left, lo, a)
        new_a = hi - _GOLDEN * (hi - lo)
        new_b = lo + _GOLDEN * (hi - lo)
        # one of the two interior points is reused; evaluating both keeps the code branch-free
        a, b = new_a, new_b
        fa, fb = nll(logits, y, a.exp()), nll(logits, y, b.exp())
    return ((lo + hi) / 2).exp()


def scores(logits: torch.Tensor, y: torch.Tensor, temperature: torch.Tensor | float | None = None,
           n_bins: int = 15) -> dict[str, torch.Tensor]:
    """Accuracy, raw NLL, Brier and ECE of predictions ``(..., N, C)``; with ``temperature`` (a scalar or
    one per leading index) also the calibrated NLL (``cnll``) and the ECE after temperature scaling
    (``cece``). Values stay on the device."""
    out = {"acc": accuracy(logits, y), "nll": nll(logits, y), "brier": brier(logits, y),
           "ece": ece(logits, y, n_bins)}
    if temperature is not None:
        t = torch.as_tensor(temperature, dtype=torch.float32, device=logits.device)
        out["temperature"] = t
        out["cnll"] = nll(logits, y, t)
        out["cece"] = ece(logits / t.reshape(t.shape + (1, 1)), y, n_bins)
    return out


def calibrated_scores(val_logits: torch.Tensor, val_y: torch.Tensor, test_logits: torch.Tensor,
                      test_y: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """:func:`scores` on the test predictions with the temperature fitted on the validation predictions of
    the same predictor."""
    return scores(test_logits, test_y, fit_temperature(val_logits, val_y), n_bins)


# ----------------------------------------------------------------------------- probes of frozen features
@torch.no_grad()
def extract_features(encoder: nn.Module, data: ImageData, *, batch_size: int = 500, device=None) -> torch.Tensor:
    """Frozen representations (float32, on ``device``) of every image of ``data``, in order, eval mode."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was = encoder.training
    encoder.eval()
    loader = DeviceLoader(data, batch_size, shuffle=False, device=device)
    out = []
    for x, _ in loader:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(encoder(x).float())
    encoder.train(was)
    return torch.cat(out)


def pixel_features(data: ImageData, device=None) -> torch.Tensor:
    """Raw normalised pixels, flattened: the no-learning baseline representation (on ``device``)."""
    loader = DeviceLoader(data, len(data), shuffle=False, device=device)
    return next(iter(loader))[0].flatten(1)


def linear_probe(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor,
                 *, num_classes: int, epochs: int = 20, batch_size: int = 256, lr: float = 0.1,
                 seed: int = 0) -> dict[str, float]:
    """One linear layer on frozen (standardised) features: SGD (momentum 0.9, cosine schedule), cross-entropy;
    returns test ``top1`` and ``top5``."""
    g = torch.Generator(device=f_train.device).manual_seed(seed)
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    a, b = (f_train - mu) / sd, (f_test - mu) / sd
    torch.manual_seed(seed)
    layer = nn.Linear(a.shape[1], num_classes).to(a.device)
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9)
    steps_per_epoch = max(1, len(a) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(a), generator=g, device=a.device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(layer(a[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        logits = layer(b)
    return topk(logits, y_test)


def topk(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    k = min(5, logits.shape[1])
    return {"top1": (logits.argmax(1) == y).float().mean().item(),
            "top5": (logits.topk(k, 1).indices == y[:, None]).any(1).float().mean().item()}


@torch.no_grad()
def knn_accuracy(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor,
                 *, num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    """Weighted k-nearest-neighbour accuracy on cosine similarity (Wu et al., 2018): each of the ``k`` nearest
    training points votes for its class with weight exp(similarity / temperature)."""
    a, b = F.normalize(f_train, dim=1), F.normalize(f_test, dim=1)
    sim, idx = (b @ a.T).topk(min(k, len(a)), dim=1)
    votes = torch.zeros(len(b), num_classes, device=b.device)
    votes.scatter_add_(1, y_train[idx], torch.exp(sim / temperature))
    return (votes.argmax(1) == y_test).float().mean().item()


def summarize(df, by: list[str], value: str = "test_acc"):
    """Mean, standard deviation (ddof=1; NaN for one seed) and number of seeds of ``value`` per group of a
    results table (a pandas DataFrame)."""
    g = df.groupby(by, sort=True)[value]
    return g.agg(mean="mean", std="std", n="count").reset_index()
