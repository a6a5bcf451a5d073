"""tools/batch_queue.py against the real ComfyUI server of the `comfy_server` fixture.

example_workflows/api/classic_part_swap.api.json over a folder of 3 photos + 1 broken .jpg as the target image
(node 2 LoadImage), concurrency 2: the 3 photos finish with downloaded PNGs, the broken one is recorded
as failed with the server's message, manifest.json is written. A rerun (the CLI, resume is the
default) skips the 3 done items and queues only the failed one again.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from tools import workflow_dirs as wd
from tools.batch_queue import MANIFEST, Setting, load_items, run_batch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PHOTOS = ("obama.jpg", "biden.jpg", "grace_hopper.jpg")
BROKEN = "broken.jpg"
TARGET_SET = "2.image={image}"


def _history_ids(server) -> set:
    return set(server.get_json("/history?max_items=100000", timeout=60))


def _is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_batch_queue_against_real_server(comfy_server, input_photos, tmp_path):
    # input_photos: the workflow's other LoadImage nodes (eyes/nose/mouth) name files in the input folder
    inputs = tmp_path / "targets"
    inputs.mkdir()
    for name in PHOTOS:
        shutil.copy2(os.path.join(ROOT, "tests", "data", name), inputs / name)
    (inputs / BROKEN).write_bytes(b"this is not a JPEG\x00\xff\xd8 garbage" * 40)
    out = tmp_path / "out"
    with open(wd.api_path("classic_part_swap"), encoding="utf-8") as f:
        workflow = json.load(f)

    items = load_items(str(inputs))
    assert sorted(it["key"] for it in items) == sorted((*PHOTOS, BROKEN))
    before = _history_ids(comfy_server)
    lines = []
    results = run_batch(comfy_server.url, workflow, items, [Setting.parse(TARGET_SET)], str(out),
                        concurrency=2, timeout=240, log=lines.append)
    after_first = _history_ids(comfy_server)
    by_key = {r.key: r for r in results}
    log = "\n".join(lines)

    for name in PHOTOS:
        r = by_key[name]
        assert r.status == "done", f"{name}: {r.status} {r.error}\n{log}\n{comfy_server.log_tail()}"
        pngs = [o for o in r.outputs if o["path"].endswith(".png")]
        assert pngs, f"{name}: no PNG downloaded: {r.outputs}"
        for o in pngs:
            path = os.path.join(out, o["path"])
            assert os.path.isfile(path) and _is_png(path), path
        # SaveImage (node 7) is among the downloads, as an output (not temp) file
        assert any(o["node"] == "7" and o["type"] == "output" for o in r.outputs), r.outputs
    broken = by_key[BROKEN]
    assert broken.status == "failed" and broken.error, f"{BROKEN}: {broken}"
    print(f"\n{BROKEN} failed as expected: {broken.error}")
    assert len(after_first - before) == 4, "expected one prompt per item"

    with open(out / MANIFEST, encoding="utf-8") as f:
        manifest = json.load(f)["items"]
    assert {k: v["status"] for k, v in manifest.items()} == {
        **{n: "done" for n in PHOTOS}, BROKEN: "failed"}
    assert manifest[BROKEN]["error"] == broken.error
    first_ids = {k: v["prompt_id"] for k, v in manifest.items()}

    # resume through the CLI: only the failed item is queued again
    cmd = [sys.executable, "-m", "tools.batch_queue", "--server", comfy_server.url,
           "--workflow", wd.api_path("classic_part_swap"),
           "--inputs", str(inputs), "--set", TARGET_SET, "--out", str(out), "--concurrency", "2",
           "--timeout", "240"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    after_second = _history_ids(comfy_server)
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "resume: 3 item(s) already done, 1 to run" in r.stdout, r.stdout
    assert "3 done, 1 failed" in r.stdout, r.stdout
    assert len(after_second - after_first) == 1, (
        f"the resumed run queued {len(after_second - after_first)} prompts, expected 1\n{r.stdout}")

    with open(out / MANIFEST, encoding="utf-8") as f:
        manifest2 = json.load(f)["items"]
    for name in PHOTOS:
        assert manifest2[name]["status"] == "done"
        assert manifest2[name]["prompt_id"] == first_ids[name], f"{name} was rerun"
    assert manifest2[BROKEN]["status"] == "failed" and manifest2[BROKEN]["error"]
    new_id = manifest2[BROKEN]["prompt_id"]
    assert new_id != first_ids[BROKEN] and new_id in (after_second - after_first)
