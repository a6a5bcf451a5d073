"""Video tracking (models/face/video.py) on real talking-head clips, and the tracker ids through Track Faces.

Clips: tests/data/lp_d6_talking.mp4 (40 frames) and lp_d14_talking.mp4 (12 frames), 256 px cuts of the
LivePortrait example driving videos d6 and d14 (see tests/data/PROVENANCE.md).
"""
import os

import cv2
import numpy as np
import pytest
import torch

from models.face.detect import DlibAnalyzer, FaceAnalyzer, detect_faces
from models.face.records import FaceSet, FrameFaces
from models.face.track import track_faces
from models.face.video import track_video

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def read_clip(name):
    cap = cv2.VideoCapture(os.path.join(DATA, name))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1].astype(np.float32) / 255.0)
    return np.stack(frames)


@pytest.fixture(scope="module")
def analyzer():
    return DlibAnalyzer("yunet")


@pytest.fixture(scope="module")
def d6():
    return read_clip("lp_d6_talking.mp4")


@pytest.fixture(scope="module")
def d6_reference(analyzer, d6):
    return detect_faces(analyzer, d6)


def iod(lm):
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def deviation(a: FrameFaces, b: FrameFaces) -> float:
    return float(np.linalg.norm(a.landmarks68[0] - b.landmarks68[0], axis=1).mean() / iod(b.landmarks68[0]))


def test_tracking_a_real_talking_head_matches_per_frame_detection_within_003_iod(analyzer, d6, d6_reference):
    assert d6.shape == (40, 256, 256, 3)
    stats = {}
    fs = track_video(analyzer, d6, stats=stats)
    assert len(fs) == 40 and fs.counts() == [1] * 40 == d6_reference.counts()
    assert {int(ff.track_ids[0]) for ff in fs.frames} == {0}
    assert stats["keyframes"] == list(range(0, 40, 5))  # detector every 5th frame, nothing else triggered
    devs = [deviation(a, b) for a, b in zip(fs.frames, d6_reference.frames)]
    assert max(devs[k] for k in stats["keyframes"]) < 1e-6  # keyframes are detections
    assert np.mean(devs) <= 0.03, f"mean deviation {np.mean(devs):.4f} inter-ocular distances"
    # followed frames keep the detector's box convention
    for a, b in zip(fs.frames, d6_reference.frames):
        ab, bb = a.boxes[0], b.boxes[0]
        inter = max(0, min(ab[2], bb[2]) - max(ab[0], bb[0])) * max(0, min(ab[3], bb[3]) - max(ab[1], bb[1]))
        union = (ab[2] - ab[0]) * (ab[3] - ab[1]) + (bb[2] - bb[0]) * (bb[3] - bb[1]) - inter
        assert inter / union > 0.7


def test_a_cut_to_another_clip_is_detected_and_starts_a_new_id(analyzer, d6):
    other = read_clip("lp_d14_talking.mp4")
    clip = np.concatenate([d6[:10], other])
    stats = {}
    fs = track_video(analyzer, clip, stats=stats)
    assert stats["reasons"][10] == "cut"
    assert [int(ff.track_ids[0]) for ff in fs.frames] == [0] * 10 + [1] * len(other)


def test_an_occluded_face_is_lost_redetected_and_gets_its_id_back(analyzer, d6, d6_reference):
    clip = d6[:20].copy()
    for t in (8, 9):  # the face covered by a patch of the frame's own mean colour
        x0, y0, x1, y1 = d6_reference.frames[t].boxes[0].astype(int)
        clip[t, max(y0, 0):y1, max(x0, 0):x1] = clip[t].mean((0, 1))
    stats = {}
    fs = track_video(analyzer, clip, stats=stats)
    assert fs.counts()[8:10] == [0, 0] and fs.counts()[:8] == [1] * 8 and fs.counts()[10:] == [1] * 10
    assert stats["reasons"][8] in ("lost", "motion") and stats["reasons"][10] in ("no face", "motion")
    assert {int(ff.track_ids[0]) for ff in fs.frames if len(ff)} == {0}


def test_streamed_frames_give_what_the_array_gives(analyzer, d6):
    a = track_video(analyzer, d6[:12])
    b = track_video(analyzer, (f for f in (d6[:12] * 255 + 0.5).astype(np.uint8)))
    for x, y in zip(a.frames, b.frames):
        np.testing.assert_array_equal(x.landmarks68, y.landmarks68)
        np.testing.assert_array_equal(x.track_ids, y.track_ids)


def test_progress_is_called_per_frame_and_can_interrupt(analyzer, d6):
    calls = []

    def progress():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_video(analyzer, d6, progress=progress)
    assert len(calls) == 3


