"""Shared pytest fixtures for SwapForge tests."""
from __future__ import annotations

import functools
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DATA_DIR = os.path.join(ROOT, "tests", "data")
PHOTOS = ("obama", "obama2", "obama3", "biden", "grace_hopper", "astronaut")


@functools.lru_cache(maxsize=None)
def _load_photo(name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(os.path.join(DATA_DIR, f"{name}.jpg")) as im:
        arr = np.asarray(im.convert("RGB"), np.float32) / 255.0
    arr.setflags(write=False)
    return arr


@pytest.fixture(scope="session")
def photo():
    """photo(name) -> float32 [H, W, 3] 0..1 RGB of tests/data/<name>.jpg (a fresh copy each call)."""
    return lambda name: _load_photo(name).copy()


@pytest.fixture(scope="session")
def dlib_analyzer():
    """One dlib MMOD analyzer for the whole session (loading takes about 1 s). upsample 0, the nodes'
    default: every face in the bundled photos is 80 px or larger."""
    from models.face.detect import DlibAnalyzer

    return DlibAnalyzer("mmod", upsample=0)


@pytest.fixture(scope="session")
def photo_faces(photo, dlib_analyzer):
    """photo_faces(name) -> FrameFaces that dlib MMOD finds in the photo (no filtering), cached: MMOD
    takes about 1 s per 512 px photo on one CPU core, so each photo is detected once per session."""
    from models.face.detect import to_uint8

    @functools.lru_cache(maxsize=None)
    def get(name: str):
        return dlib_analyzer.detect(to_uint8(photo(name)))

    return get


CLIP = os.path.join(DATA_DIR, "lp_d6_talking.mp4")  # real talking head (LivePortrait, MIT; PROVENANCE.md)


@functools.lru_cache(maxsize=None)
def _load_clip(frames: int, size: int) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(CLIP)
    out = []
    while len(out) < frames:
        ok, fr = cap.read()
        if not ok:
            break
        out.append(cv2.resize(fr[..., ::-1], (size, size), interpolation=cv2.INTER_AREA))
    cap.release()
    arr = np.stack(out).astype(np.float32) / 255.0
    arr.setflags(write=False)
    return arr


@pytest.fixture(scope="session")
def talking_clip():
    """talking_clip(frames, size) -> float32 [T, size, size, 3]: the first frames of the bundled real clip."""
    return lambda frames=8, size=128: _load_clip(frames, size).copy()


@pytest.fixture(scope="module")
def N():
    """The pack's NODE_CLASS_MAPPINGS, loaded as ComfyUI loads it (tests/packloader.py)."""
    from packloader import load_pack

    return load_pack().NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def fm(N):
    """The Face Model Loader's dlib MMOD analyzer (upsample 0), as the node tests feed it to the nodes."""
    return N["SwapForge_FaceModelLoader"]().load("dlib_mmod (embedded)", 0)[0]
