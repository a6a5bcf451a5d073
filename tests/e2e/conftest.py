"""End-to-end fixtures: run the pack inside a real ComfyUI server.

Set SWAPFORGE_COMFYUI_DIR to a ComfyUI checkout (and SWAPFORGE_COMFYUI_PYTHON to the interpreter of
its environment, default: the one running pytest) to enable these tests; without it every test in
tests/e2e is skipped. Nothing here downloads or installs ComfyUI: see tests/e2e/README.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMFY_DIR = os.environ.get("SWAPFORGE_COMFYUI_DIR", "")
COMFY_PYTHON = os.environ.get("SWAPFORGE_COMFYUI_PYTHON", "") or sys.executable
START_TIMEOUT_S = 120
PACK_LINK_NAME = "SwapForge"


@pytest.fixture(autouse=True)
def _require_comfyui():
    if not COMFY_DIR:
        pytest.skip("end-to-end tests need a ComfyUI checkout: set SWAPFORGE_COMFYUI_DIR "
                    "(see tests/e2e/README.md)")


@dataclasses.dataclass
class ComfyServer:
    url: str  # e.g. http://127.0.0.1:40123
    log_path: str
    base_dir: str
    output_dir: str
    input_dir: str
    temp_dir: str
    process: subprocess.Popen

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))

    def post_json(self, path: str, payload, timeout: float = 30):
        """POST JSON; returns (status, decoded body) for 2xx and 4xx answers alike."""
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read().decode("utf-8")
                return r.status, (json.loads(body) if body.strip() else None)
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", errors="replace")
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _supported_flags(comfy_dir: str) -> str:
    """The text of ComfyUI's cli_args.py, to check which optional flags this version has."""
    path = os.path.join(comfy_dir, "comfy", "cli_args.py")
    with open(path, encoding="utf-8") as f:
        return f.read()


def start_comfy_server(base) -> ComfyServer:
    """Start a ComfyUI server on a free loopback port with this repository loaded as custom node pack
    `SwapForge` and private base/input/output/temp/user folders under `base` (a new pathlib folder); returns
    once /object_info answers (pytest.fail with the log tail otherwise). Stop it with stop_comfy_server."""
    comfy_dir = os.path.abspath(COMFY_DIR)
    main_py = os.path.join(comfy_dir, "main.py")
    if not os.path.isfile(main_py):
        pytest.fail(f"SWAPFORGE_COMFYUI_DIR={COMFY_DIR} has no main.py; point it at a ComfyUI checkout.")
    base.mkdir(parents=True, exist_ok=True)
    dirs = {name: base / name for name in ("output", "input", "user", "models", "custom_nodes")}
    for d in dirs.values():
        d.mkdir()
    # ComfyUI puts its temp folder at <--temp-directory>/temp (and empties it at start and exit).
    dirs["temp"] = base / "temp"
    os.symlink(ROOT, dirs["custom_nodes"] / PACK_LINK_NAME, target_is_directory=True)
    extra_yaml = base / "extra_model_paths.yaml"
    extra_yaml.write_text(f"swapforge_e2e:\n  custom_nodes: {dirs['custom_nodes']}\n", encoding="utf-8")

    port = _free_port()
    flags = _supported_flags(comfy_dir)
    cmd = [COMFY_PYTHON, main_py, "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--extra-model-paths-config", str(extra_yaml),
           "--output-directory", str(dirs["output"]), "--input-directory", str(dirs["input"]),
           "--temp-directory", str(base)]
    if '"--disable-api-nodes"' in flags:
        cmd.append("--disable-api-nodes")
    if '"--base-directory"' in flags:
        cmd += ["--base-directory", str(base)]
    if '"--user-directory"' in flags:
        cmd += ["--user-directory", str(dirs["user"])]
    if '"--database-url"' in flags:
        cmd += ["--database-url", f"sqlite:///{base / 'comfyui.db'}"]

    log_path = base / "comfyui.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    server = ComfyServer(url=f"http://127.0.0.1:{port}", log_path=str(log_path), base_dir=str(base),
                         output_dir=str(dirs["output"]), input_dir=str(dirs["input"]),
                         temp_dir=str(dirs["temp"]), process=proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {proc.returncode} before serving.\n"
                            f"command: {' '.join(cmd)}\n--- log tail ---\n{server.log_tail()}")
            try:
                server.get_json("/object_info", timeout=10)
                break
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not serve /object_info within {START_TIMEOUT_S} s.\n"
                            f"command: {' '.join(cmd)}\n--- log tail ---\n{server.log_tail()}")
            time.sleep(0.5)
    except BaseException:
        stop_comfy_server(server)
        raise
    return server


