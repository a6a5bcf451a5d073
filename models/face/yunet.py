"""YuNet face detection (Wu, Peng & Yu, "YuNet: A Tiny Millisecond-level Face Detector", 2023) on any frame size.

The network (OpenCV Zoo `face_detection_yunet_2023mar.onnx`, MIT, committed in models/face/weights with its
licence and provenance) runs through `cv2.FaceDetectorYN`, which releases Python's GIL while it runs. It
finds faces of about 10 to 300 px at its input scale, so a frame is searched on an image pyramid:

- level 0: the frame scaled (cv2.INTER_AREA) so that its long side is at most `detect_size` px;
- level k + 1: level k halved, while the level's long side stays at least MIN_LEVEL_SIDE, so faces too
  large for level 0 are found on a coarser level;
- a level larger than TILE_AREA pixels is searched in overlapping tiles (TILE px, TILE_OVERLAP px of
  overlap), with `poll()` (an interrupt check) called before each tile, so no single call runs long.

Detections are mapped back to frame pixels exactly: with pixel centres at integer coordinates
(records.py), a resize from W to w px maps x to (x + 0.5) * w / W - 0.5, so a level point x_l maps back
to x = (x_l + 0.5) * W / w - 0.5 (per axis). Duplicates across levels and tiles are removed greedily in
score order: a box is dropped when its IoU with a kept box exceeds NMS_IOU or when more than
NMS_CONTAIN of its own area lies inside a kept box (a face cut by a tile edge).

Outputs per frame: boxes [N, 4] (x0, y0, x1, y1), scores [N] in 0..1, kps5 [N, 5, 2] in the records.py
order (left eye, right eye, nose, left mouth corner, right mouth corner; left = smaller x).
"""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Callable, List, Optional, Tuple

import numpy as np

from .geometry import box_overlaps

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
YUNET_FILE = os.path.join(WEIGHTS_DIR, "face_detection_yunet_2023mar.onnx")
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"

MIN_LEVEL_SIDE = 256
TILE = 1024
TILE_OVERLAP = 256
TILE_AREA = 1600 * 1200
NMS_IOU = 0.3
NMS_CONTAIN = 0.6
# The network's own candidates are kept from this score (detect_faces' threshold filters further).
MIN_SCORE = 0.3

_checked_files = set()


def check_weights(path: str = YUNET_FILE) -> str:
    """The path of the YuNet file after checking that it exists and has the committed sha256."""
    if path in _checked_files:
        return path
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"SwapForge: the YuNet face detector file is missing (looked for {path}). It ships with the pack "
            f"(models/face/weights, MIT licence). Reinstall or update the pack, or pick a dlib backend.")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != YUNET_SHA256:
        raise ValueError(
            f"SwapForge: {path} is not the YuNet 2023mar model (sha256 {digest[:12]}..., expected "
            f"{YUNET_SHA256[:12]}...). Restore the file from the pack (models/face/weights/PROVENANCE.md).")
    _checked_files.add(path)
    return path


def suppress(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, contain: float = NMS_CONTAIN) -> np.ndarray:
    """Indices kept by greedy suppression in descending score order (see the module docstring)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: List[int] = []
    for i in order:
        if keep:
            o, c = box_overlaps(boxes[i:i + 1], boxes[keep])
            if (o > iou).any() or (c > contain).any():
                continue
        keep.append(int(i))
    return np.array(keep, np.int64)


def pyramid_levels(h: int, w: int, detect_size: int) -> List[Tuple[int, int]]:
    """(height, width) of each pyramid level for an h x w frame (module docstring)."""
    s = min(1.0, float(detect_size) / max(h, w))
    levels = [(max(1, int(round(h * s))), max(1, int(round(w * s))))]
    while True:
        lh, lw = levels[-1]
        nh, nw = int(round(lh / 2)), int(round(lw / 2))
        if max(nh, nw) < MIN_LEVEL_SIDE:
            break
        levels.append((nh, nw))
    return levels


def tiles(h: int, w: int) -> List[Tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) tiles covering an h x w level: one tile when h * w <= TILE_AREA, else TILE px tiles
    overlapping by TILE_OVERLAP px (the last tile of a row/column is aligned to the level's edge)."""
    if h * w <= TILE_AREA:
        return [(0, h, 0, w)]

    def starts(n):
        if n <= TILE:
            return [0]
        step = TILE - TILE_OVERLAP
        out = list(range(0, n - TILE, step))
        return out + [n - TILE]

    return [(y, min(y + TILE, h), x, min(x + TILE, w)) for y in starts(h) for x in starts(w)]


