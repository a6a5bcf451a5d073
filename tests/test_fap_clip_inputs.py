"""FuseAnyPart CLIP / VAE inputs and inpainting mask (models/fuseanypart/clip_inputs.py)."""
from __future__ import annotations

import numpy as np
import torch

from models.face.records import PartBoxes
from models.fuseanypart import clip_inputs as ci
from models.partswap import parts

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


def _boxes_on_pixel_centres(h, w):
    """Part boxes whose edges fall exactly on pixel centres ((k + 0.5) / size), the tie case of the rule."""
    c = lambda k, n: (k + 0.5) / n
    return {
        "eyes": [c(5, h), c(4, w), c(12, h), c(40, w)],
        "nose": [c(12, h), c(18, w), c(20, h), c(30, w)],
        "mouth": [0.61, 0.3, 0.83, 0.7],
    }


def test_skin_fill_paints_exactly_the_box_mask_pixels():
    h, w = 37, 53
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, h, w, 3, generator=gen)
    b0 = _boxes_on_pixel_centres(h, w)
    b1 = PartBoxes(eyes=[0.1, 0.2, 0.3, 0.8], nose=[0.3, 0.35, 0.5, 0.65], mouth=[0.5, 0.25, 0.7, 0.75])
    out = ci.skin_fill_target(image, [b0, b1])
    skin = torch.tensor([245 / 255, 223 / 255, 209 / 255])
    for i, bx in enumerate([b0, b1.as_dict()]):
        m = np.zeros((h, w), np.float32)
        for box in bx.values():
            m = np.maximum(m, parts.box_mask(box, (h, w)))
        inside = torch.from_numpy(m > 0)
        assert inside.sum() > 0
        assert torch.all(out[i][inside] == skin)
        assert torch.equal(out[i][~inside], image[i][~inside])
    # Tie rule by hand: the eyes box starts on row 5's centre (row 5 in, row 4 out) and ends on row 12's
    # centre (row 12 out); column 4 in, column 3 out.
    assert torch.all(out[0, 5, 10] == skin) and not torch.all(out[0, 4, 10] == skin)
    assert torch.all(out[0, 11, 4] == skin) and not torch.all(out[0, 11, 3] == skin)
    assert torch.equal(out[0, 12, 10], image[0, 12, 10])  # row 12, column 10: outside eyes and nose


def test_skin_fill_paints_only_requested_parts_and_keeps_input():
    image = torch.full((1, 16, 16, 3), 0.5)
    boxes = [{"eyes": [0.0, 0.0, 0.5, 1.0], "nose": [0.5, 0.0, 1.0, 1.0], "mouth": [0.5, 0.0, 1.0, 1.0]}]
    out = ci.skin_fill_target(image, boxes, parts=("eyes",), color=(255, 0, 0))
    assert torch.all(out[0, :8] == torch.tensor([1.0, 0.0, 0.0]))
    assert torch.all(out[0, 8:] == 0.5)
    assert torch.all(image == 0.5)


def test_pixel_box_mask_agrees_with_parts_box_mask():
    rng = np.random.default_rng(1)
    for h, w in [(37, 53), (64, 64), (5, 9)]:
        # Edges exactly on pixel centres, in float64 and in float32 (as part_boxes_from_landmarks stores them).
        tie = [(2 + 0.5) / h, (1 + 0.5) / w, (h - 1.5) / h, (w - 0.5) / w]
        boxes = [np.float64(tie), np.float32(tie)]
        for _ in range(20):
            y0, y1 = sorted(rng.random(2))
            x0, x1 = sorted(rng.random(2))
            boxes.append(np.float32([y0, x0, y1, x1]))
        for box in boxes:
            ours = ci.pixel_box_mask(torch.as_tensor(box), (h, w)).numpy()
            ref = parts.box_mask(box, (h, w)) > 0
            assert np.array_equal(ours, ref), (h, w, box)


def test_reference_input_is_black_outside_box_and_identical_inside():
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(2, 8, 8, 3, generator=gen) + 0.1  # never zero, so "kept" and "blacked" differ
    out = ci.reference_input(image, torch.tensor([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.2, 0.3]]))
    # Item 0: centres (i + 0.5) / 8 in [0.25, 0.75) -> rows 2..5; in [0.5, 1.0) -> columns 4..7.
    # Item 1: centres in [0, 0.2) -> rows 0..1; in [0, 0.3) -> columns 0..1 (column 2's centre is 0.3125).
    expected = torch.zeros_like(image)
    expected[0, 2:6, 4:8] = image[0, 2:6, 4:8]
    expected[1, 0:2, 0:2] = image[1, 0:2, 0:2]
    assert torch.equal(out, expected)


