"""SAM refinement (models/partswap/sam.py): loading official-layout checkpoints and box -> mask prediction.

No real SAM weights are reachable offline. The tests therefore use
  * a TINY randomly initialised SAM built here with segment_anything's own classes (the structure of
    segment_anything/build_sam.py's _build_sam with a small image encoder) and saved as a .pth state dict:
    it proves the wiring (every key loaded, the official SamPredictor path, equality with the directly
    built model), NOT segmentation quality;
  * the official registry's vit_b / vit_l / vit_h built on the meta device (shapes only, no memory), and a
    vit_b checkpoint whose tensors are stride-0 views of one zero (a few KB on disk, official keys and
    shapes), for variant inference, the official build path and the error messages.
"""
from __future__ import annotations

import os
import sys
from functools import partial

import numpy as np
import pytest
import torch

pytest.importorskip("segment_anything")

from segment_anything import SamPredictor, sam_model_registry  # noqa: E402
from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,  # noqa: E402
                                       TwoWayTransformer)

from models.partswap.sam import SamCheckpointError, SamWeightsMissing, infer_sam_spec, load_sam  # noqa: E402

TINY_IMG, TINY_PATCH, TINY_EMBED, TINY_DEPTH, TINY_HEADS, TINY_WINDOW, TINY_GLOBAL = 64, 16, 32, 3, 2, 2, (1,)


def _tiny_sam(seed: int = 0) -> Sam:
    """build_sam.py's _build_sam with a small image encoder (64 px input, 4x4 grid, 32 wide, 3 blocks,
    block 1 global, the others 2x2 windows); prompt encoder and mask decoder as in the official builder."""
    torch.manual_seed(seed)
    grid = TINY_IMG // TINY_PATCH
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=TINY_DEPTH, embed_dim=TINY_EMBED, img_size=TINY_IMG, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=TINY_HEADS, patch_size=TINY_PATCH,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=TINY_GLOBAL, window_size=TINY_WINDOW,
            out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                     input_image_size=(TINY_IMG, TINY_IMG), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    # Zero-initialised pos_embed / rel_pos would hide a wrong layout; give them values.
    with torch.no_grad():
        for name, p in model.image_encoder.named_parameters():
            if "pos" in name:
                p.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = _tiny_sam()
    path = tmp_path_factory.mktemp("sams") / "sam_tiny.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


def _image(h: int = 40, w: int = 56, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(6 * xx + 1), np.cos(5 * yy), np.sin(4 * (xx + yy))], -1) * 0.4 + 0.5
    return (img + rng.normal(0, 0.05, img.shape)).clip(0, 1).astype(np.float32)


def _reference(model: Sam, image: np.ndarray, boxes: np.ndarray):
    """Independent reference: segment_anything's own numpy API, one box per SamPredictor.predict call."""
    predictor = SamPredictor(model)
    predictor.set_image(np.rint(image.astype(np.float64) * 255).astype(np.uint8), image_format="RGB")
    masks, scores = [], []
    for box in boxes:
        m, s, _ = predictor.predict(box=box, multimask_output=False)
        masks.append(m[0])
        scores.append(s[0])
    return np.stack(masks).astype(np.float32), np.array(scores, np.float32)


def _meta_state(variant: str) -> dict:
    with torch.device("meta"):
        return sam_model_registry[variant]().state_dict()


def _stride0_checkpoint(variant: str, path, edit=None) -> str:
    """A checkpoint with the official keys and shapes whose tensors are views of one shared zero."""
    zero = torch.zeros(1)
    state = {k: zero.expand(v.shape) if v.dim() else zero[0] for k, v in _meta_state(variant).items()}
    if edit:
        edit(state)
    torch.save(state, path)
    return str(path)


# ----------------------------------------------------------------------------------------------- loading


def test_load_sam_uses_every_key_of_a_tiny_official_layout_checkpoint(tiny):
    """Wiring only (tiny random model): every saved tensor ends up in the loaded model, unchanged."""
    model, path = tiny
    refiner = load_sam(path, allow_custom=True)
    saved = torch.load(path, weights_only=True)
    loaded = refiner.model.state_dict()
    assert refiner.variant == "custom"
    assert set(loaded) == set(saved)
    for k, v in saved.items():
        assert torch.equal(loaded[k], v), k
    assert refiner.spec.num_heads == TINY_HEADS and refiner.spec.global_attn_indexes == TINY_GLOBAL
    assert refiner.spec.window_size == TINY_WINDOW and refiner.spec.img_size == TINY_IMG


