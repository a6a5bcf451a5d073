"""The embedded default detector (YuNet + dlib's 68 points), dlib detectors in a worker process, large
frames, small faces, and responsiveness (no long GIL holds, interrupts within a second)."""
import hashlib
import os
import shutil
import threading
import time

import cv2
import numpy as np
import pytest

from models.face import landmarks as lmk
from models.face.geometry import box_overlaps
from models.face import yunet
from models.face.detect import DlibAnalyzer, detect_faces, load_analyzer, scaled_for_detection, to_uint8

PHOTOS = ("obama", "obama2", "obama3", "biden", "grace_hopper", "astronaut")


@pytest.fixture(scope="module")
def yunet_analyzer():
    return DlibAnalyzer("yunet")


def iod(lm):
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


# ------------------------------------------------------------------------------------------ weights

def test_yunet_file_ships_with_its_licence_and_the_committed_sha256(tmp_path):
    with open(yunet.YUNET_FILE, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == yunet.YUNET_SHA256
    assert yunet.YUNET_SHA256.startswith("8f2383e4")
    licence = open(os.path.join(yunet.WEIGHTS_DIR, "LICENSE-YuNet.txt")).read()
    assert "MIT License" in licence and "Shiqi Yu" in licence
    assert yunet.YUNET_SHA256 in open(os.path.join(yunet.WEIGHTS_DIR, "PROVENANCE.md")).read()
    bad = tmp_path / "face_detection_yunet_2023mar.onnx"
    shutil.copy(yunet.YUNET_FILE, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="not the YuNet 2023mar model"):
        yunet.check_weights(str(bad))
    with pytest.raises(FileNotFoundError, match="ships with the pack"):
        yunet.check_weights(str(tmp_path / "missing.onnx"))


# --------------------------------------------------------------------------------- box mappings

def test_predictor_rect_follows_the_formula_and_turns_with_the_face():
    # upright face: eyes 40 px apart at y=100, mouth corners 50 px lower -> S = 40 + 50 = 90
    k = np.array([[80, 100], [120, 100], [100, 125], [85, 150], [115, 150]], np.float64)
    a, b, kk = lmk.RECT_FROM_KPS5
    cx, cy, half = 100 + a * 90, 100 + b * 90, 0.5 * kk * 90
    np.testing.assert_allclose(lmk.predictor_rect(k), [cx - half, cy - half, cx + half, cy + half], atol=1e-9)
    # the same face turned 90 degrees (clockwise in the image): the centre offset turns with it
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    k90 = (k - [100, 100]) @ rot.T + [100, 100]
    r90 = lmk.predictor_rect(k90)
    off = np.array([a * 90, b * 90]) @ rot.T
    np.testing.assert_allclose(0.5 * (r90[:2] + r90[2:]), [100 + off[0], 100 + off[1]], atol=1e-9)
    np.testing.assert_allclose(r90[2] - r90[0], 2 * half, atol=1e-9)


def test_scaled_for_detection_maps_pixel_centres_back_exactly():
    img = np.zeros((3000, 4000, 3), np.uint8)
    small, sx, sy = scaled_for_detection(img, 1280)
    assert small.shape == (960, 1280, 3) and sx == pytest.approx(3.125) and sy == pytest.approx(3.125)
    # a bright 25x25 square: its centre maps back to where it is in the large frame
    img[1000:1025, 2000:2025] = 255
    small, sx, sy = scaled_for_detection(img, 1280)
    ys, xs = np.nonzero(small[..., 0] > 0)
    w = small[ys, xs, 0].astype(np.float64)
    cx, cy = (xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()
    assert (cx + 0.5) * sx - 0.5 == pytest.approx(2012.0, abs=0.3)
    assert (cy + 0.5) * sy - 0.5 == pytest.approx(1012.0, abs=0.3)
    same, sx1, sy1 = scaled_for_detection(img[:500, :600], 1280)
    assert same.shape == (500, 600, 3) and sx1 == sy1 == 1.0


def test_suppress_drops_overlapping_and_contained_boxes_in_score_order():
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [10, 10, 60, 90], [200, 0, 260, 60]], np.float64)
    scores = np.array([0.8, 0.9, 0.95, 0.7])
    # 2 is best; 1 overlaps 2 by IoU 0.36 > 0.3 -> dropped; 0 is dropped too; 3 stays
    assert yunet.suppress(boxes, scores).tolist() == [2, 3]
    assert yunet.suppress(boxes[[0, 3]], scores[[0, 3]]).tolist() == [0, 1]


# ----------------------------------------------------------------------------------- real photos

@pytest.mark.parametrize("name", PHOTOS)
def test_yunet_landmarks_agree_with_mmod_box_landmarks(photo, photo_faces, yunet_analyzer, name):
    """The calibrated box mapping (landmarks.py) keeps the 68 points where the MMOD box puts them."""
    ref = photo_faces(name)
    got = yunet_analyzer.detect(to_uint8(photo(name)))
    assert len(got) == 1 and len(ref) == 1
    assert got.scores[0] > 0.9
    dev = np.linalg.norm(got.landmarks68[0] - ref.landmarks68[0], axis=1).mean() / iod(ref.landmarks68[0])
    assert dev < 0.05  # measured 0.009-0.035 on these photos
    np.testing.assert_allclose(got.kps5[0], lmk.kps5_from_landmarks68(got.landmarks68[0]))


