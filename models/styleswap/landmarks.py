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
* Distillation, so the landmark term needs no external weights (what the trainer does by default): the
  embedded dlib 68-point predictor (models/face/detect.py, iBUG 300-W order) labels the training faces
  (:func:`teacher_landmarks`), its 68 points become the 19 AFLW points (:func:`aflw19_from_ibug68`), and a
  :class:`HeatmapLandmarks` learns to reproduce them (:func:`distill_landmarks`): a differentiable F_lm of
  the paper's 19 points, fitted to the faces it will see in training.

Pixel convention (as models/face/align.py): pixel centres are at integer coordinates, so a heatmap
pixel (i, j) of a map with stride s covers input pixels whose centre is at x = (j + 0.5) * s - 0.5.
No ComfyUI import here.
"""
from __future__ import annotations

import math
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


# ---------------------------------------------------------------------- distillation from the embedded predictor
#: AFLW-19 points from iBUG-68 indices (a point given by several indices is their mean). AFLW order, "left" =
#: image left: brows (left corner, centre, right corner of the left brow, then of the right brow), eyes (left
#: corner, centre, right corner of each), nose (left nostril, tip, right nostril), mouth (left corner, centre of
#: the inner lips, right corner), chin.
IBUG68_TO_AFLW19 = ((17,), (19,), (21,), (22,), (24,), (26,), (36,), (36, 37, 38, 39, 40, 41), (39,), (42,),
                    (42, 43, 44, 45, 46, 47), (45,), (31,), (30,), (35,), (48,), (62, 66), (54,), (8,))
#: Index of each AFLW-19 point's mirror image (a horizontal flip swaps image left and right).
AFLW19_MIRROR = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18)


def aflw19_from_ibug68(lm68) -> torch.Tensor:
    """iBUG-68 landmarks [..., 68, 2] -> the 19 AFLW points [..., 19, 2] (IBUG68_TO_AFLW19)."""
    lm = torch.as_tensor(lm68, dtype=torch.float32)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"SwapForge landmarks: expected iBUG-68 points [..., 68, 2], got {tuple(lm.shape)}.")
    return torch.stack([lm[..., list(idx), :].mean(-2) for idx in IBUG68_TO_AFLW19], -2)


def flip_points(points: torch.Tensor, width: int) -> torch.Tensor:
    """AFLW-19 points [..., 19, 2] of an image flipped left-right (x -> width - 1 - x, pixel centres at
    integers), reordered with AFLW19_MIRROR so each index keeps its meaning."""
    out = points[..., list(AFLW19_MIRROR), :].clone()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


@torch.no_grad()
def teacher_landmarks(images: torch.Tensor, analyzer=None, min_side: int = 256):
    """Label aligned faces with the embedded dlib 68-point predictor -> (points [N, 19, 2] float32 px of the
    input, found [N] bool; rows without a face are zeros).

    images [N, 3, S, S] in -1..1 (the trainer's tensors). Each image is enlarged to at least ``min_side`` px
    (cv2 INTER_CUBIC, integer factor k) so dlib sees a face at its working size; the highest-scoring face's 68
    points come back to the input's pixels as x = (x_k + 0.5) / k - 0.5. analyzer: a models.face.detect
    analyzer (default: dlib HOG, upsample 0)."""
    import cv2
    import numpy as np

    from ..face.detect import DlibAnalyzer

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"SwapForge landmarks: expected images [N, 3, S, S] in -1..1, got {tuple(images.shape)}.")
    analyzer = analyzer or DlibAnalyzer("hog", upsample=0)
    n, _, h, w = images.shape
    k = max(1, int(math.ceil(min_side / max(min(h, w), 1))))
    u8 = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pts = torch.zeros(n, N_POINTS, 2)
    found = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        img = np.ascontiguousarray(u8[i].permute(1, 2, 0).numpy())
        if k > 1:
            img = cv2.resize(img, (w * k, h * k), interpolation=cv2.INTER_CUBIC)
        faces = analyzer.detect(img)
        if len(faces) == 0:
            continue
        lm = np.asarray(faces.landmarks68[int(np.argmax(faces.scores))], np.float64)
        if not np.all(np.isfinite(lm)):
            continue
        pts[i] = aflw19_from_ibug68((lm + 0.5) / k - 0.5)
        found[i] = True
    return pts, found


def distill_landmarks(images: torch.Tensor, points: torch.Tensor, steps: int = 2000, batch: int = 16,
                      lr: float = 1e-3, channels: int = 32, depth: int = 2, flip: bool = True, seed: int = 0,
                      progress=None):
    """Fit a :class:`HeatmapLandmarks` to teacher points -> (model in eval mode, gradients off; mean error in px
    on the given images after training).

    images [N, 3, S, S] in -1..1; points [N, 19, 2] px. Adam(lr) on 0.5 * mean squared difference of the
    soft-argmax points and the teacher's, both divided by the image size (the landmark loss's own
    normalisation), ``steps`` steps of ``batch`` images drawn with a seeded generator, each flipped left-right
    with probability 1/2 (points mirrored, :func:`flip_points`) when ``flip``: the trainer flips faces too.
    Runs on the images' device; progress(step, steps, loss) if given."""
    if images.ndim != 4 or points.shape != (images.shape[0], N_POINTS, 2):
        raise ValueError(f"SwapForge landmarks: images {tuple(images.shape)} and points {tuple(points.shape)} do "
                         f"not match; expected [N, 3, S, S] and [N, {N_POINTS}, 2].")
    g = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = HeatmapLandmarks(channels=channels, depth=depth).to(images.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    h, w = images.shape[-2:]
    scale = images.new_tensor([w, h])
    points = points.to(images.device, images.dtype)
    model.train()
    for step in range(int(steps)):
        idx = torch.randint(len(images), (min(int(batch), len(images)),), generator=g)
        x, p = images[idx], points[idx]
        if flip:
            f = (torch.rand(len(idx), generator=g) < 0.5).to(images.device)
            x = torch.where(f[:, None, None, None], x.flip(-1), x)
            p = torch.where(f[:, None, None], flip_points(p, w), p)
        loss = 0.5 * ((model(x) - p) / scale).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, int(steps), float(loss.detach()))
    model.eval().requires_grad_(False)
    with torch.no_grad():
        err = float(torch.linalg.norm(model(images) - points, dim=-1).mean())
    return model, err
