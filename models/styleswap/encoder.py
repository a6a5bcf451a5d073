"""Facial attributes encoder E of "High-Fidelity Face Swapping with Style Blending" (arXiv 2312.10843).

The paper's E is an SE-ResNet50 backbone, a feature pyramid and 18 style heads (Sec. 3.1): each head is
as many stride-2 conv + LeakyReLU layers as its pyramid level's resolution needs, then a fully connected
layer to 512, giving W in R^{18 x 512}; the target's multi-level features also go to the decoder as a
shortcut. The paper splits the 18 heads 6/6/6 over the three levels. The only public weights with this
shape are pSp's ``GradualStyleEncoder`` (Richardson et al., CVPR 2021) and e4e's ``Encoder4Editing``
(Tov et al., SIGGRAPH 2021), both MIT code with FFHQ-trained checkpoints, which split 3/4/11. So:

* :class:`StyleEncoder` is the pSp architecture with the split as a parameter, state-dict keys equal to
  pSp's (``input_layer.*``, ``body.N.*``, ``latlayer1/2.*``, ``styles.i.convs.N.*``,
  ``styles.i.linear.*``), so ``split=(3, 4, 11)`` loads pSp/e4e checkpoints and ``split=(6, 6, 6)`` is the
  paper's layout (no public weights).
* :func:`load_psp` reads a pSp or e4e checkpoint strictly (every ``encoder.*`` key used, nothing missing).
* :func:`add_latent_avg` is pSp's "start from the average latent" step (W = E(x) + w_avg).

Layout of the backbone (pSp ``helpers.py``, IR-SE50 of InsightFace): ``input_layer`` = Conv3x3(3->64) +
BN + PReLU at full resolution; ``body`` = 24 ``bottleneck_IR_SE`` units in four stages of 3/4/14/3 units
with depths 64/128/256/512, the first unit of every stage has stride 2. A unit is
``res_layer`` = [BN, Conv3x3, PReLU, Conv3x3(stride), BN, SE] plus ``shortcut_layer`` (a stride-s
1x1 max-pool when the depth is unchanged, else Conv1x1(stride) + BN); SE = global average pool, 1x1
conv ``fc1`` (C -> C/16), ReLU, 1x1 conv ``fc2`` (C/16 -> C), sigmoid, rescale. For a 256 px input the
stage outputs are 128, 64, 32 and 16 px; pSp taps c1 = body[6] (64 px, 128 ch), c2 = body[20]
(32 px, 256 ch) and c3 = body[23] (16 px, 512 ch) and builds the pyramid
p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1) with bilinear, align_corners=True upsampling.
No ComfyUI import here.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import load_torch_file
from .ops import EqualLinear

PSP_SPLIT = (3, 4, 11)  # pSp / e4e: heads 0-2 on the 16 px map, 3-6 on 32 px, 7-17 on 64 px
PAPER_SPLIT = (6, 6, 6)  # the paper's three levels of 6 style elements each
LEVELS = (16, 32, 64)  # pyramid resolutions for a 256 px input: coarse, middle, fine
INPUT_SIZE = 256  # pSp's input size (the default); smaller powers of two serve fast tests / small models
CHECKPOINT_FOLDER = "models/swapforge/psp"
KINDS = ("psp", "e4e")


class SEModule(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): x * sigmoid(fc2(relu(fc1(avgpool(x))))), 1x1 convs, no bias."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"SwapForge encoder: SE needs at least {reduction} channels, got {channels}.")
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * s


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: res_layer(x) + shortcut_layer(x) (pSp ``bottleneck_IR_SE``, same child names)."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_se50_units(channels: int = 64) -> list:
    """(in_channel, depth, stride) of the 24 IR-SE50 units: stages of 3/4/14/3 units, depths
    channels * (1, 2, 4, 8), stride 2 on each stage's first unit (pSp ``get_blocks(50)``)."""
    units = []
    in_c = channels
    for mult, n in ((1, 3), (2, 4), (4, 14), (8, 3)):
        depth = channels * mult
        units.append((in_c, depth, 2))
        units += [(depth, depth, 1)] * (n - 1)
        in_c = depth
    return units


# body indices whose outputs pSp taps: end of stage 2 (c1), stage 3 (c2), stage 4 (c3)
TAP_C1, TAP_C2, TAP_C3 = 6, 20, 23


