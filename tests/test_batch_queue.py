"""tools.batch_queue against a fake ComfyUI server (stdlib http.server, no websocket: the client polls)."""
import email.parser
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools import batch_queue as bq

WORKFLOW = {
    "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 0, "cfg": 7.5}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "x"}},
}


class FakeComfy:
    """Uploads are stored; a prompt whose image is bad.png is refused with node_errors; one whose image is
    boom.png executes to an execution_error; others 'save' the uploaded bytes as their output."""

    def __init__(self, run_time=0.25):
        self.uploads, self.prompts, self.history, self.files = {}, {}, {}, {}
        self.running = self.max_running = 0
        self.lock = threading.Lock()
        self.run_time = run_time
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, payload, ctype="application/json"):
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path.startswith("/history/"):
                    pid = url.path.rsplit("/", 1)[1]
                    with fake.lock:
                        entry = fake.history.get(pid)
                    return self._send(200, {pid: entry} if entry else {})
                if url.path == "/view":
                    q = urllib.parse.parse_qs(url.query)
                    return self._send(200, fake.files[q["filename"][0]], "image/png")
                self._send(404, {"error": "not found"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/upload/image":
                    msg = email.parser.BytesParser().parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                    fields = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
                    assert fields["overwrite"].get_payload() == "true" and fields["type"].get_payload() == "input"
                    name = fields["image"].get_filename()
                    fake.uploads[name] = fields["image"].get_payload(decode=True)
                    return self._send(200, {"name": name, "subfolder": "", "type": "input"})
                if self.path == "/prompt":
                    req = json.loads(body)
                    image = req["prompt"]["10"]["inputs"]["image"]
                    if image == "bad.png":
                        return self._send(400, {"error": {"type": "prompt_outputs_failed_validation",
                                                          "message": "Prompt outputs failed validation"},
                                                "node_errors": {"10": {"class_type": "LoadImage", "errors": [
                                                    {"message": "Invalid image file", "details": "bad.png"}]}}})
                    pid = f"p{len(fake.prompts)}"
                    with fake.lock:
                        fake.prompts[pid] = req["prompt"]
                        fake.running += 1
                        fake.max_running = max(fake.max_running, fake.running)
                    threading.Thread(target=fake.execute, args=(pid, image), daemon=True).start()
                    return self._send(200, {"prompt_id": pid, "number": len(fake.prompts), "node_errors": {}})
                self._send(200, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def execute(self, pid, image):
        time.sleep(self.run_time)
        if image == "boom.png":
            entry = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": [
                ["execution_error", {"prompt_id": pid, "node_id": "3", "node_type": "KSampler",
                                     "exception_type": "RuntimeError", "exception_message": "boom"}]]}}
        else:
            out = f"out_{pid}.png"
            self.files[out] = b"OUT:" + self.uploads[image]
            entry = {"outputs": {"5": {"images": [{"filename": out, "subfolder": "", "type": "output"}]}},
                     "status": {"status_str": "success", "completed": True, "messages": []}}
        with self.lock:
            self.history[pid] = entry
            self.running -= 1


@pytest.fixture
def server():
    fake = FakeComfy()
    yield fake
    fake.server.shutdown()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "bad.png", "boom.png", "c.png", "d.png"):
        (folder / name).write_bytes(b"PNG-" + name.encode())
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_setting_syntax():
    assert bq.Setting.parse("12.image={image}") == bq.Setting("12", "image", "upload", "image")
    assert bq.Setting.parse("3.seed=seed") == bq.Setting("3", "seed", "column", "seed")
    assert bq.Setting.parse("5.text==hello=world") == bq.Setting("5", "text", "literal", "hello=world")
    with pytest.raises(ValueError):
        bq.Setting.parse("seed=3")
    assert bq.cast_like("42", 0) == 42 and bq.cast_like("0.5", 1.0) == 0.5
    assert bq.cast_like("yes", False) is True and bq.cast_like("hi", "x") == "hi"


def test_batch_uploads_queues_downloads_and_records_failures(server, images, tmp_path):
    out = tmp_path / "out"
    items = bq.load_items(str(images))
    assert [i["key"] for i in items] == ["a.png", "bad.png", "boom.png", "c.png", "d.png"]
    sets = [bq.Setting.parse("10.image={image}"), bq.Setting.parse("3.cfg==4"),
            bq.Setting.parse("5.filename_prefix==swap")]
    logs = []
    results = bq.run_batch(server.url, WORKFLOW, items, sets, str(out), concurrency=2, timeout=10,
                           log=logs.append, poll_interval=0.05)
    status = {r.key: r.status for r in results}
    assert status == {"a.png": "done", "bad.png": "failed", "boom.png": "failed", "c.png": "done",
                      "d.png": "done"}
    assert set(server.uploads) == {"a.png", "bad.png", "boom.png", "c.png", "d.png"}
    assert 1 <= server.max_running <= 2
    assert server.max_running == 2
    queued = list(server.prompts.values())
    assert sorted(p["10"]["inputs"]["image"] for p in queued) == ["a.png", "boom.png", "c.png", "d.png"]
    assert all(p["3"]["inputs"]["cfg"] == 4.0 and isinstance(p["3"]["inputs"]["cfg"], float) for p in queued)
    assert all(p["5"]["inputs"]["filename_prefix"] == "swap" for p in queued)
    assert WORKFLOW["10"]["inputs"]["image"] == "example.png"  # the caller's workflow is untouched
    by_key = {r.key: r for r in results}
    for key in ("a.png", "c.png", "d.png"):
        files = list((out / key).iterdir())
        assert len(files) == 1 and files[0].read_bytes() == b"OUT:PNG-" + key.encode()
    assert "Invalid image file" in by_key["bad.png"].error and by_key["bad.png"].prompt_id is None
    assert "boom" in by_key["boom.png"].error and "KSampler" in by_key["boom.png"].error
    manifest = json.loads((out / "manifest.json").read_text())["items"]
    assert {k: v["status"] for k, v in manifest.items()} == status
    assert manifest["a.png"]["outputs"][0]["path"] == "a.png/" + manifest["a.png"]["outputs"][0]["filename"]
    assert manifest["a.png"]["prompt_id"] in server.prompts

    # rerun with resume: only the failed items go to the server again
    before = len(server.prompts)
    results = bq.run_batch(server.url, WORKFLOW, items, sets, str(out), concurrency=2, timeout=10,
                           log=logs.append, poll_interval=0.05)
    new = [server.prompts[p]["10"]["inputs"]["image"] for p in list(server.prompts)[before:]]
    assert new == ["boom.png"]  # bad.png is refused before it gets a prompt id
    assert [r.status for r in results] == ["done", "failed", "failed", "done", "done"]


