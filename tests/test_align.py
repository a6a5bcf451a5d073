"""Alignment: FFHQ / ArcFace affines, face masks and align_crop, on hand-built landmarks."""
import cv2
import numpy as np
import pytest

from models.face.align import (ARCFACE_112, align_crop, arcface_affine, face_hull_mask, ffhq_affine,
                               ffhq_affine_from_kps5)
from models.face.geometry import apply_affine, umeyama
from models.face.records import FaceSet, FrameFaces
from synthclip import make_faces, smooth_frames, unit_face


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def compose(m2, m1):
    """m2 after m1, both 2x3."""
    full = lambda m: np.vstack([m, [0, 0, 1]])
    return (full(m2) @ full(m1))[:2]


def axis_aligned_landmarks():
    """Face units scaled by 50 and centred at (50, 65): eyes at (30, 50) and (70, 50), mouth corners at
    (32.5, 90) and (67.5, 90)."""
    return unit_face() * 50 + [50, 65]


def hand_quad(eye_l, eye_r, m_l, m_r):
    """The FFHQ quad written out independently (rotation by +90 degrees: (a, b) -> (-b, a))."""
    eye_avg, e2e = (eye_l + eye_r) / 2, eye_r - eye_l
    e2m = (m_l + m_r) / 2 - eye_avg
    x = e2e + np.array([e2m[1], -e2m[0]])
    x = x / np.linalg.norm(x) * max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    y = np.array([-x[1], x[0]])
    c = eye_avg + 0.1 * e2m
    return np.array([c - x - y, c - x + y, c + x + y, c + x - y])


def test_ffhq_affine_of_axis_aligned_face_is_hand_computed_scale_and_translation():
    lm = axis_aligned_landmarks()
    # eye_avg (50, 50), eye_to_eye (40, 0), mouth_avg (50, 90), eye_to_mouth (0, 40)
    # x = (40, 0) - (-40, 0) = (80, 0) -> unit (1, 0) * max(80, 72) = (80, 0); y = (0, 80)
    # c = (50, 54); quad top-left (-30, -26), side 160 -> scale s = size / 160.
    # Quad corners go to the crop's outer corners -0.5 and size - 0.5 (pixel centres at integers).
    for size in (256, 512, 1024, 100):
        s = size / 160.0
        expected = np.array([[s, 0, 30 * s - 0.5], [0, s, 26 * s - 0.5]])
        np.testing.assert_allclose(ffhq_affine(lm, size), expected, atol=1e-9)


def test_ffhq_affine_of_a_moved_face_is_the_moved_quad_fit_and_keeps_eye_avg_fixed():
    lm = axis_aligned_landmarks()
    size = 512
    a0 = ffhq_affine(lm, size)
    s = size / 160.0
    eye_avg_in_crop = np.array([80 * s - 0.5, 76 * s - 0.5])  # (50 + 30) * s - 0.5, (50 + 26) * s - 0.5
    np.testing.assert_allclose(apply_affine(a0, [50, 50]), eye_avg_in_crop, atol=1e-9)
    targets = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]])
    for t in (similarity(30, 1.7, 100, -20), similarity(-75, 0.6, 3, 40), similarity(180, 2.5, 0, 0)):
        moved = apply_affine(t, lm)
        a = ffhq_affine(moved, size)
        quad = hand_quad(moved[36:42].mean(0), moved[42:48].mean(0), moved[48], moved[54])
        np.testing.assert_allclose(a, umeyama(quad, targets), atol=1e-7)
        # same crop as before the move: A' o T == A
        np.testing.assert_allclose(compose(a, t), a0, atol=1e-7)
        np.testing.assert_allclose(apply_affine(a, apply_affine(t, [50, 50])), eye_avg_in_crop, atol=1e-6)
        # and the quad corners really land on the crop corners
        np.testing.assert_allclose(apply_affine(a, quad), targets, atol=1e-6)


def test_ffhq_affine_from_kps5_equals_the_68_point_recipe_for_the_same_eyes_and_mouth():
    lm = apply_affine(similarity(12, 1.3, 40, 7), axis_aligned_landmarks())
    kps = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    np.testing.assert_allclose(ffhq_affine_from_kps5(kps, 256), ffhq_affine(lm, 256), atol=1e-9)


