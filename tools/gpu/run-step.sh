#!/usr/bin/env bash
# Issue 7 device run: `fashionvil bench step` for itc, mlm, mpfc at batch 64 (fp32, and tf32 when this build has the
# precision switch), then the PyTorch step (torch_fashionvil_step.py) in the same call, logs and JSON to $OUT, and a
# short table printed last (ours vs PyTorch, ratio, peak memory, launches / allocations / host syncs per step).
#
# Prepare here (repo root; builds nothing on the device):
#   ../shared/tools/gpu-pack.sh tools/FashionViL.Cli/FashionViL.Cli.csproj --name cli
#   cp ../shared/tools/torch_fashionvil_step.py .gpu/
# Device call (run tool, carry [".gpu"], timeout_s 600):
#   bash tools/gpu/run-step.sh
# MLM runs with `--mlm-head-rows all` (the 30,522-way head on all 75 text rows, as the PyTorch script does; the model
# itself runs it on the 11 labelled rows only) so that the MLM ratio compares the same work; MLM_HEAD_ROWS=labelled times
# what the model trains with instead (a build without the option is run without it, and its log says so).
# TUNE=on adds `--tune on` to every bench run (KernelTuner: the same-bits tile candidates of each GEMM/conv shape timed in
# the warm-up, the fastest kept) with the cache in $OUT/tune-cache.json, so the choices come back with the logs, and its
# report (`bench tuning`: picks away from the rules, time saved per call) in $OUT/tuning.txt.
# Knobs (environment): TUNE=off  TASKS="itc mlm mpfc"  BATCH=64  STEPS=10  WARMUP=3  MODES="fp32 tf32" (default: fp32, plus tf32
# when available)  MLM_HEAD_ROWS=all  RUN_TIMEOUT=120 (seconds per bench run)  BUDGET=570 (seconds for the whole call; runs that would
# not fit are skipped and named)  TORCH_MODES=fp32,default  TORCH=1 (0 skips PyTorch)  TORCH_SCRIPT=path  PYTHON=python3.
# Local smoke test of the script itself (no GPU, tiny sizes):
#   CLI="dotnet tools/FashionViL.Cli/bin/Debug/net10.0/FashionViL.Cli.dll" DEVICE=cpu CONFIG=tests/FashionViL.Tests/Bench/nano.yaml \
#   BATCH=2 STEPS=1 WARMUP=1 PYTHON=/usr/bin/python3 TORCH_SCRIPT=/work/shared/tools/torch_fashionvil_step.py TORCH_ARGS="--small --device cpu" \
#   OUT=/tmp/step-out bash tools/gpu/run-step.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/fv-step-out}
mkdir -p "$out"
tasks=${TASKS:-"itc mlm mpfc"}
batch=${BATCH:-64}; steps=${STEPS:-10}; warmup=${WARMUP:-3}
device=${DEVICE:-cuda}; config=${CONFIG:-configs/pretrain.yaml}
run_timeout=${RUN_TIMEOUT:-120}
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_CLI_TELEMETRY_OPTOUT=1

if [ -n "${CLI:-}" ]; then
  cli=($CLI)
else
  [ -f .gpu/cli.tar.xz ] || { echo "no .gpu/cli.tar.xz: run ../shared/tools/gpu-pack.sh tools/FashionViL.Cli/FashionViL.Cli.csproj --name cli first"; exit 1; }
  dest=$(mktemp -d)
  tar -C "$dest" -xJf .gpu/cli.tar.xz
  cli=("$dest/cli/FashionViL.Cli")
fi
(nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv) > "$out/nvidia-smi.txt" 2>&1 || true
date -u +"%Y-%m-%d %H:%M UTC" > "$out/date.txt"

if [ -z "${MODES:-}" ]; then
  modes="fp32"
  # The precision option is checked before anything is built: a build without the switch says so at once.
  probe=$("${cli[@]}" bench step --precision tf32 --config /nonexistent.yaml 2>&1 || true)
  case "$probe" in *"not available in this build"*) ;; *) modes="fp32 tf32" ;; esac
else
  modes=$MODES
fi
# The MLM head-rows option is checked before anything is built as well: an older build rejects the option by name.
mlm_rows=${MLM_HEAD_ROWS:-all}
mlm_args=(--mlm-head-rows "$mlm_rows")
probe=$("${cli[@]}" bench step --mlm-head-rows "$mlm_rows" --config /nonexistent.yaml 2>&1 || true)
case "$probe" in
  *"is not a mode"*) echo "MLM_HEAD_ROWS=$mlm_rows: $probe"; exit 2 ;;
  *"--mlm-head-rows"*) mlm_args=(); mlm_rows="labelled (this build has no --mlm-head-rows: $probe)" ;;
esac
tune_args=()
if [ "${TUNE:-off}" != "off" ]; then
  probe=$("${cli[@]}" bench step --tune "$TUNE" --device cuda --config /nonexistent.yaml 2>&1 || true)
  case "$probe" in
    *"not a tuning mode"*) echo "TUNE=$TUNE: $probe"; exit 2 ;;
    *"--tune"*) echo "TUNE=$TUNE: this build has no --tune: $probe"; exit 2 ;;
  esac
  tune_args=(--tune "$TUNE"); export FVL_TUNE_CACHE="$out/tune-cache.json"
