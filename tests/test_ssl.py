"""Self-supervised losses against slow loop re-computations of their formulas; invariances that make each
term zero; collapse penalised; whitening; views, the frozen-dataclass train step and cached pretraining; the
claims audit (the raw-pixel gate flips a decided verdict to "not testable" when the encoder falls below pixels)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import pytest
import torch

from ibnb.book import profiles
from ibnb.book.claims import NOT_TESTABLE, SUPPORTED
from ibnb.chapters.self_supervised import claims_audit as A
from ibnb.chapters.self_supervised import method as ssl
from ibnb.chapters.self_supervised import presets
from ibnb.chapters.self_supervised.losses import barlow_twins, sub_batches, vicreg, whiten, wmse
from ibnb.chapters.self_supervised.views import RECIPES, ViewAugment
from ibnb.core.data import ImageData
from ibnb.core.image_ops import colour_jitter, grey, resized_crop_flip
from ibnb.core.metrics import extract_features, knn_accuracy, linear_probe
from ibnb.core.models import count_parameters, create_model
from ibnb.core.models.ssl import SSLNet
from ibnb.core.train import TrainConfig, fit


def _rand(n=12, d=5, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scale,
            torch.randn(n, d, generator=g, dtype=torch.float64) * scale)


# ---------------------------------------------------------------- slow references, straight from the formulas
def _mean(z, j):  # z: a nested Python list (n rows of d floats)
    return sum(z[i][j] for i in range(len(z))) / len(z)


def _cov(z):
    n, d = len(z), len(z[0])
    m = [_mean(z, j) for j in range(d)]
    return [[sum((z[i][l] - m[l]) * (z[i][k] - m[k]) for i in range(n)) / (n - 1) for k in range(d)] for l in range(d)]


def _vicreg_slow(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    (n, d), z1, z2 = z1.shape, z1.tolist(), z2.tolist()
    s = sum((z1[i][j] - z2[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def v(z):
        c = _cov(z)
        return sum(max(0.0, gamma - math.sqrt(c[j][j] + eps)) for j in range(d)) / d

    def cpen(z):
        c = _cov(z)
        return sum(c[l][m] ** 2 for l in range(d) for m in range(d) if l != m) / d

    # the official code's weighting: μ·[v(Z) + v(Z')]/2 (the paper's Eq. 6 omits the ½)
    v_mean = (v(z1) + v(z2)) / 2
    return lam * s + mu * v_mean + nu * (cpen(z1) + cpen(z2)), s, v_mean, cpen(z1) + cpen(z2)


def _barlow_slow(z1, z2, lam=5e-3, eps=1e-5):
    (n, d), z1, z2 = z1.shape, z1.tolist(), z2.tolist()

    def std(z):
        out = []
        for j in range(d):
            m = _mean(z, j)
            sd = math.sqrt(sum((z[i][j] - m) ** 2 for i in range(n)) / n + eps)
            out.append([(z[i][j] - m) / sd for i in range(n)])
        return out  # out[j][i]

    a, b = std(z1), std(z2)
    c = [[sum(a[i][k] * b[j][k] for k in range(n)) / n for j in range(d)] for i in range(d)]
    return sum((1 - c[i][i]) ** 2 for i in range(d)) + lam * sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)


def _wmse_slow(views, eps=0.0, groups=None):
    """W-MSE from Ermolov et al.'s definition with the official code's conventions: each sub-batch ``groups``
    (default: the whole batch) of every view whitened with W = L⁻¹, (1 − ε)Σ + εI = L Lᵀ; then the mean of
    ‖a/‖a‖ − b/‖b‖‖² over positives and pairs of views."""
    n, d = views[0].shape
    groups = groups or [list(range(n))]
    white = [[None] * n for _ in views]
    for v, z in enumerate(views):
        for g in groups:
            rows = [z[i].tolist() for i in g]
            c = (1 - eps) * torch.tensor(_cov(rows), dtype=torch.float64) + eps * torch.eye(d, dtype=torch.float64)
            W = torch.linalg.inv(torch.linalg.cholesky(c))
            m = torch.tensor([_mean(rows, j) for j in range(d)], dtype=torch.float64)
            for i in g:
                white[v][i] = W @ (z[i] - m)
    total, pairs = 0.0, 0
    for a in range(len(views)):
        for b in range(a + 1, len(views)):
            total += sum(float(((white[a][i] / white[a][i].norm() - white[b][i] / white[b][i].norm()) ** 2).sum())
                         for i in range(n)) / n
            pairs += 1
    return total / pairs


# ---------------------------------------------------------------- losses vs loops
def test_vicreg_matches_the_formula():
    z1, z2 = _rand(scale=0.7)  # std < gamma, so the variance hinge is active
    out = vicreg(z1, z2)
    loss, s, v, c = _vicreg_slow(z1, z2)
    assert v > 0
    assert out["loss"].item() == pytest.approx(loss, rel=1e-9)
    assert out["invariance"].item() == pytest.approx(s, rel=1e-9)
    assert out["variance"].item() == pytest.approx(v, rel=1e-9)
    assert out["covariance"].item() == pytest.approx(c, rel=1e-9)


def test_barlow_twins_matches_the_formula():
    z1, z2 = _rand(seed=1)
    assert barlow_twins(z1, z2)["loss"].item() == pytest.approx(_barlow_slow(z1, z2), rel=1e-9)
    assert barlow_twins(z1, z2, lam=0.3)["loss"].item() == pytest.approx(_barlow_slow(z1, z2, lam=0.3), rel=1e-9)


@pytest.mark.parametrize("n_views", [2, 3])
def test_wmse_matches_the_formula(n_views):
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(16, 4, generator=g, dtype=torch.float64) for _ in range(n_views)]
    assert wmse(views, w_size=0)["loss"].item() == pytest.approx(_wmse_slow(views), rel=1e-6)
    assert wmse(views, w_size=0, eps=0.1)["loss"].item() == pytest.approx(_wmse_slow(views, eps=0.1), rel=1e-6)


def test_wmse_whitens_in_sub_batches_like_the_official_code():
    g = torch.Generator().manual_seed(3)
    views = [torch.randn(40, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    groups = sub_batches(40, 16, torch.Generator().manual_seed(7))
    # 40 = 16 + 24: the remainder joins the last group; together the groups are a partition of the batch
    assert sorted(len(x) for x in groups) == [16, 24]
    assert sorted(torch.cat(groups).tolist()) == list(range(40))
    got = wmse(views, w_size=16, generator=torch.Generator().manual_seed(7))["loss"].item()
    assert got == pytest.approx(_wmse_slow(views, groups=[x.tolist() for x in groups]), rel=1e-6)
    # sub-batch whitening is a different loss from whitening the whole batch
    assert abs(got - wmse(views, w_size=0)["loss"].item()) > 1e-3
    with pytest.raises(ValueError, match="sub-batch 4 <= dim 4"):
        wmse([v[:8] for v in views], w_size=4)


def test_vicreg_variance_is_the_mean_of_both_views_as_in_the_official_code():
    z1, z2 = _rand(n=32, d=6, seed=9, scale=0.5)
    std = lambda z: torch.sqrt(z.var(dim=0) + 1e-4)  # facebookresearch/vicreg main_vicreg.py, written out
    official = torch.relu(1 - std(z1)).mean() / 2 + torch.relu(1 - std(z2)).mean() / 2
    out = vicreg(z1, z2)
    assert out["variance"].item() == pytest.approx(official.item(), rel=1e-12)
    assert out["loss"].item() == pytest.approx(25 * out["invariance"].item() + 25 * official.item()
                                               + out["covariance"].item(), rel=1e-12)


# ---------------------------------------------------------------- properties
def test_vicreg_variance_is_zero_when_every_std_reaches_gamma():
    z1, z2 = _rand(n=64, d=6, seed=3, scale=3.0)
    assert (z1.std(0) >= 1).all() and (z2.std(0) >= 1).all()
    assert vicreg(z1, z2)["variance"].item() == 0.0
    # and it is positive as soon as one dimension's std falls below gamma
    z1[:, 0] *= 0.1
    assert vicreg(z1, z2)["variance"].item() > 0


def test_barlow_twins_is_zero_for_identical_standardised_decorrelated_views():
    n, d = 64, 6
    q, _ = torch.linalg.qr(torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    q = q - q.mean(0)  # centred, then orthogonalised again: columns uncorrelated with equal variance
    q, _ = torch.linalg.qr(q)
    z = q * math.sqrt(n)  # columns: mean ~0, (1/n)·zᵀz = I
    z = z - z.mean(0)
    out = barlow_twins(z, z.clone(), eps=0.0)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-10)
    # a second, different view is not free
    assert barlow_twins(z, torch.roll(z, 1, dims=0), eps=0.0)["loss"].item() > 0.1


def test_whitening_gives_identity_covariance():
    g = torch.Generator().manual_seed(5)
    mix = torch.randn(5, 5, generator=g, dtype=torch.float64)
    z = torch.randn(200, 5, generator=g, dtype=torch.float64) @ mix + 3.0  # correlated, shifted
    w = whiten(z, eps=0.0)
    cov = (w - w.mean(0)).T @ (w - w.mean(0)) / (len(w) - 1)
    assert torch.allclose(cov, torch.eye(5, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(w.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-8)
    with pytest.raises(ValueError, match="more samples"):
        wmse([z[:4], z[4:8]])
    with pytest.raises(FloatingPointError, match="not positive definite"):  # a collapsed batch at eps = 0
        whiten(torch.ones(20, 3, dtype=torch.float64))


def test_collapsed_embedding_is_penalised():
    z1, z2 = _rand(n=64, d=8, seed=6, scale=2.0)
    const = torch.ones(64, 8, dtype=torch.float64) * 0.5
    vic_const, vic_rand = vicreg(const, const), vicreg(z1, z1 + 0.01 * z2)
    # a constant embedding has zero invariance loss but pays the full variance hinge on both views:
    # v = γ − √ε per view, averaged over the two (μ·v ≈ 25 in the loss)
    assert vic_const["invariance"].item() == 0.0
    assert vic_const["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-9)
    assert vic_const["loss"].item() > vic_rand["loss"].item()
    bt_const, bt_rand = barlow_twins(const, const), barlow_twins(z1, z1 + 0.01 * z2)
    assert bt_const["on_diagonal"].item() == pytest.approx(8.0)  # every c_ii = 0
    assert bt_const["loss"].item() > bt_rand["loss"].item()


# ---------------------------------------------------------------- encoder, augmentation, monitors, training
def test_n1_parameter_count_next_to_the_study():
    model = create_model("n1")
    assert count_parameters(model) == 400_746  # the study's N1: 403,530 (architecture not published)
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 256)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_views_are_seeded_and_differ(recipe):
    x = torch.randn(8, 3, 32, 32)
    a = ViewAugment(recipe, (0.5,) * 3, (0.25,) * 3, seed=1)
    b = ViewAugment(recipe, (0.5,) * 3, (0.25,) * 3, seed=1)
    v1, v2 = a(x), a(x)
    assert v1.shape == x.shape and torch.isfinite(v1).all()
    assert torch.equal(v1, b(x))  # same seed, same views
    assert not torch.allclose(v1, v2)  # two views of one batch differ
    # pixel range is kept: views stay within the normalised image of [0, 1]
    assert v1.min() >= (0 - 0.5) / 0.25 - 1e-5 and v1.max() <= (1 - 0.5) / 0.25 + 1e-5


def test_full_crop_without_flip_is_identity():
    x = torch.rand(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    # scale (1, 1) and aspect 1: the crop is the whole image; flips are the only change
    out = resized_crop_flip(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    same = [(torch.allclose(o, i, atol=1e-5) or torch.allclose(o, i.flip(2), atol=1e-5)) for o, i in zip(out, x)]
    assert all(same)


def test_collapse_monitors():
    h = torch.randn(256, 16)
    assert ssl.effective_rank(h).item() > 14
    assert ssl.effective_rank(h[:, :1] * torch.randn(1, 16)).item() == pytest.approx(1.0, abs=1e-3)
    assert ssl.normalised_std(h).item() == pytest.approx(1.0, abs=0.1)
    assert ssl.normalised_std(torch.ones(256, 16) + 1e-6 * h).item() < 1e-3


def test_knn_and_linear_probe_on_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    f = torch.nn.functional.one_hot(y, 4).float() * 5 + torch.randn(200, 4, generator=g)
    assert knn_accuracy(f[:100], y[:100], f[100:], y[100:], num_classes=4, k=5) > 0.95
    res = linear_probe(f[:100], y[:100], f[100:], y[100:], num_classes=4, epochs=20, batch_size=32)
    assert res["top1"] > 0.95 and res["top5"] == 1.0
    # permuted labels: the probe cannot beat chance by much
    res = linear_probe(f[:100], y[:100][torch.randperm(100, generator=g)], f[100:], y[100:], num_classes=4)
    assert res["top1"] < 0.6


def _toy(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(n) % 4,
                     list("abcd"), "toy", (0.5,) * 3, (0.25,) * 3)


def test_ssl_step_is_a_frozen_dataclass_keyed_by_its_fields():
    views = ViewAugment("study", (0.5,) * 3, (0.25,) * 3, seed=1)
    a = ssl.SSLStep("vicreg", views, 2, {"mu": 25.0, "lam": 25.0})
    b = ssl.SSLStep("vicreg", views, 2, {"lam": 25.0, "mu": 25.0})
    assert repr(a) == repr(b) and "lam" in repr(a) and "recipe='study'" in repr(a)  # dict order does not matter
    assert repr(a) != repr(ssl.SSLStep("vicreg", views, 2, {"lam": 25.0, "mu": 5.0}))
    assert repr(a) != repr(ssl.SSLStep("vicreg", ViewAugment("standard", (0.5,) * 3, (0.25,) * 3, seed=1), 2,
                                       {"lam": 25.0, "mu": 25.0}))
    with pytest.raises(AttributeError):
        a.method = "wmse"


@pytest.mark.parametrize("method", ["vicreg", "barlow_twins", "wmse"])
def test_pretraining_logs_terms_and_caches(method):
    data, val = _toy(0), _toy(1, 16)
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer="adamw", lr=1e-3, weight_decay=0.0)
    kw = dict(config=cfg, backbone_kw={"width": 2}, projector_dims=(32, 8), device="cpu")
    model, hist, cached = ssl.pretrain_or_load(method, data, val, **kw)
    terms = {"vicreg": ["invariance", "variance", "covariance"], "barlow_twins": ["on_diagonal", "off_diagonal"],
             "wmse": ["alignment"]}[method]
    for t in terms + ["std", "erank", "online_probe"]:
        assert f"train_{t}" in hist.frame and hist.frame[f"train_{t}"].notna().all()
    assert "val_acc" in hist.frame  # the online probe is validated each epoch
    assert f"SSLStep(method='{method}'" in hist.config["step"]
    assert {"converged", "convergence"} <= set(hist.columns())
    assert not cached
    again, _, cached = ssl.pretrain_or_load(method, data, val, **kw)
    assert cached
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    _, _, cached = ssl.pretrain_or_load(method, data, val, **{**kw, "config": TrainConfig(**{**cfg.__dict__, "lr": 2e-3})})
    assert not cached  # another learning rate is another run
    with torch.no_grad():
        f = extract_features(model.encoder, data)
    assert f.shape == (64, 16)
    with pytest.raises(ValueError, match="augment"):
        ssl.pretrain_or_load(method, data, val, **{**kw, "config": TrainConfig(augment="crop+flip")})


@dataclass(frozen=True)
class _Interrupted:
    """A train step that raises KeyboardInterrupt from fractional epoch ``stop_after`` on; ``stop_after`` is
    left out of the repr, so the interrupted and the resumed run share one configuration (and checkpoint)."""

    inner: ssl.SSLStep
    stop_after: float | None = field(default=None, repr=False, compare=False)

    def __call__(self, model, opt, x, y, epoch):
        if self.stop_after is not None and epoch >= self.stop_after:
            raise KeyboardInterrupt
        return self.inner(model, opt, x, y, epoch)


def test_pretraining_resumes_exactly(tmp_path):
    """Views are reseeded from the step's position, so an interrupted run resumed from its checkpoint ends
    with the same weights as an uninterrupted one."""
    data = _toy(1)

    def train(ckpt, stop_after=None):
        torch.manual_seed(0)
        model = SSLNet("n1", {"width": 2}, (32, 8), 4)
        step = _Interrupted(ssl.SSLStep("vicreg", ViewAugment("standard", data.mean, data.std, seed=3)), stop_after)
        try:
            fit(model, data, None, TrainConfig(epochs=2, batch_size=16), step=step, device="cpu", progress=False,
                checkpoint=ckpt)
        except KeyboardInterrupt:
            return None
        return model

    full = train(tmp_path / "a.pt")
    assert train(tmp_path / "b.pt", stop_after=1) is None  # interrupted after one epoch
    resumed = train(tmp_path / "b.pt")
    assert all(torch.allclose(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


# ---------------------------------------------------------------- presets and the claims audit
@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_presets_resolve(profile):
    P = profiles.resolve(presets, {"profile": profile, "device": "cpu"})
    cfg = TrainConfig.from_params(P, augment="none")
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (P["epochs"], P["batch_size"], P["lr"])
    with pytest.raises(profiles.ParameterError, match="wmse_dim"):
        profiles.resolve(presets, {"profile": profile, "device": "cpu", "wmse_dim": P["batch_size"]})


def _results(knn_margin: float, converged=True, seeds=3) -> pd.DataFrame:
    """A synthetic results table: VICReg (colour views) with its linear probe 6 points below supervised end to
    end, every seed, and its kNN ``knn_margin`` above raw pixels; VICReg with crop+flip views at the pixels' kNN
    level and 20 points lower under the linear probe."""
    rows = []
    for s in range(seeds):
        j = 0.01 * s
        common = dict(model="n1", dataset="cifar10", seed=s, test_top5=0.9, converged=converged)
        rows += [dict(common, method="pixels", recipe="-", evaluation="knn", test_acc=0.30 + j),
                 dict(common, method="vicreg", recipe="standard", evaluation="knn", test_acc=0.30 + j + knn_margin),
                 dict(common, method="vicreg", recipe="standard", evaluation="linear", test_acc=0.60 + j + 0.002 * s),
                 dict(common, method="vicreg", recipe="study", evaluation="knn", test_acc=0.30 + j + 0.001 * s),
                 dict(common, method="vicreg", recipe="study", evaluation="linear", test_acc=0.40 + j + 0.003 * s),
                 dict(common, method="supervised", recipe="crop+flip", evaluation="end_to_end", test_acc=0.66 + j)]
    return pd.DataFrame(rows)


def _n1_claim(df):
    P = profiles.resolve(presets, {"profile": "cpu", "device": "cpu", "seeds": 3})
    return next(c for c in A.claims(df, P) if c.claim.startswith("VICReg N1 linear probe below"))


def test_gate_decides_whether_a_claim_is_decided():
    passed = _n1_claim(_results(knn_margin=0.15))
    assert passed.verdict == SUPPORTED and passed.n_seeds == 3
    assert passed.mean == pytest.approx(-6.0 + 0.2, abs=0.3)
    gated = _n1_claim(_results(knn_margin=-0.05))  # the encoder is worse than raw pixels
    assert gated.verdict == NOT_TESTABLE
    assert "raw pixels 31.0 %" in gated.reason and "VICReg kNN 26.0 %" in gated.reason
    assert _n1_claim(_results(knn_margin=0.09)).verdict == NOT_TESTABLE  # 9 points: below the 10-point gate
    assert _n1_claim(_results(knn_margin=0.15, converged=False)).verdict == NOT_TESTABLE
    assert _n1_claim(_results(knn_margin=0.15, seeds=2)).verdict == NOT_TESTABLE


def test_colour_claim_gates_only_the_colour_encoder():
    """Crop+flip encoders that learn nothing are the colour claim's point, not a reason to leave it undecided;
    the colour-view encoder must still clear the gate."""
    P = profiles.resolve(presets, {"profile": "cpu", "device": "cpu"})
    colour = lambda df: next(c for c in A.claims(df, P) if c.claim.startswith("colour augmentation"))
    decided = colour(_results(knn_margin=0.15))
    assert decided.verdict == SUPPORTED and decided.mean == pytest.approx(20.0 - 0.1, abs=0.3)
    gated = colour(_results(knn_margin=0.05))
    assert gated.verdict == NOT_TESTABLE and "raw-pixel gate" in gated.reason


def test_calibration_rows_quote_the_coursework():
    P = profiles.resolve(presets, {"profile": "cpu", "device": "cpu"})
    cal = A.calibration(_results(0.15), P)
    assert [c.published for c in cal] == [64.8, 70.6]
    assert cal[0].ours.mean == pytest.approx(61.2, abs=0.1) and "width 32" in cal[0].note

def test_colour_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    # zero-strength jitter is the identity (up to the YIQ round trip)
    assert torch.allclose(colour_jitter(x, g, 0.0, 0.0, 0.0, 0.0), x, atol=1e-5)
    # full desaturation gives grey pixels: all three channels equal
    y = colour_jitter(x, g, 0.0, 0.0, 1.0, 0.0)
    assert not torch.allclose(y, x)
    g_x = grey(x)
    assert torch.allclose(g_x, (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]), atol=1e-6)
