"""Import this repository as the ComfyUI pack it is, outside any server (tests, scripts, tools).

ComfyUI imports a pack's `__init__.py` as a package (its `nodes` use relative imports such as
`from ..models.face import detect`); this does the same under a name of our choosing.
"""
from __future__ import annotations

import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack(name: str = "swapforge"):
    """The repository root imported as package `name` (cached in sys.modules; removed again on failure)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "__init__.py"),
                                                  submodule_search_locations=[REPO_ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod
