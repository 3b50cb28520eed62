"""Sparse Variational Dropout and the Deep Weight Prior: the KL approximation, local reparameterisation,
compression counting, the masked network, and the auxiliary KL bound."""
from __future__ import annotations

import math

import pytest
import torch

import ibnb.chapters.deep_weight_prior.sweep  # noqa: F401  (registers its presets)
import ibnb.chapters.sparse_vd.sweep  # noqa: F401
from ibnb.chapters.deep_weight_prior import method as dwp
from ibnb.core.models import sparse_vd as svd
from ibnb.core.models import create_model


def mc_kl_log_uniform_plus_const(log_alpha: float, n: int = 2_000_000, seed: int = 0) -> float:
    """Monte-Carlo KL(N(θ, αθ²) ‖ p(w) ∝ 1/|w|) up to the prior's (infinite) normaliser:
    E_q log q(w) + E_q log|w| = −½ log(2πe α θ²) + log|θ| + E log|1 + √α ε|  (θ cancels)."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, generator=g, dtype=torch.float64)
    a = math.exp(log_alpha)
    return -0.5 * math.log(2 * math.pi * math.e * a) + torch.log(torch.abs(1 + math.sqrt(a) * eps)).mean().item()


def test_kl_approximation_matches_monte_carlo_up_to_a_constant():
    las = [-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0]
    approx = svd.kl_log_uniform(torch.tensor(las, dtype=torch.float64))
    diffs = torch.tensor([mc_kl_log_uniform_plus_const(la) for la in las], dtype=torch.float64) - approx
    # the same constant at every α (the paper's fit is accurate to ~0.01) ...
    assert (diffs - diffs.mean()).abs().max() < 0.02, diffs
    # ... and it is the α → ∞ limit: −½ log(2πe) + E log|ε| = −½ log(2πe) − (γ + log 2)/2
    limit = -0.5 * math.log(2 * math.pi * math.e) - (0.5772156649 + math.log(2)) / 2
    assert diffs.mean().item() == pytest.approx(limit, abs=0.02)
    # the KL decreases in α (more noise = closer to the prior) and vanishes for large α
    assert (approx[1:] < approx[:-1]).all() and svd.kl_log_uniform(torch.tensor(20.0)).abs() < 1e-3


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_local_reparameterisation_matches_sampled_weights(kind):
    torch.manual_seed(0)
    layer = svd.LinearSVDO(6, 3) if kind == "linear" else svd.Conv2dSVDO(2, 3, 3, padding=1)
    with torch.no_grad():
        layer.log_sigma2.uniform_(-3, -1)
    x = torch.randn(1, 6) if kind == "linear" else torch.randn(1, 2, 4, 4)
    n = 40_000
    layer.train()
    with torch.no_grad():
        lrt = layer(x.expand(n, *x.shape[1:]))
        # the same layer with explicitly sampled weights w = θ + σ ε, one weight sample per output sample
        w = layer.weight + (0.5 * layer.log_sigma2).exp() * torch.randn(n, *layer.weight.shape)
        if kind == "linear":
            sampled = torch.einsum("i,noi->no", x[0], w) + layer.bias
        else:
            sampled = torch.stack([layer._op(x, w[i], layer.bias)[0] for i in range(5000)])
    se = 4 * sampled.var(0).sqrt() / math.sqrt(len(sampled))
    assert (lrt.mean(0) - sampled.mean(0)).abs().le(se + 1e-3).all()
    ratio = lrt.var(0) / sampled.var(0)
    assert ratio.sub(1).abs().max() < (0.1 if kind == "linear" else 0.2), ratio
    # eval mode: the deterministic mean with the masked weights
    layer.eval()
    with torch.no_grad():
        assert torch.allclose(layer(x), layer._op(x, layer.weight * layer.mask(), layer.bias))


def test_compression_on_a_hand_made_mask():
    masks = [torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool), torch.tensor([1, 1, 0, 0], dtype=torch.bool)]
    assert svd.compression(masks) == pytest.approx(12 / 3)
    assert svd.compression([torch.zeros(5, dtype=torch.bool)]) == float("inf")
    layer = svd.LinearSVDO(4, 2)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.log_sigma2.fill_(-5.0)  # log α = −5: kept
        layer.log_sigma2[0, :3] = 4.0  # log α = 4 > 3: pruned
    rep = svd.sparsity_report(torch.nn.Sequential(layer))
    assert rep["kept"] == 5 and rep["weights"] == 8 and rep["compression"] == pytest.approx(8 / 5)
    assert rep["sparsity"] == [pytest.approx(37.5)]


def test_masked_dense_copy_gives_the_same_outputs_and_models_build():
    torch.manual_seed(0)
    for name in ("lenet300_100_svd", "lenet5_caffe_svd"):
        m = create_model(name)
        with torch.no_grad():
            for _, layer in svd.svdo_layers(m):
                layer.log_sigma2.uniform_(-12, 2)
        m.eval()
        x = torch.randn(5, 1, 28, 28)
        dense = svd.to_dense(m)
        assert not svd.svdo_layers(dense) and svd.sparsity_report(m)["kept"] == svd.sparsity_report(dense)["kept"]
        assert torch.allclose(m(x), dense(x), atol=1e-5)
        assert svd.sparsity_report(m)["compression"] > 1
    assert sum(p.numel() for p in create_model("lenet5_caffe").parameters() if p.ndim > 1) == 430_500
    assert sum(p.numel() for p in create_model("lenet300_100").parameters() if p.ndim > 1) == 266_200


def test_kl_warm_up_schedule_and_elbo_step_logs_terms():
    assert [svd.kl_weight(e, 5, 20) for e in (0, 4.9, 5, 12.5, 20, 100)] == [0, 0, 0, 0.5, 1, 1]
    torch.manual_seed(0)
    m = create_model("lenet300_100_svd", image_size=8)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    out = svd.elbo_step(100, 1, 2)(m, opt, torch.randn(4, 1, 8, 8), torch.arange(4), 1.5)
    assert out.loss.item() == pytest.approx((out.terms["nll"] + 0.5 * out.terms["kl"]).item(), rel=1e-5)
    assert {"sp0", "sp1", "sp2", "beta"} <= set(out.terms)


class _LinearGaussian:
    """Toy prior with a tractable marginal: z ~ N(0, 1), w | z ~ N(a z + b, s² I) → p̂ = N(b, a aᵀ + s² I)."""

    def __init__(self, d=3):
        self.a = torch.tensor([0.8, -0.5, 0.3][:d], dtype=torch.float64)
        self.b = torch.tensor([0.1, 0.0, -0.2][:d], dtype=torch.float64)
        self.s2 = 0.2

    def decode(self, z):
        return z * self.a + self.b, torch.full((len(z), len(self.a)), math.log(self.s2), dtype=torch.float64)

    def exact_encode(self, w):  # the true posterior p(z | w)
        v = 1 / (1 + (self.a @ self.a) / self.s2)
        return (v * ((w - self.b) @ self.a) / self.s2)[:, None], torch.full((len(w), 1), math.log(v), dtype=torch.float64)

    def bad_encode(self, w):
        return torch.zeros(len(w), 1, dtype=torch.float64), torch.zeros(len(w), 1, dtype=torch.float64)

    def exact_kl(self, mu, log_sigma2):
        p = torch.distributions.MultivariateNormal(self.b, torch.outer(self.a, self.a) + self.s2 * torch.eye(len(self.a), dtype=torch.float64))
        q = torch.distributions.MultivariateNormal(mu, torch.diag(log_sigma2.exp()))
        return torch.distributions.kl_divergence(q, p).item()


def test_auxiliary_bound_is_above_the_kl_and_tight_with_the_true_posterior():
    toy = _LinearGaussian()
    mu = torch.tensor([0.3, -0.4, 0.1], dtype=torch.float64)
    log_sigma2 = torch.tensor([-2.0, -1.0, -3.0], dtype=torch.float64)
    kl = toy.exact_kl(mu, log_sigma2)
    torch.manual_seed(0)
    n = 200_000
    w = mu + (0.5 * log_sigma2).exp() * torch.randn(n, 3, dtype=torch.float64)

    def bound(encode):  # per-sample auxiliary bounds (one q sample = one "kernel set")
        zm, zl = encode(w)
        z = zm + (0.5 * zl).exp() * torch.randn_like(zm)
        per = dwp.kl_std_normal(zm, zl) + dwp.gaussian_nll(w, *toy.decode(z))
        return per - dwp.gaussian_entropy(log_sigma2)

    tight, loose = bound(toy.exact_encode), bound(toy.bad_encode)
    se = lambda b: b.std().item() / math.sqrt(n)
    assert tight.mean().item() == pytest.approx(kl, abs=4 * se(tight) + 1e-3)  # equality with r = p(z|w)
    assert loose.mean().item() > kl + 0.05 and loose.mean().item() - 4 * se(loose) > kl
    # the library function computes the same estimator (a set of N kernels: the sum)
    torch.manual_seed(1)
    one = dwp.aux_kl_bound(w[:1000], log_sigma2.repeat(1000, 1), toy.exact_encode, toy.decode) / 1000
    assert one.item() == pytest.approx(kl, abs=0.1)


def test_gaussian_prior_kl_is_exact_and_priors_give_finite_kl():
    layer = dwp.BayesConv2d(1, 2, 3, log_sigma2_init=-2.0)
    pr = dwp.GaussianPrior(0.0, 1.0)
    q = torch.distributions.Normal(layer.weight, (0.5 * layer.log_sigma2).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum()
    assert pr.kl(layer).item() == pytest.approx(ref.item(), rel=1e-5)
    vae, losses = dwp.fit_vae(torch.randn(64, 3, 3) * 0.1, steps=30)
    assert losses[-1] < losses[0] and vae.sample(5).shape == (5, 3, 3)
    net = dwp.BayesCNN([dwp.DWPPrior(dwp.KernelVAE(7)), dwp.LogUniformPrior()], width1=2, width2=3)
    net(torch.randn(2, 1, 28, 28))
    assert torch.isfinite(net.kl())


def test_dwp_comparison_verdict_counts_losses_before_wins():
    from ibnb.chapters.deep_weight_prior.sweep import comparison_verdict

    assert comparison_verdict(5, 5, 0) == "reproduced at every size"
    assert comparison_verdict(2, 5, 0).startswith("partly reproduced")
    assert comparison_verdict(4, 5, 1).startswith("contradicted")
    assert comparison_verdict(0, 5, 0) == "not reproduced at this profile"


def test_sparse_vd_claims_audit_follows_the_table():
    import pandas as pd

    from ibnb.chapters.sparse_vd import sweep as S

    rows = []
    for seed in range(2):
        for method, err, comp in (("dense", 1.6, 1.0), ("sparse VD", 1.7, 70.0)):
            rows.append(dict(experiment="table", network="lenet300_100", method=method, seed=seed, labels="true",
                             error_pct=err + 0.01 * seed, compression=comp, kept=1, weights=100,
                             masked_dense_error_pct=err + 0.01 * seed if method == "sparse VD" else None))
    rows.append(dict(experiment="random_labels", network="lenet300_100", method="sparse VD", seed=0,
                     labels="shuffled", error_pct=90.0, compression=1e4, kept=0, weights=100,
                     masked_dense_error_pct=90.0))
    audit = S.claims_audit(pd.DataFrame(rows), ["lenet300_100"])["verdict"]
    assert audit["lenet300_100"] == "reproduced at this profile"
    assert audit["accuracy"].startswith("consistent") and audit["mask"] == "confirmed"
    assert audit["random_labels"].startswith("reproduced")
    worse = pd.DataFrame(rows).assign(error_pct=lambda d: d["error_pct"] + 3 * (d["method"] == "sparse VD"))
    audit = S.claims_audit(worse, ["lenet300_100"])["verdict"]
    assert audit["lenet300_100"].startswith("not reached") and audit["accuracy"].startswith("contradicted")
    assert audit["mask"] == "not confirmed"  # the masked error column no longer matches
