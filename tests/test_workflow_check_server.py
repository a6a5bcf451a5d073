"""The workflow checker reads node schemas from a running ComfyUI (`--server URL`, its GET /object_info), so a
user without a saved object_info.json can check workflows. A small HTTP server here plays ComfyUI."""
import http.server
import json
import threading

import pytest

from tools import workflow_check as wc

# One core node as ComfyUI's /object_info describes it (hand-written: this test needs no saved answer).
CORE = {"RepeatImageBatch": {
    "input": {"required": {"image": ["IMAGE", {}], "amount": ["INT", {"default": 1, "min": 1, "max": 4096}]}},
    "input_order": {"required": ["image", "amount"]}, "output": ["IMAGE"], "output_is_list": [False],
    "output_name": ["IMAGE"], "name": "RepeatImageBatch", "display_name": "RepeatImageBatch", "description": "",
    "python_module": "comfy_extras.nodes_images", "category": "image/batch", "output_node": False},
    "EmptyImage": {
    "input": {"required": {"width": ["INT", {"default": 512, "min": 1, "max": 16384}],
                           "height": ["INT", {"default": 512, "min": 1, "max": 16384}]}},
    "input_order": {"required": ["width", "height"]}, "output": ["IMAGE"], "output_is_list": [False],
    "output_name": ["IMAGE"], "name": "EmptyImage", "display_name": "EmptyImage", "description": "",
    "python_module": "nodes", "category": "image", "output_node": False}}


@pytest.fixture
def comfy_server():
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = json.dumps(CORE).encode() if self.path == "/object_info" else b"{}"
            self.send_response(200 if self.path == "/object_info" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()
    srv.server_close()


def _prompt(amount):
    return {"1": {"class_type": "SwapForge_FaceModelLoader", "inputs": {"backend": "dlib_hog (embedded)", "upsample": 0}},
            "2": {"class_type": "EmptyNotOnServer", "inputs": {}},
            "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": amount}}}


def test_cli_checks_against_the_servers_object_info(comfy_server, tmp_path, capsys):
    url, hits = comfy_server
    good = _prompt(3)
    good["2"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}}
    ok_path, bad_path = tmp_path / "ok.api.json", tmp_path / "bad.api.json"
    ok_path.write_text(json.dumps(good))
    bad_path.write_text(json.dumps(_prompt(5000)))
    assert wc.main([str(ok_path), "--server", url]) == 0
    assert "/object_info" in hits
    assert wc.main([str(bad_path), "--server", url]) == 1
    out = capsys.readouterr().out
    assert f"{ok_path}: OK" in out
    assert "EmptyNotOnServer" in out and "4096" in out    # unknown class; the server's max for amount


def test_load_schemas_from_server_adds_the_packs_nodes_the_server_lacks(comfy_server):
    url, _ = comfy_server
    schemas = wc.load_schemas(server=url)
    assert schemas["RepeatImageBatch"] == CORE["RepeatImageBatch"]
    assert "SwapForge_FaceSwap" in schemas


def test_an_unreachable_server_is_a_clear_error(capsys, tmp_path):
    with pytest.raises(ConnectionError, match="127.0.0.1:9/object_info.*running ComfyUI"):
        wc.load_schemas(server="127.0.0.1:9")
    p = tmp_path / "x.api.json"
    p.write_text("{}")
    assert wc.main([str(p), "--server", "http://127.0.0.1:9"]) == 1
    assert "running ComfyUI" in capsys.readouterr().err
