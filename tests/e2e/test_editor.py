"""The pack's UI workflows in the real ComfyUI editor (headless Chromium + playwright-core).

`editor_check.mjs` opens the editor of the `comfy_server` fixture, loads every example_workflows/*.json with
`app.loadGraphData`, and reports missing node types, dialogs, widget values, slots, sizes, overlapping
nodes and `app.graphToPrompt()`; then it queues classic_part_swap from the editor. These tests judge its
JSON answer. They are skipped unless Chromium, node and playwright-core are there (tests/e2e/README.md):

    SWAPFORGE_E2E_NODE_MODULES  the node_modules folder holding playwright-core (default: Node's own
                                resolution from tests/e2e)
    SWAPFORGE_E2E_CHROMIUM      the Chromium binary (default: `chromium` on PATH, /usr/bin/chromium)
    SWAPFORGE_E2E_SHOTS         keep the screenshots in this folder (default: pytest's temp folder)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tools import workflow_dirs as wd
from tools.workflow_check import strip_meta

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "editor_check.mjs")
QUEUE_WORKFLOW = "classic_part_swap"
UI_WORKFLOWS = wd.ui_workflows()


def _chromium():
    env = os.environ.get("SWAPFORGE_E2E_CHROMIUM")
    if env:
        return env if os.path.isfile(env) else None
    return shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if os.path.isfile("/usr/bin/chromium") else None)


def _node_env():
    env = dict(os.environ)
    nm = os.environ.get("SWAPFORGE_E2E_NODE_MODULES")
    if nm:
        env["SWAPFORGE_E2E_NODE_MODULES"] = os.path.abspath(nm)
    return env


def _playwright_missing(node: str) -> str:
    """Why playwright-core cannot be loaded ('' when it can)."""
    nm = os.environ.get("SWAPFORGE_E2E_NODE_MODULES")
    code = ("const m=process.env.SWAPFORGE_E2E_NODE_MODULES;"
            "require(m ? require('path').join(m,'playwright-core') : 'playwright-core');")
    try:
        r = subprocess.run([node, "-e", code], cwd=HERE, env=_node_env(), capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode == 0:
        return ""
    where = f"SWAPFORGE_E2E_NODE_MODULES={nm}" if nm else "Node's resolution from tests/e2e"
    lines = r.stderr.strip().splitlines()
    reason = next((ln for ln in lines if "Cannot find module" in ln or "Error" in ln), lines[-1] if lines else "")
    return f"playwright-core not found via {where}: {reason.strip()}"


# Frontend-only extras of graphToPrompt: inputs the editor's own extensions add to core nodes, which
# an API-format file does not (need to) carry. PreviewAny gets a read-only `preview` text widget
# (frontend extension previewAny) that graphToPrompt sends as "preview": "".
FRONTEND_ONLY_INPUTS = {"PreviewAny": {"preview"}}


def normalize_editor_prompt(prompt: dict, api: dict) -> dict:
    """strip_meta(prompt) without the frontend-only inputs the API twin lacks."""
    out = strip_meta(prompt)
    for node_id, node in out.items():
        extra = FRONTEND_ONLY_INPUTS.get(node.get("class_type"), set())
        twin_inputs = (api.get(node_id) or {}).get("inputs", {})
        node["inputs"] = {k: v for k, v in node.get("inputs", {}).items()
                          if k not in extra or k in twin_inputs}
    return out


@pytest.fixture(scope="session")
def editor_tools():
    """(node, chromium) or a skip; checked before the ComfyUI server starts."""
    node = shutil.which("node")
    if not node:
        pytest.skip("editor check needs node (Node.js 18+) on PATH")
    chromium = _chromium()
    if not chromium:
        pytest.skip("editor check needs Chromium (apt-get install chromium) or SWAPFORGE_E2E_CHROMIUM")
    why = _playwright_missing(node)
    if why:
        pytest.skip(f"editor check needs playwright-core (npm install playwright-core; set "
                    f"SWAPFORGE_E2E_NODE_MODULES): {why}")
    return node, chromium


@pytest.fixture(scope="module")
def editor_result(editor_tools, comfy_server, input_photos, tmp_path_factory):
    node, chromium = editor_tools
    shots = os.environ.get("SWAPFORGE_E2E_SHOTS") or str(tmp_path_factory.mktemp("editor-shots"))
    cmd = [node, SCRIPT, "--url", comfy_server.url, "--shots", shots, "--chromium", chromium,
           "--queue", QUEUE_WORKFLOW, *UI_WORKFLOWS]
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=_node_env(), capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"editor_check.mjs did not finish in 600 s\n{(e.stderr or '')[-3000:]}\n"
                    f"--- server log tail ---\n{comfy_server.log_tail()}")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        pytest.fail(f"editor_check.mjs printed no JSON (exit {r.returncode})\nstdout: {r.stdout[-2000:]}\n"
                    f"stderr: {r.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        pytest.fail(f"editor_check.mjs failed: {result.get('error')}\nstderr: {r.stderr[-3000:]}\n"
                    f"--- server log tail ---\n{comfy_server.log_tail()}")
    print(f"\neditor: ComfyUI frontend {result.get('frontend_version')}, screenshots in {shots}")
    return result


def _names():
    return [os.path.basename(p)[:-len(".json")] for p in UI_WORKFLOWS]


def test_editor_frontend_version(editor_result):
    assert editor_result.get("frontend_version"), "window.__COMFYUI_FRONTEND_VERSION__ not found"
    # errors in the page raised by the pack's own web extension (web/ -> /extensions/SwapForge/)
    pack_errors = [e for e in editor_result.get("page_errors", []) if "SwapForge" in e]
    assert not pack_errors, pack_errors
    pack_http = [e for e in editor_result.get("http_errors", []) if "SwapForge" in e]
    assert not pack_http, pack_http


@pytest.mark.parametrize("name", _names())
def test_editor_loads_workflow(editor_result, name):
    wf = editor_result["workflows"][name]
    assert wf["missing_node_types"] == [], f"{name}: missing node types {wf['missing_node_types']}"
    assert not wf["dialogs"], f"{name}: dialog(s) open after loading: {wf['dialogs']}"
    # problems: unregistered/placeholder nodes, has_errors, widget values or link slots that differ
    # from the file (see editor_check.mjs)
    assert not wf["problems"], f"{name}:\n" + "\n".join(wf["problems"])
    assert os.path.isfile(wf["screenshot"]) and os.path.getsize(wf["screenshot"]) > 10_000, wf["screenshot"]


@pytest.mark.parametrize("name", _names())
def test_editor_prompt_matches_api_twin(editor_result, name):
    with open(wd.api_path(name), encoding="utf-8") as f:
        api = json.load(f)
    prompt = editor_result["workflows"][name]["prompt"]
    got = normalize_editor_prompt(prompt, api)
    want = strip_meta(api)
    diffs = [f"node {k}: editor {got.get(k)} != api {want.get(k)}"
             for k in sorted(set(got) | set(want), key=str) if got.get(k) != want.get(k)]
    assert not diffs, f"{name}: graphToPrompt differs from {name}.api.json:\n" + "\n".join(diffs)
    titles = {k: (v.get("_meta") or {}).get("title") for k, v in prompt.items()}
    assert titles == {k: (v.get("_meta") or {}).get("title") for k, v in api.items()}


@pytest.mark.parametrize("name", _names())
def test_editor_layout_no_overlap(editor_result, name):
    """Nodes as the editor sizes them (LoadImage grows to show its image) must not overlap."""
    overlaps = editor_result["workflows"][name]["overlaps"]
    msg = [f"node {o['a']} '{o['a_title']}' {o['a_box']} overlaps node {o['b']} '{o['b_title']}' "
           f"{o['b_box']} by {o['overlap']} (x, y, w, h incl. title bar)" for o in overlaps]
    assert not overlaps, f"{name}:\n" + "\n".join(msg)


def test_editor_queue_runs(editor_result, comfy_server):
    q = editor_result["queue"]
    assert q and not q["timed_out"], f"the prompt queued from the editor did not finish: {q}"
    status = q["status"] or {}
    assert status.get("status_str") == "success" and status.get("completed"), json.dumps(status)[:3000]
    assert q["prompt_matches_editor"], "the queued prompt is not the editor's graphToPrompt output"
    images = [img for out in (q["outputs"] or {}).values() for img in out.get("images", [])]
    saved = [img for img in images if img.get("type") == "output"]
    assert saved, f"no output image in {q['outputs']}"
    for img in saved:
        path = os.path.join(comfy_server.output_dir, img.get("subfolder", ""), img["filename"])
        assert os.path.isfile(path), path
    assert not q["dialogs_after_queue"], q["dialogs_after_queue"]
    # informational: nodes that overlap once the output previews have grown them (not asserted)
    for o in q.get("overlaps_after_run") or []:
        print(f"after the run: node {o['a']} '{o['a_title']}' {o['a_box']} overlaps node {o['b']} "
              f"'{o['b_title']}' {o['b_box']}")
