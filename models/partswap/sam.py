"""SAM refinement of part boxes: official Segment Anything checkpoints -> one binary mask per box.

What is done. The boxes of models/partswap/parts.py are coarse; Segment Anything (Kirillov et al.,
"Segment Anything", ICCV 2023, arXiv:2304.02643, sec. 3; code github.com/facebookresearch/segment-anything,
Apache-2.0) turns a box prompt into an object mask. This module loads the official checkpoints that
ComfyUI users keep in ``models/sams`` (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``: flat state dicts with keys ``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``), builds the model with segment_anything's own classes and runs the official predictor
path: ``SamPredictor.set_image`` once per image (the ViT image encoder, paper sec. 3 "image encoder"), then
all boxes at once through ``predict_torch`` with ``ResizeLongestSide.apply_boxes_torch``-transformed boxes
and ``multimask_output=False`` (one mask per box; the paper's single-output mode for unambiguous prompts),
thresholded at ``Sam.mask_threshold`` (0.0) on the logits upscaled to the image size.

Variant inference (`infer_sam_spec`, shapes only, so a state dict on the meta device works):
  * the embed dim, ``image_encoder.patch_embed.proj.weight.shape[0]``, picks the variant of the official
    registry (segment_anything/build_sam.py): 768 -> vit_b, 1024 -> vit_l, 1280 -> vit_h; the block count
    (``image_encoder.blocks.<i>``) must be the registry's depth (12 / 24 / 32); heads (12 / 16 / 16) and
    global-attention blocks ([2,5,8,11] / [5,11,17,23] / [7,15,23,31]) come from the registry, and the
    model is built by ``sam_model_registry[variant]``;
  * any other embed dim is an error, unless ``allow_custom=True`` (meant for tests with tiny random
    models): then the image encoder is read from the shapes (patch size from the patch-embedding kernel,
    image size = grid of ``pos_embed`` x patch size, depth = block count, head dim =
    ``attn.rel_pos_h.shape[1]`` so heads = embed dim / head dim, a block is global when its ``rel_pos_h``
    has 2 * grid - 1 rows and windowed (window = (rows + 1) / 2) otherwise, MLP ratio from ``mlp.lin1``,
    neck width = ``neck.0.weight.shape[0]``), and the prompt encoder and mask decoder are exactly those of
    the official ``_build_sam`` (prompt dim 256, two-way transformer depth 2, MLP 2048, 8 heads, 3 extra
    multimask outputs, IoU head depth 3 / width 256). Such a model has ``variant == "custom"``.
The model is built on the meta device (no memory, no random init), every checkpoint shape is compared with
the model's (a mismatch is an error that lists the expected shapes), then
``load_state_dict(strict=True, assign=True)`` uses every key. ``pixel_mean``/``pixel_std`` are not in the
checkpoints (non-persistent buffers); segment_anything creates them on the CPU with the official values.

Dtype: ``SamRefiner.to(device, dtype)`` casts only the image encoder (96 % of vit_b's weights, 99 % of vit_h's) to
``dtype``; the prompt encoder and mask decoder stay float32, because segment_anything's prompt encoder casts
box coordinates to float32 before multiplying them with its (would-be half) Gaussian matrix. Forward hooks
cast the encoder's input to ``dtype`` and its output back to float32; the state dict is unchanged.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..safe_load import UnsafeCheckpointError, load_torch_file

LICENCE = "Apache-2.0"
SOURCE = ("the 'Model Checkpoints' section of the facebookresearch/segment-anything README on GitHub "
          "(files on dl.fbaipublicfiles.com/segment_anything/)")

# segment_anything/build_sam.py: build_sam_vit_{b,l,h}.
REGISTRY: Dict[str, dict] = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11),
                  file="sam_vit_b_01ec64.pth", size="375 MB"),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23),
                  file="sam_vit_l_0b3195.pth", size="1.25 GB"),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31),
                  file="sam_vit_h_4b8939.pth", size="2.56 GB"),
}
VARIANT_BY_EMBED_DIM = {spec["embed_dim"]: name for name, spec in REGISTRY.items()}

PATCH_KEY = "image_encoder.patch_embed.proj.weight"
POS_KEY = "image_encoder.pos_embed"
BOXES_PER_CHUNK = 16  # the mask decoder repeats the 256x64x64 image embedding once per box


class SamCheckpointError(ValueError):
    """A Segment Anything checkpoint that cannot be used as it is."""


class SamWeightsMissing(SamCheckpointError, FileNotFoundError):
    """The Segment Anything checkpoint is not where it was looked for."""


def _where(path: str) -> str:
    return f"{os.path.basename(path)} in the folder {os.path.dirname(os.path.abspath(path))}"


def _get_it() -> str:
    files = ", ".join(f"{s['file']} ({name}, about {s['size']})" for name, s in REGISTRY.items())
    return (f"Use one of the official Segment Anything checkpoints ({files}; licence {LICENCE}) from {SOURCE}, "
            f"put it in ComfyUI's models/sams folder and refresh the node.")


def _import_segment_anything():
    try:
        from segment_anything import SamPredictor, sam_model_registry
        from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                               TwoWayTransformer)
    except ImportError as exc:
        raise ImportError(
            f"SwapForge: SAM refinement needs the segment_anything package, which failed to import ({exc}). "
            f"Install it with `pip install segment-anything` (it also needs a working torchvision).") from exc
    return dict(SamPredictor=SamPredictor, registry=sam_model_registry, ImageEncoderViT=ImageEncoderViT,
                MaskDecoder=MaskDecoder, PromptEncoder=PromptEncoder, Sam=Sam,
                TwoWayTransformer=TwoWayTransformer)


# ----------------------------------------------------------------------------------------------- variant


@dataclass(frozen=True)
class SamSpec:
    """The image-encoder hyper-parameters of one SAM checkpoint (build_sam.py's _build_sam arguments)."""

    variant: str                      # "vit_b" | "vit_l" | "vit_h" | "custom"
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: Tuple[int, ...]
    # Read from shapes only for "custom"; the official values otherwise.
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256


def _block_indexes(state: Mapping[str, torch.Tensor]) -> List[int]:
    found = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    return sorted(found)


def infer_sam_spec(state: Mapping[str, torch.Tensor], path: str = "<state dict>",
                   allow_custom: bool = False) -> SamSpec:
    """Shapes of a SAM state dict -> `SamSpec` (rules in the module docstring). Reads ``.shape`` only.

    Raises:
        SamCheckpointError: not a SAM ViT checkpoint (no patch embedding or blocks), an embed dim that is
            none of 768/1024/1280 (unless ``allow_custom``), or a block count other than the registry's.
    """
    if not isinstance(state, Mapping) or PATCH_KEY not in state or POS_KEY not in state:
        sample = sorted(map(str, state.keys()))[:5] if isinstance(state, Mapping) else type(state).__name__
        raise SamCheckpointError(
            f"SwapForge: {_where(path)} is not a Segment Anything (ViT) checkpoint: it has no {PATCH_KEY} / "
            f"{POS_KEY} (first keys: {sample}). MobileSAM, SAM 2 and other re-trained variants use other "
            f"layouts and are not supported. {_get_it()}")
    patch = state[PATCH_KEY].shape
    embed_dim = int(patch[0])
    blocks = _block_indexes(state)
    if blocks != list(range(len(blocks))) or not blocks:
        raise SamCheckpointError(
            f"SwapForge: {_where(path)} has image_encoder blocks {blocks[:8]}..., expected 0..depth-1 without "
            f"gaps; the file is not a complete SAM checkpoint. {_get_it()}")
    depth = len(blocks)
    variant = VARIANT_BY_EMBED_DIM.get(embed_dim)
    if variant is not None:
        reg = REGISTRY[variant]
        if depth != reg["depth"]:
            raise SamCheckpointError(
                f"SwapForge: {_where(path)} has embed dim {embed_dim} (SAM {variant}) but {depth} image "
                f"encoder blocks; the official {variant} ({reg['file']}) has {reg['depth']}. {_get_it()}")
        return SamSpec(variant, embed_dim, depth, reg["num_heads"], tuple(reg["global_attn_indexes"]))
    if not allow_custom:
        raise SamCheckpointError(
            f"SwapForge: {_where(path)} has image-encoder embed dim {embed_dim} ({PATCH_KEY} shape "
            f"{tuple(patch)}); the official SAM checkpoints have 768 (vit_b), 1024 (vit_l) or 1280 (vit_h). "
            f"{_get_it()}")
    # Generic rule (tests with tiny random models): everything from shapes, see the module docstring.
    patch_size = int(patch[-1])
    grid = int(state[POS_KEY].shape[1])
    rel_rows, head_dims = [], set()
    for i in blocks:
        key = f"image_encoder.blocks.{i}.attn.rel_pos_h"
        if key not in state:
            raise SamCheckpointError(
                f"SwapForge: {_where(path)} lacks {key}; SAM image encoders use relative positions in every "
                f"block. {_get_it()}")
        rel_rows.append(int(state[key].shape[0]))
        head_dims.add(int(state[key].shape[1]))
    if len(head_dims) != 1 or embed_dim % next(iter(head_dims)):
        raise SamCheckpointError(
            f"SwapForge: {_where(path)} has relative-position widths {sorted(head_dims)} that do not divide "
            f"the embed dim {embed_dim} into heads. {_get_it()}")
    global_idx = tuple(i for i, rows in zip(blocks, rel_rows) if rows == 2 * grid - 1)
    windows = {(rows + 1) // 2 for rows in rel_rows if rows != 2 * grid - 1}
    if len(windows) > 1:
        raise SamCheckpointError(
            f"SwapForge: {_where(path)} has windowed blocks with different window sizes {sorted(windows)}. "
            f"{_get_it()}")
    needed = ("image_encoder.blocks.0.mlp.lin1.weight", "image_encoder.neck.0.weight")
    if any(k not in state for k in needed):
        raise SamCheckpointError(f"SwapForge: {_where(path)} lacks {[k for k in needed if k not in state]}. "
                                 f"{_get_it()}")
    lin1 = state[needed[0]].shape[0]
    return SamSpec("custom", embed_dim, depth, embed_dim // next(iter(head_dims)), global_idx,
                   img_size=grid * patch_size, patch_size=patch_size,
                   window_size=windows.pop() if windows else 0, mlp_ratio=lin1 / embed_dim,
                   out_chans=int(state[needed[1]].shape[0]))


def build_sam_from_spec(spec: SamSpec) -> torch.nn.Module:
    """segment_anything's Sam for ``spec``: the registry builder for official variants, otherwise the same
    construction as build_sam.py's ``_build_sam`` with the spec's image encoder. Builds on the current
    default device (load_sam uses the meta device)."""
    from functools import partial

    sa = _import_segment_anything()
    if spec.variant in REGISTRY:
        return sa["registry"][spec.variant]()
    prompt_embed_dim, grid = 256, spec.img_size // spec.patch_size
    return sa["Sam"](
        image_encoder=sa["ImageEncoderViT"](
            depth=spec.depth, embed_dim=spec.embed_dim, img_size=spec.img_size, mlp_ratio=spec.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=spec.num_heads,
            patch_size=spec.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=spec.global_attn_indexes, window_size=spec.window_size,
            out_chans=spec.out_chans),
        prompt_encoder=sa["PromptEncoder"](
            embed_dim=prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(spec.img_size, spec.img_size), mask_in_chans=16),
        mask_decoder=sa["MaskDecoder"](
            num_multimask_outputs=3,
            transformer=sa["TwoWayTransformer"](depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048,
                                                num_heads=8),
            transformer_dim=prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


# ----------------------------------------------------------------------------------------------- loading


def _read_state(path: str) -> dict:
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError for a bad header/body
            raise SamCheckpointError(
                f"SwapForge: {_where(path)} is not a readable safetensors file (truncated or corrupt: {exc}). "
                f"Download or convert it again. {_get_it()}") from exc
    try:
        state = load_torch_file(path)
    except UnsafeCheckpointError as exc:
        raise SamCheckpointError(f"SwapForge: {_where(path)} is not a plain weights file ({exc}). {_get_it()}") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise SamCheckpointError(
            f"SwapForge: {_where(path)} is not a readable PyTorch checkpoint (truncated or corrupt: {exc}). "
            f"Download it again and replace the file. {_get_it()}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SamCheckpointError(
            f"SwapForge: {_where(path)} is not a flat state dict of tensors (found {type(state).__name__}); "
            f"the official SAM checkpoints are. {_get_it()}")
    return dict(state)


def _check_shapes(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: str,
                  spec: SamSpec) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: {tuple(state[k].shape)}, expected {tuple(v.shape)}"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} tensors have the wrong shape ({'; '.join(wrong[:5])})")
    if missing:
        parts.append(f"{len(missing)} keys are missing ({', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} keys are not in SAM {spec.variant} ({', '.join(unexpected[:5])}; "
                     f"HQ-SAM and other extended decoders are not supported)")
    raise SamCheckpointError(
        f"SwapForge: {_where(path)} does not match SAM {spec.variant}: {'; '.join(parts)}. "
        f"The file is damaged or another model. {_get_it()}")


def load_sam(path: str, allow_custom: bool = False) -> "SamRefiner":
    """Read an official SAM checkpoint (.pth via ``torch.load(weights_only=True)``, or .safetensors with the
    same keys) and return a `SamRefiner` on the CPU in float32.

    ``allow_custom`` admits embed dims other than 768/1024/1280 (the generic rule of the module docstring,
    for tests with tiny random models); the nodes leave it False.

    Raises:
        SamWeightsMissing: no file at ``path``.
        SamCheckpointError: truncated/corrupt file, not a SAM checkpoint, or wrong/missing/extra tensors
            (the message lists the expected shapes).
        ImportError: segment_anything is not installed (the message says ``pip install segment-anything``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SamWeightsMissing(f"SwapForge: no Segment Anything checkpoint at {path} ({_where(path)}). "
                                f"{_get_it()}")
    _import_segment_anything()
    state = _read_state(path)
    spec = infer_sam_spec(state, path, allow_custom=allow_custom)
    with torch.device("meta"):
        model = build_sam_from_spec(spec)
    _check_shapes(state, model.state_dict(), path, spec)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          strict=True, assign=True)
    left_on_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left_on_meta:  # cannot happen with segment_anything 1.0; guards a future layout change
        raise SamCheckpointError(f"SwapForge: {_where(path)} left {left_on_meta[:5]} unset after loading.")
    model.requires_grad_(False).eval()
    return SamRefiner(model, spec)


# ----------------------------------------------------------------------------------------------- refiner


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"SwapForge: SAM needs one RGB image as an HxWx3 numpy array, got {shape}.")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"SwapForge: SAM needs a float image with values 0..1, got dtype {image.dtype}. "
                         f"Divide 0..255 images by 255.")
    if not np.isfinite(image).all():
        raise ValueError("SwapForge: the image for SAM contains NaN or infinite values.")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"SwapForge: SAM needs image values in 0..1, got {lo:.3g}..{hi:.3g}. "
                         f"Divide 0..255 images by 255.")
    # SamPredictor.set_image expects HWC uint8 0..255 (it resizes with PIL).
    return np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _check_boxes(boxes, height: int, width: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"SwapForge: SAM boxes must be an [N, 4] array of x0, y0, x1, y1 pixels, got shape "
                         f"{boxes.shape}.")
    if not np.isfinite(boxes).all():
        raise ValueError("SwapForge: a SAM box contains NaN or infinite coordinates.")
    flipped = np.nonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0]
    if flipped.size:
        i = int(flipped[0])
        raise ValueError(f"SwapForge: SAM box {i} {boxes[i].tolist()} is empty or flipped; expected "
                         f"x0 < x1 and y0 < y1 (xyxy pixels).")
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    outside = np.nonzero((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))[0]
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"SwapForge: SAM box {i} {boxes[i].tolist()} lies outside the {width}x{height} image.")
    return clipped


def _cast_input(dtype):
    def hook(module, args):
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    return hook


def _output_to_float32(module, args, output):
    return output.float()


class SamRefiner:
    """A loaded SAM model with the official predictor. `masks_for_boxes` returns the masks and leaves the
    model's predicted IoU of each mask in ``.scores`` ([N] float32, empty before the first call).

    The image embedding of the last image is kept: a second call with the same image (equal after the
    uint8 conversion) reuses it, so per-part calls cost one encoder pass.
    """

    def __init__(self, model: torch.nn.Module, spec: SamSpec):
        self.model = model
        self.spec = spec
        self.variant = spec.variant
        self.dtype = torch.float32
        self.scores = np.zeros((0,), np.float32)
        self._hooks: list = []
        self._predictor = _import_segment_anything()["SamPredictor"](model)
        self._image_u8: Optional[np.ndarray] = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device, dtype: Optional[torch.dtype] = None) -> "SamRefiner":
        """Move to ``device``; ``dtype`` (e.g. torch.float16) applies to the image encoder only (module
        docstring). Drops the cached image embedding. Casting down is lossy: going back to float32 keeps
        the rounded weights (load the file again for exact float32)."""
        self.model.to(device)
        if dtype is not None:
            for h in self._hooks:
                h.remove()
            self._hooks = []
            self.model.image_encoder.to(dtype)
            if dtype != torch.float32:
                enc = self.model.image_encoder
                self._hooks = [enc.register_forward_pre_hook(_cast_input(dtype)),
                               enc.register_forward_hook(_output_to_float32)]
            self.dtype = dtype
        self._predictor.reset_image()
        self._image_u8 = None
        return self

    @torch.no_grad()
    def masks_for_boxes(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """One SAM mask per box prompt.

        Args:
            image: [H, W, 3] float RGB in 0..1 (converted to uint8 by rounding x * 255, the predictor's input).
            boxes_xyxy: [N, 4] x0, y0, x1, y1 in pixels of ``image`` (SamPredictor's convention). Boxes
                are clipped to [0, W] x [0, H]; a NaN, flipped/empty box or one wholly outside the image
                is a ValueError.

        Returns:
            [N, H, W] float32 in {0, 1} (logits > Sam.mask_threshold). N = 0 gives [0, H, W] without
            running the model. ``self.scores`` becomes the [N] predicted IoUs.
        """
        image_u8 = _check_image(image)
        height, width = image_u8.shape[:2]
        boxes = _check_boxes(boxes_xyxy, height, width)
        if len(boxes) == 0:
            self.scores = np.zeros((0,), np.float32)
            return np.zeros((0, height, width), np.float32)
        predictor = self._predictor
        if not (predictor.is_image_set and self._image_u8 is not None
                and np.array_equal(self._image_u8, image_u8)):
            self._image_u8 = None
            predictor.set_image(image_u8, image_format="RGB")
            self._image_u8 = image_u8
        masks, scores = [], []
        for start in range(0, len(boxes), BOXES_PER_CHUNK):
            chunk = torch.as_tensor(boxes[start:start + BOXES_PER_CHUNK], dtype=torch.float32,
                                    device=predictor.device)
            chunk = predictor.transform.apply_boxes_torch(chunk, predictor.original_size)
            m, iou, _ = predictor.predict_torch(None, None, boxes=chunk, multimask_output=False)
            masks.append(m[:, 0].cpu())
            scores.append(iou[:, 0].float().cpu())
        self.scores = torch.cat(scores).numpy().astype(np.float32)
        return torch.cat(masks).numpy().astype(np.float32)
