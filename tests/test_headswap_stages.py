"""GSwap head swap stages (models/gswap: headpose, head_mask, background, source, reenact, metrics, headswap
helpers) against hand computations, synthetic scenes with known answers and the bundled real photos."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.gswap import background as bglib
from models.gswap import head_mask as hmlib
from models.gswap import headpose as hp
from models.gswap import headswap as hslib
from models.gswap import metrics as mlib
from models.gswap import reenact as relib
from models.gswap import source as srclib


def rot(yaw, pitch, roll):
    """Model -> camera rotation of a head turned by (yaw, pitch, roll) degrees: F Ry Rx Rz."""
    y, p, r = np.radians([yaw, pitch, -roll])
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    Rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return hp.OPENCV_FROM_MODEL @ Ry @ Rx @ Rz


def projected(R, t, size=(256, 256), shape=None):
    pose = hp.HeadPose(R=R[None], t=np.asarray(t, float)[None], K=hp.intrinsics(size), ok=np.ones(1, bool))
    return hp.project_model(hp.FACE_MODEL68 if shape is None else shape, pose, 0)


# ----------------------------------------------------------------------------------------------- headpose

@pytest.mark.parametrize("angles", [(0, 0, 0), (20, -10, 5), (-30, 8, -12)])
def test_head_poses_recover_the_yaw_pitch_roll_a_projected_model_was_posed_with(angles):
    lm = projected(rot(*angles), [10.0, -5.0, 600.0])
    pose = hp.head_poses(lm[None], (256, 256))
    assert pose.ok[0]
    np.testing.assert_allclose(hp.euler_deg(pose.R)[0], angles, atol=0.05)
    np.testing.assert_allclose(pose.t[0], [10.0, -5.0, 600.0], atol=0.5)


def test_euler_signs_follow_the_image_face_turns_right_and_head_tilts_clockwise():
    lm = projected(rot(25, 0, 0), [0, 0, 600.0])
    nose_right = lm[30, 0] > 0.5 * (lm[36, 0] + lm[45, 0])  # a face turned to the image right: its nose moves right
    assert nose_right
    lm = projected(rot(0, 0, 15), [0, 0, 600.0])
    assert lm[45, 1] > lm[36, 1]  # clockwise tilt: the eye on the image right goes down


def test_lifted_shapes_project_back_onto_the_landmarks_and_the_model_lifts_to_itself():
    R, t = rot(15, -5, 3), np.array([5.0, 3.0, 550.0])
    lm = projected(R, t)
    pose = hp.head_poses(lm[None], (256, 256))
    np.testing.assert_allclose(hp.lift_landmarks(lm[None], pose)[0], hp.FACE_MODEL68, atol=0.05)
    g = np.random.default_rng(0)
    noisy = lm + g.normal(0, 1.5, lm.shape)  # a different face: its own shape, same round trip
    shape = hp.lift_landmarks(noisy[None], pose)[0]
    np.testing.assert_allclose(hp.project_model(shape, pose, 0), noisy, atol=1e-6)
    # lifting moves points within planes parallel to the face: the model z of every point is kept
    np.testing.assert_allclose(shape[:, 2], hp.FACE_MODEL68[:, 2], atol=1e-6)


def test_expression_measures_are_the_hand_computed_distances_over_the_eye_distance():
    lm = np.zeros((68, 2))
    lm[36:42] = [0, 0]
    lm[42:48] = [40, 0]  # eye centres 40 px apart
    lm[62], lm[66] = [20, 50], [20, 58]
    lm[48], lm[54] = [5, 55], [37, 55]
    lm[37], lm[41], lm[38], lm[40] = [0, -2], [0, 2], [1, -3], [1, 3]
    lm[43], lm[47], lm[44], lm[46] = [40, -1], [40, 1], [41, -1], [41, 1]
    # eye centres shift with the lid points: recompute the inter-ocular distance exactly
    iod = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    got = hp.expression_measures(lm[None])[0]
    np.testing.assert_allclose(got, np.array([8, 32, (4 + 6) / 2, (2 + 2) / 2]) / iod)


# ---------------------------------------------------------------------------------------------- head mask

def test_head_mask_on_a_real_portrait_holds_face_hair_and_neck_and_nothing_far_away(photo, photo_faces):
    img = photo("biden")
    lm = photo_faces("biden").landmarks68[0]
    m = hmlib.head_mask(img, lm, neck_line=0.2)
    H, W = m.shape
    pts = np.round(lm).astype(int)
    assert (m[pts[:, 1], pts[:, 0]] > 0.5).mean() > 0.95  # the face is inside
    eyes = 0.5 * (lm[36:42].mean(0) + lm[42:48].mean(0))
    h = np.linalg.norm(eyes - lm[8])
    top = int(eyes[1] - 0.8 * h)
    assert m[top, int(eyes[0])] > 0.5  # the top of the head (hair) is inside
    below = int(lm[8, 1] + 0.45 * h)
    if below < H:
        assert m[below:].max() < 0.05  # nothing past the neck line (0.2 face heights under the chin + feather)
    assert m[:, : int(lm[:, 0].min() - 0.9 * h)].max() < 0.05  # nothing far to the side


def test_carried_mask_is_the_mask_moved_by_the_keypoint_similarity():
    mask = np.zeros((64, 64), np.float32)
    mask[20:40, 24:44] = 1.0
    src = np.array([[20.0, 20], [40, 20], [30, 30], [22, 40], [38, 40]])
    ang, s, shift = np.radians(10), 1.5, np.array([5.0, -3.0])
    M = np.array([[s * math.cos(ang), -s * math.sin(ang)], [s * math.sin(ang), s * math.cos(ang)]])
    dst = src @ M.T + shift
    import cv2
    expect = cv2.warpAffine(mask, np.hstack([M, shift[:, None]]), (96, 80), flags=cv2.INTER_LINEAR)
    np.testing.assert_allclose(hmlib.carry_mask(mask, src, dst, (80, 96)), expect, atol=1e-4)


def test_smooth_masks_removes_a_one_frame_glitch_and_keeps_steady_masks():
    T = 5
    masks = np.zeros((T, 40, 40), np.float32)
    masks[:, 10:30, 10:30] = 1.0
    glitch = masks.copy()
    glitch[2, 0:5, 0:5] = 1.0  # a blob in one frame only
    lm = np.repeat(hp.FACE_MODEL68[None, :, :2] * 0.1 + 20, T, 0)
    out = hmlib.smooth_masks(glitch, lm, radius=1)
    np.testing.assert_allclose(out, masks, atol=1e-5)


def test_without_neck_clears_the_zone_under_the_jaw_only():
    lm = projected(rot(0, 0, 0), [0, 0, 600.0])
    z = hmlib.without_neck(lm, (256, 256), soft=0.0)
    chin = lm[8]
    assert z[int(chin[1]) + 15, int(chin[0])] == 0.0  # under the chin
    assert z[int(lm[30, 1]), int(lm[30, 0])] == 1.0  # the nose
    assert z[int(chin[1]) + 15, int(lm[0, 0]) - 20] == 1.0  # beside the neck (where long hair falls)


# --------------------------------------------------------------------------------------------- background

def _scene(T=6, moving_camera=False):
    g = np.random.default_rng(1)
    bg = np.clip(g.random((48, 64, 3)).astype(np.float32), 0, 1)
    frames, masks = [], []
    for t in range(T):
        b = np.roll(bg, 3 * t, axis=1) if moving_camera else bg
        f = b.copy()
        m = np.zeros((48, 64), np.float32)
        x = 10 + 6 * t
        f[15:35, x:x + 14] = [0.9, 0.6, 0.5]  # the "head" moves across a still background
        m[15:35, x:x + 14] = 1.0
        frames.append(f)
        masks.append(m)
    return np.stack(frames), np.stack(masks), bg


def test_clean_plate_fills_the_hole_with_the_true_background_where_other_frames_show_it():
    frames, masks, bg = _scene()
    out, holes, info = bglib.fill_backgrounds(frames, masks, grow_px=1)
    assert info["route"] == "clean plate"
    plate, seen = bglib.clean_plate(frames, holes)
    for t in range(len(frames)):
        sel = (holes[t] > 0) & seen
        np.testing.assert_allclose(out[t][sel], bg[sel], atol=1e-5)  # exposure gain is 1 on a still scene
        np.testing.assert_array_equal(out[t][holes[t] == 0], frames[t][holes[t] == 0])  # untouched outside


def test_a_moving_camera_is_detected_and_each_frame_is_inpainted_with_the_given_model():
    frames, masks, _ = _scene(moving_camera=True)
    calls = []

    def fake_model(image, hole):
        calls.append(int(hole.sum()))
        return np.where(hole[..., None] > 0, 0.25, image).astype(np.float32)

    out, holes, info = bglib.fill_backgrounds(frames, masks, grow_px=1, inpaint=fake_model)
    assert info["route"] == "per-frame inpainting" and info["inpainter"] == "model"
    assert len(calls) == len(frames)
    assert np.allclose(out[0][holes[0] > 0], 0.25)


# -------------------------------------------------------------------------------------------- reenactment

def test_drive_shapes_give_the_target_its_own_shape_when_the_source_is_the_target():
    g = np.random.default_rng(2)
    tgt = hp.FACE_MODEL68[None] + g.normal(0, 1.0, (5, 68, 3))
    ref = np.median(tgt, axis=0)
    out = relib.drive_shapes(ref, tgt, np.ones(5, bool))
    np.testing.assert_allclose(out, tgt, atol=1e-9)


def test_drive_shapes_keep_source_proportions_and_take_the_targets_mouth_scaled_by_eye_distance():
    src = hp.FACE_MODEL68.copy()
    src[:, 0] *= 1.2  # a wider source face (eye distance 1.2x)
    tgt = np.repeat(hp.FACE_MODEL68[None], 3, 0)
    tgt[1, 57, 1] -= 10.0  # the target opens its mouth in frame 1
    out = relib.drive_shapes(src, tgt, np.ones(3, bool))
    np.testing.assert_allclose(out[0, :17], src[:17])  # jaw line: the source's
    scale = relib._iod(src) / relib._iod(hp.FACE_MODEL68)
    assert scale == pytest.approx(1.2)
    width_out = np.linalg.norm(out[1, 54] - out[1, 48])
    assert width_out == pytest.approx(scale * np.linalg.norm(tgt[1, 54] - tgt[1, 48]))
    assert out[1, 57, 1] - out[0, 57, 1] == pytest.approx(-10.0 * scale)  # the target's opening, scaled


def test_piecewise_affine_equals_one_affine_warp_when_all_triangles_share_it():
    import cv2
    g = np.random.default_rng(3)
    img = g.random((60, 80, 3)).astype(np.float32)
    src = np.array([[10.0, 10], [70, 12], [68, 50], [12, 48], [40, 30]])
    A = np.array([[0.9, 0.1, 5.0], [-0.05, 1.1, 3.0]])
    dst = src @ A[:, :2].T + A[:, 2]
    out, covered = relib.piecewise_affine(img, src, dst, relib.triangulate(src), (70, 90))
    ref = cv2.warpAffine(img, A, (90, 70), flags=cv2.INTER_LINEAR)
    inner = covered & (cv2.erode(covered.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    np.testing.assert_allclose(out[inner], ref[inner], atol=2e-3)
    assert inner.sum() > 1500


def test_reenacting_a_photo_onto_itself_gives_the_photo_back_inside_the_head(photo, photo_faces):
    img = photo("biden")
    f = photo_faces("biden")
    sources = srclib.prepare_sources([img], [f.landmarks68[0]], [f.kps5[0]], neck_line=0.2)
    out, a_gen, lm_drv, flagged = relib.reenact_clip(sources, img[None], f.landmarks68[:1], np.ones(1, bool),
                                                     np.zeros_like(img)[None], colour_strength=0.0)
    assert flagged == []
    np.testing.assert_allclose(lm_drv[0], f.landmarks68[0], atol=1e-3)
    inside = (a_gen[0] > 0.99) & (sources.main.mask > 0.99)
    assert inside.sum() > 5000
    assert np.abs(out[0][inside] - img[inside]).mean() < 2e-3


def test_a_frame_without_a_target_face_passes_through_and_is_flagged(photo, photo_faces):
    img = photo("biden")
    f = photo_faces("biden")
    sources = srclib.prepare_sources([img], [f.landmarks68[0]], [f.kps5[0]])
    frames = np.stack([img, img])
    lm = np.stack([f.landmarks68[0], np.full((68, 2), np.nan, np.float32)])
    out, a_gen, _, flagged = relib.reenact_clip(sources, frames, lm, np.array([True, False]), frames)
    assert flagged == [1]
    np.testing.assert_array_equal(out[1], frames[1])
    assert a_gen[1].max() == 0


def test_colour_transfer_at_full_strength_moves_the_source_skin_mean_to_the_targets(photo, photo_faces):
    import cv2
    src, tgt = photo("biden"), photo("astronaut")
    ls, lt = photo_faces("biden").landmarks68[0], photo_faces("astronaut").landmarks68[0]
    ct = relib.ColourTransfer.fit(src, ls, tgt[None], lt[None], np.ones(1, bool), strength=1.0)
    moved = ct.apply(src)
    lab = lambda im, lm: cv2.cvtColor(im, cv2.COLOR_RGB2LAB)[relib.skin_mask(lm, im.shape)].mean(0)  # noqa: E731
    assert np.abs(lab(moved, ls) - lab(tgt, lt)).max() < 3.0
    assert np.abs(lab(src, ls) - lab(tgt, lt)).max() > 8.0  # they started apart


def test_prepare_sources_refuses_photos_without_a_face_and_picks_the_most_frontal(photo, photo_faces):
    with pytest.raises(ValueError, match="no source photo shows a face"):
        srclib.prepare_sources([photo("biden")], [None], [None])
    a, b = photo("obama"), photo("obama2")
    fa, fb = photo_faces("obama"), photo_faces("obama2")
    s = srclib.prepare_sources([a, b], [fa.landmarks68[0], fb.landmarks68[0]], [fa.kps5[0], fb.kps5[0]])
    yaws = [abs(h.euler[0]) + 0.5 * abs(h.euler[2]) for h in s.heads]
    assert s.primary == int(np.argmin(yaws)) and len(s.heads) == 2


def test_placed_source_head_lands_on_the_target_keypoints(photo, photo_faces):
    img = photo("biden")
    f = photo_faces("biden")
    s = srclib.prepare_sources([img], [f.landmarks68[0]], [f.kps5[0]])
    target_k5 = f.kps5[0] * 0.8 + np.array([30.0, 10.0])
    M = hmlib.similarity(f.kps5[0], target_k5)
    np.testing.assert_allclose(np.hstack([f.kps5[0], np.ones((5, 1))]) @ M.T, target_k5, atol=1e-6)
    placed, alpha = srclib.place_on_background(s.main, np.zeros((300, 300, 3), np.float32), target_k5)
    nose = np.round(target_k5[2]).astype(int)
    assert alpha[nose[1], nose[0]] > 0.99


# ----------------------------------------------------------------------------------------------- metrics

def test_flicker_is_the_mean_absolute_frame_difference_inside_the_region():
    frames = np.zeros((3, 4, 4, 3), np.float32)
    frames[1] += 0.2
    frames[2] += 0.5
    region = np.zeros((3, 4, 4), np.float32)
    region[:, :2] = 1.0
    assert mlib.flicker(frames, region) == pytest.approx((0.2 + 0.3) / 2)


def test_swap_metrics_count_frames_closer_to_the_source_and_measure_pose_and_expression():
    T = 4
    lm = np.repeat(projected(rot(0, 0, 0), [0, 0, 600.0])[None], T, 0)
    src = np.array([1.0, 0.0, 0.0])
    tgt_e = np.array([0.0, 1.0, 0.0])
    out_e = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.8, 0.0, 0.2], [np.nan] * 3])
    target = mlib.FrameFaceData(lm, np.repeat(tgt_e[None], T, 0))
    turned = lm.copy()
    turned[1] = projected(rot(10, 0, 0), [0, 0, 600.0])
    out = mlib.FrameFaceData(np.where(np.isfinite(out_e).all(1)[:, None, None], turned, np.nan), out_e)
    m = mlib.swap_metrics(out, target, src, (256, 256))
    assert m["frames_closer_to_source"] == pytest.approx(2 / 4)  # frames 0 and 2; frame 3 has no face
    assert m["pose_error_deg"] == pytest.approx(10 / 3 / 3, abs=0.05)  # one frame of three off by 10 deg yaw
    assert m["expression_error"] == pytest.approx(0.0, abs=1e-6) or m["expression_error"] < 0.02


# ------------------------------------------------------------------------------------------- pipeline bits

def test_face_arrays_follow_one_track_and_leave_frames_without_it_empty():
    from models.face.records import FaceSet, FrameFaces

    def ff(ids, xs):
        n = len(ids)
        lm = np.stack([hp.FACE_MODEL68[:, :2] * 0.1 + x for x in xs]).astype(np.float32)
        return FrameFaces(boxes=np.zeros((n, 4)), scores=np.ones(n), kps5=np.zeros((n, 5, 2)), landmarks68=lm,
                          track_ids=np.array(ids))

    fs = FaceSet([ff([3, 7], [10, 50]), ff([7], [51]), FrameFaces.empty(), ff([7, 3], [52, 11])], (100, 100), "t")
    lm, k5, valid, interp, note = hslib.face_arrays(fs, 1)  # person 1 = the second track in id order: #7
    assert valid.tolist() == [True, True, False, True]
    np.testing.assert_allclose(lm[[0, 1, 3], 0, 0], hp.FACE_MODEL68[0, 0] * 0.1 + np.array([50, 51, 52]))
    assert "track #7" in note
    lm, _, valid, _, _ = hslib.face_arrays(fs, 0)  # track #3: absent in frames 1 and 2
    assert valid.tolist() == [True, False, False, True]


def test_rendering_a_crop_window_with_the_shifted_camera_equals_the_crop_of_the_full_render():
    from models.gswap.rasterize import rasterize
    g = torch.Generator().manual_seed(0)
    n = 40
    means = torch.stack([(torch.rand(n, generator=g) - 0.5), (torch.rand(n, generator=g) - 0.5),
                         2.5 + torch.rand(n, generator=g)], -1).double()
    quats = torch.randn(n, 4, generator=g).double()
    scales = (0.02 + 0.05 * torch.rand(n, 3, generator=g)).double()
    op = (0.3 + 0.6 * torch.rand(n, generator=g)).double()
    feats = torch.randn(n, 5, generator=g).double()
    K = torch.tensor([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]).double()
    V = torch.eye(4).double()
    full, a_full = rasterize(means, quats, scales, op, feats, V, K, 64, 48)
    x0, y0, x1, y1 = 13, 7, 51, 40
    crop, a_crop = rasterize(means, quats, scales, op, feats, V, hslib.shift_K(K, x0, y0), x1 - x0, y1 - y0)
    torch.testing.assert_close(crop, full[y0:y1, x0:x1], atol=1e-12, rtol=0)
    torch.testing.assert_close(a_crop, a_full[y0:y1, x0:x1], atol=1e-12, rtol=0)


def test_crop_window_bounds_every_mask_with_its_margin_and_composite_keeps_pixels_outside_m_head():
    m = np.zeros((2, 50, 60), np.float32)
    m[0, 10:20, 15:25] = 1
    m[1, 30:35, 40:44] = 0.5
    assert hslib.crop_window([m], (50, 60), 0.05) == (12, 7, 47, 38)
    g = np.random.default_rng(4)
    target = g.random((50, 60, 3)).astype(np.float32)
    win = (10, 5, 50, 45)
    head = np.zeros((50, 60), np.float32)
    head[15:30, 20:40] = 1
    out = hslib.composite(target, np.ones((40, 40, 3), np.float32), head, win, np.zeros_like(target),
                          np.ones((40, 40), np.float32), feather_px=1.5)
    far = np.ones((50, 60), bool)
    far[10:35, 15:45] = False
    np.testing.assert_array_equal(out[far], target[far])
    assert np.allclose(out[20:25, 25:35], 1.0)


def test_facing_faces_keep_the_half_of_a_sphere_that_faces_the_camera():
    from models.gswap.surface_template import _uv_sphere

    sph = _uv_sphere(12, 16)

    class S:
        faces = torch.as_tensor(sph["faces"])

    v = torch.as_tensor(sph["dirs"], dtype=torch.float32)
    T = torch.zeros(1, v.shape[0], 3, 4)
    T[..., :3] = torch.eye(3)
    view = torch.eye(4)[None].clone()
    view[0, 1, 1] = view[0, 2, 2] = -1.0  # OpenCV camera at the origin looking down world -z...
    view[0, 2, 3] = 3.0  # ...from z = +3
    keep = hslib.facing_faces(S, v[None], T, view, min_cos=0.0)
    cz = v[S.faces].mean(1)[:, 2]
    assert keep[cz > 0.4].all() and not keep[cz < -0.4].any()