def test_reference_input_single_box_applies_to_every_image():
    image = torch.ones(3, 8, 8, 3)
    out = ci.reference_input(image, [0.25, 0.5, 0.75, 1.0])
    assert out.shape == image.shape
    assert torch.all(out[:, 2:6, 4:8] == 1) and out.sum() == 3 * 4 * 4 * 3


def test_boxes_mask_is_union_of_part_boxes():
    boxes = [{"eyes": [0.0, 0.0, 0.25, 0.5], "nose": [0.25, 0.25, 0.5, 0.75], "mouth": [0.75, 0.0, 1.0, 1.0]}]
    m = ci.boxes_mask(boxes, (8, 8))
    expected = torch.zeros(1, 8, 8)
    expected[0, 0:2, 0:4] = 1
    expected[0, 2:4, 2:6] = 1
    expected[0, 6:8, :] = 1
    assert m.dtype == torch.float32 and torch.equal(m, expected)


def test_latent_mask_is_nearest_resize_of_the_full_mask():
    mask = torch.zeros(1, 6, 6)
    mask[0, 1, :] = 1   # row 1 only
    mask[0, :, 4] = 1   # column 4 only
    out = ci.latent_mask(mask, (4, 4))
    assert out.shape == (1, 1, 4, 4)
    # Nearest: latent index k takes full index floor(k * 6 / 4) = 0, 1, 3, 4.
    idx = [(k * 6) // 4 for k in range(4)]
    expected = mask[0][idx][:, idx]
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(out[0, 0, 1], torch.ones(4)) and torch.equal(out[0, 0, :, 3], torch.ones(4))
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 2, 2] == 0


def test_latent_mask_of_box_union_at_sd_scale():
    boxes = [{"eyes": [0.25, 0.25, 0.5, 0.75], "nose": [0.5, 0.375, 0.625, 0.625], "mouth": [0.625, 0.3, 0.8, 0.7]}]
    full = ci.boxes_mask(boxes, (512, 512))
    lat = ci.latent_mask(full, (64, 64))
    assert torch.equal(lat[0, 0], full[0, ::8, ::8])  # 512 -> 64 nearest picks every 8th pixel


def test_preprocess_for_clip_of_constant_image_is_normalised_constant():
    rgb = torch.tensor([0.2, 0.5, 0.8])
    image = rgb.view(1, 1, 1, 3).expand(2, 300, 400, 3).clone()
    out = ci.preprocess_for_clip(image)
    assert out.shape == (2, 3, 224, 224)
    expected = ((rgb - MEAN) / STD).view(1, 3, 1, 1).expand_as(out)
    assert torch.allclose(out, expected, atol=1e-5)


def test_preprocess_for_clip_centre_crops_the_long_side():
    # Shortest side already 224: no resize, the centre 224 columns of 448 are kept (offset 112).
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 224, 448, 3, generator=gen)
    out = ci.preprocess_for_clip(image)
    expected = (image[0, :, 112:336].permute(2, 0, 1) - MEAN.view(3, 1, 1)) / STD.view(3, 1, 1)
    assert torch.allclose(out[0], expected, atol=1e-6)


def test_zero_image_normalises_to_zero_for_comfyui_and_pixel_values_are_zero():
    z = ci.zero_image()
    assert z.shape == (1, 224, 224, 3)
    normalised = (z - MEAN) / STD
    assert torch.allclose(normalised, torch.zeros_like(normalised), atol=1e-7)
    # ComfyUI rounds to 8 bits before normalising: still within half a step of zero.
    q = (torch.clamp(255 * z, 0, 255).round() / 255 - MEAN) / STD
    assert q.abs().max() < 0.5 / 255 / STD.min() + 1e-6
    assert torch.equal(ci.zero_pixel_values(), torch.zeros(1, 3, 224, 224))


def test_pad_to_square_keeps_the_part_pixels_under_the_moved_box():
    import torch
    from models.fuseanypart.clip_inputs import pad_to_square, pixel_box_mask
    img = torch.zeros(1, 40, 20, 3)
    box = [0.25, 0.2, 0.5, 0.8]                      # rows 10..20, cols 4..16 of the 40x20 image
    img[0, 10:20, 4:16] = 1.0
    sq, b = pad_to_square(img, box)
    assert sq.shape == (1, 40, 40, 3)
    # the image sits at columns 10..30 of the square; the box is now cols (10+4)..(10+16) of 40
    torch.testing.assert_close(b[0], torch.tensor([0.25, 14 / 40, 0.5, 26 / 40]))
    inside = pixel_box_mask(b[0], (40, 40))
    assert torch.all(sq[0][inside] == 1.0) and float(sq[0][~inside].sum()) == 0.0
