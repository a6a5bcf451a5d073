#!/usr/bin/env bash
# The main job on the embedded defaults: classic part swaps of the bundled photos -> output/demo/*.png
#   bash scripts/demo.sh [--out DIR] [--blend poisson|multiband|alpha]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VENV:-$REPO/.venv}"
VENV="$VENV" bash "$REPO/scripts/setup_venv.sh"
exec "$VENV/bin/python" "$REPO/scripts/demo_partswap.py" "$@"
