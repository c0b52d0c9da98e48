# Sourced by .ci/run (and usable by hand: `source tools/fetch-ptxas.sh`): fetches NVIDIA's ptxas, cuobjdump and the
# nvdisasm cuobjdump needs from Debian's non-free nvidia-cuda-toolkit package into ~/.cache/fashionvil/cuda-<release>
# once, without changing the system's apt sources, and exports FVL_PTXAS, so `fashionvil bench ptx` and its test can
# assemble every CUDA kernel for sm_90 without a GPU. It takes CUDA 12.4 (Debian trixie): closer to the lent GPUs'
# CUDA 13.0 than bookworm's 11.8, which it falls back to — 12.4 reproduced the 20 + 24 bytes of spills the H200's
# ptxas found in the fp32 SGEMM v5, where 11.8 found none. Nothing is installed system-wide; if every download fails
# the audit's assembly test is skipped.
fvl_fetch_cuda() {   # $1 = Debian suite, $2 = CUDA release: ptxas, cuobjdump, nvdisasm into ~/.cache/fashionvil/cuda-$2
  local home="${XDG_CACHE_HOME:-$HOME/.cache}/fashionvil/cuda-$2" tmp
  if [ -x "$home/bin/ptxas" ] && [ -x "$home/bin/nvdisasm" ]; then echo "$home/bin/ptxas"; return 0; fi
  command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || return 1
  tmp=$(mktemp -d)
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $1 non-free" > "$tmp/sources.list"
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  local apt_opts=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$tmp/lists"
                  -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root)
  if apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 \
     && (cd "$tmp" && apt-get "${apt_opts[@]}" download nvidia-cuda-toolkit >/dev/null 2>&1) \
     && dpkg -x "$tmp"/nvidia-cuda-toolkit_*.deb "$tmp/x" \
     && "$tmp/x/usr/bin/ptxas" --version 2>/dev/null | grep -q "release $2"; then
    mkdir -p "$home/bin" && cp "$tmp/x/usr/bin/ptxas" "$tmp/x/usr/bin/cuobjdump" "$tmp/x/usr/bin/nvdisasm" "$home/bin/"
  fi
  rm -rf "$tmp"
  [ -x "$home/bin/ptxas" ] && echo "$home/bin/ptxas"
}
if [ -z "${FVL_PTXAS:-}" ]; then
  if fvl_ptxas=$(fvl_fetch_cuda trixie 12.4) || fvl_ptxas=$(fvl_fetch_cuda bookworm 11.8); then
    export FVL_PTXAS="$fvl_ptxas"
    echo "ptxas: $FVL_PTXAS ($("$FVL_PTXAS" --version | grep -o 'release [0-9.]*'))"
  else
    echo "ptxas: not available (could not fetch Debian's nvidia-cuda-toolkit): the kernel audit's assembly test is skipped"
  fi
  unset fvl_ptxas
fi
unset -f fvl_fetch_cuda