def _group_canvas(photo, analyzer):
    """A 1280 px wide canvas with the six bundled faces pasted twice at sizes 14-120 px (face box width),
    and the expected face boxes: each photo's own YuNet box, scaled and moved with its crop."""
    crops = []
    for name in PHOTOS:
        img = to_uint8(photo(name))
        b = analyzer.detect(img).boxes[0]
        cx, cy, r = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) * 1.1
        x0, y0 = int(max(cx - r, 0)), int(max(cy - r, 0))
        x1, y1 = int(min(cx + r, img.shape[1])), int(min(cy + r, img.shape[0]))
        crops.append((img[y0:y1, x0:x1], b - [x0, y0, x0, y0]))
    canvas = np.full((800, 1280, 3), 200, np.uint8)
    expected = []
    x = y = 10
    row_h = 0
    for i, size in enumerate([14, 16, 18, 20, 24, 28, 32, 40, 48, 64, 80, 120] * 2):
        c, b = crops[i % 6]
        s = size / (b[2] - b[0])
        q = cv2.resize(c, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        if x + q.shape[1] > 1270:
            x, y, row_h = 10, y + row_h + 10, 0
        canvas[y:y + q.shape[0], x:x + q.shape[1]] = q
        expected.append(b * s + [x, y, x, y])
        x += q.shape[1] + 10
        row_h = max(row_h, q.shape[0])
    return canvas[:y + row_h + 10], np.array(expected)


def test_default_detector_finds_every_face_from_14_px_in_a_1280_px_group_photo_and_no_other(photo, yunet_analyzer):
    canvas, expected = _group_canvas(photo, yunet_analyzer)
    fs = detect_faces(yunet_analyzer, canvas[None].astype(np.float32) / 255.0, min_size=0)
    found = fs.frames[0]
    iou, _ = box_overlaps(expected, found.boxes)
    assert (iou.max(1) > 0.4).all(), f"missed faces of {np.round(expected[iou.max(1) <= 0.4, 2] - expected[iou.max(1) <= 0.4, 0])} px"
    assert len(found) == len(expected)  # no false faces, no duplicates


def test_large_frame_is_detected_at_detect_size_and_landmarks_land_on_the_full_frame(photo, yunet_analyzer):
    small = to_uint8(photo("obama"))
    ref = yunet_analyzer.detect(small)
    big = cv2.resize(small, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    a = DlibAnalyzer("yunet", detect_size=512)
    got = a.detect(big)
    assert len(got) == 1
    # pixel centres: x_small = (x_big + 0.5) / 4 - 0.5
    back = (got.landmarks68[0] + 0.5) / 4 - 0.5
    assert np.abs(back - ref.landmarks68[0]).mean() < 1.0
    assert np.abs((got.boxes[0] + 0.5) / 4 - 0.5 - ref.boxes[0]).max() < 4.0


def test_mmod_in_a_worker_process_gives_the_in_process_detections(photo, photo_faces):
    w = load_analyzer("dlib_mmod (embedded)", [], upsample=0)
    assert w._proc is not None
    try:
        got = w.detect(to_uint8(photo("biden")))
    finally:
        w.close()
    ref = photo_faces("biden")
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-6)
    np.testing.assert_array_equal(got.landmarks68, ref.landmarks68)


# ------------------------------------------------------------------------------------ responsiveness

class Heartbeat:
    """A thread that wakes every 10 ms and records the longest gap between its wake-ups."""

    def __enter__(self):
        self.stop = threading.Event()
        self.max_gap = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        last = time.perf_counter()
        while not self.stop.is_set():
            time.sleep(0.01)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _big_frame(photo):
    return cv2.resize(photo("obama"), (4000, 3000), interpolation=cv2.INTER_LINEAR)[None]


def test_default_detection_of_a_4000x3000_frame_never_stops_other_threads(photo, yunet_analyzer):
    big = _big_frame(photo)
    with Heartbeat() as hb:
        fs = detect_faces(yunet_analyzer, big)
    assert fs.counts() == [1]
    assert hb.max_gap < 0.25, f"another thread waited {hb.max_gap:.3f} s"


def test_mmod_on_a_4000x3000_frame_keeps_threads_running_and_stops_within_a_second_of_an_interrupt(photo):
    big = _big_frame(photo)
    asked = {}

    def poll():
        if "at" in asked and time.perf_counter() >= asked["at"]:
            raise KeyboardInterrupt("cancelled")

    a = load_analyzer("dlib_mmod", [], upsample=0, poll=poll)
    a.detect(to_uint8(photo("obama"))[:64, :64])  # start the worker
    asked["at"] = time.perf_counter() + 0.5  # MMOD needs many seconds on this frame
    with Heartbeat() as hb, pytest.raises(KeyboardInterrupt):
        detect_faces(a, big)
    took = time.perf_counter() - asked["at"]
    assert took < 1.0, f"the interrupt took {took:.2f} s"
    assert hb.max_gap < 0.25
    asked.clear()
    assert len(a.detect(to_uint8(photo("obama")))) == 1  # a fresh worker after the interrupt
    a.close()


def test_a_dead_worker_is_reported_with_what_to_do(photo, monkeypatch):
    a = load_analyzer("dlib_hog", [], upsample=0)
    monkeypatch.setattr(a._proc, "cnn_path", "")
    monkeypatch.setattr(a._proc, "detector", "mmod")  # the child cannot load a CNN from ""
    with pytest.raises(RuntimeError, match="(?s)stopped unexpectedly.*Unable to open.*pick the yunet backend"):
        a.detect(to_uint8(photo("obama")))
    a.close()
