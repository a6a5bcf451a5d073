"""Blending (models/partswap/blend.py) and the classic cut-and-paste part swap (models/partswap/classic.py)."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from models.face.records import FaceSet, FrameFaces
from models.partswap import blend, classic, parts

DATA = os.path.join(os.path.dirname(__file__), "data")
EYES = list(range(17, 27)) + list(range(36, 48))
MOUTH = list(range(48, 68))


@pytest.fixture(scope="module")
def photos():
    """name -> (float32 RGB image, 68 landmarks) straight from dlib's CNN detector + 68-point predictor."""
    import dlib
    import face_recognition_models as frm
    det = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
    sp = dlib.shape_predictor(frm.pose_predictor_model_location())
    out = {}
    for name in ("obama", "biden", "grace_hopper"):
        img = np.asarray(Image.open(os.path.join(DATA, name + ".jpg")).convert("RGB"))
        dets = det(img, 0) or det(img, 1)
        assert len(dets) == 1
        s = sp(img, dets[0].rect)
        lm = np.array([[s.part(i).x, s.part(i).y] for i in range(68)], np.float32)
        out[name] = (img.astype(np.float32) / 255.0, lm)
    return out


def _faces(lm):
    lm = np.asarray(lm, np.float32)
    kps = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    return FrameFaces(np.r_[lm.min(0), lm.max(0)][None], [1.0], kps[None], lm[None])


def _similarity_lstsq(src, dst):
    """Least-squares similarity src -> dst solved as a linear system in (a, b, tx, ty): x' = a x - b y + tx."""
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)]
    a[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(n), np.ones(n)]
    p = np.linalg.lstsq(a, dst.reshape(-1).astype(np.float64), rcond=None)[0]
    return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])


def _zncc(a, b, sel):
    """Zero-mean normalised correlation of two grey images over the pixels `sel`."""
    a = a[sel].mean(-1) - a[sel].mean()
    b = b[sel].mean(-1) - b[sel].mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _detail_zncc(a, b, sel):
    """_zncc of the fine detail (grey minus its Gaussian blur, sigma 2 px): what gradient-domain blending keeps."""
    def detail(x):
        g = x.mean(-1, keepdims=True)
        return g - cv2.GaussianBlur(g, (0, 0), 2)[..., None]
    return _zncc(detail(a), detail(b), sel)


# ---------------------------------------------------------------- blending

def _texture(h, w, lo, hi, seed):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    t = (t - t.min()) / (t.max() - t.min())
    return (lo + (hi - lo) * t).astype(np.float32)


def test_poisson_blend_of_identical_images_returns_dst():
    img = _texture(96, 128, 0.0, 1.0, 0)
    mask = np.zeros((96, 128), np.float32)
    mask[20:70, 30:100] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), 4)
    out = blend.poisson_blend(img, img, mask)
    assert np.abs(out - img).max() <= 1 / 255


def test_poisson_blend_keeps_source_laplacian_inside_and_dst_on_the_border():
    # Pérez et al. eq. 10 with v = grad src: the 4-neighbour Laplacian of the result equals src's at
    # every pixel whose neighbours are all inside, and the result equals dst just outside.
    h, w = 80, 100
    src = _texture(h, w, 0.4, 0.6, 1)
    dst = np.full((h, w, 3), 0.45, np.float32)
    mask = np.zeros((h, w), np.float32)
    mask[20:60, 25:80] = 1
    out = blend.poisson_blend(src, dst, mask).astype(np.float64)

    def lap(a):
        return 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]

    inner = (slice(21 - 1, 59 - 1), slice(26 - 1, 79 - 1))  # in lap() coordinates (offset 1)
    np.testing.assert_allclose(lap(out)[inner], lap(src.astype(np.float64))[inner], atol=2e-5)
    np.testing.assert_array_equal(out[19, 25:80], dst[19, 25:80])
    np.testing.assert_array_equal(out[20:60, 24], dst[20:60, 24])
    # ... and it is not simply src pasted: the level moved towards dst.
    assert abs(out[20:60, 25:80].mean() - src[20:60, 25:80].mean()) > 0.02


