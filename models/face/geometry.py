"""Point-set transforms shared by alignment and the classic part swap."""
from __future__ import annotations

import numpy as np


def check_points(a, n: int, what: str, stage: str) -> np.ndarray:
    """`a` as float64 [n, 2] (x, y) pixels of one face, or a ValueError naming `stage` and `what`
    (wrong shape, or NaN / infinite values)."""
    a = np.asarray(a, np.float64)
    if a.shape != (n, 2):
        raise ValueError(f"SwapForge {stage}: {what} must be [{n}, 2] (x, y) px, got shape {a.shape}. "
                         f"Pass the points of one face.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"SwapForge {stage}: {what} contain NaN or infinite values. "
                         f"Re-run the detector on this frame or drop the face.")
    return a


def box_overlaps(a, b):
    """For boxes a [M, 4] and b [N, 4] (x0, y0, x1, y1): (IoU [M, N], the fraction of each a box's area that
    lies inside each b box [M, N]). Empty boxes overlap nothing."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return iou, np.where(area_a > 0, inter / np.maximum(area_a, 1e-12), 0.0)


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking src points onto dst points.

    Umeyama 1991, "Least-squares estimation of transformation parameters between two point patterns",
    eqs. 34-43. src, dst: [N, 2]. Returns the 2x3 matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError(f"umeyama: need two sets of at least 2 matching points, got {len(src)} and {len(dst)}.")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc ** 2).sum() / len(src)
    cov = dc.T @ sc / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1, 1] = -1.0
    r = u @ s @ vt
    scale = (d * np.diag(s)).sum() / var_s if (estimate_scale and var_s > 0) else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to points [..., 2]."""
    pts = np.asarray(pts, np.float64)
    return pts @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m, np.float64)[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine, as 2x3."""
    full = np.vstack([np.asarray(m, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]
