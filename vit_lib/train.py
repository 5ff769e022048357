"""Command line: train SimpleViT on the digits (CPU, offline) or CIFAR-10 (GPU, downloads).

    python -m vit_lib.train --dataset digits
    python -m vit_lib.train --dataset cifar10 --epochs 50 --compile

The last line printed is one JSON object: test_accuracy, seconds, epochs, params, and the settings.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vit_lib.data import cifar10_loaders, digits_loaders
from vit_lib.model import SimpleViT
from vit_lib.training import TrainConfig, save_checkpoint, train

# Model and optimisation settings per dataset; the training chapters explain how they were chosen.
PRESETS: dict[str, dict] = {
    "digits": {
        "model": dict(patch_size=4, dim=64, depth=4, heads=4, mlp_dim=128, dim_head=16),
        "train": dict(epochs=50, lr=2e-3, weight_decay=0.05, warmup_epochs=2, label_smoothing=0.1),
        "batch_size": 64,
        "max_shift": 1,
    },
    "cifar10": {
        "model": dict(patch_size=4, dim=384, depth=6, heads=6, mlp_dim=768, dim_head=64),
        "train": dict(epochs=50, lr=1e-3, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.1),
        "batch_size": 256,
    },
}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(dataset: str, batch_size: int | None, data_root: str, download: bool, seed: int, workers: int):
    preset = PRESETS[dataset]
    batch_size = batch_size or preset["batch_size"]
    if dataset == "digits":
        loaders = digits_loaders(batch_size=batch_size, max_shift=preset["max_shift"], seed=seed)
    else:
        loaders = cifar10_loaders(
            data_root, batch_size=batch_size, download=download, num_workers=workers, seed=seed
        )
    torch.manual_seed(seed)
    model = SimpleViT(
        image_size=loaders.image_size,
        channels=loaders.channels,
        num_classes=loaders.num_classes,
        **preset["model"],
    )
    return loaders, model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m vit_lib.train", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(PRESETS), default="digits")
    parser.add_argument("--epochs", type=int, help="default: the dataset preset's")
    parser.add_argument("--lr", type=float, help="peak learning rate; default: the preset's")
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--data-root", default="data", help="where CIFAR-10 is (or is downloaded to)")
    parser.add_argument("--no-download", action="store_true", help="never download CIFAR-10")
    parser.add_argument("--workers", type=int, default=2, help="CIFAR-10 loader worker processes")
    parser.add_argument("--checkpoint", help="save the trained model here (torch.save)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    loaders, model = build(
        args.dataset, args.batch_size, args.data_root, not args.no_download, args.seed, args.workers
    )
    settings = dict(
        PRESETS[args.dataset]["train"], seed=args.seed, compile=args.compile, progress=not args.no_progress
    )
    for name in ("epochs", "lr"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    config = TrainConfig(**settings)

    start = time.perf_counter()
    history = train(model, loaders.train, loaders.test, config, device)
    seconds = time.perf_counter() - start
    if args.checkpoint:
        save_checkpoint(args.checkpoint, model, dataset=args.dataset, epochs=config.epochs)
    result = {
        "dataset": args.dataset,
        "test_accuracy": round(history.test_accuracy[-1], 4),
        "seconds": round(seconds, 1),
        "epochs": config.epochs,
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