def test_masks_for_boxes_equal_the_official_predictor_on_the_directly_built_model(tiny):
    """Wiring/equality with segment_anything's SamPredictor, not segmentation quality (random weights)."""
    model, path = tiny
    refiner = load_sam(path, allow_custom=True)
    image = _image()
    boxes = np.array([[4, 3, 30, 25], [10.5, 8.25, 55, 39], [0, 0, 56, 40]], np.float32)
    masks = refiner.masks_for_boxes(image, boxes)
    ref_masks, ref_scores = _reference(model, image, boxes)
    assert masks.shape == (3, 40, 56) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert 0 < ref_masks.mean() < 1, "degenerate reference: all-empty or all-full masks prove nothing"
    np.testing.assert_array_equal(masks, ref_masks)
    np.testing.assert_allclose(refiner.scores, ref_scores, atol=1e-6, rtol=0)


def test_boxes_outside_the_image_are_clipped_to_its_edges(tiny):
    model, path = tiny
    refiner = load_sam(path, allow_custom=True)
    image = _image()
    got = refiner.masks_for_boxes(image, np.array([[-20, -7, 80, 30]], np.float32))
    ref, _ = _reference(model, image, np.array([[0, 0, 56, 30]], np.float32))
    np.testing.assert_array_equal(got, ref)


def test_no_boxes_give_an_empty_mask_stack_without_running_the_encoder(tiny):
    _, path = tiny
    refiner = load_sam(path, allow_custom=True)
    calls = []
    refiner.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    out = refiner.masks_for_boxes(_image(), np.zeros((0, 4), np.float32))
    assert out.shape == (0, 40, 56) and out.dtype == np.float32
    assert refiner.scores.shape == (0,) and not calls


def test_same_image_twice_runs_the_image_encoder_once(tiny):
    _, path = tiny
    refiner = load_sam(path, allow_custom=True)
    calls = []
    refiner.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    image, box = _image(), np.array([[4, 3, 30, 25]], np.float32)
    first = refiner.masks_for_boxes(image, box)
    second = refiner.masks_for_boxes(image.copy(), box)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    refiner.masks_for_boxes(_image(seed=2), box)
    assert len(calls) == 2


def test_to_bfloat16_casts_only_the_image_encoder_and_still_predicts(tiny):
    _, path = tiny
    refiner = load_sam(path, allow_custom=True)
    image, boxes = _image(), np.array([[4, 3, 30, 25], [0, 0, 56, 40]], np.float32)
    full = refiner.masks_for_boxes(image, boxes)
    refiner.to("cpu", torch.bfloat16)
    assert {p.dtype for p in refiner.model.image_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in refiner.model.mask_decoder.parameters()} == {torch.float32}
    half = refiner.masks_for_boxes(image, boxes)
    assert half.shape == full.shape and set(np.unique(half)) <= {0.0, 1.0}
    assert (half == full).mean() > 0.9  # bf16 encoder: near-threshold pixels may flip
    refiner.to("cpu", torch.float32)  # bf16-rounded weights stay rounded; the cast hooks go away
    assert not refiner.model.image_encoder._forward_hooks and not refiner.model.image_encoder._forward_pre_hooks
    assert {p.dtype for p in refiner.model.image_encoder.parameters()} == {torch.float32}


# ------------------------------------------------------------------------------------- variant inference


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_variant_inference_picks_the_official_variant_from_meta_state_dict_shapes(variant):
    with torch.device("meta"):
        official = sam_model_registry[variant]()
    spec = infer_sam_spec(official.state_dict())
    blocks = official.image_encoder.blocks
    assert spec.variant == variant
    assert spec.depth == len(blocks)
    assert spec.embed_dim == official.image_encoder.patch_embed.proj.out_channels
    assert spec.num_heads == blocks[0].attn.num_heads
    assert spec.global_attn_indexes == tuple(i for i, b in enumerate(blocks) if b.window_size == 0)


def test_unknown_embed_dim_is_an_error_unless_custom_models_are_allowed(tiny):
    _, path = tiny
    with pytest.raises(SamCheckpointError, match="768 \\(vit_b\\), 1024 \\(vit_l\\) or 1280 \\(vit_h\\)") as e:
        load_sam(path)
    assert "sam_tiny.pth" in str(e.value) and os.path.dirname(path) in str(e.value)


def test_load_sam_builds_vit_b_from_a_checkpoint_with_the_official_keys_and_shapes(tmp_path):
    refiner = load_sam(_stride0_checkpoint("vit_b", tmp_path / "sam_vit_b_01ec64.pth"))
    assert refiner.variant == "vit_b"
    shapes = {k: tuple(v.shape) for k, v in refiner.model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in _meta_state("vit_b").items()}
    assert not any(t.is_meta for t in refiner.model.parameters())
    assert refiner.model.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])


# ------------------------------------------------------------------------------------------------ errors


def _assert_names_file_and_folder(message: str, path) -> None:
    assert os.path.basename(str(path)) in message
    assert os.path.dirname(os.path.abspath(str(path))) in message


