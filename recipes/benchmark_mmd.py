# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Memory and time of our bounded-memory MMD (`gaussian_mmd`, from ‖a‖²+‖b‖²−2abᵀ) against the pairwise-difference
formulation of the official library (tllib `GaussianKernel`: a `(2B, 2B, D)` tensor), forward + backward.

Commands:
    python recipes/benchmark_mmd.py                          # default sizes, CPU
    python recipes/benchmark_mmd.py --sizes 128x64 256x512 --big 1024x4096 --repeats 3
    python recipes/benchmark_mmd.py --device cuda            # peak memory from torch.cuda.max_memory_allocated

How memory is measured: on CUDA, `torch.cuda.max_memory_allocated()` minus the inputs. On CPU (tracemalloc does
not see torch), each case runs in a fresh subprocess and reports the growth of the process's peak RSS
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) over its value after the inputs were allocated and a warm-up call on
tiny inputs; it includes allocator slack, so treat it as an upper bound. The analytic size of the `(2B, 2B, D)`
difference tensor is printed next to it: (2B)² · D · 4 bytes.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from mmesid_artifacts.recipe_args import document
from tokenization.modeling_mmrqvae import gaussian_mmd


def pairwise_difference_mmd(x: torch.Tensor, y: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """tllib's formulation (unbiased estimator, no constant): materializes `(2B, 2B, D)` differences."""
    z = torch.cat([x, y])
    d2 = ((z.unsqueeze(0) - z.unsqueeze(1)) ** 2).sum(2)
    k = torch.exp(-d2 / (2 * alpha * d2.detach().mean()))
    b = x.shape[0]
    off = b * (b - 1)
    kxx, kyy, kxy = k[:b, :b], k[b:, b:], k[:b, b:]
    return (kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off - 2 * kxy.mean()


IMPLEMENTATIONS = {"ours": lambda x, y: gaussian_mmd(x, y, [0.5]), "pairwise_difference": pairwise_difference_mmd}


def run_case(impl: str, batch: int, dim: int, device: str, repeats: int) -> dict:
    """One measurement in this process (called in a fresh subprocess on CPU)."""
    fn = IMPLEMENTATIONS[impl]
    torch.manual_seed(0)
    fn(torch.randn(4, dim, device=device, requires_grad=True), torch.randn(4, dim, device=device)).backward()  # warm-up
    x = torch.randn(batch, dim, device=device, requires_grad=True)
    y = torch.randn(batch, dim, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss = fn(x, y)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        x.grad = None
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"impl": impl, "batch": batch, "dim": dim, "peak_bytes": peak, "seconds": min(times), "value": float(loss)}


def measure(impl: str, batch: int, dim: int, device: str, repeats: int) -> dict:
    if device == "cuda":
        return run_case(impl, batch, dim, device, repeats)
    cmd = [sys.executable, __file__, "--case", impl, str(batch), str(dim), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = document(argparse.ArgumentParser(), __doc__, config=False)
    parser.add_argument("--sizes", nargs="+", default=["128x64", "256x256", "256x1024"], help="BxD, both formulations")
    parser.add_argument("--big", nargs="+", default=["1024x4096"], help="BxD, ours only (the naive one cannot fit)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per case (the fastest is kept).")
    parser.add_argument("--output", default=None, help="Optional JSON file for the table.")
    parser.add_argument("--case", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        impl, batch, dim = args.case
        print(json.dumps(run_case(impl, int(batch), int(dim), "cpu", args.repeats)))
        return

    how = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak-RSS growth in a fresh subprocess"
    print(f"MMD forward+backward on {args.device}, memory = {how}, time = best of {args.repeats}")
    print(f"{'B':>6} {'D':>6} {'impl':>20} {'peak MB':>10} {'(2B)²·D·4 MB':>14} {'ms':>10} {'MMD':>10}")
    rows = []
    cases = [(s, impl) for s in args.sizes for impl in IMPLEMENTATIONS] + [(s, "ours") for s in args.big]
    for size, impl in cases:
        batch, dim = (int(v) for v in size.split("x"))
        row = measure(impl, batch, dim, args.device, args.repeats)
        row["naive_tensor_bytes"] = (2 * batch) ** 2 * dim * 4
        rows.append(row)
        print(
            f"{batch:>6,} {dim:>6,} {impl:>20} {row['peak_bytes'] / 2**20:>10,.1f} "
            f"{row['naive_tensor_bytes'] / 2**20:>14,.0f} {row['seconds'] * 1e3:>10,.1f} {row['value']:>10.5f}",
            flush=True,
        )
    for size in args.sizes:
        batch, dim = (int(v) for v in size.split("x"))
        ours, naive = (next(r for r in rows if (r["batch"], r["dim"], r["impl"]) == (batch, dim, i)) for i in IMPLEMENTATIONS)
        ours_mem = (
            f"×{naive['peak_bytes'] / ours['peak_bytes']:.1f} less"
            if ours["peak_bytes"] >= 2**20
            else "ours < 1 MB above the process's earlier peak"
        )
        print(
            f"B={batch:,} D={dim:,}: memory {ours_mem}, "
            f"time ×{naive['seconds'] / ours['seconds']:.1f} faster, |Δ MMD| {abs(ours['value'] - naive['value']):.2e}"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"device": args.device, "memory_measure": how, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
