"""What this machine can do, measured in the benchmark's own process: the yardsticks.

- `matmul_gflops`: `torch.mm` at the evaluation's shapes, a chunk of users times the
  catalogue, in float32 and in bfloat16: the most a full-catalogue scoring step could reach
  at each precision;
- `copy_gbps`: memory copy bandwidth (bytes read plus written per second), what bounds
  the steps that stream memory instead of multiplying: top-k, Adam over big tables.
"""

from __future__ import annotations

import time

import torch


def _best_seconds(fn, seconds: float) -> float:
    """The fastest of repeated calls over about `seconds` (after one warm-up call)."""
    fn()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return best


def matmul_gflops(rows: int, items: int, dim: int, seconds: float = 3.0, dtype: torch.dtype = torch.float32,
                  device: str = "cpu") -> float:
    """GFLOP/s of [rows, dim] @ [dim, items] at `dtype` on `device` (2 * rows * items * dim FLOPs a call)."""
    g = torch.Generator().manual_seed(0)
    users = torch.randn(rows, dim, generator=g).to(device, dtype)
    catalogue = torch.randn(items, dim, generator=g).to(device, dtype)
    out = torch.empty(rows, items, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call() -> None:
        torch.mm(users, catalogue.T, out=out)
        sync()

    took = _best_seconds(call, seconds)
    return 2 * rows * items * dim / took / 1e9


def copy_gbps(megabytes: int = 512, seconds: float = 2.0) -> float:
    """GB/s of a large tensor copy, counting the bytes read and the bytes written."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    took = _best_seconds(lambda: dst.copy_(src), seconds)
    return 2 * src.numel() * 4 / took / 1e9
