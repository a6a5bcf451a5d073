"""Every workflow in example_workflows/ (UI format, the template browser's) and example_workflows/api/ (API
twins) validates against ComfyUI's core schemas and the pack's own, and each UI file converts to exactly its
API twin. Folders: tools/workflow_dirs.py."""
import json
import math
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


@pytest.mark.parametrize("path", API_FILES, ids=[os.path.basename(f) for f in API_FILES])
def test_every_widget_of_the_packs_nodes_has_a_value(path, schemas):
    # The editor serialises every widget, optional ones included: a template written without one loads with that
    # widget empty and queues None, which the server rejects (pick_face_edit_part_boxes lacked detect_size,
    # video_mode, keyframe_interval, max_yaw and masks after they were added to the nodes).
    with open(path) as f:
        prompt = json.load(f)
    missing = []
    for nid, node in prompt.items():
        if not node["class_type"].startswith("SwapForge_"):
            continue
        missing += [f"node {nid} {node['class_type']}.{name}"
                    for name, _, _, _ in wc.widget_inputs(schemas[node["class_type"]]) if name not in node["inputs"]]
    assert not missing, f"{path}: widgets without a value (the editor would queue None): {missing}"


@pytest.mark.parametrize("path", API_FILES, ids=[os.path.basename(f) for f in API_FILES])
def test_every_node_has_a_title(path):
    # the editor titles every node (its display name when none is given): an API file without one is not what
    # the editor exports for its UI twin (tests/e2e/test_editor.py compares them)
    with open(path) as f:
        prompt = json.load(f)
    untitled = [k for k, v in prompt.items() if not (v.get("_meta") or {}).get("title")]
    assert not untitled, f"{path}: nodes without _meta.title: {untitled}"


def test_workflows_use_only_swapforge_and_core_nodes(schemas):
    core = set(wc.load_schemas(include_pack=False))
    for path in API_FILES:
        with open(path) as f:
            for node in json.load(f).values():
                t = node["class_type"]
                assert t in core or t.startswith("SwapForge_"), (path, t)


# Nodes no template uses, and why (every other SwapForge node appears in at least one template).
NOT_IN_TEMPLATES = {
    "SwapForge_FaceParts": "superseded in the templates by Part Detector (same landmark boxes, plus masks modes)",
    "SwapForge_SaveIdentity": "a tool for keeping identities between sessions, not a pipeline stage",
    "SwapForge_LoadIdentity": "a tool for keeping identities between sessions, not a pipeline stage",
    "SwapForge_PSPEncoderLoader": "pSp/e4e reconstructions: the face swap templates load a swapper",
    "SwapForge_StyleGAN2Loader": "StyleGAN2 reconstructions: the face swap templates load a swapper",
    "SwapForge_LoadAvatar": "reloads what gswap_head_swap_stages' Save Avatar wrote; rendering needs that clip's track",
    "SwapForge_LoadInpaintModel": "needs a LaMa file no template can ship (big-lama.pt); Head Background's option",
    "SwapForge_FuseAnyPartNoise": "the authors' scaled noise for SamplerCustomAdvanced; the templates use KSampler",
}


def test_every_stage_node_appears_in_a_template():
    from tools.pack import load_pack
    used = set()
    for path in API_FILES:
        with open(path) as f:
            used |= {n["class_type"] for n in json.load(f).values()}
    missing = set(load_pack().NODE_CLASS_MAPPINGS) - used - set(NOT_IN_TEMPLATES)
    assert not missing, f"no template uses {sorted(missing)}"
    assert {"SwapForge_StyleEncoder", "SwapForge_StyleBlend", "SwapForge_StyleDecoder"} <= used


@pytest.mark.parametrize("path", UI_FILES, ids=[os.path.basename(f) for f in UI_FILES])
def test_template_is_readable_titled_groups_a_note_and_every_node_in_one_group(path):
    with open(path) as f:
        wf = json.load(f)
    groups = wf["groups"]
    assert len(groups) >= 3 and all(g["title"] for g in groups), "stages in titled groups"
    notes = [n for n in wf["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert len(notes) == 1, "one Note"
    text = notes[0]["widgets_values"][0]
    assert "models/" in text or "no download" in text or "none to download" in text, \
        "the Note names the model files and their folders (or says none is needed)"

    def inside(node, g):
        x, y, w, h = g["bounding"]
        nx, ny = node["pos"]
        nw, nh = node["size"]
        return x <= nx and nx + nw <= x + w and y <= ny - 30 and ny + nh <= y + h

    for node in wf["nodes"]:
        if node["type"] in ("Note", "MarkdownNote"):
            continue
        holders = [g["title"] for g in groups if inside(node, g)]
        assert len(holders) == 1, f"node {node['id']} ({node['type']}) is in groups {holders}"
    # no link crosses the whole canvas: each is shorter than 80% of the layout's diagonal
    pos = {n["id"]: n["pos"] for n in wf["nodes"]}
    xs = [n["pos"][0] for n in wf["nodes"]] + [n["pos"][0] + n["size"][0] for n in wf["nodes"]]
    ys = [n["pos"][1] for n in wf["nodes"]] + [n["pos"][1] + n["size"][1] for n in wf["nodes"]]
    diagonal = math.hypot(max(xs) - min(xs), max(ys) - min(ys))
    for link in wf["links"]:
        length = math.hypot(pos[link[1]][0] - pos[link[3]][0], pos[link[1]][1] - pos[link[3]][1])
        assert length <= 0.8 * diagonal, f"link {link} is {length:.0f} px long, the layout {diagonal:.0f} px across"


def test_each_template_has_a_small_jpeg_thumbnail():
    for name in wd.names():
        thumb = wd.thumbnail_path(name)
        assert os.path.isfile(thumb), f"{name}: no thumbnail {thumb} (python -m tools.thumbnails)"
        with open(thumb, "rb") as f:
            assert f.read(3) == b"\xff\xd8\xff", f"{thumb} is not a JPEG"
        assert os.path.getsize(thumb) < 60_000, f"{thumb} is over 60 KB"
