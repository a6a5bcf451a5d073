"""FuseAnyPart part boxes, part polygons and soft part masks (models/partswap/parts.py)."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from models.face.records import FaceSet, FrameFaces, PartBoxes, PartSet
from models.partswap import parts

DATA = os.path.join(os.path.dirname(__file__), "data")


def _landmarks_with_dlib(name):
    """68 landmarks (x, y) px of the single face in a test photo, straight from dlib (CNN detector)."""
    import dlib
    import face_recognition_models as frm
    img = np.asarray(Image.open(os.path.join(DATA, name)).convert("RGB"))
    det = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
    sp = dlib.shape_predictor(frm.pose_predictor_model_location())
    dets = det(img, 0) or det(img, 1)
    assert len(dets) == 1
    shape = sp(img, dets[0].rect)
    return img, np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float32)


@pytest.fixture(scope="module")
def obama():
    return _landmarks_with_dlib("obama.jpg")


def _frame_faces(lms):
    lms = [np.asarray(l, np.float32) for l in lms]
    boxes = [np.r_[l.min(0), l.max(0)] for l in lms]
    kps = [np.stack([l[36:42].mean(0), l[42:48].mean(0), l[30], l[48], l[54]]) for l in lms]
    return FrameFaces(np.array(boxes).reshape(-1, 4), np.ones(len(lms)), np.array(kps).reshape(-1, 5, 2),
                      np.array(lms).reshape(-1, 68, 2))


def _inside(box, pts, h, w):
    """Which points (x, y) px lie in a normalised [y0, x0, y1, x1] box (pixel centre c -> (c + 0.5) / size)."""
    y = (pts[:, 1] + 0.5) / h
    x = (pts[:, 0] + 0.5) / w
    return (y >= box[0]) & (y <= box[2]) & (x >= box[1]) & (x <= box[3])


# ---------------------------------------------------------------- boxes

def test_part_boxes_from_real_landmarks_contain_their_landmarks(obama):
    img, lm = obama
    h, w = img.shape[:2]
    pb = parts.part_boxes_from_landmarks(lm, (h, w))
    eyes_pts = lm[list(range(17, 27)) + list(range(36, 48))]
    assert _inside(pb.eyes, eyes_pts, h, w).all()
    assert _inside(pb.mouth, lm[48:68], h, w).all()
    # Nose tip and base (30-35) are in the nose box. The bridge top (27, and 28 on some faces) lies between
    # the eyes, above the lowest eyelid point, and the tiling gives that band to the eyes box: those points
    # fall in the eyes box instead. Every nose point is in the nose box's columns and in one of the two.
    assert _inside(pb.nose, lm[30:36], h, w).all()
    assert _inside(pb.eyes, lm[27:28], h, w).all()
    assert (_inside(pb.nose, lm[27:36], h, w) | _inside(pb.eyes, lm[27:36], h, w)).all()
    xs = (lm[27:36, 0] + 0.5) / w
    assert (xs >= pb.nose[1]).all() and (xs <= pb.nose[3]).all()
    # Boxes cover the face, not the frame: the eyes box is narrower than the jaw.
    assert pb.eyes[3] - pb.eyes[1] < (lm[16, 0] - lm[0, 0]) / w


def test_part_boxes_tile_vertically_and_are_normalised_yxyx(obama):
    img, lm = obama
    pb = parts.part_boxes_from_landmarks(lm, img.shape[:2])
    for b in (pb.eyes, pb.nose, pb.mouth):
        assert b.dtype == np.float32 and b.shape == (4,)
        assert (b >= 0).all() and (b <= 1).all()
        assert b[0] < b[2] and b[1] < b[3]
    assert pb.eyes[2] == pb.nose[0]
    assert pb.nose[2] == pb.mouth[0]
    assert pb.eyes[0] < pb.nose[0] < pb.mouth[0]


def _hand_landmarks(mouth_top=195.0, mouth_bottom=215.0):
    """Eyes+brows spanning x 100..200, y 100..140; nose x 140..160, y 120..180; mouth x 120..180."""
    lm = np.zeros((68, 2), np.float32)
    lm[0:17] = np.c_[np.linspace(60, 240, 17), np.full(17, 260.0)]  # jaw: must not affect any box
    eyes = list(range(17, 27)) + list(range(36, 48))
    lm[eyes] = np.c_[np.linspace(100, 200, 22), np.tile([100.0, 140.0], 11)]
    lm[27:36] = np.c_[np.tile([140.0, 160.0], 5)[:9], np.linspace(120, 180, 9)]
    lm[48:68] = np.c_[np.linspace(120, 180, 20), np.tile([mouth_top, mouth_bottom], 10)]
    return lm


def test_part_boxes_of_hand_built_landmarks_match_hand_computation():
    h, w = 300, 400
    pb = parts.part_boxes_from_landmarks(_hand_landmarks(), (h, w), margin=0.1)
    # Widened (10 % of each side): eyes y 96..144 x 90..210; nose y 114..186 x 138..162;
    # mouth y 193..217 x 114..186. Eye points reach y 140 below the nose top 120: eyes keep their
    # widened bottom 144. Nose points end at 180 above the mouth's 195: split at (186 + 193) / 2 = 189.5.
    px = {"eyes": (96, 90, 144, 210), "nose": (144, 138, 189.5, 162), "mouth": (189.5, 114, 217, 186)}
    for part, (y0, x0, y1, x1) in px.items():
        want = np.array([(y0 + .5) / h, (x0 + .5) / w, (y1 + .5) / h, (x1 + .5) / w], np.float32)
        np.testing.assert_allclose(getattr(pb, part), want, atol=1e-6, err_msg=part)


def test_part_box_split_never_moves_a_landmark_into_the_neighbouring_part():
    h, w = 300, 400
    # Mouth y 182..202 (widened top 180) while the widened nose ends at 186: the midpoint 183 would cut
    # the upper lip at 182, so the split is clamped to the lip's top point.
    pb = parts.part_boxes_from_landmarks(_hand_landmarks(182.0, 202.0), (h, w), margin=0.1)
    assert pb.nose[2] == pb.mouth[0]
    np.testing.assert_allclose(pb.mouth[0], (182 + .5) / h, atol=1e-6)


def test_part_boxes_are_clipped_to_the_frame():
    lm = _hand_landmarks()
    pb = parts.part_boxes_from_landmarks(lm, (300, 205), margin=0.1)  # eyes widened to x 210 > frame
    assert pb.eyes[3] == 1.0 and pb.eyes[1] < 1.0


def test_part_boxes_refuse_an_upside_down_face():
    lm = _hand_landmarks()
    lm[:, 1] = 400 - lm[:, 1]
    with pytest.raises(ValueError, match="stacked"):
        parts.part_boxes_from_landmarks(lm, (500, 400))


def test_part_boxes_reject_bad_landmarks():
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        parts.part_boxes_from_landmarks(np.zeros((5, 2)), (100, 100))
    lm = _hand_landmarks()
    lm[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        parts.part_boxes_from_landmarks(lm, (300, 400))


def test_compute_parts_gives_one_entry_per_face_per_frame(obama):
    img, lm = obama
    h, w = img.shape[:2]
    fs = FaceSet([_frame_faces([lm]), FrameFaces.empty(), _frame_faces([lm, lm + [0, 5]])], (h, w))
    ps = parts.compute_parts(fs)
    assert isinstance(ps, PartSet) and ps.frame_size == (h, w)
    assert [len(f) for f in ps.frames] == [1, 0, 2]
    np.testing.assert_allclose(ps.frames[2][1].mouth[[0, 2]] - ps.frames[2][0].mouth[[0, 2]], 5 / h, atol=1e-6)


def test_box_mask_selects_pixels_whose_centres_are_inside():
    m = parts.box_mask([0.25, 0.5, 0.75, 1.0], (4, 4))
    want = np.zeros((4, 4), np.float32)
    want[1:3, 2:4] = 1  # row centres 0.375, 0.625; column centres 0.625, 0.875
    np.testing.assert_array_equal(m, want)
    assert m.dtype == np.float32


# ---------------------------------------------------------------- polygons and soft masks

def test_part_polygons_are_convex_hulls_of_the_part_landmarks(obama):
    _, lm = obama
    polys = parts.part_polygons(lm)
    for part, idx in (("eyes", list(range(17, 27)) + list(range(36, 48))), ("nose", range(27, 36)),
                      ("mouth", range(48, 68))):
        poly = polys[part].astype(np.float32)
        # every landmark of the group is inside or on the hull, and every vertex is a landmark
        for p in lm[list(idx)]:
            assert cv2.pointPolygonTest(poly.reshape(-1, 1, 2), (float(p[0]), float(p[1])), True) >= -1e-3
        d = np.abs(poly[:, None] - lm[list(idx)][None]).sum(-1).min(1)
        assert (d < 1e-4).all()


def test_part_masks_are_one_at_the_part_centre_and_zero_at_the_corners(obama):
    img, lm = obama
    h, w = img.shape[:2]
    masks = parts.part_masks(lm, (h, w))
    groups = {"eyes": list(range(17, 27)) + list(range(36, 48)), "nose": list(range(27, 36)),
              "mouth": list(range(48, 68))}
    for part, m in masks.items():
        assert m.shape == (h, w) and m.dtype == np.float32
        assert m.min() >= 0 and m.max() <= 1
        cx, cy = np.round(lm[groups[part]].mean(0)).astype(int)
        assert m[cy, cx] > 0.99, part
        assert m[0, 0] == 0 and m[0, -1] == 0 and m[-1, 0] == 0 and m[-1, -1] == 0
    for eye in (lm[36:42].mean(0), lm[42:48].mean(0)):
        x, y = np.round(eye).astype(int)
        assert masks["eyes"][y, x] > 0.99


def test_part_mask_is_one_on_the_dilated_hull_and_falls_off_as_a_gaussian_of_the_distance(obama):
    img, lm = obama
    h, w = img.shape[:2]
    eyes = lm[list(range(17, 27)) + list(range(36, 48))]
    span = eyes.max(0) - eyes.min(0)
    size = np.sqrt(span[0] * span[1])
    dil, sig = 0.15 * size, 0.1 * size
    m = parts.part_masks(lm, (h, w), dilate_frac=0.15, feather_frac=0.1)["eyes"]
    hull = cv2.convexHull(eyes.astype(np.float32))
    ys, xs = np.mgrid[0:h, 0:w]
    sel = (np.abs(xs - eyes[:, 0].mean()) < size * 2) & (np.abs(ys - eyes[:, 1].mean()) < size * 2)
    dist = np.array([-cv2.pointPolygonTest(hull, (float(x), float(y)), True) for x, y in zip(xs[sel], ys[sel])])
    vals = m[sel]
    assert (vals[dist <= dil - 1.5] == 1).all()                   # hull and its dilation: full weight
    band = (dist > dil + 1.5) & (dist < dil + 3 * sig)
    want = np.exp(-0.5 * ((dist[band] - dil) / sig) ** 2)         # Gaussian of the distance beyond
    assert np.abs(vals[band] - want).max() < 0.12
    assert (vals[dist > dil + 4 * sig + 1.5] == 0).all()
    assert m[sel].max() == 1 and (m[~sel] == 0).all()


def test_render_part_masks_unions_faces_and_zeros_frames_without_faces(obama):
    img, lm = obama
    h, w = img.shape[:2]
    other = lm - [120, 0]
    fs = FaceSet([_frame_faces([lm]), FrameFaces.empty(), _frame_faces([lm, other])], (h, w))
    out = parts.render_part_masks(fs, parts=("nose", "mouth"))
    assert set(out) == {"nose", "mouth"}
    one = parts.part_masks(lm, (h, w))
    two = parts.part_masks(other, (h, w))
    for p in ("nose", "mouth"):
        assert out[p].shape == (3, h, w) and out[p].dtype == np.float32
        np.testing.assert_array_equal(out[p][0], one[p])
        assert not out[p][1].any()
        np.testing.assert_array_equal(out[p][2], np.maximum(one[p], two[p]))
    only_second = parts.render_part_masks(fs, parts=("mouth",), face_index=1)["mouth"]
    assert not only_second[0].any() and not only_second[1].any()
    np.testing.assert_array_equal(only_second[2], two["mouth"])
    with pytest.raises(ValueError, match="unknown part"):
        parts.render_part_masks(fs, parts=("ears",))


def test_draw_parts_outlines_each_box_in_its_colour_and_leaves_the_input_alone():
    h, w = 100, 120
    imgs = np.zeros((2, h, w, 3), np.float32)
    pb = PartBoxes(eyes=[0.2, 0.25, 0.4, 0.75], nose=[0.4, 0.4, 0.6, 0.6], mouth=[0.6, 0.3, 0.8, 0.7])
    ps = PartSet([[pb], []], (h, w))
    out = parts.draw_parts(imgs, ps, thickness=1)
    assert out.shape == imgs.shape and not imgs.any()
    # eyes box: rows 20..39, columns 30..89 (pixel centres inside)
    np.testing.assert_allclose(out[0, 20, 60], parts.PART_COLORS["eyes"])
    np.testing.assert_allclose(out[0, 30, 30], parts.PART_COLORS["eyes"])
    np.testing.assert_allclose(out[0, 30, 89], parts.PART_COLORS["eyes"])
    np.testing.assert_allclose(out[0, 50, 48], parts.PART_COLORS["nose"])
    np.testing.assert_allclose(out[0, 79, 50], parts.PART_COLORS["mouth"])
    assert not out[0, 30, 60].any()   # inside a box: untouched
    assert not out[1].any()           # frame without faces: untouched
    with pytest.raises(ValueError, match="frame"):
        parts.draw_parts(imgs[:1], ps)