def test_missing_file_error_names_folder_licence_and_where_to_get_the_files(tmp_path):
    path = tmp_path / "sams" / "sam_vit_b_01ec64.pth"
    with pytest.raises(SamWeightsMissing) as e:
        load_sam(str(path))
    msg = str(e.value)
    _assert_names_file_and_folder(msg, path)
    assert "Apache-2.0" in msg and "facebookresearch/segment-anything" in msg and "sam_vit_h_4b8939.pth" in msg


def test_truncated_checkpoint_error_names_the_file_and_folder(tiny, tmp_path):
    _, path = tiny
    data = open(path, "rb").read()
    bad = tmp_path / "sam_vit_b_01ec64.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SamCheckpointError, match="truncated or corrupt") as e:
        load_sam(str(bad))
    _assert_names_file_and_folder(str(e.value), bad)
    assert "Apache-2.0" in str(e.value)


def test_truncated_safetensors_error_names_the_file_and_folder(tiny, tmp_path):
    from safetensors.torch import save_file

    model, _ = tiny
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(good))
    bad = tmp_path / "sam_cut.safetensors"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(SamCheckpointError, match="truncated or corrupt") as e:
        load_sam(str(bad), allow_custom=True)
    _assert_names_file_and_folder(str(e.value), bad)
    assert load_sam(str(good), allow_custom=True).variant == "custom"


def test_non_sam_state_dict_error_names_the_file_and_folder(tmp_path):
    path = tmp_path / "not_sam.pth"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(2)}, path)
    with pytest.raises(SamCheckpointError, match="not a Segment Anything") as e:
        load_sam(str(path))
    _assert_names_file_and_folder(str(e.value), path)


def test_vit_b_checkpoint_with_a_wrong_shaped_tensor_error_lists_the_expected_shape(tmp_path):
    key = "image_encoder.blocks.3.attn.qkv.weight"

    def shrink(state):
        state[key] = torch.zeros(2304, 700)

    path = _stride0_checkpoint("vit_b", tmp_path / "sam_vit_b_01ec64.pth", shrink)
    with pytest.raises(SamCheckpointError) as e:
        load_sam(path)
    msg = str(e.value)
    _assert_names_file_and_folder(msg, path)
    assert f"{key}: (2304, 700), expected (2304, 768)" in msg and "vit_b" in msg


def test_vit_b_checkpoint_with_extra_decoder_keys_is_rejected(tmp_path):
    def add_hq(state):
        state["mask_decoder.hf_token.weight"] = torch.zeros(1, 256)

    path = _stride0_checkpoint("vit_b", tmp_path / "sam_hq_vit_b.pth", add_hq)
    with pytest.raises(SamCheckpointError, match="mask_decoder.hf_token.weight") as e:
        load_sam(path)
    _assert_names_file_and_folder(str(e.value), path)


def test_vit_b_embed_dim_with_the_wrong_block_count_is_rejected(tmp_path):
    def drop_last_block(state):
        for k in [k for k in state if k.startswith("image_encoder.blocks.11.")]:
            del state[k]

    path = _stride0_checkpoint("vit_b", tmp_path / "sam_vit_b_01ec64.pth", drop_last_block)
    with pytest.raises(SamCheckpointError, match="11 image encoder blocks; the official vit_b"):
        load_sam(path)


def test_missing_segment_anything_error_says_pip_install(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(ImportError, match="pip install segment-anything"):
        load_sam(tiny[1], allow_custom=True)


# ------------------------------------------------------------------------------------- input validation


@pytest.mark.parametrize("image, match", [
    (np.zeros((40, 56), np.float32), "HxWx3"),
    (np.zeros((40, 56, 4), np.float32), "HxWx3"),
    (np.zeros((40, 56, 3), np.uint8), "float image"),
    (np.full((40, 56, 3), np.nan, np.float32), "NaN"),
    (np.full((40, 56, 3), 255.0, np.float32), "0..1"),
])
def test_masks_for_boxes_rejects_bad_images(tiny, image, match):
    refiner = load_sam(tiny[1], allow_custom=True)
    with pytest.raises(ValueError, match=match):
        refiner.masks_for_boxes(image, np.array([[1, 1, 10, 10]], np.float32))


@pytest.mark.parametrize("boxes, match", [
    (np.array([1, 1, 10, 10], np.float32), r"\[N, 4\]"),
    (np.zeros((2, 5), np.float32), r"\[N, 4\]"),
    (np.array([[1, np.nan, 10, 10]], np.float32), "NaN"),
    (np.array([[10, 1, 5, 10]], np.float32), "box 0 .* flipped"),
    (np.array([[1, 1, 10, 10], [3, 3, 3, 9]], np.float32), "box 1 .* empty"),
    (np.array([[60, 1, 70, 10]], np.float32), "outside the 56x40 image"),
])
def test_masks_for_boxes_rejects_bad_boxes(tiny, boxes, match):
    refiner = load_sam(tiny[1], allow_custom=True)
    with pytest.raises(ValueError, match=match):
        refiner.masks_for_boxes(_image(), boxes)
