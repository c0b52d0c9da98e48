#!/usr/bin/python3
"""Baseline for bench/FashionViL.Bench SGEMM: torch.mm (Debian PyTorch on OpenBLAS) on square float32
matrices with 2 threads. Prints the median time and GFLOP/s (2*N^3 / median) per size.

Run with the system python (Debian's python3-torch):
    OMP_NUM_THREADS=2 /usr/bin/python3 tools/bench/torch_sgemm.py [sizes...]
"""
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import torch  # noqa: E402


def bench(n: int, threads: int = 2) -> None:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(7)
    a = torch.rand((n, n), generator=g, dtype=torch.float32) * 2 - 1
    b = torch.rand((n, n), generator=g, dtype=torch.float32) * 2 - 1
    c = torch.empty((n, n), dtype=torch.float32)
    reps = 200 if n <= 256 else 15 if n <= 1024 else 5
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    flops = 2.0 * n ** 3
    print(f"torch.mm {n}^3 threads={torch.get_num_threads()}: median {med * 1e3:.3f} ms, "
          f"{flops / med / 1e9:.1f} GFLOP/s (best {flops / min(times) / 1e9:.1f})", flush=True)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    cfg = torch.__config__.show()
    print("BLAS:", next((ln.strip() for ln in cfg.splitlines() if "BLAS" in ln), "unknown"))
    for n in [int(s) for s in sys.argv[1:]] or [256, 1024, 2048]:
        bench(n)
