"""Synthetic test data: a 12-frame clip made from a still photo (no real face video ships in any package),
hand-built 68-point faces and smooth test frames.

The clip's stated synthetic motion, frame t = 0..11: rotation 1.5*sin(t/2) degrees about the image centre, shift
(3t - 15, 2*sin(t)) px, scale 1 + 0.01*t, brightness x (1 + 0.03*sin(t)). Frames in `no_face` are
replaced by flat grey (a cut to a shot without a face).
"""
import os

import cv2
import numpy as np
from PIL import Image

from models.face.align import kps5_from_landmarks68
from models.face.records import FrameFaces

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(os.path.join(DATA, name)).convert("RGB"), np.float32) / 255.0


def make_clip(name: str = "obama.jpg", frames: int = 12, no_face=(4, 9)) -> np.ndarray:
    img = photo(name)
    h, w = img.shape[:2]
    out = []
    for t in range(frames):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 1.5 * np.sin(t / 2), 1 + 0.01 * t)
        m[:, 2] += (3 * t - 15, 2 * np.sin(t))
        f = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        f = np.clip(f * (1 + 0.03 * np.sin(t)), 0, 1)
        if t in no_face:
            f = np.full_like(f, 0.5)
        out.append(f)
    return np.stack(out).astype(np.float32)


def unit_face() -> np.ndarray:
    """68 iBUG-ordered points of a frontal face in face units (eye line at y = -0.3, mouth at 0.5).

    Eye contours are symmetric hexagons centred at (-0.4, -0.3) and (0.4, -0.3); mouth corners (48, 54)
    at (-0.35, 0.5) and (0.35, 0.5); nose tip (30) at (0, 0.1)."""
    p = np.zeros((68, 2))
    t = np.linspace(0, np.pi, 17)  # jaw: from (-1, -0.2) down to the chin (0, 1) and up to (1, -0.2)
    p[0:17] = np.stack([-np.cos(t), -0.2 + 1.2 * np.sin(t)], 1)
    p[17:22] = np.stack([np.linspace(-0.8, -0.2, 5), np.full(5, -0.55)], 1)
    p[22:27] = np.stack([np.linspace(0.2, 0.8, 5), np.full(5, -0.55)], 1)
    p[27:31] = np.stack([np.zeros(4), np.linspace(-0.4, 0.1, 4)], 1)
    p[31:36] = np.stack([np.linspace(-0.2, 0.2, 5), np.full(5, 0.2)], 1)
    a = np.arange(6) * np.pi / 3
    hexagon = np.stack([0.12 * np.cos(a + np.pi), 0.06 * np.sin(a + np.pi)], 1)  # mean exactly zero
    p[36:42] = hexagon + [-0.4, -0.3]
    p[42:48] = hexagon + [0.4, -0.3]
    b = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    p[48:60] = np.stack([0.35 * np.cos(b), 0.5 - 0.12 * np.sin(b)], 1)
    c = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    p[60:68] = np.stack([0.25 * np.cos(c), 0.5 - 0.05 * np.sin(c)], 1)
    return p


def make_faces(lms, track_ids=None, interpolated=None) -> FrameFaces:
    lms = np.asarray(lms, np.float32).reshape(-1, 68, 2)
    boxes = np.concatenate([lms.min(1), lms.max(1)], 1)
    kps = np.stack([kps5_from_landmarks68(l) for l in lms]) if len(lms) else np.zeros((0, 5, 2))
    return FrameFaces(boxes, np.ones(len(lms)), kps, lms, track_ids, interpolated)


def smooth_frames(b, h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(b):
        ph = rng.uniform(0, 2 * np.pi, 3)
        out.append(np.stack([0.5 + 0.4 * np.sin(x / 23 + ph[0]) * np.cos(y / 31),
                             0.5 + 0.4 * np.cos(y / 19 + ph[1]),
                             0.5 + 0.3 * np.sin((x + y) / 29 + ph[2])], -1))
    return np.stack(out).astype(np.float32)
