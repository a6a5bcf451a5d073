#!/usr/bin/env bash
# Set up (or check) the test venv, then run the test suite. Extra arguments go to pytest.
#   bash scripts/test.sh                 # all tests (tests/e2e skips unless SWAPFORGE_COMFYUI_DIR is set)
#   bash scripts/test.sh -k fusion -x    # pytest options pass through
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${VENV:-$REPO/.venv}"
VENV="$VENV" bash "$REPO/scripts/setup_venv.sh"
exec "$VENV/bin/python" -m pytest -q tests "$@"
