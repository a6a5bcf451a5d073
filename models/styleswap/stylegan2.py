"""StyleGAN2 generator (the paper's style decoder D) with rosinality/stylegan2-pytorch state-dict keys.

"High-Fidelity Face Swapping with Style Blending" (arXiv 2312.10843, Sec. 3) decodes the blended
W+ code W' (18 x 512 at 1024 px) with a StyleGAN2 synthesis network initialised from FFHQ weights,
and adds the target's multi-level encoder features to the decoder after the style decode blocks
(the "shortcut"). :class:`Generator` is that network with rosinality's module names, so the widely
used converted checkpoint ``stylegan2-ffhq-config-f.pt`` (``g_ema``) loads with ``strict=True``
through :func:`load_rosinality`. All ops are pure PyTorch (see :mod:`models.styleswap.ops`).
"""
from __future__ import annotations

import math
import os
import re
from typing import Mapping, Sequence

import torch
from torch import nn

from ..safe_load import load_torch_file
from .ops import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB

__all__ = ["Generator", "load_rosinality", "default_channels", "WEIGHTS_FOLDER"]

#: Folder (under ComfyUI's models directory) where users put StyleGAN2 checkpoints.
WEIGHTS_FOLDER = "models/swapforge/stylegan2"
_CHECKPOINT_NAME = "stylegan2-ffhq-config-f.pt"


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's feature widths per resolution (config-f when ``channel_multiplier=2``)."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm,
            512: 32 * cm, 1024: 16 * cm}


