"""FuseAnyPart addition-based injection (paper eq. 4), for ComfyUI and diffusers.

The released inference path conditions the UNet on the fused CLIP patch features C = MLP(fused tokens)
([B, 256, 768], the `image_proj2` MLP) and, at every one of SD1.5's 16 cross-attention layers with a
latent of h x w tokens and width C_l, replaces the text attention by

    attn2(x) = to_out( lambda * nearest_upsample_{16 -> h x w}( image_projector_l(C) ) )        (eq. 4)

The text attention is not computed at all, lambda multiplies before `to_out` (its bias is not
scaled), and the transformer block adds the result to its input as usual.

One implementation, :func:`addition_injection`, computes everything up to (not including) `to_out`.
Two thin wrappers call it:

* :func:`make_attn2_replace` -> a ComfyUI ``attn2`` replace patch ``p(q, k, v, extra_options)``;
  ComfyUI applies ``attn2.to_out`` to what it returns (comfy/ldm/modules/attention.py,
  ``BasicTransformerBlock.forward``, lines 839-846 in ComfyUI 0.3.64).
* :class:`FapAttnProcessor` -> a diffusers attention processor that applies ``to_out`` itself.

Plain torch only: this module never imports ComfyUI, and imports nothing from diffusers.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

GRID = 16          # CLIP ViT-*/14 at 224 px: a 16 x 16 patch grid (256 tokens)
COND_DIM = 768     # width of the MLP output C (paper eq. 4), = SD1.5 cross-attention width


# ---------------------------------------------------------------------------------------------
# The MLP image_proj2: fused CLIP patch tokens -> condition C
# ---------------------------------------------------------------------------------------------
class PartMLP(nn.Module):
    """``image_proj2``: C = LayerNorm(W2 GELU(W1 x + b1) + b2), applied to each of the 256 patch tokens.

    The condition C of paper eq. 4 is this MLP applied to the fused patch tokens of paper eq. 3.
    Module names reproduce the checkpoint's keys ``proj.0.*``, ``proj.2.*``, ``proj.3.*``
    (``proj.1`` is the parameter-free GELU).

    Args:
        clip_width: D, the CLIP encoder width (1024 for ViT-L/14, 1280 for ViT-H/14).
        out_dim: width of C (768 in the release).
    """

    def __init__(self, clip_width: int, out_dim: int = COND_DIM):
        super().__init__()
        self.clip_width = int(clip_width)
        self.out_dim = int(out_dim)
        self.proj = nn.Sequential(
            nn.Linear(clip_width, clip_width),
            nn.GELU(),
            nn.Linear(clip_width, out_dim),
            nn.LayerNorm(out_dim),
        )

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """patch_tokens [B, 256, D] -> C [B, 256, out_dim]."""
        if patch_tokens.shape[-1] != self.clip_width:
            raise ValueError(
                f"PartMLP expects CLIP patch tokens of width {self.clip_width}, got shape "
                f"{tuple(patch_tokens.shape)}.")
        return self.proj(patch_tokens)


# ---------------------------------------------------------------------------------------------
# SD1.5's 16 cross-attention layers: diffusers names, widths, ComfyUI patch keys
# ---------------------------------------------------------------------------------------------
class Attn2Layer(NamedTuple):
    """One SD1.5 cross-attention layer.

    diffusers_name: module path of the ``attn2`` in diffusers' UNet2DConditionModel.
    width: its query width C_l (320, 640 or 1280).
    comfy_key: ``(block_name, number, transformer_index)``, the key under which
        ``ModelPatcher.set_model_attn2_replace(patch, block_name, number, transformer_index)`` stores a
        patch and under which ComfyUI's ldm UNet looks it up.
    """

    diffusers_name: str
    width: int
    comfy_key: tuple


def _build_sd15_layers() -> tuple:
    # ComfyUI facts (ComfyUI 0.3.64, read from source):
    # * comfy/ldm/modules/diffusionmodules/openaimodel.py, UNetModel._forward: sets
    #   transformer_options["block"] = ("input", id) for each input block (line 872), = ("middle", 0)
    #   for the whole middle block (line 886; the middle block's transformer is middle_block.1 but the
    #   key number is 0), and = ("output", id) for each output block (line 893).
    # * comfy/ldm/modules/attention.py, SpatialTransformer.forward (line 921) sets
    #   transformer_options["block_index"] = index of the transformer block (0 for SD1.5, depth 1);
    #   BasicTransformerBlock.forward (lines 789-790, 834-845) looks the attn2 replace patch up first
    #   under (block[0], block[1], block_index), then under (block[0], block[1]).
    # * comfy/model_patcher.py, set_model_options_patch_replace (lines 54-71) stores the patch under
    #   (block_name, number, transformer_index) when transformer_index is given.
    # * comfy/utils.py, unet_to_diffusers (lines 277-324): down_blocks.x.attentions.i ->
    #   input_blocks.(1 + 3x + i).1; mid_block.attentions.0 -> middle_block.1;
    #   up_blocks.x.attentions.i -> output_blocks.(3x + i).1.
    layers = []
    for x, width in enumerate((320, 640, 1280)):
        for i in range(2):
            layers.append(Attn2Layer(
                f"down_blocks.{x}.attentions.{i}.transformer_blocks.0.attn2", width,
                ("input", 1 + 3 * x + i, 0)))
    layers.append(Attn2Layer("mid_block.attentions.0.transformer_blocks.0.attn2", 1280, ("middle", 0, 0)))
    for x, width in ((1, 1280), (2, 640), (3, 320)):
        for i in range(3):
            layers.append(Attn2Layer(
                f"up_blocks.{x}.attentions.{i}.transformer_blocks.0.attn2", width,
                ("output", 3 * x + i, 0)))
    return tuple(layers)


#: The 16 cross-attention layers of SD1.5 in UNet order: input blocks 1, 2, 4, 5, 7, 8; middle 0;
#: output blocks 3-11.
SD15_ATTN2_LAYERS: tuple = _build_sd15_layers()
SD15_ATTN2_NAMES: tuple = tuple(layer.diffusers_name for layer in SD15_ATTN2_LAYERS)


def _layer_index(key) -> int:
    """Index into SD15_ATTN2_LAYERS for a diffusers name, a ComfyUI key (2- or 3-tuple) or an int."""
    if isinstance(key, int):
        if not 0 <= key < len(SD15_ATTN2_LAYERS):
            raise KeyError(f"SD1.5 has {len(SD15_ATTN2_LAYERS)} cross-attention layers; got index {key}.")
        return key
    if isinstance(key, str):
        name = key[: -len(".processor")] if key.endswith(".processor") else key
        for i, layer in enumerate(SD15_ATTN2_LAYERS):
            if layer.diffusers_name == name:
                return i
    elif isinstance(key, tuple) and len(key) in (2, 3):
        full = tuple(key) if len(key) == 3 else (key[0], key[1], 0)
        for i, layer in enumerate(SD15_ATTN2_LAYERS):
            if layer.comfy_key == full:
                return i
    raise KeyError(f"{key!r} is not one of SD1.5's 16 cross-attention layers (diffusers names "
                   f"{SD15_ATTN2_NAMES[0]!r}...; ComfyUI keys like ('input', 1, 0)).")


class LayerProjectors(nn.Module):
    """The 16 per-layer ``image_projector`` maps of eq. 4: Linear(768 -> C_l) with bias.

    Indexable by diffusers layer name, by ComfyUI key ``(block_name, number[, transformer_index])``
    or by position in :data:`SD15_ATTN2_LAYERS`. State-dict keys are ``layers.<i>.weight/bias``.

    Args:
        widths: the 16 output widths in SD15_ATTN2_LAYERS order (default SD1.5's); tests use tiny ones.
        cond_dim: width of the condition C (768).
    """

    def __init__(self, widths: Sequence[int] | None = None, cond_dim: int = COND_DIM):
        super().__init__()
        if widths is None:
            widths = [layer.width for layer in SD15_ATTN2_LAYERS]
        widths = [int(w) for w in widths]
        if len(widths) != len(SD15_ATTN2_LAYERS):
            raise ValueError(f"LayerProjectors needs {len(SD15_ATTN2_LAYERS)} widths, got {len(widths)}.")
        self.cond_dim = int(cond_dim)
        self.widths = tuple(widths)
        self.layers = nn.ModuleList(nn.Linear(cond_dim, w) for w in widths)

    def __getitem__(self, key) -> nn.Linear:
        return self.layers[_layer_index(key)]

    def __len__(self) -> int:
        return len(self.layers)

    def layer_dict(self) -> dict:
        """{diffusers layer name: {"weight", "bias"}} (the layout split_fap_state returns)."""
        return {name: {"weight": lin.weight.detach(), "bias": lin.bias.detach()}
                for name, lin in zip(SD15_ATTN2_NAMES, self.layers)}


# ---------------------------------------------------------------------------------------------
# Eq. 4 (up to to_out): the one implementation both wrappers call
# ---------------------------------------------------------------------------------------------
def token_grid(tokens: int, height: int | None = None, width: int | None = None) -> tuple:
    """(h, w) of a layer's token grid.

    Without the latent size, the grid is square as in the released code: h = w = sqrt(tokens).
    With the latent size (height, width in latent pixels), the grid is the latent downsampled k times by
    SD1.5's stride-2, padding-1 convolutions, each mapping n -> ceil(n / 2) (the same in ComfyUI and
    diffusers): the k with ceil(height / 2^k) * ceil(width / 2^k) == tokens is taken, which keeps the
    latent's aspect ratio for non-square images.
    """
    if height is not None and width is not None:
        for k in range(8):
            h = -(-int(height) // (1 << k))
            w = -(-int(width) // (1 << k))
            if h * w == tokens:
                return h, w
        raise ValueError(f"{tokens} tokens is not a downsampling of a {height} x {width} latent.")
    side = math.isqrt(int(tokens))
    if side * side != tokens:
        raise ValueError(
            f"{tokens} tokens is not a square grid; pass the latent height and width for non-square "
            f"latents.")
    return side, side


def addition_injection(cond_768: torch.Tensor, projector: nn.Linear, tokens: int, lam: float,
                       height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Paper eq. 4 up to (not including) ``to_out``: lam * nearest_upsample_{16->h x w}(projector(C)).

    Args:
        cond_768: C [B, 256, 768], the MLP output; tokens in row-first order of the 16 x 16 CLIP grid.
        projector: the layer's ``image_projector`` Linear(768 -> C_l). Its parameters are used in
            ``cond_768``'s dtype and on its device (the module itself is not moved).
        tokens: h * w, the number of latent tokens at this layer.
        lam: lambda of eq. 4 (0 gives zeros).
        height, width: the latent size (optional); see :func:`token_grid` for how h, w follow.

    Returns:
        [B, h * w, C_l] in row-first token order, dtype and device of ``cond_768``.
    """
    if cond_768.dim() != 3 or cond_768.shape[1] != GRID * GRID:
        raise ValueError(f"addition_injection expects C of shape [B, 256, 768], got {tuple(cond_768.shape)}.")
    h, w = token_grid(tokens, height, width)
    weight = projector.weight.to(device=cond_768.device, dtype=cond_768.dtype)
    bias = None if projector.bias is None else projector.bias.to(device=cond_768.device, dtype=cond_768.dtype)
    projected = F.linear(cond_768, weight, bias)                               # [B, 256, C_l]
    b, _, c = projected.shape
    grid = projected.transpose(1, 2).reshape(b, c, GRID, GRID)                 # [B, C_l, 16, 16]
    up = F.interpolate(grid, size=(h, w), mode="nearest")                      # [B, C_l, h, w]
    return lam * up.reshape(b, c, h * w).transpose(1, 2)                       # [B, h*w, C_l]


