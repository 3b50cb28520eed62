"""Data layer: real formats on tiny generated files, subsets, determinism, clear errors."""
from __future__ import annotations

import pytest
import torch

from ibnb.core import data as D
from ibnb.core.augment import DeviceLoader, parse_augment
from conftest import SHARED_DATA, toy_data


def test_mnist_idx_files_load_through_torchvision(mnist_root):
    train = D.load_dataset("mnist", "train", root=mnist_root)
    test = D.load_dataset("mnist", "test", root=mnist_root)
    assert train.x.shape == (40, 1, 28, 28) and train.x.dtype == torch.uint8
    assert len(test) == 20 and train.classes[0] == "zero"
    assert train.class_counts() == [4] * 10


def test_decoded_tensors_are_cached_and_reused(mnist_root, monkeypatch):
    first = D.load_dataset("mnist", "train", root=mnist_root)
    cached = list((D.data_cache_dir()).glob("mnist-train*.pt"))
    assert len(cached) == 1
    monkeypatch.setattr(D, "_read_mnist", lambda *a: pytest.fail("cache was not used"))
    assert torch.equal(D.load_dataset("mnist", "train", root=mnist_root).x, first.x)


def test_cifar_imagefolder_tar(image_tar_root):
    train = D.load_dataset("cifar10", "train", root=image_tar_root)
    assert train.x.shape == (20, 3, 32, 32)
    assert train.classes[:3] == ["airplane", "automobile", "bird"]  # ImageFolder sorts class folders
    assert train.class_counts() == [2] * 10


def test_pacs_split_is_stratified_disjoint_and_resized(image_tar_root):
    full = D.load_dataset("pacs_photo", "all", root=image_tar_root, size=16)
    train = D.load_dataset("pacs_photo", "train", root=image_tar_root, size=16)
    test = D.load_dataset("pacs_photo", "test", root=image_tar_root, size=16)
    assert full.x.shape == (35, 3, 16, 16) and full.num_classes == 7
    assert len(train) + len(test) == len(full)
    assert test.class_counts() == [1] * 7  # round(0.2 * 5) per class
    rows = {bytes(r.numpy()) for r in full.x.flatten(1)}
    assert {bytes(r.numpy()) for r in train.x.flatten(1)} | {bytes(r.numpy()) for r in test.x.flatten(1)} == rows


def test_missing_data_error_names_path_and_fix(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load_dataset("cifar10", "train", root=tmp_path / "nowhere")
    msg = str(e.value)
    assert "nowhere" in msg and "IBNB_DATA" in msg and "IBNB_DOWNLOAD" in msg
    with pytest.raises(D.DataError, match="MNIST not found"):
        D.load_dataset("mnist", "train", root=tmp_path / "nowhere")
    with pytest.raises(D.DataError, match="PACS sketch not found"):
        D.load_dataset("pacs_sketch", "train", root=tmp_path / "nowhere")


def test_corrupt_files_give_clear_errors(image_tar_root, mnist_root):
    tar = image_tar_root / "cifar10" / "test.tar"
    tar.write_bytes(tar.read_bytes()[:700])  # truncated
    with pytest.raises(D.DataError, match="corrupt"):
        D.load_dataset("cifar10", "test", root=image_tar_root)
    (mnist_root / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(D.DataError, match="corrupt"):
        D.load_dataset("mnist", "train", root=mnist_root)


def test_unknown_dataset_and_split():
    with pytest.raises(KeyError, match="available: cifar10, mnist"):
        D.load_dataset("imagenet")
    with pytest.raises(ValueError, match="Unknown split"):
        D.load_dataset("mnist", "validation")


def test_class_balanced_subsets_are_seeded():
    data = toy_data(n_per_class=20)
    a = D.class_balanced_subset(data, 5, seed=3)
    b = D.class_balanced_subset(data, 5, seed=3)
    c = D.class_balanced_subset(data, 5, seed=4)
    assert a.class_counts() == [5, 5, 5, 5]
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert D.class_balanced_subset(data, fraction=0.5).class_counts() == [10] * 4
    with pytest.raises(ValueError, match="only 20 exist"):
        D.class_balanced_subset(data, 21)
    rest, held = D.split_off(data, 3, seed=0)
    assert held.class_counts() == [3] * 4 and len(rest) == 68


def test_pixel_permutation_keeps_values_and_is_fixed():
    data = toy_data(n_per_class=4)
    p1, p2 = D.permute_pixels(data, seed=1), D.permute_pixels(data, seed=1)
    assert torch.equal(p1.x, p2.x) and not torch.equal(p1.x, data.x)
    assert torch.equal(p1.x.flatten(1).sort(1).values, data.x.flatten(1).sort(1).values)


def test_device_loader_is_deterministic_and_resumable():
    data = toy_data(n_per_class=16, size=8)
    batches = lambda seed: [x for x, _ in DeviceLoader(data, 10, augment="crop+flip", seed=seed, pad=2)]
    a, b, c = batches(0), batches(0), batches(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert a[0].shape == (10, 3, 8, 8) and len(a) == 7
    loader = DeviceLoader(data, 10, augment="crop+flip", seed=0)
    list(loader)
    state = loader.state_dict()
    after = [x for x, _ in loader]
    loader.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(after, [x for x, _ in loader]))


def test_augmentations_are_correct_tensor_ops():
    data = toy_data(n_per_class=4, size=6)
    plain = next(iter(DeviceLoader(data, 16, shuffle=False)))[0]
    expected = (data.x[:16].float() / 255 - 0.5) / 0.25
    assert torch.allclose(plain, expected, atol=1e-5)
    flipped = next(iter(DeviceLoader(data, 16, shuffle=False, augment="flip", seed=0)))[0]
    for img, ref in zip(flipped, plain):
        assert torch.equal(img, ref) or torch.equal(img, ref.flip(2))
    with pytest.raises(ValueError, match="Unknown augmentation"):
        parse_augment("crop+rotate")


@pytest.mark.skipif(not (SHARED_DATA / "cifar10" / "test.tar").exists(), reason="offline data copy not present")
def test_real_offline_copies_load(monkeypatch):
    monkeypatch.setenv("IBNB_DATA", str(SHARED_DATA))
    test = D.load_dataset("cifar10", "test")
    assert test.x.shape == (10000, 3, 32, 32) and test.class_counts() == [1000] * 10
    assert test.classes[:2] == ["airplane", "automobile"]
    assert D.load_dataset("mnist", "test").class_counts()[:3] == [980, 1135, 1032]
