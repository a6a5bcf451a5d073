"""FuseAnyPart stage glue: the records the nodes pass between stages and the steps that join the
clip_inputs, fusion (eq. 3), injection (eq. 4) and checkpoint modules. Plain torch, no ComfyUI.

Stages, in a workflow: part boxes (models/partswap/parts.py) -> encode_parts (CLIP inputs + encoder) ->
fusion.make_condition (eq. 3) -> condition_features (the MLP) -> attn2_patches (eq. 4 on the 16
cross-attention layers) ; inpaint_concat_latent gives the UNet's masked reference latent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from . import checkpoints, clip_inputs
from .fusion import PARTS, FapCondition
from .injection import SD15_ATTN2_LAYERS, LayerProjectors, PartMLP, make_attn2_replace

# SD1.5's latent scale (the authors multiply VAE latents by 0.18215; ComfyUI's process_latent_in does the same
# to concat_latent_image for SD1.5-family models).
SD15_LATENT_SCALE = 0.18215


@dataclass
class FapAdapter:
    """SWAPFORGE_FAP_ADAPTER: fap.bin's part MLP (image_proj2) and its 16 per-layer image projectors."""

    mlp: PartMLP
    projectors: LayerProjectors
    clip_width: int
    source: str = ""


def load_fap(path: str) -> Tuple[dict, FapAdapter]:
    """fap.bin (or the pack's safetensors export) -> (UNet state dict in diffusers layout with conv_in in
    ComfyUI's inpaint order, FapAdapter)."""
    state = checkpoints.load_fap_state(path)
    unet_sd, mlp_sd, projector_sd, width = checkpoints.split_fap_state(state, conv_in_order="comfy")
    mlp, projectors = checkpoints.build_adapter(mlp_sd, projector_sd)
    return unet_sd, FapAdapter(mlp.eval(), projectors.eval(), width, path)


@dataclass
class PartFeatures:
    """SWAPFORGE_PART_FEATURES: CLIP penultimate tokens of the target (the parts to swap skin-filled) and of each
    part reference (black except its box), plus the unconditional tokens, with the boxes they came with.

    target_tokens [B, 257, D]: the target with the `painted` parts skin-filled (every part with a reference);
    target_boxes part -> [B, 4] ([y0, x0, y1, x1] normalised);
    sources part -> (tokens [1, 257, D], box [1, 4]) for each connected reference; uncond [1, 257, D].
    A part that is then not swapped (Mask Fusion's toggle) must keep the target's own features (paper eq. 3),
    so the target is encoded again with only the swapped parts painted: `target_tokens_for(parts)`, through
    `encode_target` (kept from the encoder node), once per set of parts.
    """

    target_tokens: torch.Tensor
    target_boxes: Dict[str, torch.Tensor]
    sources: Dict[str, Tuple[torch.Tensor, torch.Tensor]]
    uncond: torch.Tensor
    painted: Tuple[str, ...] = PARTS
    encode_target: Optional[Callable[[Tuple[str, ...]], torch.Tensor]] = field(default=None, repr=False)
    width: int = field(init=False)
    _by_parts: Dict[Tuple[str, ...], torch.Tensor] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        self.width = int(self.target_tokens.shape[-1])
        self.painted = tuple(p for p in PARTS if p in self.painted)
        self._by_parts[self.painted] = self.target_tokens

    def target_tokens_for(self, parts) -> torch.Tensor:
        """Target tokens with exactly `parts` skin-filled (encoded on first use, then kept)."""
        key = tuple(p for p in PARTS if p in set(parts))
        if key not in self._by_parts:
            if self.encode_target is None:
                raise ValueError(f"SwapForge FuseAnyPart: these part features were encoded with {self.painted or 'no'} "
                                 f"part(s) painted and cannot re-encode the target for {key or 'no'} part(s). "
                                 "Connect Mask Fusion to a CLIP Part Encoder of this session.")
            self._by_parts[key] = self.encode_target(key)
        return self._by_parts[key]


