"""A seam metric for pasted parts: does the blend add edges, halos or colours that neither image has?

Given the target frame t, the warped (and colour-matched) donor d, the blend's soft mask m (0..1) and the
result o (all float 0..1, [H, W, 3] and [H, W]), the boundary band is

    B = { pixels within BAND_PX of a pixel with BAND_LO < m < BAND_HI }

(the mask's transition plus a 2 px margin on both sides; where the mask is hard, the pixels on both sides of
its edge). Two numbers are measured over B:

- gradient_ratio = sum_B |grad o|^2 / sum_B ((1 - m) |grad t|^2 + m |grad d|^2), gradients by central
  differences, summed over the colour channels. The denominator is the edge energy of a seamless result that
  takes each pixel's texture from the image it mostly comes from; 1 means no edges were added, above 1 the
  blend added edges (a hard mask edge, a Poisson halo, a colour step), below 1 it smoothed texture away.
- out_of_range = the fraction of B where some channel of o lies outside [lo - tol, hi + tol], lo and hi the
  smallest and largest value of that channel over t and d in the 3 x 3 window around the pixel, tol = 2/255
  (under one 8-bit step of rounding either way). A bright or dark halo is a colour neither image has there.

Alpha blending is inside the range by construction (a convex mix per pixel) but leaves colour steps and
doubled contours that raise gradient_ratio; Poisson blending removes colour steps but can overshoot.
"""
from __future__ import annotations

from typing import Dict

import cv2
import numpy as np

BAND_LO = 0.02
BAND_HI = 0.98
BAND_PX = 2
RANGE_TOL = 2.0 / 255.0


def boundary_band(mask: np.ndarray) -> np.ndarray:
    """The band B of a soft mask [H, W] (module docstring): bool [H, W]."""
    m = np.asarray(mask, np.float32)
    trans = (m > BAND_LO) & (m < BAND_HI)
    hard = m >= BAND_HI
    # a hard edge: pixels of the mask's >= BAND_HI region next to pixels <= BAND_LO (4-neighbours)
    k = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    low = (m <= BAND_LO).astype(np.uint8)
    edge = (hard & (cv2.dilate(low, k) > 0)) | ((low > 0) & (cv2.dilate(hard.astype(np.uint8), k) > 0))
    core = (trans | edge).astype(np.uint8)
    size = 2 * BAND_PX + 1
    return cv2.dilate(core, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0


def _grad_energy(img: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)  # central difference (f[x+1] - f[x-1]) / 2
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    return (gx ** 2 + gy ** 2).sum(-1)


def seam_metrics(out: np.ndarray, target: np.ndarray, donor: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """{"gradient_ratio", "out_of_range", "band_pixels"} of one pasted region (module docstring)."""
    o, t, d = (np.asarray(a, np.float32) for a in (out, target, donor))
    m = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    if not (o.shape == t.shape == d.shape and o.ndim == 3 and m.shape == o.shape[:2]):
        raise ValueError(f"SwapForge seams: out {o.shape}, target {t.shape}, donor {d.shape} must be equal [H, W, 3] "
                         f"and mask {m.shape} [H, W].")
    band = boundary_band(m)
    n = int(band.sum())
    if n == 0:
        return {"gradient_ratio": float("nan"), "out_of_range": float("nan"), "band_pixels": 0}
    eo = _grad_energy(o)[band].sum()
    ref = ((1.0 - m) * _grad_energy(t) + m * _grad_energy(d))[band].sum()
    k = np.ones((3, 3), np.uint8)
    lo = np.minimum(cv2.erode(t, k), cv2.erode(d, k))
    hi = np.maximum(cv2.dilate(t, k), cv2.dilate(d, k))
    outside = ((o < lo - RANGE_TOL) | (o > hi + RANGE_TOL)).any(-1)
    return {"gradient_ratio": float(eo / max(ref, 1e-12)), "out_of_range": float(outside[band].mean()),
            "band_pixels": n}
