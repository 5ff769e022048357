"""Which choices get SimpleViT to 98 % on the digits? Each variant is trained with three seeds on 1,221
training images and scored on a 216-image validation slice of the training set
(``digits_validation_loaders``); the recipe is chosen there. Only the chosen recipe then meets the
360 test images, once per seed, trained on all 1,437 training images. Results go to
book/data/digits_ablation.json, which chapter 6 reads.

    python scripts/digits_ablation.py            # or: make digits-ablation

The seeds run in parallel processes (one thread each); the whole run took 14 minutes on a heavily
loaded 2-core machine. To keep it short, the first edition's patch-2 + random shift row is not re-run.
"""

from __future__ import annotations

import json
import pathlib
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC
from torch import nn

from vit_lib import SimpleViT
from vit_lib.bench.measure import cpu_flags, cpu_model
from vit_lib.data import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    DIGITS_VALIDATION_FRACTION,
    digits_loaders,
    digits_validation_loaders,
)
from vit_lib.train import PRESETS
from vit_lib.training import TrainConfig, train

OUT = pathlib.Path(__file__).resolve().parent.parent / "book" / "data" / "digits_ablation.json"
SEEDS = (0, 1, 2)
FINAL = PRESETS["digits"]
PLAIN = dict(weight_decay=0.0, label_smoothing=0.0)
VARIANTS = {
    "patch 2, no regularisation": dict(patch_size=2, train=dict(epochs=30, **PLAIN), max_shift=0),
    "patch 2, + weight decay, label smoothing": dict(patch_size=2, train=dict(epochs=30), max_shift=0),
    # The control for "patch 2 fails because the first LayerNorm erases each 4-pixel patch's mean":
    # same tokens and widths, only that LayerNorm removed.
    "patch 2, + weight decay, label smoothing, no first LayerNorm": dict(
        patch_size=2, train=dict(epochs=30), max_shift=0, first_norm=False
    ),
    "patch 4, no regularisation": dict(patch_size=4, train=dict(epochs=30, **PLAIN), max_shift=0),
    "patch 4, + weight decay, label smoothing": dict(patch_size=4, train=dict(epochs=30), max_shift=0),
    # Separates the random shift from the 20 extra epochs of the final recipe.
    "patch 4, + random shift, 30 epochs": dict(patch_size=4, train=dict(epochs=30), max_shift=1),
    "patch 4, + random shift, 50 epochs (final)": dict(patch_size=4, train=dict(epochs=50), max_shift=1),
}


def run(variant: dict, seed: int, split: str) -> dict:
    torch.set_num_threads(1)
    make = digits_validation_loaders if split == "validation" else digits_loaders
    loaders = make(batch_size=FINAL["batch_size"], max_shift=variant["max_shift"], seed=seed)
    torch.manual_seed(seed)
    model = SimpleViT(
        image_size=8, channels=1, num_classes=10, **(FINAL["model"] | {"patch_size": variant["patch_size"]})
    )
    if not variant.get("first_norm", True):
        model.to_patch_embedding[1] = nn.Identity()  # (Rearrange, LayerNorm, Linear, LayerNorm)
    config = TrainConfig(**(FINAL["train"] | variant["train"]), seed=seed, progress=False)
    start = time.perf_counter()
    history = train(model, loaders.train, loaders.test, config)
    return {
        "seed": seed,
        f"{split}_accuracy": history.test_accuracy[-1],
        "train_accuracy": history.train_accuracy[-1],
        "seconds": round(time.perf_counter() - start, 1),
    }


def run_seeds(variant: dict, split: str) -> list[dict]:
    with ProcessPoolExecutor(len(SEEDS)) as pool:
        return list(pool.map(run, [variant] * len(SEEDS), SEEDS, [split] * len(SEEDS)))


def main() -> None:
    # The classic baseline: an RBF-kernel SVM on the raw 0-16 pixel values, on the same split.
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    svm = SVC(gamma=0.001).fit(x_train, y_train)
    results = {
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_threads_per_run": 1,
            "parallel_runs": len(SEEDS),
            "note": "timings taken on a shared machine, 3 seeds in parallel: indicative only",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "validation_fraction": DIGITS_VALIDATION_FRACTION,
        "svm_rbf_test_accuracy": float(svm.score(x_test, y_test)),
        "variants": {},
        "chosen": None,
        "chosen_test": [],
    }
    for name, variant in VARIANTS.items():
        results["variants"][name] = run_seeds(variant, "validation")
        accs = [r["validation_accuracy"] for r in results["variants"][name]]
        print(f"{name:62s} validation accuracy {', '.join(f'{a:.4f}' for a in accs)}", flush=True)
    # Choose on validation only: the highest mean over the seeds (the first such row on a tie).
    means = {
        name: sum(r["validation_accuracy"] for r in rows) / len(rows)
        for name, rows in results["variants"].items()
    }
    chosen = results["chosen"] = max(means, key=means.get)
    results["chosen_test"] = run_seeds(VARIANTS[chosen], "test")
    accs = [r["test_accuracy"] for r in results["chosen_test"]]
    print(f"{chosen:62s} test accuracy {', '.join(f'{a:.4f}' for a in accs)}", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT.name}")


if __name__ == "__main__":
    main()