def test_csv_items_cast_columns_to_the_workflow_type(server, images, tmp_path):
    csv_path = tmp_path / "jobs.csv"
    csv_path.write_text("photo,seed\nin/a.png,7\nin/c.png,8\n")
    items = bq.load_items(str(csv_path))
    assert items[0]["key"].startswith("row0000-")
    sets = [bq.Setting.parse("10.image={photo}"), bq.Setting.parse("3.seed=seed")]
    results = bq.run_batch(server.url, WORKFLOW, items, sets, str(tmp_path / "out"), concurrency=1,
                           timeout=10, log=lambda *a: None, poll_interval=0.05)
    assert [r.status for r in results] == ["done", "done"]
    assert sorted(p["3"]["inputs"]["seed"] for p in server.prompts.values()) == [7, 8]
    assert server.max_running == 1


def test_cli_exit_code_and_timeout(server, images, tmp_path, capsys):
    wf = tmp_path / "wf.api.json"
    wf.write_text(json.dumps(WORKFLOW))
    rc = bq.main(["--server", server.url, "--workflow", str(wf), "--inputs", str(images),
                  "--set", "10.image={image}", "--out", str(tmp_path / "o"), "--timeout", "10"])
    assert rc == 2 and "3 done, 2 failed" in capsys.readouterr().out
    server.run_time = 5
    results = bq.run_batch(server.url, WORKFLOW, [{"key": "slow", "image": str(images / "a.png")}],
                           [bq.Setting.parse("10.image={image}")], str(tmp_path / "t"), timeout=0.5,
                           log=lambda *a: None, poll_interval=0.05)
    assert results[0].status == "failed" and "timeout" in results[0].error


def test_two_servers_share_the_batch_and_a_stopped_one_hands_its_items_over(images, tmp_path):
    a, b = FakeComfy(run_time=0.2), FakeComfy(run_time=0.6)
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(8):
        (folder / f"img{i}.png").write_bytes(b"PNG-%d" % i)
    items = bq.load_items(str(folder))
    out = tmp_path / "out"
    logs, box = [], {}

    def run():
        box["results"] = bq.run_batch([a.url, b.url], WORKFLOW, items, [bq.Setting.parse("10.image={image}")],
                                      str(out), concurrency=1, timeout=20, log=logs.append, poll_interval=0.05)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # stop b while it runs its second prompt (one done before)
        with b.lock:
            if len(b.history) >= 1 and b.running == 1 and len(b.prompts) == 2:
                break
        time.sleep(0.01)
    b.server.shutdown()
    b.server.server_close()
    b_done = set(b.history)
    t.join(60)
    assert not t.is_alive()
    results = {r.key: r for r in box["results"]}
    assert all(r.status == "done" for r in results.values()), {k: (r.status, r.error) for k, r in results.items()}
    on_b = {k for k, r in results.items() if r.server == b.url}
    on_a = {k for k, r in results.items() if r.server == a.url}
    assert on_a | on_b == set(results) and len(on_b) == 1 and len(on_a) == 7
    assert {results[k].prompt_id for k in on_b} <= b_done  # finished on b before it stopped
    moved = [k for k, r in results.items() if r.attempts]
    assert len(moved) == 1 and results[moved[0]].attempts[0]["server"] == b.url
    assert results[moved[0]].server == a.url
    # nothing that finished ran twice: a ran exactly the items not done on b, once each
    a_images = sorted(p["10"]["inputs"]["image"] for p in a.prompts.values())
    assert a_images == sorted(on_a)
    for key in results:
        files = list((out / key).iterdir())
        assert len(files) == 1 and files[0].read_bytes() == b"OUT:" + (folder / key).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())["items"]
    assert {k: v["server"] for k, v in manifest.items()} == {k: r.server for k, r in results.items()}
    assert any("stopped answering" in line for line in logs)
    a.server.shutdown()


def test_items_stay_pending_when_no_server_answers(images, tmp_path):
    dead = FakeComfy()
    dead.server.shutdown()
    dead.server.server_close()
    results = bq.run_batch([dead.url], WORKFLOW, bq.load_items(str(images))[:2],
                           [bq.Setting.parse("10.image={image}")], str(tmp_path / "o"), timeout=5,
                           log=lambda *a: None, poll_interval=0.05)
    assert [r.status for r in results] == ["pending", "pending"]
    assert all("no server answered" in r.error for r in results)
