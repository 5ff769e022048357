"""Data: the digits split and loaders, and the CIFAR-10 loader on files in the real on-disk format."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
import torchvision

from vit_lib.data import (
    cifar10_datasets,
    cifar10_loaders,
    digits_loaders,
    digits_tensors,
    digits_validation_loaders,
    random_shift,
)


def test_digits_split_is_fixed_stratified_and_disjoint():
    x_train, y_train, x_test, y_test = digits_tensors()
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    per_class_fifth = torch.bincount(torch.cat([y_train, y_test])) / 5
    assert (torch.bincount(y_test) - per_class_fifth).abs().max() <= 1  # stratified: 20 % of every class
    again = digits_tensors()
    assert torch.equal(x_test, again[2]) and torch.equal(y_train, again[1])
    train_rows = {tuple(r) for r in x_train.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in x_test.flatten(1).tolist())
    assert overlap <= 2  # sklearn's digits contain a few exact duplicates; the split itself is disjoint


def test_digits_are_standardised_with_training_statistics():
    x_train, _, x_test, _ = digits_tensors()
    assert abs(x_train.mean().item()) < 1e-5 and abs(x_train.std().item() - 1) < 1e-5
    assert abs(x_test.mean().item()) < 0.1  # close, but not forced: test statistics are not used


def test_digit_loaders_shuffle_deterministically():
    first = next(iter(digits_loaders(batch_size=32, seed=3).train))[1]
    again = next(iter(digits_loaders(batch_size=32, seed=3).train))[1]
    other = next(iter(digits_loaders(batch_size=32, seed=4).train))[1]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_digits_validation_slice_is_a_fixed_stratified_part_of_the_training_set():
    _, y_train, _, _ = digits_tensors()
    loaders = digits_validation_loaders(seed=0)
    x_fit, y_fit = loaders.train.dataset.tensors
    x_val, y_val = loaders.test.dataset.tensors
    assert len(y_fit) == 1221 and len(y_val) == 216  # 15 % of the 1,437 training images
    assert torch.equal(torch.bincount(y_fit) + torch.bincount(y_val), torch.bincount(y_train))
    assert (torch.bincount(y_val) - 0.15 * torch.bincount(y_train)).abs().max() <= 1  # stratified
    assert abs(x_fit.mean().item()) < 1e-5 and abs(x_fit.std().item() - 1) < 1e-5  # its own statistics
    again = digits_validation_loaders(seed=5)  # the split does not depend on the shuffling seed
    assert torch.equal(again.test.dataset.tensors[0], x_val)
    with pytest.raises(ValueError, match="fraction"):
        digits_validation_loaders(fraction=1.0)


def test_random_shift_moves_content_and_keeps_shape():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    shifted = random_shift(
        image.repeat(200, 1, 1, 1), max_shift=1, generator=torch.Generator().manual_seed(0)
    )
    assert shifted.shape == (200, 1, 5, 5)
    positions = {tuple((s[0] == 1).nonzero()[0].tolist()) for s in shifted}
    assert positions == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}  # every shift in [-1, 1]^2 occurs
    assert torch.equal(random_shift(image, 0), image)


def write_fake_cifar10(root, n_train_per_batch=20, n_test=30):
    """Write CIFAR-10's python format: pickled dicts with uint8 rows (3*32*32, channel-major)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name, n):
        # the release was pickled by Python 2: its str keys load as str under encoding="latin1"
        data = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(data, protocol=2))
        return data

    batches = [batch(f"data_batch_{i}", n_train_per_batch) for i in range(1, 6)]
    test = batch("test_batch", n_test)
    meta = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return batches, test, md5


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    batches, test, md5 = write_fake_cifar10(tmp_path)
    cls = torchvision.datasets.CIFAR10
    # torchvision verifies each file's MD5 against the real release; point it at ours instead.
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(
        cls, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]}
    )
    return tmp_path, batches, test


def test_cifar10_loader_reads_the_real_on_disk_format(fake_cifar10):
    root, _, test = fake_cifar10
    train_set, test_set = cifar10_datasets(root, download=False)
    assert len(train_set) == 100 and len(test_set) == 30
    image, label = test_set[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == test["labels"][0]
    # the test transform is ToTensor + Normalize: undo it and get the original pixels back
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    pixels = (image * std[:, None, None] + mean[:, None, None]) * 255
    expected = torch.tensor(test["data"][0], dtype=torch.float32).reshape(3, 32, 32)
    torch.testing.assert_close(pixels, expected, atol=1e-3, rtol=0)


def test_cifar10_loaders_batch_and_augment(fake_cifar10):
    root, _, _ = fake_cifar10
    loaders = cifar10_loaders(root, batch_size=16, download=False, num_workers=0)
    images, labels = next(iter(loaders.train))
    assert images.shape == (16, 3, 32, 32) and labels.shape == (16,)
    assert (loaders.image_size, loaders.channels, loaders.num_classes) == (32, 3, 10)
    assert len(loaders.train) == 100 // 16  # drop_last: every step sees a full batch


def test_cifar10_missing_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(
        RuntimeError, match=r"CIFAR-10 is not available in .*download=False.*cifar-10-batches-py"
    ):
        cifar10_datasets(tmp_path, download=False)


def test_cifar10_failed_download_gives_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
    with pytest.raises(RuntimeError, match=r"could not be downloaded.*URLError"):
        cifar10_datasets(tmp_path, download=True)
