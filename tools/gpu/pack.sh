#!/usr/bin/env bash
# Packs what a device call needs into .gpu/ (ignored by git; carry [".gpu"]): the CLI and gpu-check as ONE self-contained
# tree (they share the runtime and every library, so one archive of ~32 MB instead of two of 60 MB together, which with the
# working tree would pass the device's 64 MiB limit), and PyTorch's step script. Run from the repo root, takes ~3 minutes:
#   bash tools/gpu/pack.sh
# Then, on the device (run tool, carry [".gpu"]): bash tools/gpu/run-all.sh   (or tools/gpu/run-step.sh alone)
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
pack=../shared/tools/gpu-pack.sh                      # beside the checkout (developers' machines)
[ -x "$pack" ] || pack=shared/tools/gpu-pack.sh       # or a shared/ folder inside it
[ -x "$pack" ] || { echo "pack: no gpu-pack.sh in ../shared/tools or shared/tools"; exit 1; }
"$pack" tools/FashionViL.Cli/FashionViL.Cli.csproj --name cli
"$pack" tools/FashionViL.GpuCheck/FashionViL.GpuCheck.csproj --name gpu-check
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar -C "$tmp" -xJf .gpu/cli.tar.xz; tar -C "$tmp" -xJf .gpu/gpu-check.tar.xz
for f in "$tmp"/gpu-check/*; do
  b=$(basename "$f")
  if [ -e "$tmp/cli/$b" ]; then cmp -s "$f" "$tmp/cli/$b" || { echo "pack: $b differs between the two publishes"; exit 1; }
  else cp -r "$f" "$tmp/cli/"; fi
done
XZ_OPT=${XZ_OPT:--T0 -6} tar -C "$tmp" -cJf .gpu/cli.tar.xz cli
rm -f .gpu/gpu-check.tar.xz .gpu/run-gpu-check.sh
for c in ../shared/tools/torch_fashionvil_step.py shared/tools/torch_fashionvil_step.py; do [ -f "$c" ] && cp "$c" .gpu/ && break; done
echo "pack: .gpu/cli.tar.xz ($(du -h .gpu/cli.tar.xz | cut -f1)) holds FashionViL.Cli and FashionViL.GpuCheck; $(ls .gpu | tr '\n' ' ')"