def test_arcface_affine_maps_scaled_template_points_exactly():
    template = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])
    np.testing.assert_array_equal(ARCFACE_112, template)
    for size in (112, 256, 512):
        dst = template * size / 112.0
        np.testing.assert_allclose(arcface_affine(dst, size), [[1, 0, 0], [0, 1, 0]], atol=1e-9)
        t = similarity(-20, 0.8, 15, 30)
        src = apply_affine(t, dst)  # a face that is the template moved by t
        a = arcface_affine(src, size)
        np.testing.assert_allclose(apply_affine(a, src), dst, atol=1e-7)
        np.testing.assert_allclose(compose(a, t), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_face_hull_mask_covers_the_face_and_the_lifted_forehead_only():
    size = 256
    lm = unit_face() * 80 + [128, 120]  # brows at y = 76, nose tip at y = 128 -> lift 0.5 * 52 = 26 px
    m = face_hull_mask(lm, size, forehead=0.5)
    assert m.shape == (size, size) and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0
    assert m[128, 128] == pytest.approx(1.0, abs=1e-6)  # nose tip
    assert m[5, 5] == 0.0 and m[250, 250] == 0.0  # corners
    assert m[60, 128] > 0.99  # 16 px above the brow line: inside only thanks to the forehead lift
    assert m[40, 128] < 0.01  # 36 px above it: beyond the 26 px lift
    m0 = face_hull_mask(lm, size, forehead=0.0)
    assert m0[60, 128] < 0.01
    # the mask's area matches the area of the polygon (jaw + lifted brows), the blur keeps it
    brows = lm[17:27] + 0.5 * (lm[17:27].mean(0) - lm[30])
    hull = cv2.convexHull(np.concatenate([lm[:17], brows]).astype(np.float32))
    assert m.sum() == pytest.approx(cv2.contourArea(hull), rel=0.02)


def test_align_crop_pixels_are_the_frame_sampled_at_the_inverse_affine():
    # frame = linear ramps of x and y, so crop(u, v) must equal the ramp at A^-1 (u, v)
    h, w = 240, 320
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frame = np.stack([x / w, y / h, np.full_like(x, 0.5)], -1)[None]
    lm = apply_affine(similarity(15, 1.0, 160, 110), unit_face() * 60)
    crops, cs, masks = align_crop(frame, FaceSet([make_faces([lm])], (h, w)), size=128)
    a = ffhq_affine(lm, 128)
    inv = np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]
    v, u = np.mgrid[0:128, 0:128]
    src = apply_affine(inv, np.stack([u, v], -1).reshape(-1, 2)).reshape(128, 128, 2)
    inside = (src[..., 0] > 2) & (src[..., 0] < w - 3) & (src[..., 1] > 2) & (src[..., 1] < h - 3)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(crops[0][..., 0][inside], (src[..., 0] / w)[inside], atol=2e-3)
    np.testing.assert_allclose(crops[0][..., 1][inside], (src[..., 1] / h)[inside], atol=2e-3)
    np.testing.assert_allclose(cs.crops[0].affine, a, atol=1e-5)  # float32 landmarks


def test_align_crop_orders_crops_by_frame_then_face_and_keeps_track_ids():
    h, w = 200, 300
    frames = smooth_frames(3, h, w)
    f1 = make_faces([unit_face() * 30 + [80, 90], unit_face() * 30 + [220, 100]], track_ids=[5, 9],
                    interpolated=[False, True])
    f0 = make_faces([unit_face() * 35 + [150, 100]], track_ids=[9])
    f2 = make_faces([unit_face() * 30 + [220, 100]], track_ids=[9], interpolated=[True])
    crops, cs, masks = align_crop(frames, FaceSet([f0, f1, f2], (h, w)), size=64, template="arcface")
    assert crops.shape == (4, 64, 64, 3) and masks.shape == (4, 64, 64)
    assert [(c.frame_index, c.face_index, c.track_id, c.valid) for c in cs.crops] == \
        [(0, 0, 9, True), (1, 0, 5, True), (1, 1, 9, True), (2, 0, 9, True)]
    assert cs.num_frames == 3 and cs.frame_size == (h, w) and cs.template == "arcface"
    # the interpolated face in frame 2 is aligned exactly like a detection (same affine as in frame 1)
    np.testing.assert_allclose(cs.crops[3].affine, cs.crops[2].affine)
    np.testing.assert_allclose(cs.crops[2].affine, arcface_affine(f1.kps5[1], 64), atol=1e-9)
    assert all(m.max() > 0.99 for m in masks)


