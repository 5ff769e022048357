"""Do N processes compute what one process computes? The check behind the distributed tests and chapter.

    torchrun --nproc-per-node=2 -m vit_lib.distributed_check --steps 3

Every process trains a small SimpleViT for a few steps in each mode (``ddp``, ``fsdp``, ``scratch``: a
plain model whose gradients :func:`vit_lib.distributed.average_gradients` averages with the ring
all-reduce, and ``sum``: the same without dividing by N, a deliberately wrong control) on its shard of
each global batch. It also trains a reference model alone on the whole global batches, in the same order,
and compares: the gradients of the first step (before clipping) and the weights after the last one.
Rank 0 prints one JSON line with the largest differences over all ranks and parameters.

Why the gradients and not only the weights: AdamW divides each gradient by its running RMS and the
loop clips the gradient norm, so gradients that are N times too large (summed instead of averaged)
move the weights almost exactly as the right ones do. The gradient comparison is what catches that.

Built in chapter 7b (book/07b_distributed_training.ipynb).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from vit_lib import distributed
from vit_lib.model import SimpleViT
from vit_lib.training import param_groups

MODES = ("ddp", "fsdp", "scratch", "sum")


def small_vit() -> SimpleViT:
    """Digit-sized: 8x8 one-channel images, 4 tokens, 2 blocks."""
    return SimpleViT(
        image_size=8,
        patch_size=4,
        num_classes=10,
        dim=32,
        depth=2,
        heads=2,
        mlp_dim=64,
        channels=1,
        dim_head=16,
    )


def synthetic_digits(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor; an FSDP2 shard (a DTensor) is all-gathered first (a collective)."""
    tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
    return tensor.detach().clone()


def run_steps(
    mode: str | None,
    dataset: TensorDataset,
    global_batch: int,
    steps: int,
    context: distributed.Context,
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train a fresh model for ``steps`` steps as the training loop does (AdamW, label smoothing,
    gradient clipping at 1). ``mode=None``: one process alone on the whole global batches. Returns the
    first step's gradients and the final weights, by parameter name."""
    torch.manual_seed(seed)  # the same initial weights in every process and every mode
    model = small_vit().to(context.device)
    names = [name for name, _ in model.named_parameters()]
    if mode in ("ddp", "fsdp"):
        model = distributed.wrap_model(model, mode, context)
    module = distributed.unwrap(model)
    optimizer = torch.optim.AdamW(param_groups(module, 0.05), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    if mode is None:  # the permutation DistributedSampler draws, in global batches
        order = list(DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed))
        batches = [dataset[order[k * global_batch : (k + 1) * global_batch]] for k in range(steps)]
    else:
        loader = distributed.shard_train_loader(DataLoader(dataset, batch_size=global_batch), context, seed)
        loader.sampler.set_epoch(0)
        batches = list(loader)[:steps]
    first_grads = {}
    for step, (images, labels) in enumerate(batches):
        loss = loss_fn(model(images.to(context.device)), labels.to(context.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if mode == "scratch":
            distributed.average_gradients(module)
        elif mode == "sum":  # the bug to catch: summed, not averaged
            for p in module.parameters():
                distributed.ring_all_reduce(p.grad)
        if step == 0:
            first_grads = {n: full_tensor(p.grad) for n, p in zip(names, module.parameters())}
        nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
    weights = {n: full_tensor(p) for n, p in zip(names, module.parameters())}
    return first_grads, weights


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def norm(tensors: dict[str, torch.Tensor]) -> float:
    return torch.cat([t.double().flatten() for t in tensors.values()]).norm().item()


def global_max(value: float, device: torch.device) -> float:
    tensor = torch.tensor(value, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()


def check(
    modes: tuple[str, ...], steps: int, global_batch: int, seed: int, context: distributed.Context
) -> dict:
    dataset = synthetic_digits(steps * global_batch, seed)
    ref_grads, ref_weights = run_steps(None, dataset, global_batch, steps, context, seed)
    torch.manual_seed(seed)
    initial = {n: p.detach().clone() for n, p in small_vit().named_parameters()}
    result = {
        "world_size": context.world_size,
        "steps": steps,
        "global_batch": global_batch,
        "grad_norm": norm(ref_grads),
        "grad_max_abs": max(g.abs().max().item() for g in ref_grads.values()),
        "weight_change_max_abs": max_abs_diff(ref_weights, initial),
    }
    # the ring all-reduce against gloo's / NCCL's own, on a vector whose length N does not divide
    vector = torch.randn(1001, generator=torch.Generator().manual_seed(context.rank)).to(context.device)
    result["ring_vs_all_reduce_max_abs"] = global_max(
        (distributed.ring_all_reduce(vector.clone()) - distributed.all_reduce_sum(vector)).abs().max().item(),
        context.device,
    )
    runs = {}
    for mode in modes:
        grads, weights = runs[mode] = run_steps(mode, dataset, global_batch, steps, context, seed)
        result[mode] = {
            "grad_max_abs_diff": global_max(max_abs_diff(grads, ref_grads), context.device),
            "grad_norm_ratio": norm(grads) / norm(ref_grads),
            "weight_max_abs_diff": global_max(max_abs_diff(weights, ref_weights), context.device),
        }
    if "scratch" in runs and "ddp" in runs:  # the hand-made all-reduce against DDP's, directly
        (scratch_grads, scratch_weights), (ddp_grads, ddp_weights) = runs["scratch"], runs["ddp"]
        result["scratch_vs_ddp"] = {
            "grad_max_abs_diff": global_max(max_abs_diff(scratch_grads, ddp_grads), context.device),
            "weight_max_abs_diff": global_max(max_abs_diff(scratch_weights, ddp_weights), context.device),
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="torchrun --nproc-per-node=N -m vit_lib.distributed_check")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {MODES}")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    args = parser.parse_args(argv)
    modes = tuple(args.modes.split(","))
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {MODES}")
    torch.set_num_threads(args.threads)
    context = distributed.setup("cpu")
    try:
        result = check(modes, args.steps, args.global_batch, args.seed, context)
    finally:
        distributed.teardown()
    if context.is_main:
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
    if distributed.launched_by_torchrun():
        distributed.end_worker()  # skips a shutdown that sometimes aborts (see end_worker)
