"""Queue one workflow over many inputs on a ComfyUI server, download the outputs, keep a manifest.

    python -m tools.batch_queue --server http://127.0.0.1:8188 [--server http://127.0.0.1:8189 ...] \\
        --workflow example_workflows/api/classic_part_swap.api.json \\
        --inputs FOLDER_OR_CSV --set 2.image={image} --set 3.seed=seed --set 5.text==hello \\
        --out OUTDIR [--concurrency 2] [--timeout 600] [--resume | --no-resume]

The pack's API-format workflows are in example_workflows/api/ (tools/workflow_dirs.py); a UI-format file is
converted first.

Items: a folder gives one item per image file (column ``image`` = the file, key = the file name); a CSV
gives one item per row (columns by header; key = column ``key`` if present, else ``row<N>-<hash>``;
relative file paths resolve against the CSV's folder).

``--set NODE.INPUT=VALUE``:
  * ``{COLUMN}``  upload the file named in COLUMN (``{image}`` for folders) and set the uploaded name;
  * ``COLUMN``    the item's value in COLUMN;
  * ``=TEXT``     the literal TEXT (so ``5.text==hello`` sets "hello").
Column and literal values are cast to the type of the workflow's current value there (int, float,
bool from true/false/1/0/yes/no, str); a link or missing value keeps the text.

Each item is uploaded, queued, followed (websocket, else polling GET /history) and its outputs are
downloaded into OUTDIR/<item key>/. ``--server`` may be given several times (several GPUs or machines): the
items are spread over the servers, each with at most ``concurrency`` prompts queued-or-running at once.
OUTDIR/manifest.json (one for the whole batch, atomically rewritten after every change) records per item:
status pending/running/done/failed, the server and prompt_id, outputs, error, started/finished, and the
attempts moved off a server. A rerun with a manifest present skips done items (``--no-resume`` reruns all).

A server that stops answering (connection refused or reset, HTTP timeouts; checked again with
GET /system_stats three times, a second apart) is dropped for the rest of the batch: the items it held go
back to the queue and run on the others. An item is done only once its outputs are downloaded, so an item
whose server stopped between finishing and the download runs again elsewhere; a done item never runs again.
When no server answers any more, the items left stay "pending" for a rerun. Exit 0 when all done, 2 when
some failed or are left pending, 130 on Ctrl-C (the manifest stays consistent: interrupted items are
"pending").
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import http.client
import json
import mimetypes
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MANIFEST = "manifest.json"


class BatchError(Exception):
    """An item failed; the message says why."""


class ServerDown(Exception):
    """A server stopped answering; its items go to the other servers."""


# Errors that mean "no answer from the server" (HTTPError is an answer: it is caught before these).
NO_ANSWER = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


# ----------------------------------------------------------------------------------------------------
# Settings and items
# ----------------------------------------------------------------------------------------------------

@dataclass
class Setting:
    node_id: str
    input: str
    kind: str  # "upload" (value = column holding a file), "column", or "literal"
    value: str

    @classmethod
    def parse(cls, text: str) -> "Setting":
        m = re.fullmatch(r"([^.=]+)\.([^=]+)=(.*)", text, re.S)
        if not m:
            raise ValueError(f"--set {text!r}: expected NODE_ID.INPUT=VALUE, e.g. 12.image={{image}}, "
                             "3.seed=seed (CSV column) or 5.text==hello (literal)")
        node, name, value = m.groups()
        if value.startswith("="):
            return cls(node, name, "literal", value[1:])
        if len(value) > 2 and value.startswith("{") and value.endswith("}"):
            return cls(node, name, "upload", value[1:-1])
        return cls(node, name, "column", value)


def item_key(item: dict, index: int) -> str:
    if item.get("key"):
        key = str(item["key"])
    else:
        digest = hashlib.sha1(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:8]
        key = f"row{index:04d}-{digest}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip(".") or f"item{index}"


def load_items(path: str) -> List[dict]:
    """Items from a folder of images or a CSV file (see module doc)."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        return [{"key": n, "image": os.path.join(os.path.abspath(path), n)} for n in names]
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    items = []
    for i, row in enumerate(rows):
        item = {k: v for k, v in row.items() if k is not None}
        item["_base_dir"] = base
        if not item.get("key"):
            clean = {k: v for k, v in item.items() if k != "_base_dir"}
            item["key"] = item_key(clean, i)
        items.append(item)
    return items