@pytest.mark.parametrize("mode", ["poisson", "alpha", "multiband"])
def test_blend_keeps_pixels_outside_the_mask_support_bit_identical(mode):
    h, w = 200, 240
    src, dst = _texture(h, w, 0, 1, 2), _texture(h, w, 0, 1, 3)
    mask = np.zeros((h, w), np.float32)
    mask[30:70, 40:90] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), 3)
    mask[mask < 1e-3] = 0
    out = blend.blend(mode, src, dst, mask)
    if mode == "multiband":
        # Documented reach: 4 * 2**levels px (levels = 5 -> 128) from the mask's support, chessboard distance.
        ys, xs = np.nonzero(mask > 0)
        yy, xx = np.mgrid[0:h, 0:w]
        cheb = np.maximum(np.maximum(ys.min() - yy, yy - ys.max()), np.maximum(xs.min() - xx, xx - xs.max()))
        far = cheb > 128
        assert far.sum() > 1000
    else:
        far = mask == 0
    np.testing.assert_array_equal(out[far], dst[far])
    inside = mask > 0.99
    assert np.abs(out[inside] - dst[inside]).mean() > 0.05  # something was blended in


def test_multiband_blend_reach_is_within_the_documented_radius():
    h, w = 160, 160
    src, dst = _texture(h, w, 0, 1, 4), _texture(h, w, 0, 1, 5)
    mask = np.zeros((h, w), np.float32)
    mask[70:80, 70:80] = 1
    out = blend.multiband_blend(src, dst, mask, levels=3)
    changed = np.any(out != dst, axis=-1)
    ys, xs = np.nonzero(changed)
    reach = max(70 - ys.min(), ys.max() - 79, 70 - xs.min(), xs.max() - 79)
    assert 8 < reach <= 4 * 2 ** 3  # spreads beyond the mask (low frequencies), but not past 32 px


