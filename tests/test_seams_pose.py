"""The seam metric (models/partswap/seams.py), head yaw from landmarks (models/face/pose.py), and the classic
swap's pose status and messages."""
import numpy as np
import pytest
import torch

from models.face.pose import K_WIDTH_OVER_DEPTH, yaw_degrees
from models.face.records import FaceSet, FrameFaces
from models.partswap import classic, seams


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    return (0.4 + 0.2 * rng.random((h, w, 3))).astype(np.float32)


def _disc(h, w, r, soft):
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(yy - h / 2, xx - w / 2)
    return np.clip((r - d) / soft + 0.5, 0, 1).astype(np.float32) if soft else (d < r).astype(np.float32)


# ------------------------------------------------------------------------------------------ seam metric

def test_identical_images_blend_with_ratio_one_and_nothing_out_of_range():
    t = _texture(64, 64, 0)
    m = _disc(64, 64, 20, 8)
    r = seams.seam_metrics(t, t, t.copy(), m)
    assert r["gradient_ratio"] == pytest.approx(1.0, abs=1e-6) and r["out_of_range"] == 0.0
    band = seams.boundary_band(m)
    trans = (m > 0.02) & (m < 0.98)
    assert band[trans].all() and r["band_pixels"] == band.sum() > trans.sum()


def test_a_hard_edge_between_flat_colours_is_a_large_gradient_ratio_and_an_alpha_mix_is_in_range():
    t = np.full((64, 64, 3), 0.3, np.float32) + 0.001 * _texture(64, 64, 1)
    d = np.full((64, 64, 3), 0.7, np.float32) + 0.001 * _texture(64, 64, 2)
    hard = _disc(64, 64, 20, 0)
    out = hard[..., None] * d + (1 - hard[..., None]) * t
    r = seams.seam_metrics(out, t, d, hard)
    assert r["gradient_ratio"] > 1000 and r["out_of_range"] == 0.0
    soft = _disc(64, 64, 20, 16)
    r_soft = seams.seam_metrics(soft[..., None] * d + (1 - soft[..., None]) * t, t, d, soft)
    assert r_soft["out_of_range"] == 0.0 and r_soft["gradient_ratio"] < r["gradient_ratio"] / 10


def test_a_halo_brighter_than_both_images_is_counted_as_out_of_range():
    t = _texture(64, 64, 3)
    d = _texture(64, 64, 4)
    m = _disc(64, 64, 20, 8)
    out = m[..., None] * d + (1 - m[..., None]) * t
    band = seams.boundary_band(m)
    halo = band.copy()
    halo[:32] = False  # the lower half of the band made 0.2 brighter than both images (values are <= 0.6)
    out[halo] += 0.2
    r = seams.seam_metrics(out, t, d, m)
    assert r["out_of_range"] == pytest.approx(halo.sum() / band.sum())


# ------------------------------------------------------------------------------------------------ yaw

def _face_at_yaw(yaw_deg, roll_deg=0.0, iod=60.0):
    """68 points: outer eye corners W apart at depth 0, nose tip D = W / K in front on the midline, the rest
    on the eye line; turned by yaw about the vertical axis, projected orthographically, rolled in the image."""
    w = 1.45 * iod
    pts3 = np.zeros((68, 3))
    pts3[:, 0] = np.linspace(-w / 2, w / 2, 68)
    pts3[36] = [-w / 2, 0, 0]
    pts3[45] = [w / 2, 0, 0]
    pts3[30] = [0, 0.8 * iod, w / K_WIDTH_OVER_DEPTH]
    a = np.radians(yaw_deg)
    x = pts3[:, 0] * np.cos(a) + pts3[:, 2] * np.sin(a)
    p = np.stack([x, pts3[:, 1]], 1)
    r = np.radians(roll_deg)
    rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    return p @ rot.T + [200.0, 150.0]


@pytest.mark.parametrize("yaw", [-60.0, -25.0, 0.0, 10.0, 40.0])
def test_yaw_is_recovered_from_a_turned_and_rolled_face(yaw):
    assert yaw_degrees(_face_at_yaw(yaw)) == pytest.approx(yaw, abs=1e-6)
    assert yaw_degrees(_face_at_yaw(yaw, roll_deg=30.0)) == pytest.approx(yaw, abs=1e-6)


def test_frontal_bundled_portraits_have_small_yaw(photo_faces):
    for name in ("obama", "astronaut", "grace_hopper"):
        assert abs(yaw_degrees(photo_faces(name).landmarks68[0])) < 5.0