def stop_comfy_server(server: ComfyServer) -> None:
    proc = server.process
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A ComfyUI server on a free loopback port, with this repository loaded as custom node pack
    `SwapForge` and private base/input/output/temp/user folders. Stopped after the session."""
    if not COMFY_DIR:
        pytest.skip("SWAPFORGE_COMFYUI_DIR is not set")
    server = start_comfy_server(tmp_path_factory.mktemp("comfyui"))
    try:
        yield server
    finally:
        stop_comfy_server(server)


@pytest.fixture(scope="session")
def object_info(comfy_server):
    """GET /object_info once per session."""
    return comfy_server.get_json("/object_info", timeout=60)


@pytest.fixture(scope="session")
def input_photos(comfy_server):
    """Copies tests/data/*.jpg into the server's input folder (workflows name them, e.g. obama.jpg)."""
    data = os.path.join(ROOT, "tests", "data")
    names = sorted(n for n in os.listdir(data) if n.lower().endswith(".jpg"))
    for name in names:
        shutil.copy2(os.path.join(data, name), os.path.join(comfy_server.input_dir, name))
    return names


class ComfyRunError(AssertionError):
    """A queued prompt was rejected, failed or did not finish in time."""


def _execution_error(entry) -> str:
    for kind, data in (entry.get("status") or {}).get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            tb = "".join(data.get("traceback") or [])
            return (f"{kind} in node {data.get('node_id')} ({data.get('node_type')}): "
                    f"{data.get('exception_type', '')}: {data.get('exception_message', '')}\n{tb}")
    return json.dumps(entry.get("status"), indent=1)


def queue_and_wait(server: ComfyServer, api_prompt: dict, timeout: float = 300) -> dict:
    """Queue an API-format prompt and wait for it; returns its /history entry (status success).
    Raises ComfyRunError with ComfyUI's node_errors / execution_error and the server log tail."""
    status, body = server.post_json("/prompt", {"prompt": api_prompt, "client_id": uuid.uuid4().hex})
    if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
        raise ComfyRunError(f"ComfyUI rejected the prompt (HTTP {status}):\n"
                            f"{json.dumps(body, indent=1) if isinstance(body, dict) else body}\n"
                            f"--- server log tail ---\n{server.log_tail()}")
    if body.get("node_errors"):
        raise ComfyRunError(f"ComfyUI reported node_errors: {json.dumps(body['node_errors'], indent=1)}")
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + timeout
    while True:
        history = server.get_json(f"/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry is not None and (entry.get("status") or {}).get("completed") is not None:
            st = entry["status"]
            if st.get("status_str") == "success" and st.get("completed"):
                return entry
            raise ComfyRunError(f"prompt {prompt_id} failed: {_execution_error(entry)}\n"
                                f"--- server log tail ---\n{server.log_tail()}")
        if server.process.poll() is not None:
            raise ComfyRunError(f"ComfyUI exited (code {server.process.returncode}) while running "
                                f"prompt {prompt_id}.\n--- server log tail ---\n{server.log_tail()}")
        if time.monotonic() > deadline:
            server.post_json("/interrupt", {"prompt_id": prompt_id})
            raise ComfyRunError(f"prompt {prompt_id} did not finish within {timeout} s (interrupted).\n"
                                f"--- server log tail ---\n{server.log_tail()}")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------------------
# FuseAnyPart weights (test_fap_workflow.py): random full-size stand-ins, cached between runs.
# ------------------------------------------------------------------------------------------------------
FAP_WEIGHTS_DIR = os.environ.get("SWAPFORGE_E2E_WEIGHTS_DIR", "")
FAP_GEN_PYTHON = os.environ.get("SWAPFORGE_E2E_GEN_PYTHON", "")
FAP_GEN_TIMEOUT_S = 900


def _python_has(python: str, modules: str) -> bool:
    try:
        return subprocess.run([python, "-c", f"import {modules}"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def fap_generating_python():
    """An interpreter with torch, diffusers and safetensors to write the random weights, or None.
    $SWAPFORGE_E2E_GEN_PYTHON, else the one running pytest, the repo's .venv, ComfyUI's."""
    if FAP_GEN_PYTHON:
        candidates = [FAP_GEN_PYTHON]
    else:
        candidates = [sys.executable, os.path.join(ROOT, ".venv", "bin", "python"), COMFY_PYTHON]
    for python in dict.fromkeys(candidates):
        if os.path.isfile(python) and _python_has(python, "torch, diffusers, safetensors"):
            return python
    return None


@pytest.fixture(scope="session")
def fap_models(comfy_server):
    """Random full-size FuseAnyPart weights (tests/e2e/fap_weights.py) made visible to `comfy_server`:
    symlinked into its models folder (<base>/models/{swapforge/fuseanypart,clip_vision,vae}; ComfyUI's
    file lists are re-read when a folder changes). Generated once into $SWAPFORGE_E2E_WEIGHTS_DIR/fuseanypart
    (default <system temp>/swapforge-e2e-weights/fuseanypart; never inside the repository; about 3 GB) and
    reused while its manifest is complete. Returns {"fap": name, "clip_vision": name, "vae": name, "manifest": dict}."""
    import tempfile

    from . import fap_weights

    if '"--base-directory"' not in _supported_flags(os.path.abspath(COMFY_DIR)):
        pytest.skip("this ComfyUI has no --base-directory: the server's models folder is not private")
    root = os.path.abspath(FAP_WEIGHTS_DIR or os.path.join(tempfile.gettempdir(), "swapforge-e2e-weights"))
    cache = os.path.join(root, "fuseanypart")
    if os.path.commonpath([cache, ROOT]) == ROOT:
        pytest.fail(f"SWAPFORGE_E2E_WEIGHTS_DIR={root} is inside the repository; use a folder outside it "
                    "(the weights are about 3 GB).")
    manifest = fap_weights.cached(cache)
    if manifest is None:
        python = fap_generating_python()
        if python is None:
            pytest.skip("generating the FuseAnyPart test weights needs torch, diffusers and safetensors: set "
                        "SWAPFORGE_E2E_GEN_PYTHON to such an interpreter (the repo's .venv has them)")
        os.makedirs(cache, exist_ok=True)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fap_weights.py")
        t0 = time.monotonic()
        run = subprocess.run([python, script, "--out", cache, "--force"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=FAP_GEN_TIMEOUT_S)
        if run.returncode != 0:
            pytest.fail(f"generating the FuseAnyPart test weights failed ({python}):\n{run.stdout}\n{run.stderr}")
        print(f"\n[fap_models] generated random weights in {time.monotonic() - t0:.0f} s into {cache}:\n"
              f"{run.stdout}", flush=True)
        manifest = fap_weights.cached(cache)
        if manifest is None:
            pytest.fail(f"fap_weights.py finished but {cache} has no complete manifest:\n{run.stdout}")
    models = os.path.join(comfy_server.base_dir, "models")
    for rel in fap_weights.FILES.values():
        link = os.path.join(models, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.join(cache, "models", rel), link)
    return {"fap": os.path.basename(fap_weights.FAP_REL), "clip_vision": fap_weights.CLIP_NAME,
            "vae": fap_weights.VAE_NAME, "manifest": manifest, "cache_dir": cache}


# ------------------------------------------------------------------------------------------------------
# StyleSwap swapper (face_swap_* workflows): no public weights exist, so a tiny random swapper of the real
# format is written under the name the workflows load (tests/e2e/styleswap_weights.py), into the
# server's private models folder, before any test that uses the server.
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _styleswap_swapper(request):
    if "comfy_server" not in request.fixturenames:
        return
    server = request.getfixturevalue("comfy_server")
    if '"--base-directory"' not in _supported_flags(os.path.abspath(COMFY_DIR)):
        return  # the models folder would be the checkout's own: leave it alone (the workflows then say so)
    from . import styleswap_weights

    models = os.path.join(server.base_dir, "models")
    if not os.path.isfile(os.path.join(models, styleswap_weights.SWAPPER_REL)):
        styleswap_weights.write_tiny_swapper(models)