class PerFrame(FaceAnalyzer):
    """An analyzer without dlib's predictor (like insightface): fixed faces moving right 2 px a frame."""

    name = "stub"

    def __init__(self):
        self.t = 0

    def detect(self, image_u8):
        x = 10 + 2 * self.t
        self.t += 1
        lm = np.tile([[x + 20.0, 30.0]], (68, 1))
        return FrameFaces([[x, 10, x + 40, 50], [100, 10, 140, 50]], [0.9, 0.8], np.zeros((2, 5, 2)),
                          np.stack([lm, lm + [90, 0]]))


def test_an_analyzer_without_the_predictor_is_run_on_every_frame_with_ids():
    stats = {}
    fs = track_video(PerFrame(), np.zeros((4, 64, 160, 3), np.float32), order="left_to_right", stats=stats)
    assert stats["keyframes"] == [0, 1, 2, 3]
    assert [ff.track_ids.tolist() for ff in fs.frames] == [[0, 1]] * 4
    assert fs.frames[3].boxes[0, 0] == 16


def test_bad_settings_are_refused(analyzer, d6):
    with pytest.raises(ValueError, match="threshold"):
        track_video(analyzer, d6[:2], threshold=float("nan"))
    with pytest.raises(ValueError, match="keyframe_interval"):
        track_video(analyzer, d6[:2], keyframe_interval=0)
    with pytest.raises(ValueError, match="one size"):
        track_video(analyzer, [d6[0], d6[1, :100]])
    with pytest.raises(ValueError, match="no frames"):
        track_video(analyzer, [])


# ------------------------------------------------------------------------------- Track Faces and ids

def faces_with_ids(entries, n):
    """FaceSet of n frames from {frame: [(track id, x0), ...]}: 20 px boxes at y 0, points inside."""
    frames = []
    for t in range(n):
        items = entries.get(t, [])
        boxes = [[x, 0, x + 20, 20] for _, x in items]
        lm = [np.tile([[x + 10.0, 10.0]], (68, 1)) for _, x in items]
        frames.append(FrameFaces(boxes, [0.9] * len(items), np.zeros((len(items), 5, 2)), lm,
                                 [i for i, _ in items]))
    return FaceSet(frames, (20, 200))


def test_track_faces_keeps_the_trackers_ids_and_fills_their_gaps():
    # id 7 jumps 100 px between frames 1 and 3 (box overlap would start a new track); id 3 appears in frame 2
    fs = faces_with_ids({0: [(7, 0)], 1: [(7, 2)], 2: [(3, 50)], 3: [(7, 102)]}, 4)
    kept, report = track_faces(fs, max_gap=2, smoothing=0.0)
    assert [ff.track_ids.tolist() for ff in kept.frames] == [[7], [7], [3, 7], [7]]
    filled = kept.frames[2]
    assert filled.interpolated.tolist() == [False, True]
    assert filled.boxes[1, 0] == pytest.approx(52.0)  # halfway between x0 = 2 (frame 1) and 102 (frame 3)
    assert "ids kept" in report
    again, _ = track_faces(fs, max_gap=2, smoothing=0.0, keep_ids=False)
    assert [ff.track_ids.tolist() for ff in again.frames] == [[0], [0], [1], [2]]


def test_detect_faces_node_tracks_video_batches_and_refuses_nan_thresholds(d6):
    from packloader import load_pack

    n = load_pack().NODE_CLASS_MAPPINGS
    fm = n["SwapForge_FaceModelLoader"]().load("yunet (embedded)", 0)[0]
    clip = torch.from_numpy(d6[:12])
    faces, preview, counts, report = n["SwapForge_DetectFaces"]().detect(fm, clip, 0.5, 0, 0, "largest_first")
    assert counts == [1] * 12 and all(int(ff.track_ids[0]) == 0 for ff in faces.frames)
    lines = report.splitlines()
    assert lines[0] == "frame 0: 1 face(s), detected (start)" and lines[1] == "frame 1: 1 face(s), tracked"
    assert lines[-1].startswith("video: 12 frames, detector ran on 3")
    every, _, _, rep2 = n["SwapForge_DetectFaces"]().detect(fm, clip, 0.5, 0, 0, "largest_first",
                                                            "detect every frame")
    assert all(int(ff.track_ids[0]) == -1 for ff in every.frames) and "tracked" not in rep2
    tracked, rep3 = n["SwapForge_TrackFaces"]().track(faces, 0.3, 5, 0.5)
    assert all(int(ff.track_ids[0]) == 0 for ff in tracked.frames) and "ids kept" in rep3
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="threshold.*not a finite number"):
            n["SwapForge_DetectFaces"]().detect(fm, clip[:1], bad, 0, 0, "largest_first")
    with pytest.raises(ValueError, match="smoothing.*not a finite number"):
        n["SwapForge_TrackFaces"]().track(faces, 0.3, 5, float("nan"))
