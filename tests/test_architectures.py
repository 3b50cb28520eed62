"""Chapter 01's claims audit: verdicts follow the numbers of a hand-made sweep table."""
from __future__ import annotations

import pandas as pd

from ibnb.chapters.architectures import sweep as A


def _sweep(cnn_lead_small: float, cnn_lead_large: float, aug_gain: float, perm_drop_cnn: float) -> pd.DataFrame:
    rows = []
    for n, lead in ((20, cnn_lead_small), (320, cnn_lead_large)):
        for seed in range(3):
            noise = 0.002 * seed
            for aug, gain in (("none", 0.0), ("crop+flip", aug_gain)):
                rows.append(dict(model="mlp", augment=aug, permuted=False, n_per_class=n, seed=seed, test_acc=0.30 + noise))
                rows.append(dict(model="mixer", augment=aug, permuted=False, n_per_class=n, seed=seed, test_acc=0.25 + noise))
                rows.append(dict(model="cnn", augment=aug, permuted=False, n_per_class=n, seed=seed,
                                 test_acc=0.30 + lead + gain + 2 * noise))
    for seed in range(3):  # the permutation control at 20 images per class
        rows.append(dict(model="mlp", augment="none", permuted=True, n_per_class=20, seed=seed, test_acc=0.30 + 0.002 * seed))
        rows.append(dict(model="cnn", augment="none", permuted=True, n_per_class=20, seed=seed,
                         test_acc=0.30 + cnn_lead_small - perm_drop_cnn + 0.004 * seed))
    return pd.DataFrame(rows)


P = dict(n_per_class=[20, 320], models=["mlp", "mixer", "cnn"], augment_options=["none", "crop+flip"], epochs=6,
         permute_n_per_class=20)


def test_claims_audit_verdicts_follow_the_numbers():
    audit = A.claims_audit(_sweep(0.05, 0.01, 0.03, 0.05), P, num_classes=10).set_index("claim")["verdict"]
    assert audit["a CNN beats an MLP when data is scarce"] == "supported"
    assert audit["the CNN's lead over the MLP shrinks as the training set grows"] == "supported"
    assert audit["MLP-Mixer trails a CNN on small data"] == "supported"
    assert audit["crop+flip augmentation improves a CNN trained on 200 images"] == "supported"
    assert audit["shuffling pixel positions hurts a CNN"] == "supported"
    assert audit["shuffling pixel positions does not change an MLP"].startswith("consistent")

    flipped = A.claims_audit(_sweep(-0.05, 0.01, -0.03, -0.05), P, num_classes=10).set_index("claim")["verdict"]
    assert flipped["a CNN beats an MLP when data is scarce"] == "contradicted"
    assert flipped["the CNN's lead over the MLP shrinks as the training set grows"] == "contradicted"
    assert flipped["crop+flip augmentation improves a CNN trained on 3200 images"] == "contradicted"
    assert flipped["shuffling pixel positions hurts a CNN"] == "contradicted"


def test_signed_verdict_needs_more_than_one_std():
    assert A.signed_verdict(0.5, 1.0, +1).startswith("inconclusive")
    assert A.signed_verdict(-2.0, 1.0, -1) == "supported"
    assert A.signed_verdict(2.0, 1.0, 0) == "contradicted"