fi
echo "bench step: tasks [$tasks], modes [$modes], batch $batch, $steps steps after $warmup warm-up, $device, $config, mlm head rows $mlm_rows, tune ${TUNE:-off}" | tee "$out/plan.txt"

# Stay inside one device call (600 s): a run starts only if it can finish (RUN_TIMEOUT) with PyTorch's time still left.
budget=${BUDGET:-570}; torch_reserve=$([ "${TORCH:-1}" != "0" ] && echo "${TORCH_TIMEOUT:-200}" || echo 0)
for mode in $modes; do
  for t in $tasks; do
    log="$out/step-$t-$mode.log"
    if [ $((SECONDS + run_timeout + torch_reserve)) -gt "$budget" ]; then
      echo "bench step $t $mode: skipped, not enough of the ${budget}s budget left (run it in another call: TASKS=$t MODES=$mode)" > "$log"
      cat "$log"; continue
    fi
    extra=(); [ "$t" = mlm ] && extra=(${mlm_args[@]+"${mlm_args[@]}"})
    timeout "$run_timeout" "${cli[@]}" bench step --task "$t" --batch "$batch" --device "$device" --steps "$steps" \
      --warmup "$warmup" --config "$config" --precision "$mode" ${extra[@]+"${extra[@]}"} ${tune_args[@]+"${tune_args[@]}"} \
      --json "$out/step-$t-$mode.json" > "$log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || echo "bench step $t $mode: exit $rc (124/137: over RUN_TIMEOUT=${run_timeout}s)" >> "$log"
    tail -n 22 "$log"
  done
done

if [ "${TORCH:-1}" != "0" ]; then
  torch_script=${TORCH_SCRIPT:-}
  for c in .gpu/torch_fashionvil_step.py shared/tools/torch_fashionvil_step.py ../shared/tools/torch_fashionvil_step.py; do
    [ -n "$torch_script" ] || { [ -f "$c" ] && torch_script=$c; }
  done
  timeout "${TORCH_TIMEOUT:-200}" "${PYTHON:-python3}" "$torch_script" --batch "$batch" --steps "$steps" --tasks "$(echo $tasks | tr ' ' ,)" \
    --modes "${TORCH_MODES:-fp32,default}" ${TORCH_ARGS:-} > "$out/torch.log" 2>&1 || echo "torch: exit $?" >> "$out/torch.log"
  tail -n 3 "$out/torch.log"
fi

if [ ${#tune_args[@]} -gt 0 ] && [ -f "$out/tune-cache.json" ]; then
  "${cli[@]}" bench tuning --cache "$out/tune-cache.json" --top 15 > "$out/tuning.txt" 2>&1 || true
  head -n 30 "$out/tuning.txt"
fi

python3 - "$out" <<'PY'
import json, glob, os, sys
out = sys.argv[1]
torch = {}
try:
    for line in open(os.path.join(out, "torch.log")):
        if line.startswith("SUMMARY "):
            for r in json.loads(line[8:]): torch[(r["task"], r["mode"])] = r
except FileNotFoundError:
    pass
twin = {"fp32": "fp32", "tf32": "default", "bf16": "bf16"}
rows = []
for f in sorted(glob.glob(os.path.join(out, "step-*.json"))):
    r = json.load(open(f))
    t = torch.get((r["task"], twin.get(r["precision"], r["precision"])))
    tm = t["ms_per_step"] if t else None
    rows.append((r["task"], r["precision"], r["ms_per_step"]["median"], tm, r["peak_memory_gib"], t["peak_gib"] if t else None,
                 r.get("kernel_launches_per_step"), r["device_allocations_per_step"], r.get("host_syncs_per_step"), r["device_name"]))
    tu = r.get("tuning")
    if tu and tu.get("mode") == "on":
        print(f'tuning {r["task"]} {r["precision"]}: {tu["tuned_in_warmup"]} shapes timed in warm-up ({tu["tuning_ms"] / 1000:.1f} s), '
              f'{tu["tuned_while_measuring"]} while measuring, {tu["differ_from_rule"]} away from the rule')
    bd = r.get("breakdown")
    if bd:
        parts = ", ".join(f'{k["kind"]} {k["ms"]:.1f} ms {k["pct"]:.0f}%' for k in bd["kinds"])
        print(f'breakdown {r["task"]} {r["precision"]}: {parts}, host/idle {bd["host_ms"]:.1f} ms {bd["host_pct"]:.0f}%')
def f(v, fmt):
    return "-" if v is None else format(v, fmt)
print(f'device: {rows[0][9] if rows else "?"}; date: {open(os.path.join(out, "date.txt")).read().strip()}')
print("| task | mode | ours ms | PyTorch ms | ratio | ours peak GiB | PyTorch peak GiB | launches/step | allocs/step | host syncs/step |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for task, mode, ms, tm, pk, tpk, la, al, sy, _ in rows:
    ratio = f"{ms / tm:.2f}" if tm else "-"
    print(f"| {task} | {mode} | {ms:.1f} | {f(tm, '.1f')} | {ratio} | {pk:.2f} | {f(tpk, '.2f')} | {f(la, '.0f')} | {f(al, '.1f')} | {f(sy, '.1f')} |")
missing = [l for l in sorted(glob.glob(os.path.join(out, "step-*.log"))) if not os.path.exists(l[:-4] + ".json")]
for l in missing:
    print(f"no result: {os.path.basename(l)}: {open(l).read().strip().splitlines()[-1] if os.path.getsize(l) else 'empty log'}")
PY