class Generator(nn.Module):
    """StyleGAN2 mapping + synthesis network, key-compatible with rosinality's ``Generator``.

    Modules: ``style`` (``style.0`` PixelNorm, ``style.1..n_mlp`` EqualLinear with
    ``lr_mul=lr_mlp``), ``input`` (4x4 constant), ``conv1`` + ``to_rgb1`` at 4x4, then per
    resolution ``r = 8 .. size``: ``convs.{2j}`` (upsampling StyledConv), ``convs.{2j+1}``,
    ``to_rgbs.{j}``; ``noises.noise_{i}`` buffers ``[1, 1, r, r]`` for the ``num_layers`` StyledConvs.
    ``upsamples`` is rosinality's empty ModuleList (no keys).

    Args:
        size: output resolution, a power of two >= 4.
        style_dim: width of z and w.
        n_mlp: number of mapping layers.
        channel_multiplier: rosinality's width multiplier for resolutions >= 64.
        blur_kernel: 1-D FIR taps of the up-sampling filters.
        lr_mlp: learning-rate multiplier of the mapping layers.
        channels: optional ``{resolution: width}`` overriding entries of the default table
            (e.g. tiny test generators); key names stay the same.

    Attributes: ``size``, ``style_dim``, ``log_size``, ``num_layers`` (StyledConvs = noise inputs),
    ``n_latent`` (``2 * log_size - 2``: 18 at 1024, 14 at 256), ``channels``, ``resolutions``.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        channels: Mapping[int, int] | None = None,
    ):
        super().__init__()
        log_size = int(round(math.log2(size))) if size > 0 else 0
        if size < 4 or 2 ** log_size != size:
            raise ValueError(f"Generator size must be a power of two >= 4; got {size}.")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.lr_mlp = lr_mlp
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1
        self.n_latent = log_size * 2 - 2
        self.resolutions = [2 ** i for i in range(2, log_size + 1)]

        table = default_channels(channel_multiplier)
        if channels is not None:
            table.update({int(r): int(c) for r, c in channels.items()})
        missing = [r for r in self.resolutions if r not in table]
        if missing:
            raise ValueError(f"Generator channels has no width for resolutions {missing}.")
        self.channels = {r: table[r] for r in self.resolutions}

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
              for _ in range(n_mlp)],
        )
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty in rosinality too; kept for name parity
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))

        in_channel = c4
        for res in self.resolutions[1:]:
            out_channel = self.channels[res]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim,
                                         blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel

    # ------------------------------------------------------------------ mapping network
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Map z ``[..., style_dim]`` to w ``[..., style_dim]`` (PixelNorm + ``n_mlp`` layers)."""
        if z.shape[-1] != self.style_dim:
            raise ValueError(f"mapping expects z [..., {self.style_dim}]; got {tuple(z.shape)}.")
        lead = z.shape[:-1]
        return self.style(z.reshape(-1, self.style_dim)).reshape(*lead, self.style_dim)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Average w of ``n`` random z ~ N(0, I) (drawn on CPU with ``generator``): ``[1, style_dim]``."""
        ref = self.input.input
        z = torch.randn(n, self.style_dim, generator=generator)  # CPU draw: same numbers on any device
        z = z.to(device=ref.device, dtype=ref.dtype)
        return self.mapping(z).mean(0, keepdim=True)

    def make_noise(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """A fresh list of ``num_layers`` noise maps ``[1, 1, r, r]`` in layer order."""
        ref = self.input.input
        out = []
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            n = torch.randn(1, 1, res, res, generator=generator)
            out.append(n.to(device=ref.device, dtype=ref.dtype))
        return out

    # ------------------------------------------------------------------ synthesis network
    def _check_shortcut(self, shortcut: Mapping[int, torch.Tensor], batch: int) -> None:
        for res, feat in shortcut.items():
            if res not in self.channels:
                raise ValueError(
                    f"Generator shortcut has resolution {res}, which this {self.size}px generator "
                    f"does not have. Use resolutions from {self.resolutions}."
                )
            want = self.channels[res]
            if feat.ndim != 4 or feat.shape[1] != want or tuple(feat.shape[2:]) != (res, res):
                raise ValueError(
                    f"Generator shortcut at {res}px has shape {tuple(feat.shape)}; expected "
                    f"[B, {want}, {res}, {res}] (the generator's width at {res}px)."
                )
            if feat.shape[0] not in (1, batch):
                raise ValueError(
                    f"Generator shortcut at {res}px has batch {feat.shape[0]}; the styles have "
                    f"batch {batch}. Give one feature per image (or batch 1 to share it)."
                )

    def forward(
        self,
        styles: torch.Tensor,
        noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
        shortcut: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Decode W+ codes into images.

        Args:
            styles: W+ codes ``[B, n_latent, style_dim]`` already in W space (rosinality's
                ``input_is_latent=True``); a single w ``[B, style_dim]`` is repeated to every layer.
            noise: ``num_layers`` noise maps (``[1 or B, 1, r, r]`` or ``None`` for fresh noise).
                If omitted: fresh noise when ``randomize_noise``, else the stored ``noises`` buffers.
            randomize_noise: see ``noise``.
            shortcut: ``{resolution: feature [B, C_r, r, r]}``: the paper's target-feature shortcut,
                added to the feature map after the style decode block of resolution ``r`` (after
                both StyledConvs; after ``conv1`` at 4 px), before its ToRGB and the next block.
                ``C_r`` must equal ``self.channels[r]``.

        Returns:
            Images ``[B, 3, size, size]``, roughly in ``[-1, 1]`` for trained weights.

        Latent use follows rosinality: ``conv1`` w_0, ``to_rgb1`` w_1; the block at ``2^(j+3)`` px
        uses w_(2j+1), w_(2j+2) for its convs and w_(2j+3) for its ToRGB.
        """
        if styles.ndim == 2:
            styles = styles.unsqueeze(1).expand(-1, self.n_latent, -1)
        if styles.ndim != 3 or styles.shape[1] != self.n_latent or styles.shape[2] != self.style_dim:
            raise ValueError(
                f"Generator expects W+ styles [B, {self.n_latent}, {self.style_dim}]; got "
                f"{tuple(styles.shape)}."
            )
        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        elif len(noise) != self.num_layers:
            raise ValueError(f"Generator expects {self.num_layers} noise maps; got {len(noise)}.")
        shortcut = dict(shortcut or {})
        self._check_shortcut(shortcut, styles.shape[0])

        latent = styles
        out = self.input(latent)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        if 4 in shortcut:
            out = out + shortcut[4].to(out.dtype)
        skip = self.to_rgb1(out, latent[:, 1])

        i = 1
        for j, res in enumerate(self.resolutions[1:]):
            out = self.convs[2 * j](out, latent[:, i], noise=noise[i])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise=noise[i + 1])
            if res in shortcut:
                out = out + shortcut[res].to(out.dtype)
            skip = self.to_rgbs[j](out, latent[:, i + 2], skip)
            i += 2
        return skip


