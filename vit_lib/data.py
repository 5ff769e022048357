"""Datasets for the training chapters: scikit-learn's 8x8 digits (offline) and CIFAR-10 (downloads).

Digits: the 1,797 handwritten digits that ship inside scikit-learn, split 80/20 with stratification
(``random_state=0``), scaled to [0, 1] and standardised with the training set's mean and std.
CIFAR-10: ``torchvision.datasets.CIFAR10`` with the usual augmentation (random crop with 4-pixel
padding, horizontal flip) and per-channel normalisation.

Built in chapter 6 (book/06_training_digits.ipynb: the digits) and chapter 7
(book/07_cifar10_gpu.ipynb: CIFAR-10).
"""

from __future__ import annotations

import pathlib
import urllib.error
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # one fixed split, so that results (and the SVM baseline) are comparable
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the CIFAR-10 training set
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class Loaders:
    """Train and test loaders plus what a model needs to know about the images."""

    train: DataLoader
    test: DataLoader
    image_size: int
    channels: int
    num_classes: int
    classes: tuple[str, ...]


def random_shift(
    images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image of a ``(b, c, h, w)`` batch by up to ``max_shift`` pixels, filling with the
    border value. A cheap, label-preserving augmentation for small digit images."""
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, images.shape[1], h, w + 2 * max_shift)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, images.shape[1], h, w)
    return padded.gather(2, rows).gather(3, cols)


class ShiftedDigits(Dataset):
    """Training digits with a fresh random shift each time an image is drawn."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_shift: int = 1) -> None:
        self.images, self.labels, self.max_shift = images, labels, max_shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = random_shift(self.images[index : index + 1], self.max_shift)[0]
        return image, self.labels[index]


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images ``(n, 1, 8, 8)`` standardised, labels ``(n,)``.

    The split is fixed: 1,437 training and 360 test images, stratified by class.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    x_train = torch.tensor(x_train, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    x_test = torch.tensor(x_test, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    mean, std = x_train.mean(), x_train.std()  # training statistics only: no peeking at the test set
    return (x_train - mean) / std, torch.tensor(y_train), (x_test - mean) / std, torch.tensor(y_test)


def digits_loaders(batch_size: int = 64, max_shift: int = 0, seed: int = 0) -> Loaders:
    """Deterministic loaders for the digits: ``seed`` drives the shuffling; the optional random
    shift (``max_shift`` pixels) draws from torch's global generator."""
    x_train, y_train, x_test, y_test = digits_tensors()
    return _digits_loaders(x_train, y_train, x_test, y_test, batch_size, max_shift, seed)


def _digits_loaders(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    batch_size: int,
    max_shift: int,
    seed: int,
) -> Loaders:
    """Shuffled (``seed``), optionally shifted training batches and the evaluation set, as ``Loaders``."""
    train_set = ShiftedDigits(x_train, y_train, max_shift) if max_shift else TensorDataset(x_train, y_train)
    generator = torch.Generator().manual_seed(seed)
    return Loaders(
        train=DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator),
        test=DataLoader(TensorDataset(x_eval, y_eval), batch_size=256),
        image_size=8,
        channels=1,
        num_classes=10,
        classes=tuple(str(d) for d in range(10)),
    )


DIGITS_VALIDATION_FRACTION = 0.15  # of the 1,437 training images: 216 held out to choose a recipe


def digits_validation_loaders(
    batch_size: int = 64,
    max_shift: int = 0,
    seed: int = 0,
    fraction: float = DIGITS_VALIDATION_FRACTION,
) -> Loaders:
    """Loaders for choosing a recipe without touching the test set: the 1,437 training digits are
    split again (stratified, ``random_state=DIGITS_SPLIT_SEED``, so always the same split) into
    1,221 training and 216 validation images; ``Loaders.test`` holds the validation slice.
    Standardisation uses the reduced training slice only. ``seed`` drives the shuffling."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    from sklearn.model_selection import train_test_split

    x_train, y_train, _, _ = digits_tensors()
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=fraction, stratify=y_train, random_state=DIGITS_SPLIT_SEED
    )
    mean, std = x_fit.mean(), x_fit.std()  # re-standardise with the reduced training slice
    x_fit, x_val = (x_fit - mean) / std, (x_val - mean) / std
    return _digits_loaders(x_fit, y_fit, x_val, y_val, batch_size, max_shift, seed)


def cifar10_datasets(root: str | pathlib.Path, download: bool = True) -> tuple[Dataset, Dataset]:
    """CIFAR-10 train (augmented) and test sets from ``root``, downloading them there if allowed.

    Raises a ``RuntimeError`` that says what to do when the files are missing and cannot be
    downloaded (for example on a machine without internet access).
    """
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
    train_transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    test_transform = transforms.Compose([transforms.ToTensor(), normalize])
    root = pathlib.Path(root)
    try:
        train = datasets.CIFAR10(root, train=True, transform=train_transform, download=download)
        test = datasets.CIFAR10(root, train=False, transform=test_transform, download=download)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise RuntimeError(
            f"CIFAR-10 is not available in {str(root)!r} and "
            + ("could not be downloaded" if download else "download=False")
            + f" ({type(error).__name__}: {error}). Pass download=True (needs internet access) or put "
            "the extracted 'cifar-10-batches-py' folder into that directory."
        ) from error
    return train, test


def cifar10_loaders(
    root: str | pathlib.Path = "data",
    batch_size: int = 256,
    download: bool = True,
    num_workers: int = 2,
    seed: int = 0,
) -> Loaders:
    """CIFAR-10 loaders; on a GPU, pinned memory and worker processes keep the GPU fed."""
    train, test = cifar10_datasets(root, download)
    pin = torch.cuda.is_available()
    generator = torch.Generator().manual_seed(seed)
    return Loaders(
        train=DataLoader(
            train,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            pin_memory=pin,
            generator=generator,
            drop_last=True,
            # New workers each epoch take their seeds from `generator`, whose state a training checkpoint
            # saves: a resumed run then draws the same crops and flips (persistent workers would not).
            persistent_workers=False,
        ),
        test=DataLoader(test, batch_size=2 * batch_size, num_workers=num_workers, pin_memory=pin),
        image_size=32,
        channels=3,
        num_classes=10,
        classes=CIFAR10_CLASSES,
    )
