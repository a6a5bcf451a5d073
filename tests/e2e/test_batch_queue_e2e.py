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


def test_batch_over_two_real_servers_survives_one_stopping(comfy_server, input_photos, tmp_path):
    """Two ComfyUI servers on 127.0.0.1, concurrency 1 each; the second is killed while it runs its second item
    (one done there before): every item ends done exactly once, the killed server's running item runs on the
    first, and no item done on the killed server is queued again."""
    import threading
    import time

    from .conftest import start_comfy_server, stop_comfy_server

    second = start_comfy_server(tmp_path / "second")
    try:
        for name in os.listdir(os.path.join(ROOT, "tests", "data")):
            if name.endswith(".jpg"):
                shutil.copy2(os.path.join(ROOT, "tests", "data", name), os.path.join(second.input_dir, name))
        inputs = tmp_path / "targets"
        inputs.mkdir()
        names = ("obama.jpg", "biden.jpg", "grace_hopper.jpg", "astronaut.jpg", "obama2.jpg", "obama3.jpg")
        for name in names:
            shutil.copy2(os.path.join(ROOT, "tests", "data", name), inputs / name)
        with open(wd.api_path("classic_part_swap"), encoding="utf-8") as f:
            workflow = json.load(f)
        out = tmp_path / "out"
        first_before = _history_ids(comfy_server)
        lines, box = [], {}

        def run():
            box["results"] = run_batch([comfy_server.url, second.url], workflow, load_items(str(inputs)),
                                       [Setting.parse(TARGET_SET)], str(out), concurrency=1, timeout=240,
                                       log=lines.append, poll_interval=0.5)

        t = threading.Thread(target=run)
        t.start()
        killed_done, deadline = None, time.monotonic() + 240
        while time.monotonic() < deadline and t.is_alive():
            try:
                with open(out / MANIFEST, encoding="utf-8") as f:
                    items = json.load(f)["items"]
            except (OSError, ValueError):
                items = {}
            on_second = [v for v in items.values() if v.get("server") == second.url]
            if any(v["status"] == "done" for v in on_second) and any(
                    v["status"] == "running" and v.get("prompt_id") for v in on_second):
                killed_done = {k for k, v in items.items() if v.get("server") == second.url and v["status"] == "done"}
                second.process.kill()  # a crash: no goodbye
                second.process.wait(timeout=30)
                break
            time.sleep(0.2)
        assert killed_done, "the second server never had one item done and one running\n" + "\n".join(lines)
        t.join(300)
        assert not t.is_alive()
    finally:
        stop_comfy_server(second)
    log = "\n".join(lines)
    results = {r.key: r for r in box["results"]}
    assert all(r.status == "done" for r in results.values()), log
    assert {k for k, r in results.items() if r.server == second.url} == killed_done
    moved = [r for r in results.values() if r.attempts]
    assert len(moved) == 1 and moved[0].attempts[0]["server"] == second.url and moved[0].server == comfy_server.url
    # the first server ran exactly the items not done on the second, once each
    new_on_first = _history_ids(comfy_server) - first_before
    assert {r.prompt_id for r in results.values() if r.server == comfy_server.url} == new_on_first
    assert len(new_on_first) == len(names) - len(killed_done)
    for r in results.values():
        assert any(o["node"] == "7" and os.path.isfile(os.path.join(out, o["path"])) for o in r.outputs), r
    assert "stopped answering" in log
    print(f"\ntwo servers: {len(killed_done)} done on the killed one, {len(new_on_first)} on the first, "
          f"moved: {moved[0].key}")
