"""GSwap neural rerendering (paper step 6, eqs. 9-11): background encoder E_bg, foreground/background feature
fusion and the rerenderer U.

Channel bookkeeping (the paper leaves it open; shapes made consistent here):
- phi_bg = concat(E_bg(I_bg), I_bg): E_bg outputs 5 channels, plus the 3 background RGB channels = 8.
  E_bg's "(8, 8, 5)" is read as two 3x3 convolutions 3 -> 8 -> 5 (the input is the 3-channel inpainted
  background; the 8 is the hidden width), ReLU after the hidden layer only, so its 5 output channels, like
  phi_fore, may take either sign.
- phi_fore: the rasteriser's feature image has 32 neural + 8 temporal (c_t) channels = 40. `FeatureReducer`
  maps it to 8 channels with a learned 1x1 convolution without bias. Chosen over "the first 8 of 32" because
  it keeps every learned channel and c_t useful to U, and because a bias-free 1x1 convolution is linear, it
  commutes with alpha compositing: reducing the rendered image equals rasterising W f_i per Gaussian, so
  phi_fore stays an alpha-premultiplied splat with zeros where no Gaussian is (as the paper's phi_fore).
  `render_frame` uses that identity and splats the reduced 8-channel features (5x fewer channels for the
  rasteriser, same result up to float rounding; tests/test_gswap_gaussians.py checks the equality).
- M_fore = A_out ∩ M_head, taken as the product of the soft masks (eq. 9);
  phi_fused = M_fore * phi_fore + (1 - M_fore) * phi_bg (eq. 10); I_out = U(phi_fused) (eq. 11).
- U: three 3x3 convolutions 8 -> 8 -> 8 -> 3, padding 1, ReLU after each (the paper), including the last,
  so I_out >= 0; the losses see this ReLU output and `render_frame` clamps it to 0..1 only for display
  (no sigmoid: that would be a deviation). The last bias starts at 0.5 so that no output pixel starts in the
  ReLU's dead zone (an initialisation choice, not an architecture change).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rasterize import rasterize

FUSED_DIM = 8  # channels of phi_fore, phi_bg and phi_fused
BG_FEATURE_DIM = 5  # E_bg output channels


class BackgroundEncoder(nn.Module):
    """E_bg: Conv3x3(3 -> 8), ReLU, Conv3x3(8 -> 5); forward returns phi_bg = concat(E_bg(bg), bg) [B, 8, H, W]."""

    def __init__(self, hidden: int = 8, out_dim: int = BG_FEATURE_DIM):
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, out_dim, 3, padding=1)

    def forward(self, background: Tensor) -> Tensor:
        return torch.cat([self.conv2(F.relu(self.conv1(background))), background], 1)


class FeatureReducer(nn.Module):
    """1x1 convolution without bias, 40 (32 neural + 8 temporal) -> 8 channels (see the module docstring).
    forward takes an image [B, 40, H, W] or per-Gaussian features [N, 40] (the same linear map)."""

    def __init__(self, in_dim: int = 40, out_dim: int = FUSED_DIM):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # elementwise product-sum rather than a BLAS call: bit-reproducible fits
            return (x[:, None, :] * self.proj.weight[None, :, :, 0, 0]).sum(-1)
        return self.proj(x)


class NeuralRerenderer(nn.Module):
    """U: Conv3x3(8 -> 8), ReLU, Conv3x3(8 -> 8), ReLU, Conv3x3(8 -> 3), ReLU (padding 1)."""

    def __init__(self, dims=(FUSED_DIM, 8, 8, 3), last_bias: float = 0.5):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(dims[:-1], dims[1:]))
        with torch.no_grad():
            self.convs[-1].bias.fill_(last_bias)

    def forward(self, phi_fused: Tensor) -> Tensor:
        x = phi_fused
        for conv in self.convs:
            x = F.relu(conv(x))
        return x


def compose(phi_fore: Tensor, alpha: Tensor, head_mask: Tensor, phi_bg: Tensor):
    """Eqs. 9-10: M_fore = A_out * M_head (soft intersection), phi_fused = M_fore phi_fore + (1 - M_fore) phi_bg.

    phi_fore, phi_bg [B, C, H, W]; alpha, head_mask [B, 1, H, W] in 0..1. Returns (phi_fused, M_fore)."""
    if phi_fore.shape != phi_bg.shape:
        raise ValueError(f"SwapForge compose: phi_fore {tuple(phi_fore.shape)} and phi_bg {tuple(phi_bg.shape)}. "
                         "Expected equal shapes. Reduce the splatted features to phi_bg's channel count first.")
    m_fore = alpha * head_mask
    return m_fore * phi_fore + (1 - m_fore) * phi_bg, m_fore


class GSwapRenderer(nn.Module):
    """The learned 2D part: E_bg, the 40 -> 8 reducer and U. forward(phi_fore [B, 8, H, W] (already reduced)
    or the raw feature image [B, 40, H, W], alpha [B, 1, H, W], head_mask [B, 1, H, W], background
    [B, 3, H, W]) -> dict(image (U's ReLU output), m_fore, phi_fused)."""

    def __init__(self, in_dim: int = 40):
        super().__init__()
        self.bg_encoder = BackgroundEncoder()
        self.reducer = FeatureReducer(in_dim)
        self.rerenderer = NeuralRerenderer()

    def forward(self, feature_image: Tensor, alpha: Tensor, head_mask: Tensor, background: Tensor) -> Dict[str, Tensor]:
        reduced = feature_image.shape[1] == self.reducer.proj.out_channels
        phi_fore = feature_image if reduced else self.reducer(feature_image)
        phi_bg = self.bg_encoder(background)
        phi_fused, m_fore = compose(phi_fore, alpha, head_mask, phi_bg)
        return dict(image=self.rerenderer(phi_fused), m_fore=m_fore, phi_fused=phi_fused)


def render_frame(field, renderer: GSwapRenderer, rest_vertices: Tensor, transforms: Tensor, K: Tensor,
                 viewmat: Tensor, background: Tensor, head_mask: Tensor, frame_index: Optional[int] = None,
                 backend: str = "auto", render_scale: float = 1.0) -> Dict[str, Tensor]:
    """One frame through the whole pipeline (steps 4-6).

    field: NeuralGaussianField; rest_vertices [V, 3], transforms [V, 3, 4]; K [3, 3]; viewmat [4, 4]
    (world->camera, OpenCV); background [H, W, 3] inpainted target background in 0..1; head_mask [H, W];
    frame_index: training frame (c_t) or None (c_1, inference).
    render_scale: the Gaussians are splatted at this fraction of the frame's size (K scaled with it) and phi_fore
    and A_out are resized bilinearly to the frame before E_bg, the fusion and U, which run at full size. 1 = the
    paper. Below 1 it is a speed setting for the CPU rasteriser (its work falls with the square of the scale);
    a fitted avatar renders as it was trained, so keep the scale of its fit (Avatar.config["render_scale"]).
    Returns image [H, W, 3] (U's ReLU output, unclamped: what the losses see), display [H, W, 3] (clamped to
    0..1), alpha [H, W] (A_out), m_fore [H, W], phi_fore [H, W, 8] (the splat of the reduced features).
    """
    H, W = background.shape[:2]
    g = field(rest_vertices, transforms, frame_index)
    s = float(render_scale)
    if s != 1.0:
        h, w = max(1, int(round(H * s))), max(1, int(round(W * s)))
        Ks = K.clone().to(g["means"])
        Ks[0] *= w / W  # pixel centres at (x + 0.5): scaling fx, cx (and fy, cy) by the size ratio maps them
        Ks[1] *= h / H
        feat, alpha = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], renderer.reducer(g["features"]),
                                viewmat.to(g["means"]), Ks, w, h, backend=backend)
        both = torch.cat([feat, alpha], -1).permute(2, 0, 1)[None]
        both = F.interpolate(both, size=(H, W), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        feat, alpha = both[..., :-1], both[..., -1:]
    else:
        feat, alpha = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], renderer.reducer(g["features"]),
                                viewmat.to(g["means"]), K.to(g["means"]), W, H, backend=backend)
    bg = background.to(feat).permute(2, 0, 1)[None]
    out = renderer(feat.permute(2, 0, 1)[None], alpha.permute(2, 0, 1)[None], head_mask.to(feat)[None, None], bg)
    image = out["image"][0].permute(1, 2, 0)
    return dict(image=image, display=image.clamp(0, 1), alpha=alpha[..., 0], m_fore=out["m_fore"][0, 0],
                phi_fore=feat)
