"""GSwap training losses (paper step 7), all weights 1.0:

    L = L1(I_out, I_gen) + L1(A_out, A_gen) + LPIPS-VGG(I_out, I_gen) + L1(I_out (1 - M_fore), I_tgt (1 - M_fore))

I_gen: the generated (head-inpainted) frame; A_gen: its foreground mask; I_tgt: the original target frame;
M_fore = A_out * M_head. (The paper's super-resolution-guided term after 10 epochs is not implemented.)

Perceptual term: `LPIPSVGG` (LPIPS v0.1, VGG16 backbone) when the user has put both weight files in
models/swapforge/lpips (never downloaded):
  - vgg16-397923af.pth: torchvision's ImageNet VGG16 (only the `features.*` convolutions are used);
  - vgg.pth: the LPIPS linear layers (richzhang/PerceptualSimilarity, `lin0.model.1.weight` ... `lin4`).
Without them `perceptual_substitute` is used: an L1 over a 4-level Laplacian pyramid (documented
substitute, not LPIPS). `gswap_losses` says which one in its `perceptual_kind` entry.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..safe_load import load_torch_file

LPIPS_FILES = ("vgg16-397923af.pth", "vgg.pth")
# LPIPS ScalingLayer (inputs in -1..1)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (torchvision features indices)
_VGG_CHANNELS = (64, 128, 256, 512, 512)


def lpips_missing_error(folder: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"SwapForge: no LPIPS-VGG weights in {folder}. Expected {LPIPS_FILES[0]} (torchvision's VGG16, about "
        f"528 MB) and {LPIPS_FILES[1]} (LPIPS v0.1 linear layers, 7 KB, from richzhang/PerceptualSimilarity). "
        "Put both files there to train with LPIPS; without them the Laplacian-pyramid substitute is used.")


def _vgg16_features() -> nn.Sequential:
    """torchvision's vgg16().features layout (same indices, so its state-dict keys load directly)."""
    layers, c = [], 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


class LPIPSVGG(nn.Module):
    """LPIPS v0.1 with the VGG16 backbone: sum over 5 taps of the spatial mean of lin_k((f_x - f_y)^2), f the
    channel-unit-normalised activations. Inputs [B, 3, H, W] in 0..1 (mapped to -1..1 inside). Frozen."""

    def __init__(self, vgg_state: Dict[str, Tensor], lin_state: Dict[str, Tensor]):
        super().__init__()
        self.features = _vgg16_features()
        self.features.load_state_dict({k[len("features."):]: v for k, v in vgg_state.items()
                                       if k.startswith("features.")})
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _VGG_CHANNELS)
        for k, lin in enumerate(self.lins):
            lin.weight.data.copy_(lin_state[f"lin{k}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_folder(cls, folder: str) -> "LPIPSVGG":
        paths = [os.path.join(folder, f) for f in LPIPS_FILES]
        if not all(os.path.isfile(p) for p in paths):
            raise lpips_missing_error(folder)
        vgg = load_torch_file(paths[0])
        lin = load_torch_file(paths[1])
        return cls(vgg, lin)

    def _taps(self, x: Tensor):
        out, h = [], (x * 2 - 1 - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _VGG_TAPS:
                out.append(h)
                if i == _VGG_TAPS[-1]:
                    break
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean LPIPS distance over the batch (a scalar)."""
        total = x.new_zeros(())
        for fx, fy, lin in zip(self._taps(x), self._taps(y), self.lins):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy) ** 2).mean()
        return total


def load_perceptual(folder: Optional[str]):
    """LPIPSVGG from `folder` when both files are there, else None (the caller then uses the substitute)."""
    if folder and all(os.path.isfile(os.path.join(folder, f)) for f in LPIPS_FILES):
        return LPIPSVGG.from_folder(folder)
    return None


def _blur_down(x: Tensor) -> Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    C = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(C, 1, 1, 5), groups=C)
    x = F.conv2d(x, k.view(1, 1, 5, 1).expand(C, 1, 5, 1), groups=C)
    return x


def perceptual_substitute(x: Tensor, y: Tensor, levels: int = 4) -> Tensor:
    """Laplacian-pyramid L1 (the LPIPS substitute): sum over levels of the mean |L_k(x) - L_k(y)|, where
    L_k = G_k - up(G_{k+1}) (5-tap binomial blur, factor-2 down/up) and the coarsest level is G_{levels-1}.
    x, y [B, C, H, W]. Zero iff x == y."""
    total = x.new_zeros(())
    d = x - y  # the pyramid is linear: pyramid(x) - pyramid(y) = pyramid(x - y)
    for k in range(levels):
        if k == levels - 1 or min(d.shape[-2:]) < 4:
            return total + d.abs().mean()
        g = _blur_down(d)
        down = g[..., ::2, ::2]
        up = F.interpolate(down, size=d.shape[-2:], mode="bilinear", align_corners=False)
        total = total + (d - up).abs().mean()
        d = down
    return total


def gswap_losses(image: Tensor, alpha: Tensor, m_fore: Tensor, image_gen: Tensor, mask_gen: Tensor,
                 image_tgt: Tensor, perceptual: Optional[nn.Module] = None) -> Dict[str, object]:
    """Paper step 7. image (I_out), image_gen (I_gen), image_tgt (I_tgt) [B, 3, H, W]; alpha (A_out),
    mask_gen (A_gen), m_fore [B, 1, H, W]. perceptual: an LPIPSVGG or None (substitute).

    Returns dict(total, l1, mask, perceptual, background: scalar tensors; perceptual_kind: "lpips_vgg" or
    "laplacian_pyramid_l1")."""
    l1 = (image - image_gen).abs().mean()
    mask = (alpha - mask_gen).abs().mean()
    if perceptual is not None:
        perc, kind = perceptual(image, image_gen), "lpips_vgg"
    else:
        perc, kind = perceptual_substitute(image, image_gen), "laplacian_pyramid_l1"
    inv = 1 - m_fore
    bg = (image * inv - image_tgt * inv).abs().mean()
    return dict(total=l1 + mask + perc + bg, l1=l1, mask=mask, perceptual=perc, background=bg, perceptual_kind=kind)
