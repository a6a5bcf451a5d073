"""Tracking on synthetic FaceSets: stable ids, gap filling, zero-lag smoothing, report."""
import numpy as np
import pytest

from models.face.records import FaceSet, FrameFaces
from models.face.track import iou_matrix, track_faces, zero_lag_ema

REL5 = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
REL68 = np.stack([np.linspace(0.05, 0.95, 68), np.linspace(0.1, 0.9, 68) ** 2], 1)


def face_at(box, score=0.9):
    """Geometry of one face from its box: kps5 and landmarks68 at fixed relative places in the box."""
    box = np.asarray(box, np.float64)
    wh = box[2:] - box[:2]
    return box, score, box[:2] + REL5 * wh, box[:2] + REL68 * wh


def frame(*faces):
    if not faces:
        return FrameFaces.empty()
    return FrameFaces(np.stack([f[0] for f in faces]), np.array([f[1] for f in faces]),
                      np.stack([f[2] for f in faces]), np.stack([f[3] for f in faces]))


def crossing_scene(n=12, drop=(5, 0)):
    """Face A moves right and face B left at 25 px/frame, 30 px apart vertically, crossing mid-clip.
    In frame drop[0] the detector misses the face listed at index drop[1]. Detection order alternates."""
    frames = []
    for t in range(n):
        a = face_at([20 + 25 * t, 100, 120 + 25 * t, 200])
        b = face_at([320 - 25 * t, 130, 420 - 25 * t, 230], 0.8)
        faces = [a, b] if t % 2 == 0 else [b, a]
        if t == drop[0]:
            faces = [f for f in faces if f is not (a, b)[drop[1]]]
        frames.append(frame(*faces))
    return FaceSet(frames, (400, 600), "test")


def test_iou_matrix_matches_hand_values():
    iou = iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0]])


def test_crossing_faces_keep_their_ids_and_dropped_frame_is_linearly_filled():
    fs = crossing_scene()
    ticks = []
    out, report = track_faces(fs, smoothing=0.0, progress=lambda: ticks.append(1))
    assert len(ticks) == 12 and len(out) == 12 and out.backend == "test"
    assert out.counts() == [2] * 12
    for t, f in enumerate(out.frames):
        assert f.track_ids.tolist() == [0, 1]  # ordered by track id in every frame
        np.testing.assert_allclose(f.boxes[0], [20 + 25 * t, 100, 120 + 25 * t, 200], atol=1e-4)
        np.testing.assert_allclose(f.boxes[1], [320 - 25 * t, 130, 420 - 25 * t, 230], atol=1e-4)
    filled = out.frames[5]
    assert filled.interpolated.tolist() == [True, False] and filled.scores[0] == 0.0
    # independent reference: the midpoint of frames 4 and 6 of face A
    a4, a6 = face_at([120, 100, 220, 200]), face_at([170, 100, 270, 200])
    np.testing.assert_allclose(filled.kps5[0], (a4[2] + a6[2]) / 2, atol=1e-4)
    np.testing.assert_allclose(filled.landmarks68[0], (a4[3] + a6[3]) / 2, atol=1e-4)
    assert sum(int(f.interpolated.sum()) for f in out.frames) == 1
    assert "tracks: 2" in report and "track 0: frames 0-11 (12 frames, 1 interpolated)" in report
    assert "track 1: frames 0-11 (12 frames, 0 interpolated)" in report and "frames with no face: 0" in report


def test_gap_filling_is_linear_over_several_missing_frames():
    boxes = {0: [0, 0, 100, 100], 1: [10, 0, 110, 100], 4: [40, 6, 140, 106]}
    fs = FaceSet([frame(face_at(boxes[t])) if t in boxes else frame() for t in range(5)], (300, 300))
    out, _ = track_faces(fs, max_gap=2, smoothing=0.0)
    assert out.counts() == [1] * 5 and set(out.frames[2].track_ids.tolist()) == {0}
    np.testing.assert_allclose(out.frames[2].boxes[0], [20, 2, 120, 102], atol=1e-4)
    np.testing.assert_allclose(out.frames[3].boxes[0], [30, 4, 130, 104], atol=1e-4)
    assert [bool(f.interpolated[0]) for f in out.frames] == [False, False, True, True, False]