# ---------------------------------------------------------------------- checkpoint loading
def _missing_file_message(path: str) -> str:
    return (
        f"SwapForge: no StyleGAN2 checkpoint at {path}. "
        f"Expected {_CHECKPOINT_NAME} (rosinality/stylegan2-pytorch's converted FFHQ config-f "
        f"checkpoint, the one pSp/e4e use) in {WEIGHTS_FOLDER}. "
        "Put the file there and refresh the node; note the official FFHQ weights are under the "
        "NVIDIA Source Code License-NC (non-commercial)."
    )


def _read_checkpoint(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(_missing_file_message(path))
    try:
        return load_torch_file(path)
    except Exception as exc:  # torch raises RuntimeError/EOFError/UnpicklingError variants
        raise RuntimeError(
            f"SwapForge: could not read StyleGAN2 checkpoint {path}: the file is damaged, "
            f"incomplete or not a PyTorch weights file ({type(exc).__name__}: {exc}). "
            f"Download {_CHECKPOINT_NAME} again into {WEIGHTS_FOLDER}."
        ) from exc


def _short_list(names: Sequence[str], n: int = 12) -> str:
    names = sorted(names)
    more = f" ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _infer_config(sd: Mapping[str, torch.Tensor], where: str) -> dict:
    """Read size, style_dim, n_mlp, channels and blur-kernel length from a g_ema state dict."""
    need = ["input.input", "conv1.conv.weight", "to_rgb1.conv.weight"]
    absent = [k for k in need if k not in sd]
    if absent:
        raise KeyError(
            f"SwapForge: {where} is not a rosinality StyleGAN2 generator state dict: missing "
            f"{_short_list(absent)}. Expected the g_ema entry of {_CHECKPOINT_NAME}."
        )
    rgb_idx = {int(m.group(1)) for k in sd if (m := re.match(r"to_rgbs\.(\d+)\.", k))}
    mlp_idx = {int(m.group(1)) for k in sd if (m := re.match(r"style\.(\d+)\.weight$", k))}
    n_rgb = max(rgb_idx) + 1 if rgb_idx else 0
    size = 2 ** (n_rgb + 2)
    style_dim = int(sd["conv1.conv.modulation.weight"].shape[1]) \
        if "conv1.conv.modulation.weight" in sd else int(sd["conv1.conv.weight"].shape[2])
    channels = {4: int(sd["input.input"].shape[1])}
    for j in range(n_rgb):
        key = f"to_rgbs.{j}.conv.weight"
        if key in sd:
            channels[2 ** (j + 3)] = int(sd[key].shape[2])
    blur_len = 4
    if "convs.0.conv.blur.kernel" in sd:
        blur_len = int(sd["convs.0.conv.blur.kernel"].shape[0])
    return {"size": size, "style_dim": style_dim, "n_mlp": max(mlp_idx) if mlp_idx else 0,
            "channels": channels, "blur_len": blur_len}


def _channel_multiplier(channels: Mapping[int, int]) -> int | None:
    """The rosinality multiplier reproducing ``channels`` exactly, or ``None``."""
    cands = {2}
    if 64 in channels and channels[64] % 256 == 0:
        cands = {channels[64] // 256}
    for cm in cands:
        table = default_channels(cm)
        if all(table.get(r) == c for r, c in channels.items()):
            return cm
    return None


def load_rosinality(
    path_or_state,
    size: int | None = None,
    key: str = "g_ema",
    lr_mlp: float = 0.01,
) -> tuple[Generator, torch.Tensor | None]:
    """Build a :class:`Generator` from a rosinality checkpoint and load it strictly.

    Args:
        path_or_state: path to a ``.pt`` (read with ``torch.load(weights_only=True)`` on CPU), or
            an already loaded checkpoint dict (``{"g_ema": ..., "latent_avg": ...}``) or a bare
            generator state dict.
        size: expected output resolution; checked against the one inferred from the keys.
        key: checkpoint entry holding the generator (``"g_ema"``; ``"g"`` for the raw generator).
        lr_mlp: mapping learning-rate multiplier (not stored in weights; rosinality uses 0.01).

    Size comes from the number of ``to_rgbs``, ``style_dim`` and ``n_mlp`` from the mapping
    layers, widths (hence ``channel_multiplier``) from the weight shapes.

    Returns:
        ``(generator, latent_avg)``: generator in eval mode on CPU; ``latent_avg`` ``[style_dim]``
        or ``None`` when the checkpoint has none.

    Raises:
        FileNotFoundError: no file (message names folder, source and licence).
        RuntimeError: unreadable / truncated file.
        KeyError: not a generator state dict, or missing / unexpected keys (listed).
        ValueError: tensor shape mismatch (key and both shapes) or wrong ``size``.
    """
    where = str(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "checkpoint"
    ckpt = _read_checkpoint(os.fspath(path_or_state)) if isinstance(
        path_or_state, (str, os.PathLike)) else path_or_state
    if not isinstance(ckpt, Mapping):
        raise KeyError(f"SwapForge: {where} holds a {type(ckpt).__name__}, not a checkpoint dict.")
    latent_avg = ckpt.get("latent_avg") if isinstance(ckpt.get("latent_avg"), torch.Tensor) else None
    if key in ckpt and isinstance(ckpt[key], Mapping):
        sd = ckpt[key]
    elif "input.input" in ckpt:
        sd = ckpt
    else:
        raise KeyError(
            f"SwapForge: {where} has no '{key}' generator entry (top-level keys: "
            f"{_short_list([str(k) for k in ckpt.keys()])}). Expected rosinality's "
            f"{_CHECKPOINT_NAME} with g_ema, g, d and latent_avg."
        )
    cfg = _infer_config(sd, where)
    if size is not None and size != cfg["size"]:
        raise ValueError(
            f"SwapForge: {where} holds a {cfg['size']}px StyleGAN2 generator, but size={size} "
            f"was asked for. Use a {size}px checkpoint or size={cfg['size']}."
        )
    cm = _channel_multiplier(cfg["channels"])
    blur = [1, 3, 3, 1] if cfg["blur_len"] == 4 else [1] * cfg["blur_len"]  # values come from the file
    with torch.device("meta"):
        gen = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"],
                        channel_multiplier=cm or 2, blur_kernel=blur, lr_mlp=lr_mlp,
                        channels=None if cm else cfg["channels"])
    expected = gen.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise KeyError(
            f"SwapForge: {where} does not match a {cfg['size']}px rosinality StyleGAN2 generator. "
            f"Missing keys: {_short_list(missing) or 'none'}. "
            f"Unexpected keys: {_short_list(unexpected) or 'none'}. "
            f"Use the unmodified {key} entry of {_CHECKPOINT_NAME}."
        )
    for name, ref in expected.items():
        got = sd[name]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(ref.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ValueError(
                f"SwapForge: {where}: tensor '{name}' has shape {shape}, but the generator "
                f"inferred from the file needs {tuple(ref.shape)}. The checkpoint is inconsistent; "
                f"download {_CHECKPOINT_NAME} again."
            )
    gen = gen.to_empty(device="cpu")
    gen.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                        strict=True)
    gen.eval()
    if latent_avg is not None:
        latent_avg = latent_avg.detach().float().reshape(-1)
    return gen, latent_avg