def test_align_crop_keeps_one_placeholder_crop_for_each_frame_without_a_face():
    h, w = 96, 128
    frames = smooth_frames(12, h, w, seed=1)
    faces = [FrameFaces.empty() if i in (3, 7) else make_faces([unit_face() * 25 + [64 + i, 48]])
             for i in range(12)]
    calls = []
    crops, cs, masks = align_crop(frames, FaceSet(faces, (h, w)), size=64,
                                  progress=lambda: calls.append(1))
    assert len(crops) == len(cs) == len(masks) == 12
    assert [c.frame_index for c in cs.crops] == list(range(12))
    assert [c.valid for c in cs.crops] == [i not in (3, 7) for i in range(12)]
    assert len(calls) == 12  # once per crop
    for i in (3, 7):
        assert not masks[i].any()
        # the whole frame fitted into the square: scale 64/128, vertically centred
        np.testing.assert_allclose(cs.crops[i].affine, [[0.5, 0, 0.0 - 0.25], [0, 0.5, 31.5 - 0.5 * 47.5]])
        # crop pixel (32, 32) samples frame point (64.5, 48.5)
        np.testing.assert_allclose(crops[i][32, 32], frames[i][48:50, 64:66].mean((0, 1)), atol=0.01)


def test_align_crop_mask_is_zero_where_the_crop_leaves_the_frame():
    h, w = 120, 160
    lm = unit_face() * 40 + [30, 60]  # jaw reaches x = -10: the left of the face is off-frame
    crops, cs, masks = align_crop(smooth_frames(1, h, w), FaceSet([make_faces([lm])], (h, w)), size=128)
    inv = cs.crops[0].inverse()
    v, u = np.mgrid[0:128, 0:128]
    src = apply_affine(inv, np.stack([u, v], -1).reshape(-1, 2)).reshape(128, 128, 2)
    off = src[..., 0] < -1.0
    assert off.any() and not masks[0][off].any()
    hull_only = face_hull_mask(apply_affine(cs.crops[0].affine, lm), 128)
    assert hull_only[off].max() > 0.99  # without the validity factor the hull would be there


def test_align_crop_rejects_bad_batches_with_clear_errors():
    frames = smooth_frames(2, 64, 64)
    faces = [make_faces([unit_face() * 15 + [32, 30]])] * 3
    with pytest.raises(ValueError, match="detected on 3 frame"):
        align_crop(frames, FaceSet(faces, (64, 64)), size=32)
    with pytest.raises(ValueError, match="empty"):
        align_crop(frames[:0], FaceSet([], (64, 64)), size=32)
    with pytest.raises(ValueError, match="64x64"):
        align_crop(smooth_frames(3, 64, 80), FaceSet(faces, (64, 64)), size=32)
    with pytest.raises(ValueError, match="template"):
        align_crop(frames, FaceSet(faces[:2], (64, 64)), size=32, template="vggface")
    with pytest.raises(ValueError, match="size"):
        align_crop(frames, FaceSet(faces[:2], (64, 64)), size=8)


def test_align_crop_progress_exception_interrupts():
    class Stop(Exception):
        pass

    calls = []

    def progress():
        calls.append(1)
        if len(calls) == 2:
            raise Stop()

    frames = smooth_frames(4, 64, 64)
    faces = [make_faces([unit_face() * 15 + [32, 30]])] * 4
    with pytest.raises(Stop):
        align_crop(frames, FaceSet(faces, (64, 64)), size=32, progress=progress)
    assert len(calls) == 2
