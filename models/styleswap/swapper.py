"""The face swapper of "High-Fidelity Face Swapping with Style Blending" (arXiv 2312.10843, Fig. 2).

    Ws = E(I_s),  (Wt, F_t) = E(I_t),  (W', A_w^t) = SBM(Ws, Wt),  I_out = D(W', shortcut(F_t))

* E (:class:`~models.styleswap.encoder.StyleEncoder`, Sec. 3.1): W+ codes and the target's pyramid
  features {16, 32, 64 px}; it reads 256 px aligned (FFHQ) faces (``encoder_input_size``; smaller
  encoders, pyramid input/16, /8, /4, serve fast tests), so :meth:`Swapper.encode` resizes.
* SBM (:class:`~models.styleswap.sbm.StyleBlendingModule`, Sec. 3.2, eq. 2) blends the codes.
* D (:class:`~models.styleswap.stylegan2.Generator`, Sec. 3.3) decodes W' with the target's features
  added after the style decode block of each shortcut resolution. The paper does not say how encoder
  features are brought to the decoder's widths; here a 1x1 conv per resolution does it, initialised
  to zero, so a fresh swapper (or one composed from pSp + StyleGAN2, :mod:`.checkpoints`) decodes W'
  exactly as the plain generator would until the shortcut is trained.

Also here: :class:`StyleCode` (the SWAPFORGE_STYLE record) and the batch functions the nodes call
(:func:`encode_images`, :func:`blend_codes`, :func:`decode_codes`, :func:`source_code`,
:func:`swap_crops`, :func:`swap_faces`). Images handed in and out are numpy float32 ``[N, H, W, 3]``
in 0..1 (the SwapForge convention); tensors inside the networks are ``[B, 3, H, W]`` in -1..1.
No ComfyUI import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..face import align, paste
from ..face.identity import person_label, person_per_frame
from ..face.records import Crop, CropSet, FaceSet, FrameFaces
from .encoder import INPUT_SIZE, StyleEncoder, pyramid_levels
from .sbm import StyleBlendingModule
from .stylegan2 import Generator

Progress = Optional[Callable[[], None]]

__all__ = ["Swapper", "StyleCode", "SwapResult", "paper_split", "encode_images", "blend_codes",
           "decode_codes", "source_code", "swap_crops", "swap_faces"]


def paper_split(n_styles: int) -> Tuple[int, int, int]:
    """The paper's equal thirds over the coarse / middle / fine pyramid levels: (6, 6, 6) at 18 styles,
    (n//3, n//3, n - 2*(n//3)) in general (the remainder goes to the fine level)."""
    third = n_styles // 3
    return (third, third, n_styles - 2 * third)


class Swapper(nn.Module):
    """Encoder E + Style Blending Module + StyleGAN2 decoder D + the target-feature shortcut.

    Args:
        size: decoder output resolution (256: the paper's training size; 1024 when composed from the
            FFHQ StyleGAN2). The number of styles is the decoder's ``n_latent`` (14 at 256, 18 at 1024).
        style_dim, n_mlp, channel_multiplier, generator_channels: the decoder's
            (:class:`Generator` ``channels`` overrides, ``{resolution: width}``).
        encoder_channels: width of the encoder's first stage (64 in pSp); its pyramid is 8x that wide.
        sbm_layers, sbm_heads: cross-attention layers and heads of the SBM.
        split: encoder heads on the 16 / 32 / 64 px levels; default :func:`paper_split`.
            (3, 4, 11) for pSp / e4e weights.
        shortcut_resolutions: pyramid levels whose target features are added to the decoder; a subset
            of the encoder's levels (16, 32, 64 at a 256 px encoder input; encoder_input_size/16, /8, /4
            in general). None (default): all of them. Levels above ``size`` are left out.
        encoder_kind: "psp" (one head per style) or "e4e" (w_0 plus offsets), for composed swappers.
        encoder_input_size: the square size faces are resized to for the encoder (256: pSp's, needed
            for its weights; a smaller power of two >= 32 makes a cheaper encoder). Configs saved
            before this option existed load with 256.
        sbm_blend_prior: give the SBM its per-element prior and start it as the layer-wise blend (target
            coarse, source middle, target fine styles; :mod:`.sbm`), so an untrained swapper already swaps.
            Configs saved before this option existed load without it (their SBM is eq. 2 as trained).

    ``config`` holds every constructor argument (JSON-serialisable): ``Swapper(**swapper.config)``
    rebuilds the architecture (see :mod:`.checkpoints`).
    """

    def __init__(self, size: int = 256, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 generator_channels: Optional[Mapping] = None, encoder_channels: int = 64,
                 sbm_layers: int = 4, sbm_heads: int = 8, split: Optional[Sequence[int]] = None,
                 shortcut_resolutions: Optional[Sequence[int]] = None, encoder_kind: str = "psp",
                 encoder_input_size: int = INPUT_SIZE, sbm_blend_prior: bool = True):
        super().__init__()
        gen_channels = None if generator_channels is None else {
            int(r): int(c) for r, c in dict(generator_channels).items()}
        self.decoder = Generator(size, style_dim, n_mlp, channel_multiplier, channels=gen_channels)
        n_styles = self.decoder.n_latent
        split = paper_split(n_styles) if split is None else tuple(int(s) for s in split)
        levels = pyramid_levels(encoder_input_size)
        self.encoder = StyleEncoder(split, n_styles, style_dim, encoder_channels, kind=encoder_kind,
                                    input_size=encoder_input_size)
        self.sbm = StyleBlendingModule(style_dim, n_styles, sbm_layers, sbm_heads, blend_prior=sbm_blend_prior)
        if sbm_blend_prior:  # a fresh swapper already swaps: the layer-wise blend (sbm.py), training starts there
            self.sbm.init_layerwise_blend()
        wanted = list(levels) if shortcut_resolutions is None else [int(r) for r in shortcut_resolutions]
        bad = [r for r in wanted if r not in levels]
        if bad:
            raise ValueError(f"SwapForge Swapper: shortcut resolutions {bad} are not pyramid levels of an encoder "
                             f"with input size {int(encoder_input_size)}. Use a subset of {levels}.")
        enc_width = 8 * encoder_channels
        self.shortcut = nn.ModuleDict()
        for r in sorted(set(wanted)):
            if r > size:
                continue
            conv = nn.Conv2d(enc_width, self.decoder.channels[r], kernel_size=1)
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
            self.shortcut[str(r)] = conv
        self.size = size
        self.style_dim = style_dim
        self.n_styles = n_styles
        self.config = dict(
            size=int(size), style_dim=int(style_dim), n_mlp=int(n_mlp), channel_multiplier=int(channel_multiplier),
            generator_channels=None if gen_channels is None else {str(r): c for r, c in sorted(gen_channels.items())},
            encoder_channels=int(encoder_channels), sbm_layers=int(sbm_layers), sbm_heads=int(sbm_heads),
            split=list(split), shortcut_resolutions=sorted(set(wanted)), encoder_kind=str(encoder_kind),
            encoder_input_size=int(encoder_input_size), sbm_blend_prior=bool(sbm_blend_prior))

    # ------------------------------------------------------------------ the three stages
    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
        """E: x [B, 3, S, S] in -1..1 (aligned FFHQ faces, any S; resized bilinear with antialias to the
        encoder's input size, 256 by default) -> (w [B, n_styles, style_dim], features {16, 32, 64 (the
        encoder's levels): [B, 8*encoder_channels, r, r]})."""
        return self.encoder(to_encoder_input(x, self.encoder))

    def shortcut_features(self, feats: Optional[Mapping[int, torch.Tensor]]) -> Dict[int, torch.Tensor]:
        """The decoder shortcut {r: conv_r(F_t[r])} for every shortcut level (empty without features)."""
        if not feats:
            return {}
        missing = [int(r) for r in self.shortcut if int(r) not in feats]
        if missing:
            raise ValueError(f"SwapForge Swapper: the target features have levels {sorted(int(r) for r in feats)} "
                             f"but this swapper's shortcut needs {missing}. Encode the target with this "
                             f"swapper's encoder (input size {self.encoder.input_size}).")
        return {int(r): conv(feats[int(r)]) for r, conv in self.shortcut.items()}

    def decode(self, w: torch.Tensor, feats: Optional[Mapping[int, torch.Tensor]] = None, noise=None,
               randomize_noise: bool = False) -> torch.Tensor:
        """D: W+ codes [B, n_styles, style_dim] (+ the target's features) -> [B, 3, size, size] in ~-1..1."""
        return self.decoder(w, noise, randomize_noise, shortcut=self.shortcut_features(feats))

    def forward(self, source: torch.Tensor, target: torch.Tensor, strength: float = 0.0, noise=None,
                randomize_noise: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Swap: source, target [B, 3, S, S] in -1..1 -> (out [B, 3, size, size], A_w^t [B, n_styles, dim]).

        strength 0 is the paper's W'; 1 decodes the target's own codes (reconstruction path)."""
        ws, _ = self.encode(source)
        wt, feats_t = self.encode(target)
        w, a_w_t = self.sbm(ws, wt, strength)
        return self.decode(w, feats_t, noise, randomize_noise), a_w_t

    @torch.no_grad()
    def swap_images(self, source_img: torch.Tensor, target_img: torch.Tensor,
                    strength: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Convenience (no gradients): aligned faces [B, H, W, 3] in 0..1 -> (swapped [B, H, W, 3] in 0..1 at
        the target's size, A_w^t). Uses the stored noise maps (deterministic)."""
        ref = next(self.parameters())
        src = source_img.to(ref.device, ref.dtype).permute(0, 3, 1, 2) * 2 - 1
        tgt = target_img.to(ref.device, ref.dtype).permute(0, 3, 1, 2) * 2 - 1
        out, a_w_t = self(src, tgt, strength)
        out = resize(out, tuple(target_img.shape[1:3]))
        return ((out.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1), a_w_t


def resize(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize [B, C, H, W] to hw (antialiased when shrinking; computed in float32, where every
    backend has the antialiased kernel, and returned in x's dtype); no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    y = F.interpolate(x.float(), size=tuple(hw), mode="bilinear", align_corners=False, antialias=True)
    return y.to(x.dtype)


def to_encoder_input(x: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise ValueError(f"SwapForge Swapper: expected square aligned faces [B, 3, S, S] in -1..1, got shape "
                         f"{tuple(x.shape)}. Align & Crop the faces (FFHQ template) first.")
    ref = next(encoder.parameters())
    size = int(getattr(encoder, "input_size", INPUT_SIZE))
    return resize(x.to(ref.device, ref.dtype), (size, size))


# ---------------------------------------------------------------------- the SWAPFORGE_STYLE record
@dataclass
class StyleCode:
    """SWAPFORGE_STYLE: W+ codes of N faces and (optionally) the encoder features that go with them.

    w [N, n_styles, style_dim] float32 on the intermediate device; feats {16, 32, 64: [N, C, r, r]} or
    None (codes with no image behind them); weights: A_w^t [N, n_styles, style_dim] when the codes
    came out of the SBM; note: where the codes came from (shown in reports).
    """

    w: torch.Tensor
    feats: Optional[Dict[int, torch.Tensor]] = None
    weights: Optional[torch.Tensor] = None
    note: str = ""

    def __len__(self) -> int:
        return int(self.w.shape[0])


def _module_ref(module: nn.Module) -> torch.Tensor:
    return next(module.parameters())


def _to_tensor(images: np.ndarray, ref: torch.Tensor) -> torch.Tensor:
    """numpy [N, H, W, 3] 0..1 -> [N, 3, H, W] -1..1 on ref's device and dtype."""
    t = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)
    return (t * 2 - 1).to(ref.device, ref.dtype)


def _to_numpy(x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """[N, 3, H, W] ~-1..1 -> numpy float32 [N, H', W', 3] 0..1 (resized to hw when given)."""
    x = x.float()
    if hw is not None:
        x = resize(x, hw)
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32, copy=False)


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(images, np.float32)
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[1] != a.shape[2] or len(a) == 0:
        raise ValueError(f"SwapForge StyleSwap: the {what} must be a non-empty batch of square RGB crops "
                         f"[N, S, S, 3], got shape {a.shape}. Connect Align & Crop's crops (FFHQ template).")
    return a


@torch.no_grad()
def encode_images(encoder: nn.Module, images: np.ndarray, batch: int = 8, keep_features: bool = True,
                  progress: Progress = None) -> StyleCode:
    """E on aligned crops [N, S, S, 3] 0..1 with a :class:`Swapper` (its encoder) or a bare
    :class:`StyleEncoder` (pSp/e4e, latent_avg already folded in). ``batch`` crops per forward pass;
    progress() once per crop. Features are kept (on the CPU) when ``keep_features``."""
    images = _check_images(images, "crops to encode")
    enc = encoder.encoder if isinstance(encoder, Swapper) else encoder
    if not isinstance(enc, StyleEncoder):
        raise TypeError(f"SwapForge StyleSwap: cannot encode with a {type(encoder).__name__}; expected a swapper "
                        "or a pSp/e4e style encoder.")
    ref = _module_ref(enc)
    ws, feats = [], {}
    for i in range(0, len(images), max(int(batch), 1)):
        x = to_encoder_input(_to_tensor(images[i:i + batch], ref), enc)
        w, f = enc(x)
        ws.append(w.float().cpu())
        if keep_features:
            for r, t in f.items():
                feats.setdefault(int(r), []).append(t.float().cpu())
        if progress is not None:
            for _ in range(len(x)):
                progress()
    return StyleCode(torch.cat(ws), {r: torch.cat(v) for r, v in feats.items()} if keep_features else None,
                     note=f"{len(images)} encoded crop(s)")


def _match_batch(source: torch.Tensor, n: int, average: bool) -> torch.Tensor:
    if average or len(source) == 1:
        return source.mean(0, keepdim=True).expand(n, -1, -1)
    if len(source) != n:
        raise ValueError(f"SwapForge StyleSwap: {len(source)} source codes for {n} target codes. Give one source "
                         "code, as many as targets, or average the sources.")
    return source


@torch.no_grad()
def blend_codes(swapper: "Swapper", source: StyleCode, target: StyleCode, strength: float = 0.0,
                average_source: bool = True) -> StyleCode:
    """SBM (eq. 2) of source and target codes -> blended codes carrying the target's features (the
    shortcut comes from the target) and A_w^t. ``average_source``: the mean of the source codes is blended
    with every target code (several photos of one person); else source i goes with target i."""
    ref = _module_ref(swapper.sbm)
    wt = target.w.to(ref.device, ref.dtype)
    ws = _match_batch(source.w, len(wt), average_source).to(ref.device, ref.dtype)
    w, a_w_t = swapper.sbm(ws, wt, strength)
    return StyleCode(w.float().cpu(), target.feats, a_w_t.float().cpu(),
                     note=f"blend of {source.note or 'source'} into {target.note or 'target'}, strength {strength}")


@torch.no_grad()
def decode_codes(decoder: nn.Module, style: StyleCode, use_features: bool = True, batch: int = 8,
                 progress: Progress = None) -> np.ndarray:
    """D on codes -> images [N, size, size, 3] 0..1. ``decoder``: a :class:`Swapper` (features go through
    its shortcut when ``use_features``) or a bare :class:`Generator` (no shortcut). Stored noise maps."""
    if isinstance(decoder, Swapper):
        gen = decoder.decoder
    elif isinstance(decoder, Generator):
        gen = decoder
        if use_features:
            raise ValueError("SwapForge Style Decoder: a plain StyleGAN2 generator has no target-feature shortcut. "
                             "Turn use_target_features off, or connect a swapper.")
    else:
        raise TypeError(f"SwapForge StyleSwap: cannot decode with a {type(decoder).__name__}; expected a swapper "
                        "or a StyleGAN2 generator.")
    if style.w.ndim != 3 or style.w.shape[1:] != (gen.n_latent, gen.style_dim):
        raise ValueError(f"SwapForge Style Decoder: the codes are {tuple(style.w.shape)} but this decoder takes "
                         f"[N, {gen.n_latent}, {gen.style_dim}]. Encode with the matching encoder or swapper.")
    if use_features and not style.feats:
        raise ValueError("SwapForge Style Decoder: these codes carry no encoder features. Turn "
                         "use_target_features off, or use codes from Style Encoder / Style Blend.")
    ref = _module_ref(gen)
    out = []
    for i in range(0, len(style), max(int(batch), 1)):
        w = style.w[i:i + batch].to(ref.device, ref.dtype)
        if use_features:
            feats = {r: t[i:i + batch].to(ref.device, ref.dtype) for r, t in style.feats.items()}
            img = decoder.decode(w, feats)
        else:
            img = gen(w, None, False)
        out.append(_to_numpy(img))
        if progress is not None:
            for _ in range(len(w)):
                progress()
    return np.concatenate(out)


@torch.no_grad()
def source_code(swapper_or_encoder: nn.Module, images: np.ndarray, faces: FaceSet,
                batch: int = 8) -> Tuple[StyleCode, List[int]]:
    """The source identity's code: the largest face (face 0) of every source photo, FFHQ-aligned at 256 px,
    encoded; the codes averaged over photos -> (StyleCode w [1, n, d] (no features), photo indices used).
    Raises when no photo has a face."""
    images = np.asarray(images, np.float32)
    faces.check_batch(len(images), "source image")
    used = [i for i, f in enumerate(faces.frames) if len(f) > 0]
    if not used:
        raise ValueError(f"SwapForge Face Swap: no face found in any of the {len(images)} source image(s). Expected "
                         "photos with a clearly visible face. Connect other source photos, or load the 'yunet "
                         "(embedded)' backend in the Face Model Loader (it finds smaller and turned faces).")
    one = faces.with_frames([f.take([0]) if len(f) else f for f in faces.frames])
    crops, info, _ = align.align_crop(images, one, INPUT_SIZE, "ffhq")
    valid = [k for k, c in enumerate(info.crops) if c.valid]
    code = encode_images(swapper_or_encoder, crops[valid], batch, keep_features=False)
    return StyleCode(code.w.mean(0, keepdim=True), None, note=f"mean of {len(used)} source photo(s)"), used


@torch.no_grad()
def swap_crops(swapper: "Swapper", source_w: torch.Tensor, target_crops: np.ndarray, strength: float = 0.0,
               batch: int = 8, progress: Progress = None) -> Tuple[np.ndarray, torch.Tensor]:
    """The per-face maths: aligned target crops [N, S, S, 3] 0..1 -> swapped crops [N, S, S, 3] 0..1 and
    A_w^t [N, n, d]. Each batch: (Wt, F_t) = E(crops), W' = SBM(source_w, Wt, strength), D(W', F_t)
    with the stored noise maps (deterministic, so a video does not flicker from noise), resized from
    the decoder's size to S. source_w: [1, n, d] (shared) or [N, n, d]."""
    crops = _check_images(target_crops, "target crops")
    ref = _module_ref(swapper)
    s = crops.shape[1]
    outs, weights = [], []
    source_w = source_w.to(ref.device, ref.dtype)
    for i in range(0, len(crops), max(int(batch), 1)):
        x = _to_tensor(crops[i:i + batch], ref)
        wt, feats = swapper.encode(x)
        ws = source_w.expand(len(x), -1, -1) if len(source_w) == 1 else source_w[i:i + batch]
        w, a_w_t = swapper.sbm(ws, wt, strength)
        outs.append(_to_numpy(swapper.decode(w, feats), (s, s)))
        weights.append(a_w_t.float().cpu())
        if progress is not None:
            for _ in range(len(x)):
                progress()
    return np.concatenate(outs), torch.cat(weights)


@dataclass
class SwapResult:
    """What :func:`swap_faces` returns: frames [B, H, W, 3], mask [B, H, W] (where pixels changed),
    crops [N, s, s, 3] (the swapped crops at s = min(crop_size, the swapper's output size); placeholders for
    faceless frames), cropset (their record, for Paste Back, which resizes them to crop_size), status (one
    line per frame)."""

    frames: np.ndarray
    mask: np.ndarray
    crops: np.ndarray
    cropset: CropSet
    status: List[str] = field(default_factory=list)


def _pick(frame: FrameFaces, face_index: int, k: Optional[int], who: str) -> Tuple[FrameFaces, str]:
    """The faces of one frame to swap, and its status text. face_index -1: every face; else k is the index of
    the chosen person's face in this frame (identity.person_per_frame) or None, and ``who`` names the person."""
    if len(frame) == 0:
        return frame, "no face: passed through unchanged"
    if face_index < 0:
        picked, text = frame, f"swapped {len(frame)} face(s)"
    elif k is None:
        return frame.take([]), (f"no {who} ({len(frame)} face(s) found): passed through unchanged")
    else:
        picked, text = frame.take([k]), f"swapped {who}" + (f" (face {k} here)" if who != f"face {k}" else "")
    n_interp = int(np.count_nonzero(picked.interpolated))
    if n_interp:
        text += f" ({n_interp} filled in by the tracker, not detected)"
    return picked, text


def swap_faces(swapper: "Swapper", source_w: torch.Tensor, frames: np.ndarray, faces: FaceSet,
               strength: float = 0.0, face_index: int = 0, crop_size: int = 256, erode: int = 8,
               feather: int = 16, color_match: str = "none", frames_per_chunk: int = 8,
               progress: Progress = None) -> SwapResult:
    """Swap the source into every frame of an image or video batch.

    frames [B, H, W, 3] 0..1 with their faces (one FrameFaces per frame). ``face_index`` picks one person
    with ``identity.person_per_frame``: on tracked faces (Track Faces) the track with that id in every frame,
    else face ``face_index`` of each frame; -1 swaps every face. Per chunk of
    ``frames_per_chunk`` frames (bounds the memory of crops and activations): FFHQ Align & Crop at
    ``crop_size`` (``align.align_crop``), :func:`swap_crops` on the faces (face ``face_index`` of each
    frame, -1: all), Paste Back through the face-hull masks (``paste.paste_back``: erode, feather,
    color_match). Frames without that face pass through bit-identical and say so in ``status``.
    Memory: the crop_size crops exist one chunk at a time; only the swapper-size copies are kept.
    progress() once per frame (after its chunk is pasted), so interrupts are seen between chunks.
    """
    frames = np.asarray(frames, np.float32)
    b, h, w = frames.shape[:3]
    faces.check_batch(b, "target")
    face_index = int(face_index)
    ks = person_per_frame(faces, face_index) if face_index >= 0 else [None] * b
    who = person_label(faces, face_index) if face_index >= 0 else ""
    picked = [_pick(f, face_index, k, who) for f, k in zip(faces.frames, ks)]
    sel = faces.with_frames([p[0] for p in picked])
    status = [f"frame {i}: {p[1]}" for i, p in enumerate(picked)]
    out = np.empty_like(frames)
    mask = np.zeros((b, h, w), np.float32)
    # The crops come back at the swapper's own size (no more detail exists; Paste Back resizes), written into
    # one array as each chunk finishes: the crop_size crops live one chunk at a time (a 1024 px crop is 12 MB).
    keep = min(int(crop_size), int(swapper.size))
    kept = np.empty((sum(max(len(f), 1) for f in sel.frames), keep, keep, 3), np.float32)
    n, records = 0, []
    chunk = max(int(frames_per_chunk), 1)
    for a in range(0, b, chunk):
        z = min(a + chunk, b)
        sub = FaceSet(sel.frames[a:z], (h, w), sel.backend)
        crops, info, masks = align.align_crop(frames[a:z], sub, int(crop_size), "ffhq")
        valid = [k for k, c in enumerate(info.crops) if c.valid]
        if valid:
            swapped, _ = swap_crops(swapper, source_w, crops[valid], strength, batch=chunk)
            crops[valid] = swapped
        out[a:z], mask[a:z] = paste.paste_back(frames[a:z], crops, info, masks, erode, feather, color_match)
        kept[n:n + len(crops)] = _shrink(crops, keep)
        n += len(crops)
        records += [Crop(c.frame_index + a, c.face_index, c.affine, c.size, c.track_id, c.valid)
                    for c in info.crops]
        del crops, masks
        if progress is not None:
            for _ in range(a, z):
                progress()
    cropset = CropSet(records, (h, w), b, "ffhq")
    return SwapResult(out, mask, kept, cropset, status)


def _shrink(crops: np.ndarray, size: int) -> np.ndarray:
    """Square crops [N, S, S, 3] at size x size (cv2 INTER_AREA; unchanged when S == size)."""
    if crops.shape[1] == size:
        return crops
    import cv2

    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
