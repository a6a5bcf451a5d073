"""Test helper: the repository importable both as plain packages (`models`, `tools`) and as the ComfyUI
pack it is (`swapforge`, whose `nodes` use relative imports like inside ComfyUI)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.pack import load_pack  # noqa: E402,F401
