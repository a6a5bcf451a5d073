"""web/swapforge.js and the template browser in the real editor (headless Chromium), as a new user meets them.

`web_check.mjs` opens every SwapForge template from the editor's template dialog, then loads
pick_face_edit_part_boxes (a photo with two faces), runs it, clicks face 1 in Classic Part Swap's face picker
and in the Part Detector's box editor, drags face 1's eyes box, runs again, saves and reloads the workflow. This
file checks from the server's outputs that the picked face and the edited box were used, and queues the saved
workflow's prompt through the HTTP API alone (no browser) for the same result. Needs what test_editor.py needs.
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from models.partswap import parts
from tools import workflow_dirs as wd
from tools.workflow_check import strip_meta

from .conftest import queue_and_wait
from .test_editor import FRONTEND_ONLY_INPUTS, _node_env, editor_tools  # noqa: F401  (a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "web_check.mjs")
FRAME = (440, 545)  # tests/data/two_faces.jpg (H, W)


@pytest.fixture(scope="module")
def web(editor_tools, comfy_server, input_photos, tmp_path_factory):  # noqa: F811
    node, chromium = editor_tools
    shots = os.environ.get("SWAPFORGE_E2E_SHOTS") or str(tmp_path_factory.mktemp("web-shots"))
    cmd = [node, SCRIPT, "--url", comfy_server.url, "--shots", shots, "--chromium", chromium]
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=_node_env(), capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"web_check.mjs did not finish in 600 s\n{(e.stderr or '')[-3000:]}\n{comfy_server.log_tail()}")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        pytest.fail(f"web_check.mjs printed no JSON (exit {r.returncode})\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        pytest.fail(f"web_check.mjs failed: {result.get('error')}\n{r.stderr[-3000:]}\n{comfy_server.log_tail()}")
    print(f"\nweb extension: screenshots in {shots}")
    return result


def drop_frontend_only(prompt: dict) -> dict:
    out = strip_meta(prompt)
    for node in out.values():
        for name in FRONTEND_ONLY_INPUTS.get(node["class_type"], ()):
            node["inputs"].pop(name, None)
    return out


def _image(server, ref):
    path = os.path.join(server.output_dir, ref.get("subfolder", ""), ref["filename"])
    return np.asarray(Image.open(path).convert("RGB"))


def _output(run, node_id):
    return (run["outputs"] or {})[node_id]["images"][0]


def test_template_browser_lists_exactly_the_ui_templates_and_opens_each(web):
    t = web["templates"]
    assert t["listed"] == sorted(wd.names())
    for name in t["listed"]:
        with open(wd.ui_path(name), encoding="utf-8") as f:
            want = len(json.load(f)["nodes"])
        assert t["opened"][name]["nodes"] == want, f"{name}: opened from the dialog with {t['opened'][name]}"
        thumb = t["thumbnails"][name]
        assert thumb["status"] == 200 and thumb["type"] == "image/jpeg" and thumb["bytes"] > 1000, (name, thumb)
    assert not [e for e in web["page_errors"] if "SwapForge" in e or "swapforge" in e]


def test_without_a_run_the_widgets_take_typed_values(web):
    b = web["before_run"]
    assert b["picker"]["has_picker"] and "Run the workflow once" in b["picker"]["caption"]
    assert b["widgets"]["boxes"] == "" and b["widgets"]["face_index"] == 0


def test_clicking_face_1_sets_the_index_in_the_nodes_order(web):
    faces = web["run1"]["panels"]["faces"]
    assert len(faces["boxes"]) == 2 and faces["widget"] == "face_index"
    assert faces["boxes"][0][0] > 0.5 > faces["boxes"][1][2]  # largest first: face 1 is Biden, on the left
    assert web["after_pick"]["face_index"] == 1
    assert web["after_face_click"]["face_index"] == 1


def test_dragging_the_eyes_box_stores_it_moved_with_its_size(web):
    boxes = json.loads(web["after_drag"]["boxes"])
    assert boxes["face"] == 1 and set(boxes) == {"face", "eyes"}
    det = np.array(web["run1"]["panels"]["parts"]["faces"][1]["detected"]["eyes"])
    got = np.array(boxes["eyes"])
    assert np.allclose(got[2:] - got[:2], det[2:] - det[:2], atol=2e-6)  # moved, not resized
    dy, dx = got[0] - det[0], got[1] - det[1]
    assert dx > 0 > dy  # dragged right and up (12, -8 px on screen)


def test_the_second_run_used_the_picked_face_and_the_edited_box(web, comfy_server):
    assert web["run2"]["status"]["status_str"] == "success"
    edited = json.loads(web["after_drag"]["boxes"])["eyes"]
    mask = _image(comfy_server, _output(web["run2"], "6"))[..., 0]
    # eyes edited, nose detected: the edited box keeps its edges (tiling moves the nose), so the eyes mask is it
    assert np.array_equal(mask > 127, parts.box_mask(edited, FRAME) > 0.5)
    swapped = _image(comfy_server, _output(web["run2"], "10")).astype(int)
    photo = np.asarray(Image.open(os.path.join(comfy_server.input_dir, "two_faces.jpg")).convert("RGB")).astype(int)
    changed = np.abs(swapped - photo).max(-1) > 8
    b0, b1 = web["run1"]["panels"]["faces"]["boxes"]
    h, w = FRAME
    assert changed[:, int(b1[2] * w) + 20:].sum() == 0, "pixels changed right of face 1 (face 0 was edited)"
    assert changed[:, :int(b1[2] * w) + 20].sum() > 50


def test_the_saved_workflow_reloads_and_runs_through_the_api_alone_with_the_same_result(web, comfy_server):
    assert web["reloaded"]["part_detector"] == web["after_drag"]
    assert web["reloaded"]["classic_swap"]["face_index"] == 1
    # the same prompt, but for PreviewAny's read-only text widget, which holds the last run's text
    assert drop_frontend_only(web["reloaded_prompt"]) == drop_frontend_only(web["run2"]["prompt"])
    entry = queue_and_wait(comfy_server, web["reloaded_prompt"], timeout=300)
    for node_id in ("6", "10"):
        api = _image(comfy_server, entry["outputs"][node_id]["images"][0])
        assert np.array_equal(api, _image(comfy_server, _output(web["run2"], node_id))), node_id
    for shot in ("face_picker_shot", "box_editor_shot", "box_editor_after_run_shot"):
        assert os.path.getsize(web[shot]) > 2000, shot