def test_multiband_seam_on_a_hard_step_is_smoother_than_alpha():
    h, w = 64, 256
    a = np.full((h, w, 3), 0.8, np.float32)
    b = np.full((h, w, 3), 0.2, np.float32)
    step = np.zeros((h, w), np.float32)
    step[:, :128] = 1
    alpha = blend.alpha_blend(a, b, step)
    multi = blend.multiband_blend(a, b, step, levels=5)
    g_alpha = np.abs(np.diff(alpha[h // 2, :, 0])).max()
    g_multi = np.abs(np.diff(multi[h // 2, :, 0])).max()
    assert g_alpha == pytest.approx(0.6, abs=1e-6)
    assert g_multi < 0.25 * g_alpha
    # Far from the seam each side keeps its own colour.
    np.testing.assert_allclose(multi[:, :8], 0.8, atol=1e-3)
    np.testing.assert_allclose(multi[:, -8:], 0.2, atol=1e-3)


def test_blend_rejects_unknown_mode_and_nan():
    img = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="blend mode"):
        blend.blend("laplace", img, img, np.zeros((8, 8)))
    bad = img.copy()
    bad[2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        blend.poisson_blend(bad, img, np.ones((8, 8)))
    with pytest.raises(ValueError, match="same shape"):
        blend.alpha_blend(img[:4], img, np.ones((8, 8)))


# ---------------------------------------------------------------- classic swap

def test_warp_part_uses_the_least_squares_similarity_of_the_part_landmarks(photos):
    tgt, t_lm = photos["obama"]
    src, s_lm = photos["biden"]
    h, w = tgt.shape[:2]
    for part, idx in (("eyes", EYES), ("nose", list(range(27, 36))), ("mouth", MOUTH)):
        warped, affine = classic.warp_part(src, s_lm, t_lm, part, (h, w))
        want = _similarity_lstsq(s_lm[idx], t_lm[idx])
        np.testing.assert_allclose(affine, want, atol=1e-6 * np.abs(want).max())
        assert warped.shape == (h, w, 3) and warped.dtype == np.float32
        ref = np.clip(cv2.warpAffine(src, want, (w, h), flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REFLECT101), 0, 1)
        np.testing.assert_allclose(warped, ref, atol=1e-4)


def test_classic_swap_pastes_biden_eyes_and_hopper_mouth_and_leaves_the_rest(photos):
    tgt, t_lm = photos["obama"]
    h, w = tgt.shape[:2]
    sources = {"eyes": photos["biden"], "mouth": photos["grace_hopper"]}
    out, mask = classic.swap_parts_frame(tgt, t_lm, sources, blend_mode="poisson", color_match="rgb")
    assert out.shape == tgt.shape and out.dtype == np.float32 and mask.shape == (h, w)
    np.testing.assert_array_equal(out[mask == 0], tgt[mask == 0])
    for part, idx, (s_img, s_lm) in (("eyes", EYES, photos["biden"]), ("mouth", MOUTH, photos["grace_hopper"])):
        ref = cv2.warpAffine(s_img, _similarity_lstsq(s_lm[idx], t_lm[idx]), (w, h), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT101)
        hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(hull, np.round(cv2.convexHull(t_lm[idx])).astype(np.int32), 1)
        sel = hull > 0
        assert (mask[sel] == 1).all()
        to_source, to_target = _detail_zncc(out, ref, sel), _detail_zncc(out, tgt, sel)
        print(f"{part}: detail zncc to warped source {to_source:.3f}, to target {to_target:.3f}; "
              f"plain zncc {_zncc(out, ref, sel):.3f} / {_zncc(out, tgt, sel):.3f}")
        assert to_source > 0.8 and to_source > to_target + 0.2
    # The nose was not requested: the mask is the eyes and mouth regions only, which do not reach the nose tip,
    # and Poisson cloning changes nothing outside mask > 0.5.
    x, y = np.round(t_lm[30]).astype(int)
    assert mask[y, x] < 0.5
    np.testing.assert_allclose(out[mask <= 0.5], tgt[mask <= 0.5], atol=1e-6)
    # the earlier masks are still there on request: exactly the target's grown part hulls
    _, hull_mask = classic.swap_parts_frame(tgt, t_lm, sources, "poisson", "rgb", masks="landmark hulls")
    pm = parts.part_masks(t_lm, (h, w))
    np.testing.assert_array_equal(hull_mask, np.maximum(pm["eyes"], pm["mouth"]))


def _fill(h, w, pts):
    m = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(m, np.round(cv2.convexHull(np.asarray(pts, np.float32))).astype(np.int32), 1)
    return m > 0


def test_seam_aware_masks_cover_both_parts_and_hug_them(photos):
    """A target whose mouth is open (its lip points stretched 2x vertically) and a closed donor mouth: the part
    fit leaves the donor's lips wider and the target's taller, so each sticks out of the other. Both are
    fully swapped (no second lip line), and the region ends within (dilate + 4 feather) x the part's smaller side of the two parts' hull."""
    tgt, t_lm = photos["obama"]
    src, s_lm = photos["grace_hopper"]
    t_lm = t_lm.copy()
    c = t_lm[MOUTH].mean(0)
    t_lm[MOUTH, 1] = c[1] + 2.0 * (t_lm[MOUTH, 1] - c[1])
    h, w = tgt.shape[:2]
    for part, idx in (("mouth", MOUTH), ("eyes", EYES)):
        out, mask = classic.swap_parts_frame(tgt, t_lm, {part: (src, s_lm)}, "alpha", "none", 0.15, 0.1)
        donor_pts = cv2.transform(s_lm[idx][None], _similarity_lstsq(s_lm[idx], t_lm[idx]))[0]
        own, donor = _fill(h, w, t_lm[idx]), _fill(h, w, donor_pts)
        assert mask[own | donor].min() > 0.99
        if part == "mouth":
            assert (donor & ~own).sum() > 50 and (own & ~donor).sum() > 50
        side = (t_lm[idx].max(0) - t_lm[idx].min(0)).min()
        both = _fill(h, w, np.concatenate([t_lm[idx], donor_pts]))
        dist = cv2.distanceTransform((~both).astype(np.uint8), cv2.DIST_L2, 5)
        assert mask[dist > (0.15 + 4 * 0.1) * side + 2].max() == 0.0
        np.testing.assert_array_equal(out[mask == 0], tgt[mask == 0])


def test_seam_aware_masks_never_take_pixels_the_donor_photo_does_not_have(photos):
    """A donor cut just right of its right eye: where the warp would show the mirrored border, the mask is 0."""
    tgt, t_lm = photos["obama"]
    src, s_lm = photos["biden"]
    cut = int(np.ceil(s_lm[45, 0])) + 2  # a column just outside the outer corner of the eye on the right
    src_cut, h, w = np.ascontiguousarray(src[:, :cut]), tgt.shape[0], tgt.shape[1]
    _, mask = classic.swap_parts_frame(tgt, t_lm, {"eyes": (src_cut, s_lm)}, "poisson", "rgb")
    a = _similarity_lstsq(s_lm[EYES], t_lm[EYES])
    inv = cv2.invertAffineTransform(a)
    ys, xs = np.mgrid[0:h, 0:w]
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]  # the donor column each target pixel comes from
    assert mask[sx > cut + 1].max() == 0.0
    assert mask[sx < cut - 6].max() == 1.0  # the rest of the part is still swapped


@pytest.mark.parametrize("mode", ["multiband", "alpha"])
def test_classic_swap_other_blend_modes_also_paste_the_part(photos, mode):
    tgt, t_lm = photos["obama"]
    out, mask = classic.swap_parts_frame(tgt, t_lm, {"mouth": photos["grace_hopper"]}, blend_mode=mode,
                                         color_match="lab")
    hull = np.zeros(tgt.shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, np.round(cv2.convexHull(t_lm[MOUTH])).astype(np.int32), 1)
    assert _zncc(out, tgt, hull > 0) < 0.6
    if mode == "alpha":
        np.testing.assert_array_equal(out[mask == 0], tgt[mask == 0])


def _still_batch(photos, n=12, empty=(4, 9)):
    """n frames cut from one still with small shifts (dx = i px, dy = i // 2 px); faces removed from `empty`."""
    img, lm = photos["obama"]
    y0, x0, size = 40, 120, 200
    frames, faces = [], []
    for i in range(n):
        dx, dy = i, i // 2
        frames.append(img[y0 - dy:y0 - dy + size, x0 - dx:x0 - dx + size])
        faces.append(FrameFaces.empty() if i in empty else _faces(lm - [x0 - dx, y0 - dy]))
    return np.stack(frames), FaceSet(faces, (size, size), "dlib")


def test_swap_batch_keeps_twelve_frames_and_passes_faceless_frames_through(photos):
    frames, fs = _still_batch(photos)
    calls = []
    out, mask, status = classic.swap_parts_batch(frames, fs, {"eyes": photos["biden"]}, face_index=0,
                                                 progress=lambda: calls.append(1))
    assert out.shape == frames.shape and mask.shape == frames.shape[:3] and len(calls) == 12
    assert status == ["no face" if i in (4, 9) else "swapped" for i in range(12)]
    for i in range(12):
        if i in (4, 9):
            np.testing.assert_array_equal(out[i], frames[i])
            assert not mask[i].any()
        else:
            assert mask[i].max() == 1
            assert np.abs(out[i] - frames[i])[mask[i] > 0.99].mean() > 0.02
            np.testing.assert_array_equal(out[i][mask[i] == 0], frames[i][mask[i] == 0])
    # The swap moves with the face: frame 6 (shift 6, 3) is frame 0's result shifted, away from the borders.
    np.testing.assert_allclose(out[6][60:160, 60:160], out[0][57:157, 54:154], atol=2e-3)


def test_swap_batch_with_a_missing_face_index_passes_every_frame_through(photos):
    frames, fs = _still_batch(photos, n=3, empty=())
    out, mask, status = classic.swap_parts_batch(frames, fs, {"mouth": photos["grace_hopper"]}, face_index=1)
    assert status == ["face 1 out of range (1 face)"] * 3
    np.testing.assert_array_equal(out, frames)
    assert not mask.any()


def test_swap_batch_lets_progress_interrupt(photos):
    frames, fs = _still_batch(photos, n=3, empty=())

    class Stop(Exception):
        pass

    def stop():
        raise Stop()

    with pytest.raises(Stop):
        classic.swap_parts_batch(frames, fs, {"mouth": photos["grace_hopper"]}, progress=stop)


def test_swap_batch_rejects_nan_and_mismatched_faces(photos):
    frames, fs = _still_batch(photos, n=3, empty=())
    bad = frames.copy()
    bad[1, 5, 5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        classic.swap_parts_batch(bad, fs, {"mouth": photos["grace_hopper"]})
    with pytest.raises(ValueError, match="detected on 3 frame"):
        classic.swap_parts_batch(frames[:2], fs, {"mouth": photos["grace_hopper"]})
    s_img, s_lm = photos["grace_hopper"]
    s_lm = s_lm.copy()
    s_lm[50] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        classic.swap_parts_batch(frames, fs, {"mouth": (s_img, s_lm)})
    with pytest.raises(ValueError, match="unknown part"):
        classic.swap_parts_batch(frames, fs, {"ears": photos["grace_hopper"]})
