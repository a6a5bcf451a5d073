"""One person across the frames of a video: after Track Faces, Face Swap, FuseAnyPart and the GSwap Body Tracker
follow the face with a track id (identity.person_per_frame), not whichever face sorts first in each frame;
untracked sets keep the per-frame index (the documented rule)."""
import sys

import numpy as np
import pytest
import torch

from models.face.identity import is_tracked, person_per_frame
from models.face.records import FaceSet, FrameFaces, PartBoxes, PartSet
from packloader import load_pack


def _frame(*faces):
    if not faces:
        return FrameFaces.empty()
    return FrameFaces([f["box"] for f in faces], [1.0] * len(faces), [f["kps"] for f in faces],
                      [f["lm"] for f in faces], [f["track"] for f in faces])


@pytest.fixture(scope="module")
def video(photo, photo_faces):
    """Two people side by side (obama.jpg twice: A left, track 0; B right, track 1) over 4 frames: frame 0 A
    then B; frame 1 B sorts first; frame 2 A is gone; frame 3 nobody."""
    img = photo("obama")
    h, w = img.shape[:2]
    det = photo_faces("obama")
    shift = np.array([w, 0], np.float32)
    A = dict(box=det.boxes[0], kps=det.kps5[0], lm=det.landmarks68[0], track=0)
    B = dict(box=det.boxes[0] + np.array([w, 0, w, 0], np.float32), kps=det.kps5[0] + shift,
             lm=det.landmarks68[0] + shift, track=1)
    faces = FaceSet([_frame(A, B), _frame(B, A), _frame(B), _frame()], (h, 2 * w))
    frames = np.stack([np.concatenate([img, img], 1)] * 4)
    return frames, faces, A, B


def test_tracked_sets_follow_the_track_id_untracked_sets_keep_the_per_frame_index(video):
    _, TRACKED, _, _ = video
    assert is_tracked(TRACKED)
    assert person_per_frame(TRACKED, 0) == [0, 1, None, None]
    assert person_per_frame(TRACKED, 1) == [1, 0, 0, None]
    untracked = FaceSet([f.take(list(range(len(f)))) for f in TRACKED.frames], TRACKED.frame_size)
    for f in untracked.frames:
        f.track_ids[:] = -1
    assert not is_tracked(untracked)
    assert person_per_frame(untracked, 0) == [0, 0, 0, None]      # whoever sorts first: the documented rule
    only_b = TRACKED.with_frames([f.take([i for i in range(len(f)) if f.track_ids[i] == 1]) for f in TRACKED.frames])
    assert person_per_frame(only_b, 0) == [0, 0, 0, None]         # Select Faces kept track 1: it is person 0
    assert person_per_frame(only_b, 1) == [None] * 4
    with pytest.raises(ValueError):
        person_per_frame(TRACKED, -1)


def test_part_sets_carry_the_track_ids_of_their_faces(video):
    from models.partswap import parts

    _, faces, _, _ = video
    ps = parts.compute_parts(faces)
    assert [t.tolist() for t in ps.track_ids] == [[0, 1], [1, 0], [1], []]
    assert person_per_frame(ps, 0) == [0, 1, None, None]


def test_face_swap_swaps_the_tracked_person_in_every_frame(video, monkeypatch):
    from models.styleswap import swapper as sw
    from test_swapper import tiny_swapper

    frames, TRACKED, A, _ = video
    seen = []
    real = sw.align.align_crop

    def spy(images, faceset, *a, **k):
        seen.extend([(f.boxes[0, 0] if len(f) else None) for f in faceset.frames])
        return real(images, faceset, *a, **k)

    monkeypatch.setattr(sw.align, "align_crop", spy)
    res = sw.swap_faces(tiny_swapper(), torch.zeros(1, 8, 32), frames, TRACKED, face_index=0, crop_size=64,
                        frames_per_chunk=2)
    assert seen == [A["box"][0], A["box"][0], None, None]          # A's box (the left copy) in frames 0 and 1
    assert [c.track_id for c in res.cropset.crops if c.valid] == [0, 0]
    assert "track #0" in res.status[1] and "no track #0" in res.status[2]
    assert np.array_equal(res.frames[2], frames[2]) and np.array_equal(res.frames[3], frames[3])


def test_fuseanypart_takes_the_target_boxes_of_the_tracked_person():
    nodes = sys.modules.get("swapforge.nodes.fuseanypart") or (load_pack(), sys.modules["swapforge.nodes.fuseanypart"])[1]
    a = PartBoxes(eyes=[0.1, 0.1, 0.2, 0.4], nose=[0.2, 0.1, 0.3, 0.4], mouth=[0.3, 0.1, 0.4, 0.4])
    b = PartBoxes(eyes=[0.1, 0.6, 0.2, 0.9], nose=[0.2, 0.6, 0.3, 0.9], mouth=[0.3, 0.6, 0.4, 0.9])
    ps = PartSet([[a, b], [b, a]], (64, 64), track_ids=[np.array([0, 1]), np.array([1, 0])])
    got = nodes._boxes_of(ps, 0, "target")
    assert [np.allclose(g["eyes"], a.eyes) for g in got] == [True, True]
    with pytest.raises(ValueError, match="no person 5"):
        nodes._boxes_of(ps, 5, "target")


def test_body_tracker_fits_the_tracked_persons_landmarks(video, monkeypatch):
    frames, TRACKED, A, _ = video
    load_pack()
    gnodes = sys.modules["swapforge.nodes.gswap"]
    captured = {}

    def fake_fit(body, lm, size, valid=None, **kw):
        captured["lm"], captured["valid"] = lm, valid
        raise RuntimeError("stop")

    monkeypatch.setattr(gnodes.tracklib, "fit_track", fake_fit)
    with pytest.raises(RuntimeError, match="stop"):
        gnodes.SwapForgeBodyTracker().track(None, torch.from_numpy(frames), TRACKED, 1, 0.1)
    lm = captured["lm"]
    np.testing.assert_allclose(lm[0], A["lm"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(lm[1], A["lm"], rtol=0, atol=1e-4)   # A sorts second here: still A
    assert captured["valid"].tolist() == [True, True, False, False]