def test_fast_face_across_a_dropped_frame_needs_velocity_prediction():
    # 40 px/frame with 100 px boxes: across the dropped frame the raw boxes overlap by IoU 20/180 < 0.3,
    # only the constant-velocity prediction keeps the track.
    fs = FaceSet([frame(face_at([40 * t, 50, 40 * t + 100, 150])) if t != 3 else frame() for t in range(7)],
                 (300, 500))
    assert iou_matrix([[80, 50, 180, 150]], [[160, 50, 260, 150]])[0, 0] < 0.3
    out, report = track_faces(fs, smoothing=0.0)
    assert {int(i) for f in out.frames for i in f.track_ids} == {0}
    assert out.frames[3].interpolated.tolist() == [True]
    np.testing.assert_allclose(out.frames[3].boxes[0], [120, 50, 220, 150], atol=1e-4)


def test_gap_longer_than_max_gap_starts_a_new_track():
    fs = FaceSet([frame(face_at([0, 0, 100, 100])) if t in (0, 1, 5) else frame() for t in range(6)], (200, 200))
    out, report = track_faces(fs, max_gap=2, smoothing=0.0)
    assert [f.track_ids.tolist() for f in out.frames] == [[0], [0], [], [], [], [1]]
    assert "tracks: 2" in report and "frames with no face: 3 (2, 3, 4)" in report
    out, _ = track_faces(fs, max_gap=3, smoothing=0.0)
    assert [f.track_ids.tolist() for f in out.frames] == [[0]] * 6


def test_smoothing_reduces_jitter_of_a_noisy_still_face():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 3.0, size=(60, 4))
    fs = FaceSet([frame(face_at(np.array([100, 100, 200, 200]) + noise[t])) for t in range(60)], (400, 400))
    out, _ = track_faces(fs, smoothing=0.8)
    before = np.stack([f.boxes[0] for f in fs.frames])
    after = np.stack([f.boxes[0] for f in out.frames])
    assert after.std(0).max() < 0.5 * before.std(0).min()
    kb = np.stack([f.kps5[0] for f in fs.frames]).std(0).mean()
    ka = np.stack([f.kps5[0] for f in out.frames]).std(0).mean()
    assert ka < 0.5 * kb
    # the mean position is kept
    np.testing.assert_allclose(after.mean(0), before.mean(0), atol=0.5)


def test_smoothing_leaves_a_linear_trajectory_unchanged():
    fs = FaceSet([frame(face_at([10 + 7.5 * t, 20 + 2 * t, 110 + 8 * t, 120 + 2.5 * t])) for t in range(30)],
                 (500, 500))
    for s in (0.5, 0.9):
        out, _ = track_faces(fs, smoothing=s)
        for a, b in zip(fs.frames, out.frames):
            np.testing.assert_allclose(b.boxes, a.boxes, atol=0.02)
            np.testing.assert_allclose(b.landmarks68, a.landmarks68, atol=0.02)


def test_no_smoothing_returns_detections_unchanged():
    fs = crossing_scene(drop=(-1, 0))
    out, _ = track_faces(fs, smoothing=0.0)
    for a, b in zip(fs.frames, out.frames):
        order = np.argsort(a.boxes[:, 1])  # A (y0 = 100) is track 0
        np.testing.assert_array_equal(b.boxes, a.boxes[order])
        np.testing.assert_array_equal(b.scores, a.scores[order])


def test_zero_lag_ema_matches_scipy_filtfilt_away_from_the_ends():
    from scipy.signal import filtfilt

    x = np.random.default_rng(2).normal(size=(400, 3))
    s = 0.6
    ref = filtfilt([1 - s], [1, -s], x, axis=0)
    np.testing.assert_allclose(zero_lag_ema(x, s)[100:300], ref[100:300], atol=1e-6)
    np.testing.assert_array_equal(zero_lag_ema(x, 0.0), x)


def test_track_faces_rejects_bad_settings_and_propagates_interrupts():
    fs = crossing_scene()
    with pytest.raises(ValueError, match="smoothing"):
        track_faces(fs, smoothing=1.0)
    with pytest.raises(ValueError, match="max_gap"):
        track_faces(fs, max_gap=-1)

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_faces(fs, progress=stop)