def encode_parts(encode: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor,
                 target_boxes: List[Mapping[str, object]],
                 references: Mapping[str, Tuple[torch.Tensor, object]],
                 encode_uncond: Optional[Callable[[], torch.Tensor]] = None,
                 pre_resize: Optional[int] = clip_inputs.AUTHORS_CLIP_RESIZE,
                 encode_later: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> PartFeatures:
    """Build the exact CLIP inputs and encode them (paper sec. on the fusion module; note fuseanypart.md).

    encode: image [N, H, W, 3] in 0..1 -> penultimate tokens [N, 257, D] (ComfyUI's CLIP_VISION preprocesses
        to 224 px inside).
    target [B, H, W, 3]; target_boxes: one part -> box dict per target image. Only the parts with a reference
        are skin-filled in the target (a part without one is kept, paper eq. 3).
    references: part -> (image [1, h, w, 3], box [4]) for the parts to take from a reference; a non-square
        reference is padded with black to a square first (clip_inputs.pad_to_square), its box moved to match.
    encode_uncond: () -> tokens [1, 257, D] of the input that is zero after normalisation (the authors' exact
        unconditional input); None: encode(clip_inputs.zero_image()), the closest 0..1 image.
    pre_resize: the authors' PIL-bicubic resize of every image input before CLIP's own preprocessing (256, the
        default; clip_inputs.authors_resize); None or 0 skips it (straight to 224).
    encode_later: the encoder for re-encoding the target with fewer parts painted (PartFeatures.
        target_tokens_for), default `encode`.
    """
    if target.shape[1] != target.shape[2]:
        raise ValueError(f"SwapForge FuseAnyPart: the target is {target.shape[2]}x{target.shape[1]}; the CLIP grid "
                         "and the 9-channel UNet need square target crops. Use Align & Crop (ffhq, 512).")
    target_boxes = [tb.as_dict() if hasattr(tb, "as_dict") else dict(tb) for tb in target_boxes]
    prep = (lambda x: clip_inputs.authors_resize(x, pre_resize)) if pre_resize else (lambda x: x)  # noqa: E731
    bad = [p for p in references if p not in PARTS]
    if bad:
        raise ValueError(f"SwapForge FuseAnyPart: unknown part {bad[0]!r}; expected one of {PARTS}.")
    painted = tuple(p for p in PARTS if p in references)
    later = encode_later or encode

    def encode_target(parts: Tuple[str, ...], run=later) -> torch.Tensor:
        return run(prep(clip_inputs.skin_fill_target(target, target_boxes, parts=parts)))

    tokens = encode_target(painted, encode)
    boxes = {p: torch.stack([torch.as_tensor(tb[p], dtype=torch.float32).reshape(4) for tb in target_boxes])
             for p in PARTS}
    sources = {}
    for part, (image, box) in references.items():
        square, box = clip_inputs.pad_to_square(image[:1], box)   # CLIP crops to a square: keep the box true
        sources[part] = (encode(prep(clip_inputs.reference_input(square, box))), box)
    uncond = encode_uncond() if encode_uncond is not None else encode(clip_inputs.zero_image().to(target.dtype))
    for what, t in [("target", tokens), ("unconditional", uncond)] + [(p, s[0]) for p, s in sources.items()]:
        if t.ndim != 3 or t.shape[1] != 257:
            raise ValueError(f"SwapForge FuseAnyPart: the CLIP encoder gave {tuple(t.shape)} for the {what} image; "
                             "expected [N, 257, D] penultimate tokens of a ViT-*/14 at 224 px (ViT-H/14 for fap.bin).")
    return PartFeatures(tokens, boxes, sources, uncond, painted, encode_target)


@torch.no_grad()
def condition_features(adapter: FapAdapter, cond: FapCondition) -> Tuple[torch.Tensor, torch.Tensor]:
    """C of eq. 4 for the conditional and unconditional branches: MLP(patch tokens) -> [B, 256, 768] each."""
    checkpoints.check_clip_width(adapter.clip_width, int(cond.fused.shape[-1]))
    p = next(adapter.mlp.parameters())
    run = lambda t: adapter.mlp(t[:, 1:].to(device=p.device, dtype=p.dtype)).float()  # noqa: E731
    return run(cond.fused), run(cond.uncond)


def attn2_patches(adapter: FapAdapter, cond: FapCondition, lam: float, sigma_start: Optional[float] = None,
                  sigma_end: Optional[float] = None) -> List[Tuple[tuple, Callable]]:
    """[(ComfyUI attn2 key, replace patch)] for all 16 SD1.5 cross-attention layers (eq. 4)."""
    c_cond, c_uncond = condition_features(adapter, cond)
    return [(layer.comfy_key, make_attn2_replace(c_cond, c_uncond, adapter.projectors, layer.comfy_key, lam,
                                                 sigma_start, sigma_end))
            for layer in SD15_ATTN2_LAYERS]


def inpaint_concat_latent(latent: torch.Tensor, mask: torch.Tensor, seed: int,
                          scale: float = SD15_LATENT_SCALE) -> torch.Tensor:
    """The masked reference latent, in raw (unscaled) VAE units as ComfyUI's concat_latent_image expects.

    The authors: VAE(skin-filled target) x 0.18215, then inside the mask replaced by fresh N(0, 1) noise.
    ComfyUI multiplies concat_latent_image by the model's scale itself, so inside the mask this returns
    noise / scale. latent [B, 4, h, w] raw; mask [B, 1, h, w] in {0, 1}; seed fixes the noise (CPU generator).
    """
    if latent.ndim != 4 or mask.ndim != 4 or mask.shape[-2:] != latent.shape[-2:]:
        raise ValueError(f"SwapForge FuseAnyPart: latent {tuple(latent.shape)} and mask {tuple(mask.shape)} "
                         "must be [B, C, h, w] and [B, 1, h, w] of the same size.")
    g = torch.Generator("cpu").manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)
    noise = torch.randn(latent.shape, generator=g, dtype=torch.float32).to(latent.device, latent.dtype)
    m = mask.to(latent.dtype)
    return latent * (1 - m) + m * noise / scale
