#!/usr/bin/env bash
# Create or complete the SwapForge test environment. Idempotent: an existing complete venv is
# checked and left alone; a partial one is filled in.
#
#   VENV=path   venv location (default: <repo>/.venv)
#   PYTHON=exe  interpreter that creates a new venv (default: python3.11, else python3)
#   SWAPFORGE_SETUP_VERBOSE=1  show pip/gcc output
#
# Order matters: torch==2.13.0 (CPU; pip finds the local wheel) first, then the CUDA torchvision
# wheel with --no-deps, then the CUDA-stub shim that lets it load on a CPU torch (scripts/tvshim),
# then requirements.txt + requirements-test.txt with torch/torchvision held by a constraints file.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
PY="$VENV/bin/python"

say() { echo "setup_venv: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Run a command quietly; on failure print the command and the end of its output.
run() {
    if [ "${SWAPFORGE_SETUP_VERBOSE:-0}" = 1 ]; then "$@"; return; fi
    local log rc=0
    log="$(mktemp)"
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        say "ERROR: command failed (exit $rc): $*"
        tail -n 80 "$log" >&2
        rm -f "$log"
        exit "$rc"
    fi
    rm -f "$log"
}

# Installed version of a distribution in the venv, or empty.
installed() {
    SWAPFORGE_TVSHIM=0 "$PY" -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
}

# 1. venv
if [ ! -x "$PY" ]; then
    base="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
    [ -n "$base" ] || die "no python3 found; set PYTHON=/path/to/python3.11"
    say "creating venv at $VENV ($("$base" --version 2>&1))"
    run "$base" -m venv "$VENV"
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$VENV needs Python >= 3.10"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" >"$constraints"
pip_install() { run "$PY" -m pip install --disable-pip-version-check --no-input "$@"; }

# 2. torch (CPU) first, so nothing later resolves the CUDA torch.
v="$(installed torch)"
if [ "${v%%+*}" != "$TORCH_VERSION" ]; then
    say "installing torch==$TORCH_VERSION (found: ${v:-none})"
    pip_install "torch==$TORCH_VERSION"
fi

# 3. torchvision without dependencies (its torch pin would pull a CUDA torch otherwise).
v="$(installed torchvision)"
if [ "${v%%+*}" != "$TORCHVISION_VERSION" ]; then
    say "installing torchvision==$TORCHVISION_VERSION --no-deps (found: ${v:-none})"
    pip_install --no-deps "torchvision==$TORCHVISION_VERSION"
fi

# 4. CUDA-stub shim, rebuilt when its sources change.
shim_dir="$VENV/lib/swapforge_tvshim"
stamp="$(cat "$REPO"/scripts/tvshim/build.sh "$REPO"/scripts/tvshim/*.c "$REPO"/scripts/tvshim/preload.py \
         | sha256sum | cut -d' ' -f1)"
site="$(SWAPFORGE_TVSHIM=0 "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ "$(cat "$shim_dir/.stamp" 2>/dev/null || true)" != "$stamp" ] \
   || [ ! -f "$shim_dir/libc10_cuda.so" ] || [ ! -f "$shim_dir/libtorch_cuda.so" ] \
   || [ ! -f "$site/swapforge_tvshim.pth" ] || [ ! -f "$site/_swapforge_tvshim.py" ]; then
    say "building the torchvision CUDA-stub shim into $shim_dir"
    rm -f "$shim_dir/.stamp"
    run bash "$REPO/scripts/tvshim/build.sh" "$VENV"
    echo "$stamp" >"$shim_dir/.stamp"
fi

# 5. The pack's and the tests' requirements (torch/torchvision held by the constraints).
reqs=(-r "$REPO/requirements.txt")
[ -f "$REPO/requirements-test.txt" ] && reqs+=(-r "$REPO/requirements-test.txt")
if ! SWAPFORGE_TVSHIM=0 "$PY" - "${reqs[@]}" <<'PY' 2>/dev/null
# Exit 0 only when every requirement line is installed at a matching version.
import sys, importlib.metadata as md
from pip._vendor.packaging.requirements import Requirement
files = [a for a in sys.argv[1:] if a != "-r"]
for f in files:
    for line in open(f):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            sys.exit(1)  # options (-r, -c, --index-url, ...): let pip decide
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            sys.exit(1)
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            sys.exit(1)
PY
then
    say "installing requirements.txt${reqs[2]:+ + requirements-test.txt}"
    pip_install "${reqs[@]}" -c "$constraints"
fi

# 6. Verify: torchvision's C++ ops run on CPU tensors.
check_log="$(mktemp)"
if ! "$PY" - >"$check_log" 2>&1 <<'PY'
import torch, torchvision
from torchvision.ops import nms, roi_align
assert torch.__version__.startswith("2.13.0"), torch.__version__
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
scores = torch.tensor([0.9, 0.8, 0.7])
keep = nms(boxes, scores, iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
feat = torch.arange(16.0).reshape(1, 1, 4, 4)
out = roi_align(feat, [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], output_size=2, spatial_scale=1.0,
                sampling_ratio=1, aligned=False)
# 2x2 bins of a 4x4 ramp, one sample at each bin centre (1, 1), (1, 3), (3, 1), (3, 3).
assert torch.allclose(out.flatten(), torch.tensor([5.0, 7.0, 13.0, 15.0])), out
assert torch.cuda.device_count() == 0
PY
then
    say "ERROR: torch/torchvision check failed in $VENV:"
    cat "$check_log" >&2
    rm -f "$check_log"
    exit 1
fi
rm -f "$check_log"
say "ready: $VENV (torch $(installed torch), torchvision $(installed torchvision))"
