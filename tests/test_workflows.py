"""Every workflow in example_workflows/ (UI format, the template browser's) and example_workflows/api/ (API
twins) validates against ComfyUI's core schemas and the pack's own, and each UI file converts to exactly its
API twin. Folders: tools/workflow_dirs.py."""
import json
import os

import pytest

from tools import workflow_check as wc
from tools import workflow_dirs as wd

UI_FILES = wd.ui_workflows()
API_FILES = wd.api_workflows()
FILES = UI_FILES + API_FILES

pytestmark = pytest.mark.skipif(wc.default_object_info_path() is None,
                                reason="no object_info.json (set SWAPFORGE_OBJECT_INFO)")


@pytest.fixture(scope="module")
def schemas():
    s = wc.load_schemas()
    pack = wc.pack_schemas()
    assert len([k for k in pack if k.startswith("SwapForge_")]) >= 12, "pack schemas missing: a family failed"
    return s


def test_each_template_has_an_api_twin_and_each_twin_a_template():
    assert len(UI_FILES) >= 3
    assert sorted(map(wd.name_of, UI_FILES)) == sorted(map(wd.name_of, API_FILES))


def test_the_pack_has_no_other_folder_the_template_browser_would_list():
    # ComfyUI globs <pack>/<each of these>/*.json: a second folder would list its files as templates too
    for folder in wd.COMFY_TEMPLATE_FOLDERS:
        path = os.path.join(wd.REPO_ROOT, folder)
        if folder == "example_workflows":
            assert not [f for f in os.listdir(path) if f.endswith(wd.API_SUFFIX)], "API twins would be listed"
        else:
            assert not os.path.exists(path), f"{path} would be listed by ComfyUI's template browser"


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(f, wd.TEMPLATES_DIR) for f in FILES])
def test_workflow_has_no_errors(path, schemas):
    with open(path) as f:
        wf = json.load(f)
    expected = "api" if path.endswith(wd.API_SUFFIX) else "ui"
    assert wc.detect_format(wf) == expected
    res = wc.check_api(wf, schemas) if expected == "api" else wc.check_ui(wf, schemas)
    assert res.errors == [], res.errors
    # the only warnings allowed are input images the server must have
    assert all("file list" in w for w in res.warnings), res.warnings


@pytest.mark.parametrize("path", API_FILES, ids=[os.path.basename(f) for f in API_FILES])
def test_ui_twin_converts_to_the_api_file(path, schemas):
    with open(path) as f:
        api = json.load(f)
    with open(wd.ui_twin(path)) as f:
        ui = json.load(f)
    assert wc.strip_meta(wc.ui_to_api(ui, schemas)) == wc.strip_meta(api)


def test_workflows_use_only_swapforge_and_core_nodes(schemas):
    core = set(wc.load_schemas(include_pack=False))
    for path in API_FILES:
        with open(path) as f:
            for node in json.load(f).values():
                t = node["class_type"]
                assert t in core or t.startswith("SwapForge_"), (path, t)
