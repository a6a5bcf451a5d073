#!/usr/bin/env bash
# Build the SwapForge CUDA-stub shim for the PyPI torchvision wheel on a CPU torch.
#
# Usage: bash scripts/tvshim/build.sh /path/to/venv
#
# Installs into the venv:
#   lib/swapforge_tvshim/libc10_cuda.so    (SONAME libc10_cuda.so, c10::cuda stubs)
#   lib/swapforge_tvshim/libtorch_cuda.so  (SONAME libtorch_cuda.so, at::cuda stub)
#   <site-packages>/_swapforge_tvshim.py + swapforge_tvshim.pth (preloads them)
# then checks with nm that torchvision's extensions have no unresolved symbol left.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:?usage: build.sh VENV}"
py="$venv/bin/python"
[ -x "$py" ] || { echo "tvshim: no python at $py" >&2; exit 1; }
for tool in gcc nm; do
    command -v "$tool" >/dev/null || { echo "tvshim: '$tool' not found (apt-get install gcc binutils)" >&2; exit 1; }
done

read -r site torch_lib tv_dir < <(SWAPFORGE_TVSHIM=0 "$py" - <<'PY'
import importlib.util, os, sysconfig
t = importlib.util.find_spec("torch"); v = importlib.util.find_spec("torchvision")
if t is None or v is None:
    raise SystemExit("tvshim: torch and torchvision must be installed first")
print(sysconfig.get_paths()["purelib"],
      os.path.join(list(t.submodule_search_locations)[0], "lib"),
      list(v.submodule_search_locations)[0])
PY
)

out="$venv/lib/swapforge_tvshim"
mkdir -p "$out"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
defined="$tmp/defined.txt"
trap 'rm -rf "$tmp"' EXIT
cflags=(-shared -fPIC -O2 -Wall -Wextra -Werror -fvisibility=hidden)
gcc "${cflags[@]}" -Wl,-soname,libc10_cuda.so -o "$tmp/libc10_cuda.so" "$here/c10_cuda_stub.c"
gcc "${cflags[@]}" -Wl,-soname,libtorch_cuda.so -o "$tmp/libtorch_cuda.so" "$here/torch_cuda_stub.c"

# Every strong, unversioned symbol torchvision's (and, if installed, torchaudio's) extensions
# import must now be defined by torch/lib, torchvision.libs, the shim, the C/C++ runtime or the
# Python interpreter (Py*/_Py*).
system_libs=()
for name in libc.so.6 libstdc++.so.6 libm.so.6 libgcc_s.so.1; do
    # awk reads to the end (no early exit): an early exit would SIGPIPE ldconfig and fail under pipefail
    path="$(ldconfig -p 2>/dev/null | awk -v n="$name" '!found && $1==n && /x86-64|aarch64|64bit/ {print $NF; found=1}')"
    [ -n "$path" ] && system_libs+=("$path")
done
for lib in "$torch_lib"/*.so* "$(dirname "$tv_dir")"/torchvision.libs/*.so* "$tmp"/*.so "${system_libs[@]}"; do
    [ -f "$lib" ] && nm -D --defined-only "$lib" 2>/dev/null | awk '{print $NF}'
done | sed 's/@.*//' | sort -u >"$defined"
missing=""
ta_dir="$(dirname "$tv_dir")/torchaudio/lib"
for ext in "$tv_dir"/_C.so "$tv_dir"/image.so "$ta_dir"/*.so; do
    [ -f "$ext" ] || continue
    m="$(nm -D --undefined-only "$ext" | awk '$1=="U" && $2 !~ /@/ && $2 !~ /^_?Py/ {print $2}' \
         | sort -u | comm -23 - "$defined")"
    [ -n "$m" ] && missing+="$(basename "$ext"): $m"$'\n'
done
if [ -n "$missing" ]; then
    echo "tvshim: torchvision/torchaudio extensions need symbols the shim does not define:" >&2
    echo "$missing" | c++filt >&2
    echo "tvshim: add them to scripts/tvshim/*.c" >&2
    exit 1
fi

# Install only after the check passed.
mv -f "$tmp/libc10_cuda.so" "$out/libc10_cuda.so"
mv -f "$tmp/libtorch_cuda.so" "$out/libtorch_cuda.so"
cp "$here/preload.py" "$site/_swapforge_tvshim.py"
echo "import _swapforge_tvshim" >"$site/swapforge_tvshim.pth"
