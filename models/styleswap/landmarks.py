"""Differentiable landmark extractor F_lm of the paper's landmark loss (arXiv 2312.10843, Sec. 3.3).

The paper's landmark loss 0.5 * ||F_lm(It) - F_lm(out)||^2 needs 19 landmarks (the AFLW annotation)
from a network that gradients can pass through. Heatmap networks (e.g. HRNetV2-W18 trained on AFLW)
become differentiable with a soft-argmax: the landmark is the expectation of the pixel coordinates
under softmax(beta * heatmap), instead of the (non-differentiable) arg-max pixel.

* :class:`LandmarkModel`: the interface, ``forward(img [B, 3, H, W] in -1..1) -> [B, n_points, 2]``
  (x, y) in pixel coordinates of the input, differentiable w.r.t. the image.
* :func:`soft_argmax`: expectation of the (x, y) pixel-centre grid under a spatial softmax.
* :class:`HeatmapLandmarks`: a small CNN (stride-4 heatmaps) + soft-argmax; random weights for tests,
  or a trained state dict through :func:`load_landmarks`. The paper's HRNet is not reimplemented here
  (no public weights in this format); any heatmap network can subclass :class:`LandmarkModel`.

Pixel convention (as models/face/align.py): pixel centres are at integer coordinates, so a heatmap
pixel (i, j) of a map with stride s covers input pixels whose centre is at x = (j + 0.5) * s - 0.5.
No ComfyUI import here.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import nn

from ..safe_load import load_torch_file

N_POINTS = 19  # AFLW-19


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Soft-argmax of heatmaps [B, N, H, W] -> [B, N, 2] (x, y) in heatmap pixel coordinates.

    p = softmax over the H*W pixels of beta * heatmap; x = sum_ij p_ij * j, y = sum_ij p_ij * i
    (pixel centres at integers). A single peak that dominates the softmax gives its pixel exactly;
    the result is differentiable in the heatmap (the reason for using it)."""
    if heatmaps.ndim != 4:
        raise ValueError(f"SwapForge landmarks: soft_argmax expects [B, N, H, W], got {tuple(heatmaps.shape)}.")
    b, n, h, w = heatmaps.shape
    p = torch.softmax(beta * heatmaps.reshape(b, n, h * w).float(), dim=-1).reshape(b, n, h, w)
    xs = torch.arange(w, device=heatmaps.device, dtype=p.dtype)
    ys = torch.arange(h, device=heatmaps.device, dtype=p.dtype)
    x = (p.sum(2) * xs).sum(-1)
    y = (p.sum(3) * ys).sum(-1)
    return torch.stack([x, y], -1).to(heatmaps.dtype)


def heatmap_to_image_coords(points: torch.Tensor, heatmap_hw: Sequence[int], image_hw: Sequence[int]) -> torch.Tensor:
    """Map (x, y) in heatmap pixels to the input image's pixels: x_img = (x + 0.5) * W_img / W_map - 0.5
    (and likewise y), i.e. pixel-centre to pixel-centre for any stride."""
    sx = image_hw[1] / heatmap_hw[1]
    sy = image_hw[0] / heatmap_hw[0]
    scale = points.new_tensor([sx, sy])
    return (points + 0.5) * scale - 0.5


class LandmarkModel(nn.Module):
    """Interface of F_lm: ``forward(img [B, 3, H, W] in -1..1) -> [B, n_points, 2]`` (x, y) in pixels of
    the input image, differentiable with respect to ``img``. Attribute ``n_points``."""

    n_points: int = N_POINTS


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(1, cout), nn.LeakyReLU(0.2))


class HeatmapLandmarks(LandmarkModel):
    """A small heatmap CNN + :func:`soft_argmax`.

    Layout: ``stem`` two stride-2 conv blocks (input -> 1/4 resolution), ``blocks`` ``depth`` stride-1
    conv blocks at 1/4 resolution, ``head`` a 1x1 conv to ``n_points`` heatmaps. Each conv block is
    Conv3x3 + GroupNorm(1) + LeakyReLU(0.2). Landmarks = soft_argmax(beta * heatmaps) mapped to input
    pixels with :func:`heatmap_to_image_coords`.

    Args:
        n_points: number of landmarks (19, AFLW).
        channels: conv width.
        depth: number of stride-1 blocks.
        beta: softmax inverse temperature of the soft-argmax (a fixed constant, not learnt).
    """

    def __init__(self, n_points: int = N_POINTS, channels: int = 32, depth: int = 2, beta: float = 1.0):
        super().__init__()
        self.n_points = int(n_points)
        self.channels = int(channels)
        self.depth = int(depth)
        self.beta = float(beta)
        self.stem = nn.Sequential(_block(3, channels, 2), _block(channels, channels, 2))
        self.blocks = nn.Sequential(*[_block(channels, channels, 1) for _ in range(depth)])
        self.head = nn.Conv2d(channels, n_points, 1)

    @property
    def config(self) -> dict:
        return dict(n_points=self.n_points, channels=self.channels, depth=self.depth, beta=self.beta)

    def heatmaps(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, 3, H, W] -> heatmaps [B, n_points, ceil(H/4), ceil(W/4)] (logits)."""
        return self.head(self.blocks(self.stem(img)))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"SwapForge landmarks: expected images [B, 3, H, W] in -1..1, got {tuple(img.shape)}.")
        hm = self.heatmaps(img)
        pts = soft_argmax(hm, self.beta)
        return heatmap_to_image_coords(pts, hm.shape[-2:], img.shape[-2:])


def load_landmarks(path_or_state, **config) -> HeatmapLandmarks:
    """Build a :class:`HeatmapLandmarks` and load a state dict strictly -> eval mode, gradients off.

    ``path_or_state``: a ``.pt``/``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` file,
    or a state dict; a dict with ``state_dict`` and optional ``config`` entries is also accepted.
    ``config`` keywords (n_points, channels, depth, beta) override the stored config; widths are
    otherwise inferred from the weights."""
    if isinstance(path_or_state, Mapping):
        state = path_or_state
    else:
        path = os.fspath(path_or_state)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SwapForge: no landmark weights at {path}. Expected a HeatmapLandmarks "
                                    f"state dict (.pt or .safetensors) trained for {N_POINTS} landmarks. Train "
                                    f"or convert one, or run without the landmark loss.")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = load_torch_file(path)
    stored = {}
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        stored = dict(state.get("config") or {})
        state = state["state_dict"]
    cfg = dict(n_points=int(state["head.weight"].shape[0]), channels=int(state["head.weight"].shape[1]),
               depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}))
    cfg.update(stored)
    cfg.update(config)
    model = HeatmapLandmarks(**cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"SwapForge: the landmark weights do not fit HeatmapLandmarks({cfg}): {exc}") from exc
    model.eval().requires_grad_(False)
    return model
