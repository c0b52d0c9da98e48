# Sourced by .ci/run (and usable by hand: `source tools/fetch-ptxas.sh`): fetches NVIDIA's ptxas, cuobjdump and the
# nvdisasm cuobjdump needs from Debian's non-free nvidia-cuda-toolkit package (CUDA 11.8) into
# ~/.cache/fashionvil/cuda-11.8 once, without changing the system's apt sources, and exports FVL_PTXAS, so
# `fashionvil bench ptx` and its test can assemble every CUDA kernel for sm_90 without a GPU. Nothing is installed
# system-wide; if the download fails the audit's assembly test is skipped.
ptxas_home="${XDG_CACHE_HOME:-$HOME/.cache}/fashionvil/cuda-11.8"
if [ -z "${FVL_PTXAS:-}" ]; then
  if { [ ! -x "$ptxas_home/bin/ptxas" ] || [ ! -x "$ptxas_home/bin/nvdisasm" ]; } && command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm non-free" > "$tmp/sources.list"
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    apt_opts=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$tmp/lists"
              -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root)
    if apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 \
       && (cd "$tmp" && apt-get "${apt_opts[@]}" download nvidia-cuda-toolkit >/dev/null 2>&1) \
       && dpkg -x "$tmp"/nvidia-cuda-toolkit_*.deb "$tmp/x"; then
      mkdir -p "$ptxas_home/bin" && cp "$tmp/x/usr/bin/ptxas" "$tmp/x/usr/bin/cuobjdump" "$tmp/x/usr/bin/nvdisasm" "$ptxas_home/bin/"
    fi
    rm -rf "$tmp"
  fi
  if [ -x "$ptxas_home/bin/ptxas" ]; then
    export FVL_PTXAS="$ptxas_home/bin/ptxas"
    echo "ptxas: $FVL_PTXAS ($("$FVL_PTXAS" --version | grep -o 'release [0-9.]*'))"
  else
    echo "ptxas: not available (could not fetch Debian's nvidia-cuda-toolkit): the kernel audit's assembly test is skipped"
  fi
fi
