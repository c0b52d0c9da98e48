#!/usr/bin/env bash
# Issue 7's last criterion on a device: loss curves of configs/tiny.yaml with and without the tensor-core switch over
# 200 updates agree within the noise of two seeds. Runs fp32 seed 42, fp32 seed 43 and tf32 seed 42 (RUNS) on generated
# data through the packed CLI (`pretrain`, per-update losses from each run's metrics.jsonl), then prints a table over
# windows of 20 updates: window mean loss per run, and per-update mean |fp32 42 − X| against the seed noise
# |fp32 42 − fp32 43| (the CPU version of this table is in bench/README.md, "Loss curves with and without the switch").
# Device call (after bash tools/gpu/pack.sh; run tool, carry [".gpu"]):  bash tools/gpu/curves.sh
# Knobs: UPDATES=200 PRODUCTS=800 RUNS="fp32:42 fp32:43 tf32:42" DEVICE=cuda CLI=path (default: .gpu/cli.tar.xz unpacked)
# Local smoke test: UPDATES=3 PRODUCTS=40 DEVICE=cpu CLI=./fashionvil bash tools/gpu/curves.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/fv-curves}; mkdir -p "$out"
updates=${UPDATES:-200}; products=${PRODUCTS:-800}; device=${DEVICE:-cuda}
runs=${RUNS:-"fp32:42 fp32:43 tf32:42"}
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
if [ -n "${CLI:-}" ]; then cli=($CLI); else
  [ -f .gpu/cli.tar.xz ] || { echo "no .gpu/cli.tar.xz: run bash tools/gpu/pack.sh first"; exit 1; }
  d=$(mktemp -d); tar -C "$d" -xJf .gpu/cli.tar.xz; cli=("$d/cli/FashionViL.Cli"); fi
work=$(mktemp -d)
"${cli[@]}" synth --out "$work/data" --products "$products" --image-size 128 > "$out/synth.log" 2>&1 || { tail -5 "$out/synth.log"; exit 1; }
for r in $runs; do
  p=${r%%:*}; s=${r##*:}
  "${cli[@]}" pretrain config=configs/tiny.yaml env.data_dir="$work/data" env.save_dir="$work/save" training.seed="$s" \
    training.precision="$p" training.max_updates="$updates" training.evaluation_interval=0 training.checkpoint_interval=0 \
    training.log_interval=1 run_type=train training.experiment_name="${p}_seed${s}" --device "$device" > "$out/${p}_seed${s}.log" 2>&1 \
    || { echo "pretrain $p seed $s failed:"; tail -5 "$out/${p}_seed${s}.log"; exit 1; }
  cp "$work/save/${p}_seed${s}/metrics.jsonl" "$out/${p}_seed${s}.jsonl"
done
python3 - "$out" $runs <<'PY'
import json, sys, os
out, runs = sys.argv[1], [r.replace(":", "_seed") for r in sys.argv[2:]]
loss = {}
for r in runs:
    loss[r] = {}
    for line in open(os.path.join(out, r + ".jsonl")):
        d = json.loads(line)
        if d.get("kind") == "train": loss[r][d["step"]] = float(d["loss"])   # a non-finite loss is written as a string
    bad = [s for s, v in loss[r].items() if v != v or v in (float("inf"), float("-inf"))]
    if bad: print(f"{r}: non-finite loss at update {bad[0]} ({len(bad)} updates): the run diverged")
a, b = runs[0], runs[1]
n = min(len(loss[r]) for r in runs)
print(f"configs/tiny.yaml, {n} updates, generated data, device run; runs: {', '.join(runs)}")
print("| updates | " + " | ".join(f"mean loss {r}" for r in runs) + " | " + " | ".join(f"mean abs diff {a} vs {r}" for r in runs[1:]) + " |")
print("|" + "---|" * (1 + len(runs) + len(runs) - 1))
def row(lo, hi, label):
    steps = range(lo, hi + 1)
    means = [sum(loss[r][s] for s in steps) / len(steps) for r in runs]
    diffs = [sum(abs(loss[a][s] - loss[r][s]) for s in steps) / len(steps) for r in runs[1:]]
    print(f"| {label} | " + " | ".join(f"{m:.4f}" for m in means) + " | " + " | ".join(f"{d:.4f}" for d in diffs) + " |")
for lo in range(1, n + 1, 20): row(lo, min(n, lo + 19), f"{lo}–{min(n, lo + 19)}")
row(1, n, "all")
noise = sum(abs(loss[a][s] - loss[b][s]) for s in range(1, n + 1)) / n
for r in runs[2:]:
    d = sum(abs(loss[a][s] - loss[r][s]) for s in range(1, n + 1)) / n
    print(f"{r}: mean |{a} − {r}| = {d:.4f} against the seed noise {noise:.4f} ({'within' if d < noise else 'NOT within'} it)")
PY
