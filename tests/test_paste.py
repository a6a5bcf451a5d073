"""Paste back: erode/feather, round trips through align_crop, placeholders, colour match, errors."""
import os

import numpy as np
import pytest
from PIL import Image

from models.face.align import align_crop
from models.face.geometry import apply_affine
from models.face.paste import erode_feather, paste_back
from models.face.records import CropSet, FaceSet, FrameFaces
from synthclip import make_faces, smooth_frames, unit_face

DATA = os.path.join(os.path.dirname(__file__), "data")


def face_at(cx, cy, scale, angle_deg=0.0) -> np.ndarray:
    a = np.radians(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return unit_face() @ r.T * scale + [cx, cy]


def disc(h, w, cx, cy, r):
    y, x = np.mgrid[0:h, 0:w]
    return (((x - cx) ** 2 + (y - cy) ** 2) <= r * r).astype(np.float32)


def test_erode_shrinks_and_dilate_grows_a_disc_by_the_kernel_radius():
    m = disc(200, 200, 100, 100, 60)
    for erode, radius in ((10, 50), (25, 35), (-10, 70)):
        out = erode_feather(m, erode, 0)
        assert set(np.unique(out)) <= {0.0, 1.0}
        assert out.sum() == pytest.approx(np.pi * radius ** 2, rel=0.02)
    np.testing.assert_array_equal(erode_feather(m, 0, 0), m)


def test_feathered_mask_stays_inside_the_eroded_mask_and_is_soft_inward():
    m = disc(200, 200, 100, 100, 60)
    eroded = erode_feather(m, 10, 0)
    out = erode_feather(m, 10, 8)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert np.all(out <= eroded)  # never exceeds the eroded binary mask
    assert out[100, 100] == pytest.approx(1.0, abs=1e-6)
    # along a radius: ~0 at the eroded edge (r = 50), 0.5 about `feather` = 8 px inside it, 1 deep inside
    row = out[100, 100:160]
    assert row[50] < 0.05 and row[51] == 0.0
    assert 0.3 < row[42] < 0.7
    assert row[30] > 0.97
    assert np.all(np.diff(row) <= 1e-6)  # monotone falloff toward the edge
    with pytest.raises(ValueError, match="feather"):
        erode_feather(m, 0, -1)


def aligned_frame(h=240, w=320, faces=((160, 110, 60, 10),), seed=0, size=512):
    frames = smooth_frames(1, h, w, seed)
    fs = FaceSet([make_faces([face_at(*f) for f in faces])], (h, w))
    crops, cs, masks = align_crop(frames, fs, size=size)
    return frames, crops, cs, masks


def test_paste_of_unchanged_crops_reproduces_the_frame_inside_and_is_bit_identical_outside():
    # Tolerance: cubic up-sampling into a 512 crop and cubic down-sampling back on a smooth image;
    # measured mean abs 2.6e-5, max 1.4e-4 (cv2 quantises sample positions to 1/32 px); asserted with
    # margin: mean < 2e-4, max < 2e-3.
    frames, crops, cs, masks = aligned_frame()
    out, used = paste_back(frames, crops, cs, masks, erode=0, feather=0)
    inside, outside = used[0] > 0, used[0] == 0
    assert inside.sum() > 2000 and outside.sum() > 2000
    diff = np.abs(out[0] - frames[0])[inside]
    assert diff.mean() < 2e-4 and diff.max() < 2e-3
    assert np.array_equal(out[0][outside], frames[0][outside])


def test_paste_round_trip_on_a_photo_stays_within_interpolation_tolerance():
    # Real texture: grace_hopper.jpg as pixels, a hand-placed synthetic face, crop scale 1.8 (up-sampling).
    # Measured mean abs 1.1e-3 (max 0.047 on JPEG edges); asserted mean < 5e-3. (At crop size 256, a
    # 0.9x down-sampling, the loss is 7e-3: detail finer than the crop's pixels does not come back.)
    img = np.asarray(Image.open(os.path.join(DATA, "grace_hopper.jpg")).convert("RGB"), np.float32) / 255
    h, w = img.shape[:2]
    fs = FaceSet([make_faces([face_at(w / 2, h / 2.3, w / 5, -8)])], (h, w))
    crops, cs, masks = align_crop(img[None], fs, size=512)
    out, used = paste_back(img[None], crops, cs, masks, erode=0, feather=0)
    inside = used[0] > 0
    assert np.abs(out[0] - img)[inside].mean() < 5e-3
    assert np.array_equal(out[0][~inside], img[~inside])


def test_solid_red_crop_paints_the_face_region_red_and_leaves_the_rest_bit_identical():
    frames, crops, cs, masks = aligned_frame()
    red = np.zeros_like(crops)
    red[..., 0] = 1.0
    out, used = paste_back(frames, red, cs, masks, erode=0, feather=0)
    full = used[0] >= 1.0
    assert full.sum() > 5000
    # exact up to float32 round-off of cv2's cubic weights on a constant image (measured 2.4e-7)
    np.testing.assert_allclose(out[0][full], np.broadcast_to([1.0, 0.0, 0.0], out[0][full].shape), atol=1e-6)
    assert np.array_equal(out[0][used[0] == 0], frames[0][used[0] == 0])
    # independent check of where: face_at(160, 110, 60, 10) puts the nose tip (0, 0.1) near (159, 116)
    lm = face_at(160, 110, 60, 10)
    for idx in (30, 36, 45, 57):  # nose tip, outer eye corners, lower lip: all well inside the face
        x, y = np.round(lm[idx]).astype(int)
        np.testing.assert_allclose(out[0, y, x], [1.0, 0.0, 0.0], atol=1e-6)
    for x, y in ((5, 5), (315, 235), (60, 200)):
        assert np.array_equal(out[0, y, x], frames[0, y, x])
    # a soft edge blends: out = frame * (1 - m) + red * m there
    soft = (used[0] > 0.2) & (used[0] < 0.8)
    m = used[0][soft][:, None]
    np.testing.assert_allclose(out[0][soft], frames[0][soft] * (1 - m) + np.array([1.0, 0, 0]) * m, atol=1e-5)


def test_paste_without_masks_uses_the_whole_crop_square():
    frames, crops, cs, masks = aligned_frame(size=128)
    blue = np.zeros_like(crops)
    blue[..., 2] = 1.0
    out, used = paste_back(frames, blue, cs, None, erode=0, feather=0)
    # the square's image in the frame: corners of the crop mapped back
    corners = apply_affine(cs.crops[0].inverse(), [[-0.5, -0.5], [127.5, 127.5]])
    centre = np.round(corners.mean(0)).astype(int)
    assert used[0][centre[1], centre[0]] == 1.0
    # every frame pixel inside the square's image is pasted: the covered area is the square's side^2
    side = np.linalg.norm(apply_affine(cs.crops[0].inverse(), [127.5, -0.5]) - corners[0])
    assert (used[0] > 0.5).sum() == pytest.approx(side ** 2, rel=0.03)


def test_frames_without_faces_keep_their_placeholder_crop_and_pass_through_bit_identical():
    h, w = 96, 128
    frames = smooth_frames(12, h, w, seed=3)
    faces = [FrameFaces.empty() if i in (3, 7) else make_faces([face_at(64 + i, 44, 22)]) for i in range(12)]
    crops, cs, masks = align_crop(frames, FaceSet(faces, (h, w)), size=64)
    assert len(crops) == 12
    red = np.zeros_like(crops)
    red[..., 0] = 1.0
    calls = []
    out, used = paste_back(frames, red, cs, masks, feather=2, progress=lambda: calls.append(1))
    assert len(calls) == 12  # once per crop
    for i in range(12):
        if i in (3, 7):
            assert np.array_equal(out[i], frames[i]) and not used[i].any()
        else:
            assert used[i].max() > 0.99 and not np.array_equal(out[i], frames[i])
    # without masks a placeholder would cover the whole frame if it were pasted: it must be skipped
    out, used = paste_back(frames, red, cs, None, feather=0)
    assert np.array_equal(out[[3, 7]], frames[[3, 7]]) and not used[[3, 7]].any()


def test_two_faces_in_one_frame_are_both_pasted_and_the_mask_is_their_union():
    frames, crops, cs, masks = aligned_frame(faces=((90, 110, 45, 0), (230, 110, 45, -15)), size=128)
    edited = np.zeros_like(crops)
    edited[0, ..., 0] = 1.0  # face 0 red
    edited[1, ..., 1] = 1.0  # face 1 green
    out, used = paste_back(frames, edited, cs, masks, feather=0)
    for (cx, cy), colour in (((90, 114), [1, 0, 0]), ((230, 114), [0, 1, 0])):
        np.testing.assert_allclose(out[0, cy, cx], colour, atol=1e-6)
    _, used0 = paste_back(frames, edited[:1], CropSet(cs.crops[:1], cs.frame_size, 1), masks[:1], feather=0)
    _, used1 = paste_back(frames, edited[1:], CropSet(cs.crops[1:], cs.frame_size, 1), masks[1:], feather=0)
    np.testing.assert_array_equal(used, np.maximum(used0, used1))


def test_crops_of_another_size_are_resized_to_the_recorded_crop_size():
    frames, crops, cs, masks = aligned_frame(size=256)
    small = np.zeros((1, 64, 64, 3), np.float32)
    small[..., 0] = 1.0
    small_masks = masks[:, ::4, ::4]
    out, used = paste_back(frames, small, cs, small_masks, feather=0)
    x, y = np.round(face_at(160, 110, 60, 10)[30]).astype(int)
    np.testing.assert_allclose(out[0, y, x], [1.0, 0.0, 0.0], atol=1e-6)
    _, used_full = paste_back(frames, crops, cs, masks, feather=0)
    assert ((used > 0.5) != (used_full > 0.5)).mean() < 0.01


def test_color_match_undoes_a_per_channel_gain_and_offset_of_the_crop():
    frames, crops, cs, masks = aligned_frame(size=256)
    tinted = np.clip(crops * [0.6, 0.9, 0.7] + [0.25, 0.0, 0.1], 0, 1).astype(np.float32)
    plain, used = paste_back(frames, tinted, cs, masks, feather=0)
    matched, _ = paste_back(frames, tinted, cs, masks, feather=0, color_match="rgb")
    full = used[0] >= 1.0
    err_plain = np.abs(plain[0] - frames[0])[full].mean()
    err_matched = np.abs(matched[0] - frames[0])[full].mean()
    assert err_plain > 0.05 and err_matched < 0.01
    lab, _ = paste_back(frames, tinted, cs, masks, feather=0, color_match="lab")
    assert np.abs(lab[0] - frames[0])[full].mean() < err_plain / 2


def test_paste_back_rejects_mismatched_inputs_with_clear_errors():
    frames, crops, cs, masks = aligned_frame(size=64)
    with pytest.raises(ValueError, match="2 crop image"):
        paste_back(frames, np.concatenate([crops, crops]), cs, masks)
    with pytest.raises(ValueError, match="cut from 1 frame"):
        paste_back(np.concatenate([frames, frames]), crops, cs, masks)
    with pytest.raises(ValueError, match="240x320"):
        paste_back(frames[:, :200], crops, cs, masks)
    bad = crops.copy()
    bad[0, 10, 10, 1] = np.nan
    with pytest.raises(ValueError, match="crop 0 .*NaN"):
        paste_back(frames, bad, cs, masks)
    with pytest.raises(ValueError, match="color_match"):
        paste_back(frames, crops, cs, masks, color_match="hsv")
    with pytest.raises(ValueError, match="masks must be"):
        paste_back(frames, crops, cs, masks[:, :, :10])


def test_paste_back_progress_exception_interrupts():
    class Stop(Exception):
        pass

    def stop():
        raise Stop()

    frames, crops, cs, masks = aligned_frame(size=64)
    with pytest.raises(Stop):
        paste_back(frames, crops, cs, masks, progress=stop)