def cast_like(text, current):
    """text cast to the type of the workflow's current value."""
    if not isinstance(text, str):
        return text
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise BatchError(f"'{text}' is not a boolean (use true/false)")
    try:
        if isinstance(current, int):
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise BatchError(f"'{text}' is not a {type(current).__name__}") from None
    return text


# ----------------------------------------------------------------------------------------------------
# Server client
# ----------------------------------------------------------------------------------------------------

class ComfyClient:
    """The few ComfyUI HTTP routes the batch needs."""

    def __init__(self, server: str, client_id: Optional[str] = None, http_timeout: float = 60):
        self.server = server.rstrip("/")
        if "://" not in self.server:
            self.server = "http://" + self.server
        self.client_id = client_id or uuid.uuid4().hex
        self.http_timeout = http_timeout

    def _request(self, method, route, body=None, headers=None):
        req = urllib.request.Request(self.server + route, data=body, method=method, headers=headers or {})
        with urllib.request.urlopen(req, timeout=self.http_timeout) as r:
            return r.read()

    def _json(self, method, route, payload=None):
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return json.loads(self._request(method, route, body, headers) or b"null")

    def upload_image(self, path: str) -> str:
        """Upload a file to the server's input folder; the name to put in a LoadImage input."""
        boundary = uuid.uuid4().hex
        name = os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            data = f.read()
        parts = []
        for key, value in (("overwrite", "true"), ("type", "input")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        answer = json.loads(self._request("POST", "/upload/image", b"".join(parts),
                                          {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else answer["name"]

    def queue_prompt(self, prompt: dict) -> str:
        """The prompt_id; BatchError with the server's message when it refuses the prompt."""
        try:
            answer = self._json("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                raise BatchError(f"POST /prompt answered HTTP {e.code}: {raw[:300]!r}") from None
        if answer.get("error") or answer.get("node_errors"):
            raise BatchError(describe_prompt_error(answer))
        return answer["prompt_id"]

    def answers(self, tries: int = 3, pause: float = 1.0) -> bool:
        """True when GET /system_stats answers within `tries` attempts, `pause` seconds apart."""
        for i in range(tries):
            try:
                self._request("GET", "/system_stats")
                return True
            except urllib.error.HTTPError:
                return True  # an HTTP answer is an answer
            except NO_ANSWER:
                if i + 1 < tries:
                    time.sleep(pause)
        return False

    def history(self, prompt_id: str) -> Optional[dict]:
        answer = self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        return (answer or {}).get(prompt_id)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self._request("GET", f"/view?{query}")

    def cancel(self, prompt_id: str):
        """Best effort: take the prompt out of the queue, and interrupt it if it is running."""
        for route, payload in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                self._json("POST", route, payload)
            except (OSError, ValueError):
                pass

    def ws_url(self) -> str:
        u = urllib.parse.urlsplit(self.server)
        scheme = "wss" if u.scheme == "https" else "ws"
        return f"{scheme}://{u.netloc}/ws?clientId={self.client_id}"


def describe_prompt_error(answer: dict) -> str:
    err = answer.get("error")
    parts = []
    if isinstance(err, dict):
        parts.append(err.get("message") or err.get("type") or str(err))
        if err.get("details"):
            parts.append(str(err["details"]))
    elif err:
        parts.append(str(err))
    for node_id, ne in (answer.get("node_errors") or {}).items():
        for e in (ne or {}).get("errors", []):
            parts.append(f"node {node_id} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "; ".join(p for p in parts if p) or "the server refused the prompt"


class Watcher:
    """Follows execution over the websocket; callers fall back to polling when it is not alive."""

    def __init__(self, client: ComfyClient, log: Callable = print):
        self.client = client
        self.log = log
        self.alive = False
        self.finished: Dict[str, dict] = {}
        self.cond = threading.Condition()
        self._ws = None
        self._stop = False
        try:
            import websocket  # lazy: polling works without websocket-client
            self._ws = websocket.create_connection(client.ws_url(), timeout=5)
            self._ws.settimeout(1.0)
        except Exception as e:
            self.log(f"websocket unavailable ({type(e).__name__}: {e}); following prompts by polling")
            self._ws = None
            return
        self.alive = True
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        import websocket
        while not self._stop:
            try:
                msg = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception as e:
                if not self._stop:
                    self.log(f"websocket dropped ({type(e).__name__}: {e}); following prompts by polling")
                break
            if not isinstance(msg, str):
                continue  # binary previews
            try:
                event = json.loads(msg)
            except ValueError:
                continue
            kind, data = event.get("type"), event.get("data") or {}
            pid = data.get("prompt_id")
            if kind == "progress" and pid:
                continue
            done = (kind == "executing" and data.get("node") is None and pid) or \
                kind in ("execution_success", "execution_error", "execution_interrupted")
            if done and pid:
                with self.cond:
                    self.finished.setdefault(pid, {"event": kind, "data": data})
                    self.cond.notify_all()
        with self.cond:
            self.alive = False
            self.cond.notify_all()

    def wait(self, prompt_id: str, timeout: float, poll_interval: float, stop: threading.Event) -> dict:
        """The history entry of prompt_id once it has finished; BatchError on timeout or stop."""
        deadline = time.monotonic() + timeout
        next_poll = 0.0
        while True:
            now = time.monotonic()
            if stop.is_set():
                raise BatchError("stopped by the user")
            if now > deadline:
                raise BatchError(f"no result after {timeout:g} s (timeout)")
            with self.cond:
                signalled = prompt_id in self.finished
            if signalled or now >= next_poll:
                entry = self.client.history(prompt_id)
                if entry is not None and (entry.get("outputs") or (entry.get("status") or {}).get("completed")
                                          or (entry.get("status") or {}).get("status_str")):
                    return entry
                # websocket: poll rarely as a safety net; without it, poll at poll_interval
                next_poll = now + (max(poll_interval, 5.0) if self.alive and not signalled else poll_interval)
            with self.cond:
                self.cond.wait(timeout=min(poll_interval, max(0.0, next_poll - time.monotonic())) or 0.01)

    def close(self):
        self._stop = True
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass


# ----------------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------------

@dataclass
class ItemResult:
    key: str
    status: str = "pending"  # pending | running | done | failed
    server: Optional[str] = None
    prompt_id: Optional[str] = None
    outputs: List[dict] = field(default_factory=list)
    error: Optional[str] = None
    started: Optional[float] = None
    finished: Optional[float] = None
    attempts: List[dict] = field(default_factory=list)  # runs moved off a server that stopped answering


class Manifest:
    def __init__(self, out_dir: str, resume: bool = True):
        self.path = os.path.join(out_dir, MANIFEST)
        self.lock = threading.Lock()
        self.items: Dict[str, ItemResult] = {}
        if resume and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                for key, rec in (json.load(f).get("items") or {}).items():
                    self.items[key] = ItemResult(**{k: v for k, v in rec.items()
                                                    if k in ItemResult.__dataclass_fields__})

    def update(self, result: ItemResult):
        with self.lock:
            self.items[result.key] = copy.deepcopy(result)
            self._write()

    def _write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "items": {k: asdict(v) for k, v in self.items.items()}}, f, indent=1)
        os.replace(tmp, self.path)


# ----------------------------------------------------------------------------------------------------
# The batch
# ----------------------------------------------------------------------------------------------------

def build_prompt(workflow: dict, item: dict, sets: List[Setting], upload: Callable[[str], str]) -> dict:
    prompt = copy.deepcopy(workflow)
    for s in sets:
        node = prompt.get(s.node_id)
        if node is None:
            raise BatchError(f"--set {s.node_id}.{s.input}: node {s.node_id} is not in the workflow")
        inputs = node.setdefault("inputs", {})
        if s.kind == "literal":
            inputs[s.input] = cast_like(s.value, inputs.get(s.input))
            continue
        if s.value not in item or item[s.value] in (None, ""):
            raise BatchError(f"--set {s.node_id}.{s.input}: the item has no value in column '{s.value}'")
        if s.kind == "upload":
            path = item[s.value]
            if not os.path.isabs(path):
                path = os.path.join(item.get("_base_dir") or ".", path)
            if not os.path.isfile(path):
                raise BatchError(f"--set {s.node_id}.{s.input}: file {path} does not exist")
            inputs[s.input] = upload(path)
        else:
            inputs[s.input] = cast_like(item[s.value], inputs.get(s.input))
    return prompt


def _history_error(entry: dict) -> Optional[str]:
    status = entry.get("status") or {}
    for event, data in status.get("messages") or []:
        if event == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}): "
                    f"{data.get('exception_type', 'error')}: {data.get('exception_message')}")
        if event == "execution_interrupted":
            return "execution was interrupted on the server"
    if status.get("status_str") == "error":
        return "the server reported an execution error"
    return None


def _download(client: ComfyClient, entry: dict, dest: str) -> List[dict]:
    os.makedirs(dest, exist_ok=True)
    saved, used = [], set()
    for node_id, out in (entry.get("outputs") or {}).items():
        for kind, files in (out or {}).items():
            if not isinstance(files, list):
                continue
            for f in files:
                if not isinstance(f, dict) or "filename" not in f:
                    continue
                name = os.path.basename(f["filename"])
                if name in used:
                    name = f"{node_id}_{name}"
                used.add(name)
                data = client.view(f["filename"], f.get("subfolder", ""), f.get("type", "output"))
                with open(os.path.join(dest, name), "wb") as fh:
                    fh.write(data)
                saved.append({"node": node_id, "kind": kind, "filename": f["filename"],
                              "subfolder": f.get("subfolder", ""), "type": f.get("type", "output"),
                              "path": os.path.join(os.path.basename(dest), name)})
    return saved


class _Server:
    """One ComfyUI server of the batch: its client, its websocket watcher and whether it still answers."""

    def __init__(self, url: str, log: Callable):
        self.client = ComfyClient(url)
        self.url = self.client.server
        self.log = log
        self.alive = True
        self.watcher: Optional[Watcher] = None
        self.uploads: Dict[str, str] = {}
        self.lock = threading.Lock()

    def watch(self) -> Watcher:
        with self.lock:
            if self.watcher is None:
                self.watcher = Watcher(self.client, lambda m: self.log(f"[{self.url}] {m}"))
            return self.watcher

    def upload(self, path: str) -> str:
        with self.lock:
            if path in self.uploads:
                return self.uploads[path]
        name = self.client.upload_image(path)
        with self.lock:
            self.uploads[path] = name
        return name

    def close(self):
        if self.watcher is not None:
            self.watcher.close()


def run_batch(server, workflow: dict, items: List[dict], sets: List[Setting], out_dir: str,
              concurrency: int = 2, timeout: float = 600, log: Callable = print, resume: bool = True,
              poll_interval: float = 1.0) -> List[ItemResult]:
    """Run every item (see module doc) on one server URL or a list of them, `concurrency` prompts at a time on
    each; returns one ItemResult per item, in item order. Items already done in an existing manifest are
    returned as they are there and not rerun (resume=True)."""
    urls = [server] if isinstance(server, str) else list(server)
    if not urls:
        raise ValueError("SwapForge batch: no server given; pass --server URL (several times for several servers)")
    os.makedirs(out_dir, exist_ok=True)
    manifest = Manifest(out_dir, resume=resume)
    stop = threading.Event()
    keys = [item_key(it, i) for i, it in enumerate(items)]
    if len(set(keys)) != len(keys):
        raise ValueError("SwapForge batch: two items have the same key; give each a unique 'key' column")
    results: Dict[str, ItemResult] = {}
    todo: "queue.Queue" = queue.Queue()
    for key, item in zip(keys, items):
        prev = manifest.items.get(key)
        if prev is not None and prev.status == "done":
            results[key] = prev
        else:
            todo.put((key, item))
            results[key] = ItemResult(key)
    left = todo.qsize()
    skipped = len(items) - left
    if skipped:
        log(f"resume: {skipped} item(s) already done, {left} to run")
    for s in sets:  # configuration errors stop before anything is queued
        if s.node_id not in workflow:
            raise ValueError(f"--set {s.node_id}.{s.input}: node {s.node_id} is not in the workflow")
    servers = [_Server(u, log) for u in dict.fromkeys(urls)]
    state = {"left": left}
    state_lock = threading.Lock()

    def finish(res: ItemResult):
        res.finished = time.time()
        manifest.update(res)
        results[res.key] = res
        with state_lock:
            state["left"] -= 1
        if res.status == "done":
            log(f"{res.key}: done on {res.server} ({len(res.outputs)} output file(s))")
        else:
            log(f"{res.key}: {res.status}: {res.error}")

    def run_one(srv: _Server, key: str, item: dict) -> bool:
        """Run one item on srv; False when srv stopped answering (the item goes back to the queue)."""
        prev = results[key]
        res = ItemResult(key, status="running", server=srv.url, started=time.time(),
                         attempts=list(prev.attempts))
        manifest.update(res)
        try:
            try:
                prompt = build_prompt(workflow, item, sets, srv.upload)
                if stop.is_set():
                    raise BatchError("stopped by the user")
                res.prompt_id = srv.client.queue_prompt(prompt)
                manifest.update(res)
                try:
                    entry = srv.watch().wait(res.prompt_id, timeout, poll_interval, stop)
                except BatchError:
                    srv.client.cancel(res.prompt_id)
                    raise
                err = _history_error(entry)
                if err:
                    raise BatchError(err)
                res.outputs = _download(srv.client, entry, os.path.join(out_dir, key))
                res.status = "done"
            except urllib.error.HTTPError as e:
                raise BatchError(f"{srv.url} answered HTTP {e.code} {e.reason}") from None
            except NO_ANSWER as e:
                if srv.client.answers():
                    raise BatchError(f"{srv.url}: {type(e).__name__}: {e}") from None
                raise ServerDown(f"{type(e).__name__}: {e}") from None
        except ServerDown as e:
            if srv.alive:
                srv.alive = False
                log(f"{srv.url} stopped answering ({e}); its items go to the other servers")
            res.attempts.append({"server": srv.url, "prompt_id": res.prompt_id, "error": f"server stopped "
                                 f"answering: {e}", "at": time.time()})
            res.status, res.error, res.prompt_id, res.server = "pending", f"moved: {srv.url} stopped answering", None, None
            manifest.update(res)
            results[key] = res
            return False
        except (BatchError, OSError, ValueError, KeyError) as e:
            if stop.is_set():
                res.status, res.error = "pending", "interrupted by the user; rerun to resume"
            else:
                res.status = "failed"
                res.error = str(e) if isinstance(e, BatchError) else f"{type(e).__name__}: {e}"
        finish(res)
        return True

    def worker(srv: _Server):
        while not stop.is_set() and srv.alive:
            with state_lock:
                if state["left"] <= 0:
                    return
            try:
                key, item = todo.get(timeout=0.2)
            except queue.Empty:
                continue
            if not run_one(srv, key, item):
                todo.put((key, item))
                return

    threads = [threading.Thread(target=worker, args=(srv,), daemon=True)
               for srv in servers for _ in range(max(1, concurrency))] if left else []
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            if not any(srv.alive for srv in servers):
                break
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=timeout + 30)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        raise
    finally:
        for srv in servers:
            srv.close()
    while True:  # no server answers any more: what is left stays pending for a rerun
        try:
            key, _ = todo.get_nowait()
        except queue.Empty:
            break
        res = results[key]
        res.status = "pending"
        res.error = ("no server answered (" + ", ".join(srv.url for srv in servers) + "); rerun to resume")
        manifest.update(res)
        log(f"{key}: pending: {res.error}")
    return [results[k] for k in keys]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.batch_queue",
                                 description="Queue a workflow over a folder of images or a CSV.",
                                 epilog="--set syntax: NODE.INPUT={COLUMN} uploads that file; "
                                        "NODE.INPUT=COLUMN takes the column; NODE.INPUT==TEXT is literal.")
    ap.add_argument("--server", dest="servers", action="append", default=[], metavar="URL",
                    help="a ComfyUI server (default http://127.0.0.1:8188); give it several times to spread the "
                         "items over several servers")
    ap.add_argument("--workflow", required=True, help="API-format workflow (a UI-format file is converted)")
    ap.add_argument("--inputs", required=True, help="folder of images or CSV file")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE")
    ap.add_argument("--out", required=True)
    ap.add_argument("--concurrency", type=int, default=2, help="prompts at a time on each server")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--resume", dest="resume", action="store_true", default=True,
                    help="skip items done in OUTDIR/manifest.json (default)")
    ap.add_argument("--no-resume", dest="resume", action="store_false", help="rerun every item")
    ap.add_argument("--object-info", help="for converting a UI-format workflow")
    args = ap.parse_args(argv)
    try:
        sets = [Setting.parse(s) for s in args.sets]
        with open(args.workflow, encoding="utf-8") as f:
            workflow = json.load(f)
        if isinstance(workflow.get("nodes"), list):
            from .workflow_check import load_schemas, ui_to_api
            workflow = ui_to_api(workflow, load_schemas(args.object_info))
        items = load_items(args.inputs)
        results = run_batch(args.servers or ["http://127.0.0.1:8188"], workflow, items, sets, args.out,
                            args.concurrency, args.timeout, resume=args.resume)
    except KeyboardInterrupt:
        print("interrupted; the manifest is saved, rerun the same command to resume")
        return 130
    except (OSError, ValueError) as e:
        print(f"error: {e}")
        return 1
    failed = [r for r in results if r.status != "done"]
    print(f"{len(results) - len(failed)} done, {len(failed)} failed, manifest {os.path.join(args.out, MANIFEST)}")
    for r in failed:
        print(f"  {r.key}: {r.error}")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
