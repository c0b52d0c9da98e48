#!/usr/bin/env bash
# Issue 7 device call in one go (after bash tools/gpu/pack.sh here; run tool, carry [".gpu"], timeout_s ≥ DEADLINE + 60):
#   DEADLINE=480 bash tools/gpu/run-all.sh
# 1. gpu-check (~20 s on an H200); 1b. bench dissect (~40 s; DISSECT=0 skips it); 2. run-step.sh: itc, mlm, mpfc in fp32 and tf32 and PyTorch's step (~125 s);
# 3. A/B runs named in AB ("name:mode:VAR=value ..." entries separated by ";", AB_TASKS; AB="" for none): by default
#    first every offline candidate at once in tf32 (combo-tf32: FVL_TC_ASYNC=on FVL_WINOGRAD=on FVL_CONV1X1=gemm
#    FVL_TF32_WGRAD=tc), session 21's cp.async stages for the 128×128 TF32 GEMM tile alone (FVL_TC_ASYNC=on, tf32), the
#    fp32 candidates at once (combo-fp32: FVL_WINOGRAD=f4 FVL_CONV1X1=gemm), then one by one (Winograd tf32, F(4×4) fp32,
#    tf32 weight gradients on the tensor cores, 1×1 as GEMM tf32, Winograd F(2×2) fp32, 1×1 fp32); at DEADLINE=480 about
#    the first five run, the rest are skipped in order (each ≈ 45 s). The candidates: Winograd for 3×3 stride-1 convolutions (forward and input gradient), F(2×2, 3×3) in fp32
#    and tf32 and F(4×4, 3×3) in fp32, and every tf32 weight gradient on the tensor cores (FVL_TF32_WGRAD=tc); then
#    session 20's 1×1 stride-1 convolutions as batched GEMMs (FVL_CONV1X1=gemm) in tf32 and fp32 (skipped when time is short)
#    (session 18's candidates became the rules in session 19; to see the old rules again:
#    AB="old-sgemm:fp32:FVL_SGEMM=v5;old-tiles:tf32:FVL_TC_TILE=128x64 FVL_TC_CONV_TILE=128x64")
# 3b. CURVES=1: the 200-update loss curves (tools/gpu/curves.sh);
# 4. the same steps with the kernel tuner in fp32 and tf32 (TUNE_MODES; its cache holds every candidate's median per
#    GEMM/conv shape, so the per-shape picks away from the rules come back in tune.tar.gz; FVL_TC_ASYNC=on (TUNE_ASYNC)
#    makes the cp.async GEMM tile one of the candidates);
# 5. bench ptx with the device's ptxas if time is left. Each stage copies its results into $OUT as soon as it ends
# (8 files at most with CURVES=1, 7 without: the device returns 8, and session 19 lost tune.txt and tune.tar.gz past that), so a call cut short still returns
# what finished.
set -uo pipefail
cd "$(dirname "$0")/../.."
DEADLINE=${DEADLINE:-480}
O=${OUT:-/tmp/fv-out}; W=$(mktemp -d); mkdir -p "$O"
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
[ -f .gpu/cli.tar.xz ] || { echo "no .gpu/cli.tar.xz: run bash tools/gpu/pack.sh first"; exit 1; }
mkdir -p "$W/app" && tar -C "$W/app" -xJf .gpu/cli.tar.xz
cli=$W/app/cli/FashionViL.Cli; check=$W/app/cli/FashionViL.GpuCheck
stamp(){ echo "[$SECONDS s] $*" | tee -a "$O/timeline.txt"; }
stamp start
timeout "${CHECK_TIMEOUT:-90}" "$check" > "$O/check.txt" 2>&1; stamp "gpu-check rc=$?"
# 1b. bench dissect (~40 s, mostly compiling): the 128×128 TF32 tiles whole / without their loop's global loads / without
# their mma, and the mma.sync peak — where the tiles' time goes (DISSECT=0 skips it)
if [ "${DISSECT:-1}" = 1 ]; then
  timeout "${DISSECT_TIMEOUT:-90}" "$cli" bench dissect --json "$W/dissect.json" > "$O/dissect.txt" 2>&1; stamp "dissect rc=$?"
fi
OUT=$W/step BUDGET=$((DEADLINE - SECONDS)) CLI="$cli" STEPS=${STEPS:-8} WARMUP=${WARMUP:-2} RUN_TIMEOUT=${RUN_TIMEOUT:-70} \
  TORCH_TIMEOUT=${TORCH_TIMEOUT:-130} bash tools/gpu/run-step.sh > "$W/step.txt" 2>&1; stamp "run-step rc=$?"
