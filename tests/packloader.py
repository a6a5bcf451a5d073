"""Test helper: makes the repository importable both as plain packages (`models`, `tools`) and as the
ComfyUI pack it is (`swapforge`, whose `nodes` use relative imports like inside ComfyUI)."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def load_pack(name: str = "swapforge"):
    """Import the repository root as the package `name` (what ComfyUI does under another name)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
