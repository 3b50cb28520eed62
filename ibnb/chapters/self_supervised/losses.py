"""Self-supervised objectives on augmented views, written to read like their formulas.

Each loss takes embeddings ``Z`` (batch ``n`` × dimension ``d``) of two or more augmented views of the same
``n`` images and returns a dict: ``"loss"`` (the scalar to minimise) and its named terms, so that every term can
be logged on its own.

* :func:`vicreg` (Bardes et al., 2022): ``λ·s(Z,Z') + μ·[v(Z)+v(Z')]/2 + ν·[c(Z)+c(Z')]``, as the official
  code (facebookresearch/vicreg) trains it: the paper's Eq. 6 writes ``μ·[v(Z)+v(Z')]`` without the ½, a known
  paper/code mismatch (its issues #8 and #26) that doubles the weight of the variance hinge.
* :func:`barlow_twins` (Zbontar et al., 2021): ``Σ_i (1 − c_ii)² + λ Σ_i Σ_{j≠i} c_ij²`` (paper and code agree).
* :func:`wmse` (Ermolov et al., 2021): whiten each view in random sub-batches of ``w_size`` samples with the
  shrunk covariance ``(1 − ε)Σ + εI`` (ε = 0 by default), then the mean squared distance between the
  L2-normalised positives, averaged over all pairs of views — the conventions of the official code
  (htdt/self-supervised: ``w_size`` 128, ``w_eps`` 0).

Each is pinned in ``tests/test_ssl.py`` to a slow re-computation written from the papers' definitions.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def covariance(z: torch.Tensor) -> torch.Tensor:
    """C(Z) = (Z − mean)ᵀ(Z − mean) / (n − 1): the d × d covariance of the embedding dimensions."""
    zc = z - z.mean(dim=0)
    return zc.T @ zc / (z.shape[0] - 1)


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The d(d−1) off-diagonal entries of a square matrix, flattened."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


# ---------------------------------------------------------------- VICReg
def invariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """s(Z, Z') = mean squared distance between positives, averaged over the n·d entries (as in the official
    VICReg code, ``F.mse_loss``; the paper's (1/n) Σ_i ‖z_i − z'_i‖² is d times larger)."""
    return (z1 - z2).pow(2).mean()


def variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = (1/d) Σ_j max(0, γ − sqrt(Var(z_j) + ε)), Var with 1/(n − 1): a hinge on every dimension's std."""
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return F.relu(gamma - std).mean()