class YuNetDetector:
    """cv2.FaceDetectorYN on an image pyramid with tiling (see the module docstring).

    Args:
        detect_size: the long side (px) of pyramid level 0; larger frames are scaled down to it. Faces of
            about 10 px at that scale are found: 1280 finds faces of about 10-20 px in a 1280 px photo.
        min_score: the network's candidate threshold.
        poll: called before every network pass (at least once per tile); may raise to interrupt.
    """

    def __init__(self, detect_size: int = 1280, min_score: float = MIN_SCORE, path: str = YUNET_FILE,
                 poll: Optional[Callable[[], None]] = None):
        import cv2

        if not (isinstance(detect_size, (int, np.integer)) and 64 <= int(detect_size) <= 16384):
            raise ValueError(f"SwapForge: detect_size must be a whole number of pixels in 64..16384, got "
                             f"{detect_size!r}. 1280 finds faces down to about 20 px in a 1280 px photo.")
        self.detect_size = int(detect_size)
        self.min_score = float(min_score)
        self.poll = poll
        self._net = cv2.FaceDetectorYN.create(check_weights(path), "", (320, 320), self.min_score, NMS_IOU, 5000)
        self._lock = threading.Lock()

    def _run(self, bgr: np.ndarray) -> np.ndarray:
        """One network pass on a BGR uint8 image -> [K, 15] (x, y, w, h, 5 x (x, y), score)."""
        if self.poll is not None:
            self.poll()
        with self._lock:
            self._net.setInputSize((int(bgr.shape[1]), int(bgr.shape[0])))
            _, found = self._net.detect(np.ascontiguousarray(bgr))
        return np.zeros((0, 15), np.float32) if found is None else np.asarray(found, np.float32).reshape(-1, 15)

    def detect(self, image_u8: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 RGB [H, W, 3] -> (boxes [N, 4], scores [N], kps5 [N, 5, 2]) in frame pixels, best first."""
        import cv2

        img = np.asarray(image_u8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"SwapForge: YuNet needs one uint8 RGB frame [H, W, 3], got {img.dtype} {img.shape}.")
        h, w = img.shape[:2]
        bgr = img[..., ::-1]
        rows = []
        for lh, lw in pyramid_levels(h, w, self.detect_size):
            level = bgr if (lh, lw) == (h, w) else cv2.resize(bgr, (lw, lh), interpolation=cv2.INTER_AREA)
            sx, sy = w / lw, h / lh
            for y0, y1, x0, x1 in tiles(lh, lw):
                found = self._run(level[y0:y1, x0:x1])
                if len(found) == 0:
                    continue
                xy = found[:, :14].reshape(-1, 7, 2).astype(np.float64)
                xy[:, 1] += xy[:, 0]  # (x, y, w, h) -> corners (x0, y0), (x1, y1)
                xy += [x0, y0]
                xy = (xy + 0.5) * [sx, sy] - 0.5
                rows.append(np.concatenate([xy.reshape(-1, 14), found[:, 14:15]], axis=1))
        if not rows:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        allf = np.concatenate(rows)
        boxes = allf[:, :4]
        scores = allf[:, 14]
        keep = suppress(boxes, scores)
        allf = allf[keep]
        # YuNet's order: the subject's right eye (image left), left eye, nose, right and left mouth corners.
        kps = allf[:, 4:14].reshape(-1, 5, 2)
        kps = _order_left_right(kps)
        return allf[:, :4].astype(np.float32), allf[:, 14].astype(np.float32), kps.astype(np.float32)


def _order_left_right(kps: np.ndarray) -> np.ndarray:
    """Eyes and mouth corners ordered by x (records.py: "left" = smaller x in the image)."""
    k = kps.copy()
    for a, b in ((0, 1), (3, 4)):
        swap = k[:, a, 0] > k[:, b, 0]
        k[swap, a], k[swap, b] = kps[swap, b], kps[swap, a]
    return k