def _match_batch(features: torch.Tensor, rows: int, what: str) -> torch.Tensor:
    """Features [Bf, ...] for `rows` rows: as is when Bf == rows, tiled when Bf divides rows."""
    bf = features.shape[0]
    if bf == rows:
        return features
    if bf > 0 and rows % bf == 0:
        return features.repeat(rows // bf, *([1] * (features.dim() - 1)))
    raise ValueError(f"{what} has batch {bf}, which does not divide the {rows} latent rows it must cover.")


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(dim_head)) v with heads split; q [B, Nq, H*d], k, v [B, Nk, H*d] -> [B, Nq, H*d]."""
    b, nq, inner = q.shape
    d = inner // n_heads
    work = torch.promote_types(q.dtype, torch.float32)          # at least float32 for the softmax
    qh = q.reshape(b, nq, n_heads, d).transpose(1, 2).to(work)
    kh = k.reshape(b, k.shape[1], n_heads, d).transpose(1, 2).to(work)
    vh = v.reshape(b, v.shape[1], n_heads, d).transpose(1, 2).to(work)
    weights = torch.softmax(qh @ kh.transpose(-1, -2) * (d ** -0.5), dim=-1)
    return (weights @ vh).transpose(1, 2).reshape(b, nq, inner).to(q.dtype)


def make_attn2_replace(mlp_out_cond: torch.Tensor, mlp_out_uncond: torch.Tensor | None,
                       projectors: LayerProjectors, layer_key, lam: float,
                       sigma_start: float | None = None, sigma_end: float | None = None) -> Callable:
    """A ComfyUI attn2 replace patch applying eq. 4 at one layer.

    Register it with ``model.set_model_attn2_replace(patch, *layer.comfy_key)``. ComfyUI calls
    ``patch(q, k, v, extra_options)`` and applies ``attn2.to_out`` to the result.

    Rows of q come in ``len(extra_options["cond_or_uncond"])`` equal chunks (0 = conditional,
    1 = unconditional); each chunk gets :func:`addition_injection` of its branch's features
    (``mlp_out_cond`` or ``mlp_out_uncond``, tiled to the chunk size), in q's dtype and device. The
    latent size for non-square grids comes from ``extra_options["original_shape"]``.

    Outside [sigma_end, sigma_start] (checked against ``extra_options["sigmas"]`` when a bound is given)
    the patch is plain attention softmax(q k^T / sqrt(dim_head)) v with ``extra_options["n_heads"]``
    heads, i.e. the model's ordinary text cross-attention.

    The injected features do not change during sampling, so each branch's result is computed once per
    (latent size, chunk, device, dtype) and reused on every later step (about 3 MB per layer at 512 px in
    float16); the cache is skipped whenever autograd records (training), so gradients always flow.

    Args:
        mlp_out_cond: C for conditional rows [Bc, 256, 768].
        mlp_out_uncond: C of the all-zero CLIP input for unconditional rows [Bu, 256, 768] (the release
            feeds zero-image features, not a zero injection); may be None if no uncond rows occur.
        projectors: the 16 image_projector maps.
        layer_key: which layer (diffusers name, ComfyUI key or index).
        lam: lambda of eq. 4.
        sigma_start, sigma_end: optional active sigma range (start >= end).
    """
    projector = projectors[layer_key]
    cache: dict = {}

    def _injection(branch, feats, q, height, width, chunk):
        key = (branch, q.shape[1], height, width, chunk, q.device, q.dtype)
        if torch.is_grad_enabled() and (q.requires_grad or any(p.requires_grad for p in projector.parameters())):
            return addition_injection(feats, projector, q.shape[1], lam, height, width)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = addition_injection(feats, projector, q.shape[1], lam, height, width)
        return hit

    def _active(extra_options) -> bool:
        if sigma_start is None and sigma_end is None:
            return True
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return True
        sigma = float(torch.as_tensor(sigmas).detach().flatten()[0])
        if sigma_start is not None and sigma > sigma_start:
            return False
        if sigma_end is not None and sigma < sigma_end:
            return False
        return True

    def fap_attn2_replace(q, k, v, extra_options):
        if not _active(extra_options):
            return plain_attention(q, k, v, int(extra_options["n_heads"]))
        branches = list(extra_options.get("cond_or_uncond", [0]))
        if q.shape[0] % len(branches):
            raise ValueError(f"FuseAnyPart patch: batch {q.shape[0]} is not a multiple of "
                             f"{len(branches)} cond/uncond chunks.")
        chunk = q.shape[0] // len(branches)
        shape = extra_options.get("original_shape")
        height, width = (int(shape[-2]), int(shape[-1])) if shape is not None else (None, None)
        outs = []
        for branch in branches:
            feats = mlp_out_cond if branch == 0 else mlp_out_uncond
            if feats is None:
                raise ValueError("FuseAnyPart patch: unconditional rows but no unconditional features given.")
            feats = _match_batch(feats.to(device=q.device, dtype=q.dtype), chunk,
                                 "conditional features" if branch == 0 else "unconditional features")
            outs.append(_injection(branch, feats, q, height, width, chunk))
        return torch.cat(outs, dim=0)

    return fap_attn2_replace


class FapAttnProcessor:
    """A diffusers attention processor applying eq. 4 at one ``attn2`` layer, ``to_out`` included.

    Features are given in the same row order as the UNet batch (diffusers pipelines with classifier-free
    guidance stack [uncond, cond]: pass ``torch.cat([C_uncond, C_cond])``); a batch that divides the
    UNet batch is tiled. They come from the constructor or per call through
    ``cross_attention_kwargs={"fap_features": ..., "latent_hw": (H, W)}``.

    Args:
        projector: this layer's image_projector Linear(768 -> C_l).
        lam: lambda of eq. 4.
        features: C [B, 256, 768] (optional here).
        latent_hw: latent (height, width) for non-square latents (optional; square assumed otherwise).
    """

    def __init__(self, projector: nn.Linear, lam: float = 1.0, features: torch.Tensor | None = None,
                 latent_hw: tuple | None = None):
        self.projector = projector
        self.lam = float(lam)
        self.features = features
        self.latent_hw = latent_hw

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, fap_features: torch.Tensor | None = None, latent_hw: tuple | None = None,
                 *args, **kwargs) -> torch.Tensor:
        feats = fap_features if fap_features is not None else self.features
        if feats is None:
            raise ValueError("FapAttnProcessor: no FuseAnyPart features set.")
        if hidden_states.dim() != 3:
            raise ValueError("FapAttnProcessor handles [B, tokens, C] hidden states (SD1.5 attn2).")
        residual = hidden_states
        hw = latent_hw if latent_hw is not None else self.latent_hw
        height, width = hw if hw is not None else (None, None)
        feats = _match_batch(feats.to(device=hidden_states.device, dtype=hidden_states.dtype),
                             hidden_states.shape[0], "FuseAnyPart features")
        out = addition_injection(feats, self.projector, hidden_states.shape[1], self.lam, height, width)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)


def fap_attn_processors(current: dict, projectors: LayerProjectors, lam: float,
                        features: torch.Tensor | None = None) -> dict:
    """Processors for ``unet.set_attn_processor``: FapAttnProcessor on the 16 attn2 layers, others kept.

    ``current`` is ``unet.attn_processors`` ({"<layer>.processor": processor}).
    """
    out = dict(current)
    for layer, lin in zip(SD15_ATTN2_LAYERS, projectors.layers):
        key = layer.diffusers_name + ".processor"
        if key not in out:
            raise KeyError(f"The UNet has no {key}; FuseAnyPart needs an SD1.5-layout UNet.")
        out[key] = FapAttnProcessor(lin, lam, features)
    return out
