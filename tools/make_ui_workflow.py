"""Write the UI-format twin of API-format workflows, and check that the twins are current.

    python -m tools.make_ui_workflow example_workflows/api/foo.api.json [...]  # writes example_workflows/foo.json
    python -m tools.make_ui_workflow --check       # exit 1 if a twin is missing/stale

Folders: tools/workflow_dirs.py.

A twin is current when ``ui_to_api(twin)`` equals the API file, ignoring ``_meta``. When
``<name>.layout.json`` lies beside the API file, the twin is laid out by it (tools/template_layout.py: groups, a
Note); without one, in plain columns.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import workflow_dirs as wd
from .template_layout import apply_layout
from .workflow_check import api_to_ui, load_schemas, strip_meta, ui_to_api


def write_twin(api_path: str, schemas: dict) -> str:
    with open(api_path, encoding="utf-8") as f:
        prompt = json.load(f)
    ui = api_to_ui(prompt, schemas)
    layout = wd.layout_of(api_path)
    if os.path.isfile(layout):
        with open(layout, encoding="utf-8") as f:
            ui = apply_layout(ui, prompt, json.load(f))
    if strip_meta(ui_to_api(ui, schemas)) != strip_meta(prompt):
        raise ValueError(f"{api_path}: the generated UI workflow does not convert back to the same prompt "
                         "(inputs unknown to the node schemas are lost); fix the prompt first")
    out = wd.ui_twin(api_path)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(ui, f, indent=2)
        f.write("\n")
    return out


def check_twins(schemas: dict, templates_dir: str = wd.TEMPLATES_DIR) -> list:
    """Problems (strings) for every API twin in templates_dir/api whose UI twin is missing or differs, and for
    every UI workflow in templates_dir without an API twin."""
    problems = []
    api_files = wd.api_workflows(templates_dir)
    for ui_path in wd.ui_workflows(templates_dir):
        if not os.path.isfile(wd.api_twin(ui_path)):
            problems.append(f"{ui_path}: no API twin {wd.api_twin(ui_path)}; export it (Export (API)) or convert "
                            f"it with python -m tools.workflow_check {ui_path} --to-api {wd.api_twin(ui_path)}")
    for api_path in api_files:
        ui_path = wd.ui_twin(api_path)
        if not os.path.isfile(ui_path):
            problems.append(f"{api_path}: no UI twin {ui_path}; run python -m tools.make_ui_workflow {api_path}")
            continue
        try:
            with open(api_path, encoding="utf-8") as f:
                prompt = json.load(f)
            with open(ui_path, encoding="utf-8") as f:
                ui = json.load(f)
            converted = ui_to_api(ui, schemas)
        except (OSError, ValueError) as e:
            problems.append(f"{ui_path}: {e}")
            continue
        if strip_meta(converted) != strip_meta(prompt):
            problems.append(f"{ui_path}: converts to a different prompt than {api_path}; regenerate it with "
                            f"python -m tools.make_ui_workflow {api_path}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.make_ui_workflow", description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", metavar="FILE.api.json")
    ap.add_argument("--check", action="store_true", help="verify every *.api.json has a current UI twin")
    ap.add_argument("--object-info", help="saved GET /object_info JSON")
    args = ap.parse_args(argv)
    schemas = load_schemas(args.object_info)
    if args.check:
        problems = check_twins(schemas)
        for p in problems:
            print(p)
        if not problems:
            print(f"{wd.TEMPLATES_DIR}: all UI twins current")
        return 1 if problems else 0
    if not args.files:
        ap.error("give FILE.api.json files, or --check")
    status = 0
    for path in args.files:
        try:
            print(f"wrote {write_twin(path, schemas)}")
        except (OSError, ValueError) as e:
            print(f"{path}: {e}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
