"""Multi-scale discriminator of the paper's adversarial loss (arXiv 2312.10843, Sec. 3.3).

The paper trains with a hinge adversarial loss and a multi-scale discriminator without giving its
layout; this is the pix2pixHD / SPADE one (Wang et al. 2018; Park et al. 2019): ``num_scales``
PatchGAN discriminators, the k-th one seeing the image average-pooled k times
(AvgPool2d(3, stride 2, padding 1, count_include_pad=False)), i.e. at 1x, 1/2, 1/4 resolution.

One PatchGAN (``NLayerDiscriminator``): Conv4x4 stride 2 (3 -> base) + LeakyReLU(0.2); then
``n_layers - 1`` Conv4x4 blocks (stride 2, the last one stride 1) doubling the width up to 8*base,
each + InstanceNorm + LeakyReLU(0.2); then Conv4x4 stride 1 to one logit channel. Padding 2
(pix2pixHD's ceil((4-1)/2)), so even small inputs keep a non-empty map. Every conv has spectral
normalisation (SPADE's choice for hinge training); set ``spectral=False`` for plain convs.

The hinge losses themselves are :func:`models.styleswap.losses.hinge_d` / ``hinge_g``. No ComfyUI import.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class NLayerDiscriminator(nn.Module):
    """One PatchGAN: image [B, 3, H, W] -> logits map [B, 1, h, w] (see the module docstring)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, n_layers: int = 4, spectral: bool = True):
        super().__init__()
        sn = spectral_norm if spectral else (lambda m: m)
        layers: List[nn.Module] = [sn(nn.Conv2d(in_channels, base_channels, 4, 2, 2)), nn.LeakyReLU(0.2)]
        ch = base_channels
        for i in range(1, n_layers):
            out = min(base_channels * 2 ** i, base_channels * 8)
            stride = 2 if i < n_layers - 1 else 1
            layers += [sn(nn.Conv2d(ch, out, 4, stride, 2)), nn.InstanceNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(sn(nn.Conv2d(ch, 1, 4, 1, 2)))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs on the image at 1x, 1/2, 1/4, ... resolution.

    Args:
        num_scales: number of scales (3).
        base_channels: width of each PatchGAN's first conv (64).
        n_layers: strided conv blocks per PatchGAN (4).
        size: image size it is trained for (inputs must be size x size).
        spectral: spectral normalisation on every conv.

    forward(img [B, 3, size, size] in -1..1) -> list of ``num_scales`` logit maps [B, 1, h_k, w_k],
    full resolution first.
    """

    def __init__(self, num_scales: int = 3, base_channels: int = 64, n_layers: int = 4, size: int = 256,
                 spectral: bool = True):
        super().__init__()
        if num_scales < 1 or n_layers < 1:
            raise ValueError(f"SwapForge discriminator: num_scales and n_layers must be >= 1, got "
                             f"{num_scales} and {n_layers}.")
        self.size = int(size)
        self.config = dict(num_scales=num_scales, base_channels=base_channels, n_layers=n_layers, size=size,
                           spectral=spectral)
        self.discriminators = nn.ModuleList(
            NLayerDiscriminator(3, base_channels, n_layers, spectral) for _ in range(num_scales))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, img: torch.Tensor) -> List[torch.Tensor]:
        if img.ndim != 4 or img.shape[1] != 3 or tuple(img.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"SwapForge discriminator: expected images [B, 3, {self.size}, {self.size}], "
                             f"got {tuple(img.shape)}.")
        out = []
        x = img
        for k, d in enumerate(self.discriminators):
            if k:
                x = self.downsample(x)
            out.append(d(x))
        return out
