#!/usr/bin/python3
"""Baseline for bench/FashionViL.Bench SGEMM: torch.mm (Debian PyTorch, which calls OpenBLAS) on square float32
matrices with 2 threads. Prints the median time and GFLOP/s (2*N^3 / median) per size.

    OMP_NUM_THREADS=2 /usr/bin/python3 tools/bench/torch_sgemm.py [sizes...]
    /usr/bin/python3 tools/bench/torch_sgemm.py --serve     # line protocol used by compare_sgemm.py
"""
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import torch  # noqa: E402

THREADS = 2


def median_seconds(n: int, budget: float = 0.5) -> tuple[float, float]:
    """Median and best seconds of torch.mm(a, b, out=c) for n x n float32, over about `budget` seconds after warm-up."""
    torch.set_num_threads(THREADS)
    g = torch.Generator().manual_seed(7)
    a = torch.rand((n, n), generator=g, dtype=torch.float32) * 2 - 1
    b = torch.rand((n, n), generator=g, dtype=torch.float32) * 2 - 1
    c = torch.empty((n, n), dtype=torch.float32)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget and len(times) < 2000):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def blas_libraries() -> list[str]:
    with open("/proc/self/maps") as f:
        libs = {ln.split()[-1] for ln in f if "blas" in ln or "dnnl" in ln}
    return sorted(os.path.basename(x) for x in libs)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        print("ready", flush=True)
        for line in sys.stdin:
            if not line.strip():
                break
            print(repr(median_seconds(int(line))[0]), flush=True)
        sys.exit(0)
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # load the BLAS before listing it
    print(f"torch {torch.__version__}, threads {THREADS}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"libraries: {', '.join(blas_libraries())}")
    for n in [int(s) for s in sys.argv[1:]] or [256, 1024, 2048]:
        med, best = median_seconds(n, budget=2.0)
        flops = 2.0 * n ** 3
        print(f"torch.mm {n}^3 threads={torch.get_num_threads()}: median {med * 1e3:.3f} ms, "
              f"{flops / med / 1e9:.1f} GFLOP/s (best {flops / best / 1e9:.1f})", flush=True)
