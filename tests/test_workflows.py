"""Every workflow in workflows/ validates against ComfyUI's core schemas and the pack's own, and each UI
file converts to exactly its API twin."""
import glob
import json
import os

import pytest

from tools import workflow_check as wc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
API_FILES = [f for f in FILES if f.endswith(".api.json")]

pytestmark = pytest.mark.skipif(wc.default_object_info_path() is None,
                                reason="no object_info.json (set SWAPFORGE_OBJECT_INFO)")


@pytest.fixture(scope="module")
def schemas():
    s = wc.load_schemas()
    pack = wc.pack_schemas()
    assert len([k for k in pack if k.startswith("SwapForge_")]) >= 12, "pack schemas missing: a family failed"
    return s


def test_there_are_ui_and_api_twins_for_each_workflow():
    assert len(API_FILES) >= 3
    for api in API_FILES:
        assert os.path.exists(api.replace(".api.json", ".json")), api


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_workflow_has_no_errors(path, schemas):
    with open(path) as f:
        wf = json.load(f)
    expected = "api" if path.endswith(".api.json") else "ui"
    assert wc.detect_format(wf) == expected
    res = wc.check_api(wf, schemas) if expected == "api" else wc.check_ui(wf, schemas)
    assert res.errors == [], res.errors
    # the only warnings allowed are input images the server must have
    assert all("file list" in w for w in res.warnings), res.warnings


@pytest.mark.parametrize("path", API_FILES, ids=[os.path.basename(f) for f in API_FILES])
def test_ui_twin_converts_to_the_api_file(path, schemas):
    with open(path) as f:
        api = json.load(f)
    with open(path.replace(".api.json", ".json")) as f:
        ui = json.load(f)
    assert wc.strip_meta(wc.ui_to_api(ui, schemas)) == wc.strip_meta(api)


def test_workflows_use_only_swapforge_and_core_nodes(schemas):
    core = set(wc.load_schemas(include_pack=False))
    for path in API_FILES:
        with open(path) as f:
            for node in json.load(f).values():
                t = node["class_type"]
                assert t in core or t.startswith("SwapForge_"), (path, t)
