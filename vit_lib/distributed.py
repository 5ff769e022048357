"""Data-parallel training with ``torch.distributed``: one process per device, each on its own shard.

Launch with ``torchrun --nproc-per-node=N ...``. torchrun starts N copies of the program and tells each
its place through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); :func:`setup` reads them and joins the process group (NCCL on CUDA, gloo on the CPU).
Without torchrun every helper here is a no-op for a single process, so the same training code runs both
ways.

- DDP (Li et al., 2020) keeps a full replica of the model in every process and averages the gradients
  with an all-reduce during the backward pass.
- FSDP2 (``fully_shard``; Zhao et al., 2023, after ZeRO, Rajbhandari et al., 2020) keeps only a
  1/N shard of the parameters, gradients and optimizer state per process; each block's parameters are
  all-gathered just before they are used, and gradients are reduce-scattered.

:func:`ring_all_reduce` and :func:`average_gradients` do by hand, with point-to-point messages, what
DDP does for us; the book checks them against DDP.

Built in chapter 7b (book/07b_distributed_training.ipynb).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import socket
import sys
import warnings
from dataclasses import dataclass, field
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

PARALLEL_MODES = ("ddp", "fsdp")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
PADDING_LABEL = -100  # cross_entropy's default ignore_index: padded evaluation samples add no loss


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes and the device it uses."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, prints the result and writes checkpoints; the others stay quiet."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def world_size_from_env() -> int:
    """How many processes torchrun started (1 without torchrun): known before any process group exists."""
    return int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1


def backend_for(device: torch.device) -> str:
    """NCCL moves CUDA tensors GPU to GPU; gloo works on CPU tensors (and is what tests use)."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device: str | torch.device = "auto", timeout_s: float = 600.0) -> Context:
    """Join the process group that torchrun describes in the environment, or return a one-process
    :class:`Context` when not launched by torchrun. ``device="auto"``: CUDA if available, then each
    process takes the GPU of its ``LOCAL_RANK`` (its index on this machine)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if not launched_by_torchrun():
        return Context(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend_for(device),
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),  # a crashed peer fails the others, not hangs
            device_id=device if device.type == "cuda" else None,
        )
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def current_context(device: torch.device | str = "cpu") -> Context:
    """The :class:`Context` of this process after :func:`setup` (one process when there was none)."""
    device = torch.device(device)
    if not dist.is_initialized():
        return Context(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return Context(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device
    )


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the one that logs, prints results and writes checkpoints."""
    return rank() == 0


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first, the others once it is done: one process downloads a dataset, the
    others then find it on disk instead of writing the same files at the same time."""
    first = not dist.is_initialized() or is_main()
    if not first:
        dist.barrier()
    try:
        yield
    finally:
        if first and dist.is_initialized():
            dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def end_worker(code: int = 0) -> NoReturn:
    """End a torchrun worker whose work is done and saved: flush stdout and stderr, then ``os._exit``,
    which skips the interpreter's shutdown and the C++ libraries' static destructors.

    Why: with torch 2.14.1 (2 processes, gloo, DDP or FSDP2, 2-core CPU machines) a non-main rank
    now and then aborted *after* its last Python line, in that shutdown ("terminate called without an
    active exception", SIGABRT; Python's faulthandler showed no Python frame on the stack): 3 of 184
    runs on one machine, 1 of 3 in one CI run. torchrun then fails the whole run, although the result
    line and the checkpoint had been written. Call it only after :func:`teardown`; it never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def print0(*args: object, **kwargs: object) -> None:
    """``print`` on rank 0 only (or in a single process)."""
    if is_main():
        print(*args, **kwargs)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes (a copy; the input is left alone)."""
    total = tensor.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def per_process_batch_size(global_batch_size: int, world_size: int) -> int:
    """``--batch-size`` is the global batch: each of the ``world_size`` processes takes an equal part."""
    if global_batch_size % world_size:
        raise ValueError(
            f"the global batch size {global_batch_size} must be divisible by the number of processes "
            f"{world_size} (each process takes an equal share)"
        )
    return global_batch_size // world_size


def shard_train_loader(loader: DataLoader, context: Context, seed: int = 0) -> DataLoader:
    """``loader`` (global batch ``loader.batch_size``, shuffled) as this process's share of it.

    A :class:`DistributedSampler` draws one permutation per epoch from ``seed + epoch`` (call
    ``loader.sampler.set_epoch(epoch)`` each epoch, or every epoch repeats the first one's order) and
    gives rank ``r`` every ``world_size``-th index from ``r`` on. A step's per-process batches together
    are a contiguous block of ``loader.batch_size`` indices of that permutation: the global batch that
    one process would see, which is what makes N processes compute the same step as one.
    """
    sampler = DistributedSampler(
        loader.dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed
    )
    return DataLoader(
        loader.dataset,
        batch_size=per_process_batch_size(loader.batch_size, context.world_size),
        sampler=sampler,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers,
    )


class EvaluationShard(Dataset):
    """Every ``world_size``-th sample from ``rank`` on, padded to the same length on every rank.

    Every process must run the same number of forward passes (FSDP all-gathers parameters inside each
    one), so the shards are padded to ``ceil(n / world_size)``; padded samples carry the label
    :data:`PADDING_LABEL`, which the evaluation ignores, so that each test sample counts exactly once.
    """

    def __init__(self, dataset: Dataset, rank: int, world_size: int) -> None:
        self.dataset, self.rank, self.world_size = dataset, rank, world_size
        self.length = math.ceil(len(dataset) / world_size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.rank + index * self.world_size
        if source < len(self.dataset):
            return self.dataset[source]
        image, _ = self.dataset[0]
        return image, torch.tensor(PADDING_LABEL)


def shard_eval_loader(loader: DataLoader, context: Context) -> DataLoader:
    return DataLoader(
        EvaluationShard(loader.dataset, context.rank, context.world_size),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
    )


def wrap_model(model: nn.Module, parallel: str, context: Context) -> nn.Module:
    """``model`` (already on ``context.device``) wrapped for data parallelism: ``"ddp"`` or ``"fsdp"``.

    DDP broadcasts rank 0's parameters at construction, so all replicas start equal. FSDP2 shards each
    transformer block separately (a block's full parameters exist only while it runs) and then the
    rest of the model; it shards the parameters in place, so the optimizer must be built after this.
    """
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel must be one of {PARALLEL_MODES}, got {parallel!r}")
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [context.device.index] if context.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.device_mesh import init_device_mesh

    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6 has FSDP2 under its first, private name
        from torch.distributed._composable.fsdp import fully_shard

    # FSDP2 warns that a block returns a view (nn.Linear's output on (b, n, d) is one), because an
    # in-place op on it would skip the hook that all-gathers the parameters for the backward pass.
    # Transformer.forward adds the residual out of place (x = attn(x) + x), so the warning is moot.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    # the mesh of the model's device type, not FSDP's default (the machine's accelerator, even for a
    # CPU run with gloo on a machine that has a GPU)
    mesh = init_device_mesh(context.device.type, (context.world_size,))
    for attention, feed_forward in model.transformer.layers:  # one unit per block: one all-gather
        fully_shard([attention, feed_forward], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 keeps the module itself)."""
    return getattr(model, "module", model)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU, keyed as the plain module's, on rank 0 (``{}`` on the
    others): FSDP's shards are gathered, so that a single process can load the checkpoint. A collective:
    every rank must call it."""
    if not dist.is_initialized():
        return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(unwrap(model), options=options)


def ring_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all processes with point-to-point messages around a ring.

    The tensor is cut into ``world_size`` chunks. Reduce-scatter: in each of ``world_size - 1`` steps
    every rank sends one chunk to its right neighbour and adds the chunk from its left one; afterwards
    rank ``r`` holds the full sum of chunk ``(r + 1) % world_size``. All-gather: ``world_size - 1`` more
    steps pass the finished chunks around. Each rank sends ``2 (N - 1) / N`` times the tensor's size,
    whatever N is (Patarasuk and Yuan, 2009): why the ring scales.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    rank, world = dist.get_rank(), dist.get_world_size()
    right, left = (rank + 1) % world, (rank - 1) % world
    flat = tensor.view(-1)
    chunks = list(flat.tensor_split(world))
    incoming = torch.empty_like(chunks[0])
    for step in range(2 * (world - 1)):
        scatter = step < world - 1  # first reduce-scatter, then all-gather
        offset = step if scatter else step - (world - 1) - 1
        send_chunk, recv_chunk = chunks[(rank - offset) % world], chunks[(rank - offset - 1) % world]
        request = dist.isend(send_chunk.contiguous(), right)
        received = incoming[: recv_chunk.numel()]
        dist.recv(received, left)
        request.wait()
        if scatter:
            recv_chunk.add_(received)
        else:
            recv_chunk.copy_(received)
    return tensor


def average_gradients(model: nn.Module, all_reduce=ring_all_reduce) -> None:
    """After ``loss.backward()`` on each process's own batch: replace every gradient by its mean over
    the processes, as DDP does. The gradients travel as one flat buffer (DDP's buckets do the same to
    send few large messages instead of many small ones); ``all_reduce`` sums it in place."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or not dist.is_initialized():
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, mean in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(mean.view_as(grad))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, for a local rendezvous (tests, notebooks)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def torchrun_command(nproc: int, module: str, *args: str, python: str | None = None) -> list[str]:
    """``torchrun --nproc-per-node=nproc -m module args`` for one machine, rendezvous on 127.0.0.1 at a
    free port (torchrun's own default, port 29500, collides when two runs share a machine)."""
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        module,
        *args,
    ]
