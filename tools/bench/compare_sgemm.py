#!/usr/bin/python3
"""Ours (bench/FashionViL.Bench, `serve` mode) against torch.mm/OpenBLAS (torch_sgemm.py --serve), interleaved.

Both run as long-lived processes; for each round and size, each measures the median of ~0.5 s of repeats, one
right after the other, so that both see the same machine load. Prints every round and the median over rounds.

    dotnet build -c Release bench/FashionViL.Bench
    /usr/bin/python3 tools/bench/compare_sgemm.py [--rounds 7] [sizes...]
"""
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DLL = os.path.join(ROOT, "bench/FashionViL.Bench/bin/Release/net10.0/FashionViL.Bench.dll")


def start(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", FVL_THREADS="2")
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    while p.stdout.readline().strip() != "ready":
        pass
    return p


def ask(p, n):
    p.stdin.write(f"{n}\n")
    p.stdin.flush()
    return float(p.stdout.readline())


def main():
    args = sys.argv[1:]
    rounds = 7
    if args[:1] == ["--rounds"]:
        rounds, args = int(args[1]), args[2:]
    other = None
    if args[:1] == ["--against-dll"]:   # compare two builds of ours instead (for tuning)
        other, args = args[1], args[2:]
    sizes = [int(a) for a in args] or [256, 1024, 2048]
    ours = start(["dotnet", DLL, "serve"])
    torch = start(["dotnet", other, "serve"] if other else ["/usr/bin/python3", os.path.join(HERE, "torch_sgemm.py"), "--serve"])
    print("load before:", open("/proc/loadavg").read().strip())
    res = {n: ([], []) for n in sizes}
    for r in range(rounds):
        for n in sizes:
            a, b = ask(ours, n), ask(torch, n)
            res[n][0].append(a)
            res[n][1].append(b)
            f = 2.0 * n ** 3 / 1e9
            print(f"round {r + 1} N={n}: ours {f / a:6.1f} GFLOP/s, torch {f / b:6.1f} GFLOP/s, ratio {b / a:.2f}", flush=True)
    print("load after:", open("/proc/loadavg").read().strip())
    print("\n| N | ours GFLOP/s | torch/OpenBLAS GFLOP/s | ours / torch |")
    print("|---|---:|---:|---:|")
    for n in sizes:
        f = 2.0 * n ** 3 / 1e9
        a, b = statistics.median(res[n][0]), statistics.median(res[n][1])
        ratios = [y / x for x, y in zip(*res[n])]
        print(f"| {n} | {f / a:.1f} | {f / b:.1f} | {b / a:.2f} (per-round median {statistics.median(ratios):.2f}) |")
    for p in (ours, torch):
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait()


if __name__ == "__main__":
    main()
