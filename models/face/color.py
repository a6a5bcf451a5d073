"""Colour matching: per-channel mean and standard deviation transfer (Reinhard et al. 2001)."""
from __future__ import annotations

import cv2
import numpy as np

COLOR_SPACES = ("none", "rgb", "lab")


def _to_space(img: np.ndarray, space: str) -> np.ndarray:
    if space == "lab":
        return cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)
    return img.astype(np.float32)


def _from_space(img: np.ndarray, space: str) -> np.ndarray:
    if space == "lab":
        return np.clip(cv2.cvtColor(img.astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)
    return np.clip(img, 0, 1)


def match_color(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, space: str = "rgb",
                ref_mask: np.ndarray | None = None) -> np.ndarray:
    """Shift src's per-channel mean/std (inside `mask`) to those of ref (inside `ref_mask`, default `mask`).

    src, ref: float [H, W, 3] in 0..1 (sizes may differ when ref_mask is given). mask: [H, W] weights;
    pixels with weight > 0.5 define the statistics. space: "rgb", "lab" or "none" (returns src).
    The whole of src is transformed; callers composite it with their own mask.
    """
    if space not in COLOR_SPACES:
        raise ValueError(f"match_color: colour space must be one of {COLOR_SPACES}, got {space!r}.")
    if space == "none":
        return src
    ref_mask = mask if ref_mask is None else ref_mask
    s, r = _to_space(src, space), _to_space(ref, space)
    sel_s = (mask > 0.5) if mask is not None else np.ones(s.shape[:2], bool)
    sel_r = (ref_mask > 0.5) if ref_mask is not None else np.ones(r.shape[:2], bool)
    if sel_s.sum() < 4 or sel_r.sum() < 4:
        return src
    ps, pr = s[sel_s], r[sel_r]
    mu_s, sd_s = ps.mean(0), ps.std(0) + 1e-6
    mu_r, sd_r = pr.mean(0), pr.std(0) + 1e-6
    out = (s - mu_s) / sd_s * sd_r + mu_r
    return _from_space(out, space).astype(np.float32)
