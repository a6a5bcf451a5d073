"""Where the pack's workflows live: the one place the checker, the tests, the batch client's docs and the e2e
tests read it from. A new workflow only has to be dropped into these folders.

* ``example_workflows/<name>.json``: UI format (what the editor saves), one per template. ComfyUI's template
  browser lists ``<pack>/example_workflows/*.json`` (top level only; ``app/custom_node_manager.py``) and shows
  ``<name>.jpg`` beside it as the thumbnail, so every UI workflow has a small JPEG of a real output (or, where
  no real weights can be had, of its inputs, and its Note says so).
* ``example_workflows/api/<name>.api.json``: the API-format twin (what ``POST /prompt`` and
  ``tools.batch_queue`` take). A subfolder, so the template browser does not list the twins as templates.
* ``example_workflows/api/<name>.layout.json`` (optional): the groups and the Note that
  ``tools.make_ui_workflow`` lays the UI twin out with.

ComfyUI's listing globs every one of ``example_workflows``, ``example``, ``examples``, ``workflow`` and
``workflows`` in a pack, so the pack keeps no other folder of those names.
"""
from __future__ import annotations

import glob
import os
from typing import List

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES_DIR = os.path.join(REPO_ROOT, "example_workflows")
API_DIR = os.path.join(TEMPLATES_DIR, "api")
API_SUFFIX = ".api.json"
LAYOUT_SUFFIX = ".layout.json"
THUMBNAIL_SUFFIX = ".jpg"
# Every folder name ComfyUI 0.3.64 serves templates from (app/custom_node_manager.py).
COMFY_TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


def name_of(path: str) -> str:
    """The workflow's name: the file name without .api.json / .layout.json / .json / .jpg."""
    base = os.path.basename(path)
    for suffix in (API_SUFFIX, LAYOUT_SUFFIX, ".json", THUMBNAIL_SUFFIX):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def ui_workflows(templates_dir: str = TEMPLATES_DIR) -> List[str]:
    """The UI-format templates (what the template browser lists), sorted."""
    return sorted(glob.glob(os.path.join(templates_dir, "*.json")))


def api_workflows(templates_dir: str = TEMPLATES_DIR) -> List[str]:
    """The API-format twins, sorted."""
    return sorted(glob.glob(os.path.join(templates_dir, "api", "*" + API_SUFFIX)))


def names() -> List[str]:
    return [name_of(p) for p in ui_workflows()]


def ui_path(name: str) -> str:
    return os.path.join(TEMPLATES_DIR, name + ".json")


def api_path(name: str) -> str:
    return os.path.join(API_DIR, name + API_SUFFIX)


def layout_path(name: str) -> str:
    return os.path.join(API_DIR, name + LAYOUT_SUFFIX)


def thumbnail_path(name: str) -> str:
    return os.path.join(TEMPLATES_DIR, name + THUMBNAIL_SUFFIX)


def ui_twin(api_file: str) -> str:
    """The UI file of an API twin: <templates>/api/<name>.api.json -> <templates>/<name>.json."""
    if not api_file.endswith(API_SUFFIX):
        raise ValueError(f"{api_file}: expected a name ending in {API_SUFFIX} (the API-format workflow)")
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(api_file))), name_of(api_file) + ".json")


def api_twin(ui_file: str) -> str:
    """The API twin of a UI file: <templates>/<name>.json -> <templates>/api/<name>.api.json."""
    return os.path.join(os.path.dirname(os.path.abspath(ui_file)), "api", name_of(ui_file) + API_SUFFIX)


def layout_of(api_file: str) -> str:
    """The optional layout file beside an API twin."""
    return os.path.join(os.path.dirname(os.path.abspath(api_file)), name_of(api_file) + LAYOUT_SUFFIX)
