"""One CPU peak-memory point, in a process of its own (started by ``vit_lib.bench.memory.peak_memory``):

    python -m vit_lib.bench.memory_worker METHOD N DTYPE --batch B --heads H --dim-head D --threads T

prints ``{"peak_bytes": ...}``. Part of ``vit_lib.bench`` (chapter 8, book/08_performance.ipynb).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from vit_lib.bench.attention_methods import dtype_from_name, qkv_inputs
from vit_lib.bench.memory import peak_memory_here


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vit_lib.bench.memory_worker", description=__doc__)
    parser.add_argument("method")
    parser.add_argument("n", type=int)
    parser.add_argument("dtype", type=dtype_from_name)
    for name in ("batch", "heads", "dim-head", "threads"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    q, k, v = qkv_inputs(
        args.n,
        batch=args.batch,
        heads=args.heads,
        dim_head=args.dim_head,
        dtype=args.dtype,
        device=torch.device("cpu"),
    )
    print(json.dumps({"peak_bytes": peak_memory_here(args.method, q, k, v)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
