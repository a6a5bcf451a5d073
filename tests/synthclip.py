"""A 12-frame test clip made from a still photo (no real face video ships in any package).

Stated synthetic motion, frame t = 0..11: rotation 1.5*sin(t/2) degrees about the image centre, shift
(3t - 15, 2*sin(t)) px, scale 1 + 0.01*t, brightness x (1 + 0.03*sin(t)). Frames in `no_face` are
replaced by flat grey (a cut to a shot without a face).
"""
import os

import cv2
import numpy as np
from PIL import Image

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