def covariance_penalty(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = (1/d) Σ_{l≠m} C(Z)²_lm: decorrelates the dimensions."""
    return off_diagonal(covariance(z)).pow(2).sum() / z.shape[1]


def vicreg(z1: torch.Tensor, z2: torch.Tensor, *, lam: float = 25.0, mu: float = 25.0, nu: float = 1.0,
           gamma: float = 1.0, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """VICReg as the official code trains it: ``λ·s(Z,Z') + μ·[v(Z)+v(Z')]/2 + ν·[c(Z)+c(Z')]``. Terms are
    returned without λ, μ, ν: ``variance`` is the mean of the two views' hinges, ``covariance`` their sum."""
    s = invariance(z1, z2)
    v = (variance(z1, gamma, eps) + variance(z2, gamma, eps)) / 2
    c = covariance_penalty(z1) + covariance_penalty(z2)
    return {"loss": lam * s + mu * v + nu * c, "invariance": s, "variance": v, "covariance": c}


# ---------------------------------------------------------------- Barlow Twins
def standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch standardisation of every dimension: (z − mean) / std, std with 1/n (like BatchNorm)."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """c_ij = (1/n) Σ_b ẑ_bi ẑ'_bj between the batch-standardised views (d × d)."""
    return standardise(z1, eps).T @ standardise(z2, eps) / z1.shape[0]


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, *, lam: float = 5e-3,
                 eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """Barlow Twins: ``Σ_i (1 − c_ii)² + λ Σ_i Σ_{j≠i} c_ij²``; terms: ``on_diagonal``, ``off_diagonal``
    (the second unweighted)."""
    c = cross_correlation(z1, z2, eps)
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = off_diagonal(c).pow(2).sum()
    return {"loss": on + lam * off, "on_diagonal": on, "off_diagonal": off}


# ---------------------------------------------------------------- W-MSE
def whiten(z: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Whitening by Cholesky of the shrunk covariance: (1 − ε)Σ + εI = L Lᵀ, W = L⁻¹, returns W (z_i − mean) for
    every row (so the whitened rows have identity covariance; exactly so at ``eps=0``, the official default).

    Meaningful only for n > d (:func:`wmse` checks it): with fewer samples Σ is singular."""
    zc = z - z.mean(dim=0)
    eye = torch.eye(z.shape[1], device=z.device, dtype=z.dtype)
    sigma = (1 - eps) * covariance(z) + eps * eye
    L, info = torch.linalg.cholesky_ex(sigma)
    if bool(info):  # not positive definite in this precision (a nearly collapsed batch)
        raise FloatingPointError(f"W-MSE whitening: covariance of a {tuple(z.shape)} batch is not positive definite "
                                 "(collapsed embedding?); raise eps (w_eps) or the sub-batch size w_size")
    # rows of zc are samples: (W zcᵀ)ᵀ = zc Wᵀ; solve L X = zcᵀ instead of forming L⁻¹
    return torch.linalg.solve_triangular(L, zc.T, upper=False).T


def normalised_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1/n) Σ_i ‖a_i/‖a_i‖ − b_i/‖b_i‖‖² (= 2 − 2·mean cosine similarity)."""
    return (F.normalize(a, dim=1) - F.normalize(b, dim=1)).pow(2).sum(dim=1).mean()


def sub_batches(n: int, w_size: int, generator: torch.Generator | None = None, device=None) -> list[torch.Tensor]:
    """A random partition of ``range(n)`` into ``n // w_size`` groups of ``w_size`` (the official code's
    ``randperm(n).view(-1, w_size)``; a remainder joins the last group instead of being required away). One group
    of all ``n`` when ``w_size`` is 0 or ≥ n."""
    if not w_size or w_size >= n:
        return [torch.arange(n, device=device)]
    perm = torch.randperm(n, generator=generator, device=generator.device if generator is not None else device)
    groups = list(perm.to(device).split(w_size))
    if len(groups) > 1 and len(groups[-1]) < w_size:
        groups[-2] = torch.cat(groups[-2:])
        groups.pop()
    return groups


def wmse(views: list[torch.Tensor] | tuple[torch.Tensor, ...], *, eps: float = 0.0, w_size: int = 128,
         generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """W-MSE over any number of views: whiten every view in the same random sub-batches of ``w_size`` samples
    (:func:`sub_batches`; positives stay in one group), then average the normalised MSE over all pairs of views.
    Term ``alignment`` is that average (= the loss)."""
    if len(views) < 2:
        raise ValueError("wmse needs at least two views")
    n, d = views[0].shape
    groups = sub_batches(n, w_size, generator, views[0].device)
    if min(len(g) for g in groups) <= d:
        raise ValueError(f"W-MSE whitening needs more samples than dimensions (sub-batch "
                         f"{min(len(g) for g in groups)} <= dim {d}): raise w_size or the batch, or lower wmse_dim")
    # rows are re-ordered group by group, identically in every view, so positives stay aligned
    white = [torch.cat([whiten(z[g].float() if z.dtype != torch.float64 else z[g], eps) for g in groups])
             for z in views]
    pairs = list(itertools.combinations(range(len(views)), 2))
    alignment = sum(normalised_mse(white[i], white[j]) for i, j in pairs) / len(pairs)
    return {"loss": alignment, "alignment": alignment}


LOSSES = {"vicreg": vicreg, "barlow_twins": barlow_twins, "wmse": wmse}


def ssl_loss(method: str, views: list[torch.Tensor], generator: torch.Generator | None = None,
             **kw) -> dict[str, torch.Tensor]:
    """Dispatch: ``vicreg`` / ``barlow_twins`` use the first two views; ``wmse`` uses all of them (and
    ``generator`` for its sub-batches)."""
    if method not in LOSSES:
        raise KeyError(f"Unknown SSL method {method!r}; available: {', '.join(LOSSES)}")
    if method == "wmse":
        return wmse(views, generator=generator, **kw)
    return LOSSES[method](views[0], views[1], **kw)