class GradualStyleBlock(nn.Module):
    """One style head (paper Sec. 3.1; pSp ``GradualStyleBlock``): log2(spatial) stride-2 3x3 convs, each
    followed by LeakyReLU(0.01), take the [B, in_c, spatial, spatial] map to [B, out_c, 1, 1]; then an
    equalised linear layer out_c -> out_c. Keys: ``convs.{0,2,4,..}.weight/bias``, ``linear.weight/bias``."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        n = int(round(math.log2(spatial)))
        if 2 ** n != spatial:
            raise ValueError(f"SwapForge encoder: head resolution must be a power of two, got {spatial}.")
        self.out_c = out_c
        self.spatial = spatial
        layers = []
        for i in range(n):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, kernel_size=3, stride=2, padding=1),
                       nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        return self.linear(x.reshape(x.shape[0], self.out_c))


def pyramid_levels(input_size: int) -> Tuple[int, int, int]:
    """Pyramid resolutions (coarse, middle, fine) for a square input: input/16, input/8, input/4
    ((16, 32, 64) at pSp's 256 px). input_size must be a power of two >= 32 (else ValueError)."""
    size = int(input_size)
    if size < 32 or size & (size - 1):
        raise ValueError(f"SwapForge encoder: input_size must be a power of two >= 32 (256 for pSp/e4e "
                         f"weights), got {input_size}.")
    return (size // 16, size // 8, size // 4)


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FPN top-down step: bilinear (align_corners=True) upsampling of x to y's size, plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class StyleEncoder(nn.Module):
    """Encoder E: IR-SE50 + FPN + ``n_styles`` style heads (paper Sec. 3.1; pSp GradualStyleEncoder).

    Args:
        split: how many heads read the coarse (16 px), middle (32 px) and fine (64 px) pyramid map (at
            a 256 px input; input_size/16, /8, /4 in general), in head order. (3, 4, 11) is pSp/e4e (needed for their checkpoints); (6, 6, 6) is the paper's.
        n_styles: number of style vectors; must equal sum(split). 18 for a 1024 px StyleGAN2.
        style_dim: size of each style vector (512).
        channels: width of the first backbone stage (64 in pSp); stages are channels * (1, 2, 4, 8) and
            the pyramid is 8 * channels wide. Smaller values only serve fast tests.
        in_channels: image channels (3).
        kind: "psp" (each head gives one w_i) or "e4e" (w_0 from head 0, w_i = w_0 + head_i for i >= 1).
        input_size: the square input resolution the encoder takes (a power of two >= 32; 256 in pSp,
            needed for its weights). The pyramid maps are input_size/16, /8, /4 px and each head has
            log2(map size) stride-2 convs, so at 256 the layout and keys are pSp's exactly; smaller
            sizes only change the heads' conv counts (fast tests, small models).

    forward(x [B, in_channels, input_size, input_size] in -1..1) -> (w [B, n_styles, style_dim],
    features {16: c3, 32: p2, 64: p1} at 256 px, keyed by the maps' actual resolutions), the pyramid
    maps that the paper passes to the decoder shortcut. Other input sizes raise ValueError.
    w does not include pSp's latent_avg: see :func:`add_latent_avg`.
    """

    def __init__(self, split: Sequence[int] = PSP_SPLIT, n_styles: int = 18, style_dim: int = 512,
                 channels: int = 64, in_channels: int = 3, kind: str = "psp", input_size: int = INPUT_SIZE):
        super().__init__()
        levels = pyramid_levels(input_size)
        split = tuple(int(s) for s in split)
        if len(split) != 3 or any(s < 0 for s in split) or sum(split) != n_styles:
            raise ValueError(f"SwapForge encoder: split must be three counts (coarse, middle, fine) adding up "
                             f"to n_styles={n_styles}, got {split}. Use (3, 4, 11) for pSp/e4e weights.")
        if kind not in KINDS:
            raise ValueError(f"SwapForge encoder: kind must be one of {KINDS}, got {kind!r}.")
        if kind == "e4e" and split[0] < 1:
            raise ValueError("SwapForge encoder: e4e needs at least one coarse head (w_0 comes from head 0).")
        self.split = split
        self.n_styles = n_styles
        self.style_dim = style_dim
        self.channels = channels
        self.kind = kind
        self.input_size = int(input_size)
        self.levels = levels
        top = 8 * channels
        self.input_layer = nn.Sequential(nn.Conv2d(in_channels, channels, (3, 3), 1, 1, bias=False),
                                         nn.BatchNorm2d(channels), nn.PReLU(channels))
        self.body = nn.Sequential(*[BottleneckIRSE(i, d, s) for i, d, s in ir_se50_units(channels)])
        self.styles = nn.ModuleList(
            GradualStyleBlock(top, style_dim, level) for level in self.head_levels())
        self.latlayer1 = nn.Conv2d(4 * channels, top, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(2 * channels, top, kernel_size=1, stride=1, padding=0)

    def head_levels(self) -> Tuple[int, ...]:
        """Pyramid resolution (16, 32 or 64 at 256 px; ``self.levels`` in general) each head reads, in order."""
        return tuple(level for level, count in zip(self.levels, self.split) for _ in range(count))

    def pyramid(self, x: torch.Tensor) -> Dict[int, torch.Tensor]:
        """Backbone + FPN: x [B, C, S, S] (S = input_size) -> {S/16: c3, S/8: p2, S/4: p1} ({16, 32, 64}
        at 256), each [B, 8*channels, r, r]."""
        s = self.input_size
        if x.ndim != 4 or tuple(x.shape[-2:]) != (s, s):
            raise ValueError(f"SwapForge encoder: this encoder was built with input_size={s} and expects "
                             f"aligned faces [B, 3, {s}, {s}] in -1..1, got shape {tuple(x.shape)}. Align and "
                             f"resize the face to {s} px first.")
        x = self.input_layer(x)
        c1 = c2 = None
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == TAP_C1:
                c1 = x
            elif i == TAP_C2:
                c2 = x
        c3 = x
        p2 = _upsample_add(c3, self.latlayer1(c2))
        p1 = _upsample_add(p2, self.latlayer2(c1))
        coarse, middle, fine = self.levels
        return {coarse: c3, middle: p2, fine: p1}

    def map_styles(self, features: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Style heads on the pyramid: head i reads features[head_levels()[i]] -> w [B, n_styles, dim].
        For kind "e4e", w_i += w_0 for i >= 1 (e4e: one base code plus per-layer offsets)."""
        w = torch.stack([head(features[level]) for head, level in zip(self.styles, self.head_levels())], 1)
        if self.kind == "e4e":
            w = torch.cat([w[:, :1], w[:, 1:] + w[:, :1]], dim=1)
        return w

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
        features = self.pyramid(x)
        return self.map_styles(features), features


def add_latent_avg(w: torch.Tensor, latent_avg: Optional[torch.Tensor]) -> torch.Tensor:
    """pSp's W = E(x) + w_avg: w [B, n, d] plus latent_avg [n, d] (pSp, repeated per style) or [d]
    (e4e / the generator's mean latent, broadcast over styles). None returns w unchanged."""
    if latent_avg is None:
        return w
    avg = latent_avg.to(device=w.device, dtype=w.dtype)
    if avg.ndim == 2 and avg.shape[0] == 1:
        avg = avg[0]
    if not (avg.shape == w.shape[-1:] or avg.shape == w.shape[-2:]):
        raise ValueError(f"SwapForge encoder: latent_avg of shape {tuple(latent_avg.shape)} does not fit "
                         f"codes of shape {tuple(w.shape)}; expected [{w.shape[-2]}, {w.shape[-1]}] or "
                         f"[{w.shape[-1]}]. Use the latent_avg stored with the same checkpoint.")
    return w + avg


def missing_checkpoint_message(path: str) -> str:
    name = os.path.basename(str(path)) or str(path)
    return (f"SwapForge: no pSp/e4e encoder checkpoint {name!r} in {CHECKPOINT_FOLDER} (looked at {path}). "
            f"Expected psp_ffhq_encode.pt (pSp, from the pixel2style2pixel authors' release) or "
            f"e4e_ffhq_encode.pt (e4e, from the encoder4editing authors' release); their code is MIT and "
            f"the released checkpoints were trained on FFHQ. Put the file in {CHECKPOINT_FOLDER} and "
            f"refresh the node.")


def _detect_kind(ckpt: Mapping) -> str:
    """pSp and e4e encoders have identical key sets, so the state dict alone cannot tell them apart.
    Both projects save ``opts`` (``vars(opts)``) with ``encoder_type`` = "GradualStyleEncoder" (pSp) or
    "Encoder4Editing" (e4e); e4e training also saves ``discriminator_state_dict`` and e4e-only opts."""
    opts = ckpt.get("opts")
    if isinstance(opts, Mapping):
        enc = opts.get("encoder_type")
        if enc == "GradualStyleEncoder":
            return "psp"
        if enc == "Encoder4Editing":
            return "e4e"
        if enc is not None:
            raise ValueError(f"SwapForge: the checkpoint's encoder_type is {enc!r}; only pSp's "
                             f"GradualStyleEncoder and e4e's Encoder4Editing are supported. Use "
                             f"psp_ffhq_encode.pt or e4e_ffhq_encode.pt.")
        if any(k in opts for k in ("progressive_start", "progressive_steps", "w_discriminator_lambda")):
            return "e4e"
    if "discriminator_state_dict" in ckpt:
        return "e4e"
    raise ValueError("SwapForge: cannot tell whether this checkpoint is pSp or e4e (no opts.encoder_type; "
                     "their weights have the same keys but e4e adds w_0 to every other style). "
                     "Pass kind='psp' or kind='e4e'.")


def _read_checkpoint(path_or_state) -> Mapping:
    if isinstance(path_or_state, Mapping):
        return path_or_state
    path = os.fspath(path_or_state)
    if not os.path.isfile(path):
        raise FileNotFoundError(missing_checkpoint_message(path))
    try:
        return load_torch_file(path)
    except Exception as exc:  # pickle with non-tensor objects, truncated download, ...
        raise ValueError(f"SwapForge: could not read {path} as a pSp/e4e checkpoint with torch.load("
                         f"weights_only=True): {exc}. Expected the authors' released .pt file (a dict "
                         f"with state_dict, latent_avg and opts); re-download it if it may be "
                         f"truncated.") from exc


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                        prefix: str = "", limit: int | None = None) -> list:
    """What keeps `state` from loading strictly into a module whose state dict is `expected`: a list of
    "missing ...", "unexpected ...", "wrong shape ..." phrases (empty when it fits). BatchNorm's
    num_batches_tracked only counts training steps, so files saved without it still count as fitting."""
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                   if k in state and tuple(state[k].shape) != tuple(v.shape))
    parts = []
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            shown = keys if limit is None else keys[:limit]
            more = " ..." if len(shown) < len(keys) else ""
            parts.append(f"{name} " + ", ".join(prefix + k for k in shown) + more)
    return parts


def load_psp(path_or_state, kind: Optional[str] = None, split: Sequence[int] = PSP_SPLIT,
             n_styles: int = 18) -> Tuple[StyleEncoder, Optional[torch.Tensor]]:
    """Load a pSp / e4e checkpoint's encoder -> (StyleEncoder in eval mode on CPU, latent_avg or None).

    The checkpoint is pSp's layout: {"state_dict": {"encoder.*": ..., "decoder.*": ...},
    "latent_avg": [18, 512] (pSp) or [512] (e4e), "opts": {...}}; a bare state dict with ``encoder.*``
    keys also works. Loading is strict: every ``encoder.*`` tensor must be used and every parameter of
    the encoder must be present, else ValueError listing the names. ``decoder.*`` keys are ignored
    (the StyleGAN2 decoder loads them). Widths (channels, style size, image channels) are read from the
    tensors' shapes; ``split`` and ``n_styles`` are the architecture the file must match.

    kind: "psp" or "e4e"; None detects it from ``opts.encoder_type`` (see :func:`_detect_kind`): the
    weights alone cannot tell, and a wrong kind would give wrong codes, so an undetectable file raises.

    latent_avg is returned when the file has one and ``opts.start_from_latent_avg`` is not False (pSp
    adds it to the codes only in that case); combine with :func:`add_latent_avg`.
    """
    ckpt = _read_checkpoint(path_or_state)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping):
        raise ValueError("SwapForge: the checkpoint's state_dict is not a dict of tensors. Expected a pSp/e4e "
                         ".pt file such as psp_ffhq_encode.pt.")
    if kind is None:
        kind = _detect_kind(ckpt)
    if kind not in KINDS:
        raise ValueError(f"SwapForge: kind must be one of {KINDS} or None, got {kind!r}.")
    enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    first = enc_state.get("input_layer.0.weight")
    head = enc_state.get("styles.0.linear.weight")
    if first is None or head is None:
        raise ValueError("SwapForge: this file has no pSp/e4e encoder weights (no encoder.input_layer.0.weight "
                         "or encoder.styles.0.linear.weight). Expected psp_ffhq_encode.pt or "
                         "e4e_ffhq_encode.pt from the pSp / e4e authors' releases.")
    encoder = StyleEncoder(split=split, n_styles=n_styles, style_dim=int(head.shape[0]),
                           channels=int(first.shape[0]), in_channels=int(first.shape[1]), kind=kind)
    expected = encoder.state_dict()
    parts = state_dict_mismatch(expected, enc_state, prefix="encoder.")
    if parts:
        raise ValueError(f"SwapForge: the checkpoint's encoder does not match pSp's GradualStyleEncoder with "
                         f"split {tuple(split)} and {n_styles} styles: {'; '.join(parts)}. Use an unmodified "
                         f"psp_ffhq_encode.pt or e4e_ffhq_encode.pt.")
    encoder.load_state_dict(enc_state, strict=True)
    encoder.eval()
    latent_avg = ckpt.get("latent_avg")
    opts = ckpt.get("opts")
    if isinstance(opts, Mapping) and opts.get("start_from_latent_avg") is False:
        latent_avg = None
    if latent_avg is not None:
        latent_avg = torch.as_tensor(latent_avg).detach().to("cpu", torch.float32).clone()
    return encoder, latent_avg