# --------------------------------------------------------------------------------- pose in the swap

def test_faces_turned_beyond_max_yaw_are_left_unchanged_and_reported(photo, photo_faces):
    img = photo("obama2")
    lm = photo_faces("obama2").landmarks68[0]
    yaw = yaw_degrees(lm)
    assert 15 < abs(yaw) < 25
    fs = FaceSet([FrameFaces(photo_faces("obama2").boxes, [1.0], np.zeros((1, 5, 2)), lm[None])], img.shape[:2])
    src = (photo("biden"), photo_faces("biden").landmarks68[0])
    out, mask, status = classic.swap_parts_batch(img[None], fs, {"mouth": src}, max_yaw=abs(yaw) - 1)
    assert status == [f"skipped: pose (yaw {yaw:+.0f} deg, max_yaw {abs(yaw) - 1:g})"]
    np.testing.assert_array_equal(out[0], img)
    assert not mask.any()
    out, mask, status = classic.swap_parts_batch(img[None], fs, {"mouth": src}, max_yaw=abs(yaw) + 1)
    assert status == ["swapped"] and mask.max() == 1.0
    with pytest.raises(ValueError, match="max_yaw must be 0..90"):
        classic.swap_parts_batch(img[None], fs, {"mouth": src}, max_yaw=float("nan"))


def test_every_face_mode_reports_each_face(photo, photo_faces):
    img = photo("obama")
    ff = photo_faces("obama")
    lm = ff.landmarks68[0]
    turned = _face_at_yaw(50.0, iod=30.0)  # a second, hand-made face far turned
    both = FrameFaces(np.concatenate([ff.boxes, [[170, 120, 230, 200]]]), [1.0, 1.0], np.zeros((2, 5, 2)),
                      np.stack([lm, turned]))
    fs = FaceSet([both], img.shape[:2])
    src = (photo("biden"), photo_faces("biden").landmarks68[0])
    _, _, status = classic.swap_parts_batch(img[None], fs, {"eyes": src}, face_index=None)
    assert status == ["face 0 swapped; face 1 skipped: pose (yaw +50 deg, max_yaw 25)"]


def test_classic_part_swap_node_messages_name_inputs_and_refuse_nan():
    from packloader import load_pack

    n = load_pack().NODE_CLASS_MAPPINGS
    fm = n["SwapForge_FaceModelLoader"]().load("yunet (embedded)", 0)[0]
    from synthclip import photo as load

    tgt = torch.from_numpy(load("obama.jpg"))[None]
    src = torch.from_numpy(load("biden.jpg"))[None]
    node = n["SwapForge_ClassicPartSwap"]()
    _, _, status = node.swap(fm, tgt, "poisson", "rgb", 3, 0.15, 0.1, mouth_source=src)
    assert status == "frame 0: face 3 out of range (1 face)"
    grey = torch.full((1, 96, 96, 3), 0.5)
    with pytest.raises(ValueError) as e:
        node.swap(fm, tgt, "poisson", "rgb", 0, 0.15, 0.1, eyes_source=grey)
    assert "no face found in the eyes source" in str(e.value) and "threshold" not in str(e.value)
    assert "eyes_source" in str(e.value)
    for bad in ({"dilate": float("nan")}, {"max_yaw": float("inf")}):
        args = {"dilate": 0.15, "max_yaw": 25.0, **bad}
        with pytest.raises(ValueError, match=f"{next(iter(bad))}.*not a finite number"):
            node.swap(fm, tgt, "poisson", "rgb", 0, args["dilate"], 0.1, mouth_source=src, max_yaw=args["max_yaw"])
    with pytest.raises(ValueError, match="turned .* more than max_yaw"):
        node.swap(fm, tgt, "poisson", "rgb", 0, 0.15, 0.1, mouth_source=src, max_yaw=5.0)


def test_face_parts_and_select_faces_refuse_nan_widgets(photo_faces):
    from packloader import load_pack

    n = load_pack().NODE_CLASS_MAPPINGS
    ff = photo_faces("obama")
    fs = FaceSet([ff], (512, 410))
    img = torch.zeros((1, 512, 410, 3))
    with pytest.raises(ValueError, match="feather.*not a finite number"):
        n["SwapForge_FaceParts"]().parts(img, fs, -1, 0.15, float("nan"))
    with pytest.raises(ValueError, match="min_similarity.*not a finite number"):
        n["SwapForge_SelectFaces"]().select(fs, "index", "0", float("nan"))