tar -C "$W" -czf "$O/step.tar.gz" step step.txt
mkdir -p "$W/ab"
IFS=';' read -r -a abs <<< "${AB-combo-tf32:tf32:FVL_TC_ASYNC=on FVL_WINOGRAD=on FVL_CONV1X1=gemm FVL_TF32_WGRAD=tc;async-tf32:tf32:FVL_TC_ASYNC=on;combo-fp32:fp32:FVL_WINOGRAD=f4 FVL_CONV1X1=gemm;winograd-tf32:tf32:FVL_WINOGRAD=on;winograd-f4-fp32:fp32:FVL_WINOGRAD=f4;wgrad-tc:tf32:FVL_TF32_WGRAD=tc;conv1x1-tf32:tf32:FVL_CONV1X1=gemm;winograd-fp32:fp32:FVL_WINOGRAD=on;conv1x1-fp32:fp32:FVL_CONV1X1=gemm}"
for ab in "${abs[@]}"; do
  [ -n "$ab" ] || continue
  name=${ab%%:*}; rest=${ab#*:}; mode=${rest%%:*}; vars=${rest#*:}
  [ $((DEADLINE - SECONDS)) -gt 100 ] || { echo "$name: skipped (time)" >> "$W/ab/ab.txt"; continue; }
  env $vars OUT="$W/ab/$name" BUDGET=$((DEADLINE - SECONDS - 60)) CLI="$cli" TORCH=0 STEPS=${STEPS:-8} WARMUP=${WARMUP:-2} \
    RUN_TIMEOUT=${RUN_TIMEOUT:-70} TASKS="${AB_TASKS:-itc mlm mpfc}" MODES=$mode bash tools/gpu/run-step.sh > "$W/ab/$name.txt" 2>&1
  stamp "$name rc=$?"; echo "== $name ($mode, $vars)" >> "$W/ab/ab.txt"; tail -n 6 "$W/ab/$name.txt" >> "$W/ab/ab.txt"
  tar -C "$W" -czf "$O/ab.tar.gz" ab
done
# 3b. CURVES=1: issue 7's loss curves (tools/gpu/curves.sh: tiny config, 200 updates, fp32 seeds 42/43 and tf32 seed 42)
if [ "${CURVES:-0}" = 1 ] && [ $((DEADLINE - SECONDS)) -gt 60 ]; then
  OUT=$W/curves CLI="$cli" timeout $((DEADLINE - SECONDS - 10)) bash tools/gpu/curves.sh > "$W/curves.txt" 2>&1; stamp "curves rc=$?"
  tar -C "$W" -czf "$O/curves.tar.gz" curves curves.txt
fi
if [ $((DEADLINE - SECONDS)) -gt 80 ]; then
  OUT=$W/tune BUDGET=$((DEADLINE - SECONDS)) CLI="$cli" TUNE=on FVL_TC_ASYNC=${TUNE_ASYNC:-on} TORCH=0 STEPS=4 WARMUP=2 RUN_TIMEOUT=${RUN_TIMEOUT:-70} \
    TASKS="${TUNE_TASKS:-itc mlm mpfc}" MODES="${TUNE_MODES:-fp32 tf32}" bash tools/gpu/run-step.sh > "$W/tune.txt" 2>&1; stamp "tune rc=$?"
  tar -C "$W" -czf "$O/tune.tar.gz" tune tune.txt
fi
if [ $((DEADLINE - SECONDS)) -gt 40 ]; then
  ptxas=$(command -v ptxas || ls /usr/local/cuda*/bin/ptxas 2>/dev/null | head -1)
  timeout $((DEADLINE - SECONDS - 5)) "$cli" bench ptx ${ptxas:+--ptxas "$ptxas"} --json "$W/ptx.json" > "$W/ptx.txt" 2>&1
  echo "ptx rc=$?" >> "$W/ptx.txt"; stamp "ptx done"
  tar -C "$W" -czf "$O/ptx.tar.gz" ptx.txt $( [ -f "$W/ptx.json" ] && echo ptx.json )
fi
echo "===== curves"; tail -n 16 "$W/curves.txt" 2>/dev/null
echo "===== tuned (${TUNE_MODES:-fp32 tf32})"; tail -n 12 "$W/tune.txt" 2>/dev/null
echo "===== A/B (AB)"; cat "$W/ab/ab.txt" 2>/dev/null
echo "===== dissect"; tail -n 16 "$O/dissect.txt" 2>/dev/null
echo "===== gpu-check"; grep -v " PASS " "$O/check.txt" | tail -8
echo "===== steps vs PyTorch"; tail -n 22 "$W/step.txt"
