"""Which choices get SimpleViT to 98 % on the digits? Train each variant with three seeds and save the
results to book/data/digits_ablation.json, which chapter 6 reads. Takes a few minutes on 2 CPU cores.

    python scripts/digits_ablation.py            # or: make digits-ablation
"""

from __future__ import annotations

import json
import pathlib
import platform
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from vit_lib import SimpleViT
from vit_lib.data import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, digits_loaders
from vit_lib.train import PRESETS
from vit_lib.training import TrainConfig, train

OUT = pathlib.Path(__file__).resolve().parent.parent / "book" / "data" / "digits_ablation.json"
SEEDS = (0, 1, 2)
FINAL = PRESETS["digits"]
PLAIN = dict(weight_decay=0.0, label_smoothing=0.0)
VARIANTS = {
    "patch 2, no regularisation": dict(patch_size=2, train=dict(epochs=30, **PLAIN), max_shift=0),
    "patch 2, + weight decay, label smoothing": dict(patch_size=2, train=dict(epochs=30), max_shift=0),
    "patch 2, + random shift, 50 epochs": dict(patch_size=2, train=dict(epochs=50), max_shift=1),
    "patch 4, no regularisation": dict(patch_size=4, train=dict(epochs=30, **PLAIN), max_shift=0),
    "patch 4, + weight decay, label smoothing": dict(patch_size=4, train=dict(epochs=30), max_shift=0),
    "patch 4, + random shift, 50 epochs (final)": dict(patch_size=4, train=dict(epochs=50), max_shift=1),
}


def run(variant: dict, seed: int) -> dict:
    loaders = digits_loaders(batch_size=FINAL["batch_size"], max_shift=variant["max_shift"], seed=seed)
    torch.manual_seed(seed)
    model = SimpleViT(
        image_size=8, channels=1, num_classes=10, **(FINAL["model"] | {"patch_size": variant["patch_size"]})
    )
    config = TrainConfig(**(FINAL["train"] | variant["train"]), seed=seed, progress=False)
    start = time.perf_counter()
    history = train(model, loaders.train, loaders.test, config)
    return {
        "seed": seed,
        "test_accuracy": history.test_accuracy[-1],
        "train_accuracy": history.train_accuracy[-1],
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    torch.set_num_threads(2)
    # The classic baseline: an RBF-kernel SVM on the raw 0-16 pixel values, on the same split.
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    svm = SVC(gamma=0.001).fit(x_train, y_train)
    results = {
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "svm_rbf_test_accuracy": float(svm.score(x_test, y_test)),
        "variants": {},
    }
    for name, variant in VARIANTS.items():
        results["variants"][name] = [run(variant, seed) for seed in SEEDS]
        accs = [r["test_accuracy"] for r in results["variants"][name]]
        print(f"{name:45s} test accuracy {', '.join(f'{a:.4f}' for a in accs)}", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT.name}")


if __name__ == "__main__":
    main()
