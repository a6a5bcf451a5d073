"""Blending a pasted part into a frame: Poisson (gradient domain), Laplacian pyramid and alpha.

These are the compositing steps of the classic cut-and-paste part swap, the "FacePartsSwap" baseline of
FuseAnyPart (Yu et al., NeurIPS 2024, Table 1). All functions take src, dst [H, W, 3] float32 in 0..1
and a soft mask [H, W] in 0..1 and return float32 [H, W, 3]. Every mode leaves dst bit-identical where
the mask's support ends (documented per function).
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse import linalg as splinalg

BLEND_MODES = ("poisson", "multiband", "alpha")


def _check(src, dst, mask) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.asarray(src, np.float32)
    dst = np.asarray(dst, np.float32)
    mask = np.asarray(mask, np.float32)
    if dst.ndim != 3 or dst.shape[-1] != 3:
        raise ValueError(f"SwapForge blend: dst must be an image [H, W, 3], got shape {dst.shape}.")
    if src.shape != dst.shape:
        raise ValueError(f"SwapForge blend: src {src.shape} and dst {dst.shape} must have the same shape. "
                         f"Warp the source into the target frame first.")
    if mask.shape != dst.shape[:2]:
        raise ValueError(f"SwapForge blend: mask must be [H, W] = {dst.shape[:2]}, got {mask.shape}.")
    for name, a in (("src", src), ("dst", dst), ("mask", mask)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"SwapForge blend: {name} contains NaN or infinite values. Check the upstream node.")
    return src, dst, np.clip(mask, 0.0, 1.0)


def alpha_blend(src, dst, mask) -> np.ndarray:
    """out = mask * src + (1 - mask) * dst; where mask == 0 the result is dst bit for bit."""
    src, dst, m = _check(src, dst, mask)
    m3 = m[..., None]
    out = m3 * src + (1.0 - m3) * dst
    return np.where(m3 > 0, out, dst).astype(np.float32)


def _harmonic_correction(diff: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Solve the discrete Laplace equation for g [H, W, C] on the pixels `inside` (4-neighbours) with
    g = diff on the outside pixels that touch them; g = 0 outside. Frame edges: only in-frame neighbours
    count (Pérez et al. 2003, eq. 7: N_p is the in-frame neighbourhood)."""
    h, w = inside.shape
    ys, xs = np.nonzero(inside)
    y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, h)
    x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, w)
    ins = inside[y0:y1, x0:x1]
    dif = diff[y0:y1, x0:x1].astype(np.float64)
    rh, rw = ins.shape
    idx = np.full((rh, rw), -1, np.int64)
    n = int(ins.sum())
    idx[ins] = np.arange(n)
    py, px = np.nonzero(ins)
    pid = idx[py, px]
    diag = np.zeros(n)
    rhs = np.zeros((n, dif.shape[2]))
    rows, cols = [], []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qy, qx = py + dy, px + dx
        # In the padded ROI a neighbour outside it is outside the frame.
        ok = (qy >= 0) & (qy < rh) & (qx >= 0) & (qx < rw)
        ok &= (qy + y0 >= 0) & (qy + y0 < h) & (qx + x0 >= 0) & (qx + x0 < w)
        diag[pid[ok]] += 1.0
        qy, qx, pp = qy[ok], qx[ok], pid[ok]
        qid = idx[qy, qx]
        unk = qid >= 0
        rows.append(pp[unk])
        cols.append(qid[unk])
        np.add.at(rhs, pp[~unk], dif[qy[~unk], qx[~unk]])
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    a = sparse.csc_matrix(
        (np.concatenate([diag, -np.ones(len(rows))]), (np.concatenate([np.arange(n), rows]),
                                                       np.concatenate([np.arange(n), cols]))),
        shape=(n, n))
    sol = splinalg.splu(a, permc_spec="MMD_AT_PLUS_A").solve(rhs)  # symmetric ordering: faster on grids
    g = np.zeros(diff.shape, np.float64)
    g[y0:y1, x0:x1][ins] = sol
    return g


def poisson_blend(src, dst, mask) -> np.ndarray:
    """Seamless cloning (Pérez, Gangnet & Blake 2003, "Poisson image editing", eq. 10 with the source
    gradient as guidance field, v = grad src) of src into dst inside mask > 0.5, src and dst in the
    same frame (no offset).

    Solved in float64 with a sparse direct solve (scipy splu), not with cv2.seamlessClone: writing the
    unknown as f = src + g, eq. 10 becomes Laplace(g) = 0 inside the region with g = dst - src on its
    border (4-neighbours; at the frame edge only in-frame neighbours count), so src == dst gives dst
    exactly and nothing is rounded to 8 bits. (cv2.seamlessClone would need 8-bit inputs, clears the
    mask's outer frame and erodes the mask array it is given in place.) The clone is then
    alpha-composited with the soft mask: out = m * clone + (1 - m) * dst, and pixels where mask == 0 are
    dst bit for bit. A mask covering the whole frame has no border to match and returns src there.
    """
    src, dst, m = _check(src, dst, mask)
    inside = m > 0.5
    if not inside.any():
        return alpha_blend(src, dst, m)
    if inside.all():
        cloned = src
    else:
        g = _harmonic_correction(dst - src, inside)
        cloned = np.where(inside[..., None], src.astype(np.float64) + g, dst).astype(np.float32)
        cloned = np.clip(cloned, 0.0, 1.0)
    m3 = m[..., None]
    out = m3 * cloned + (1.0 - m3) * dst
    return np.where(m3 > 0, out, dst).astype(np.float32)


def multiband_support_radius(levels: int) -> int:
    """Distance (px) beyond the mask (> 0) where multiband_blend leaves dst bit-identical: 4 * 2**levels."""
    return 4 * 2 ** int(levels)


def _pyr_levels(h: int, w: int, levels: int) -> int:
    n = 0
    while n < levels and min(h, w) >> (n + 1) >= 2:
        n += 1
    return n


def multiband_blend(src, dst, mask, levels: int = 5) -> np.ndarray:
    """Laplacian pyramid blending (Burt & Adelson 1983, "A multiresolution spline with application to
    image mosaics"): each Laplacian level of src and dst is mixed with the matching level of the mask's
    Gaussian pyramid and the pyramid is collapsed.

    By linearity this equals dst + collapse(G_l(mask) * L_l(src - dst)), which is how it is computed:
    the correction is exactly 0 wherever the finite 5-tap pyramid kernels never reach the mask, so the
    result is dst bit for bit farther than multiband_support_radius(levels) = 4 * 2**levels px from the
    mask (the output is additionally forced to dst outside that dilated support). Near the mask the
    transition is spread over about 2**levels px at low frequencies and sharp at high ones. `levels` is
    lowered for small images (coarsest level at least 2 px).
    """
    src, dst, m = _check(src, dst, mask)
    levels = int(levels)
    if levels < 1:
        raise ValueError(f"SwapForge blend: multiband levels must be >= 1, got {levels}.")
    if not np.any(m > 0):
        return dst.copy()
    h, w = m.shape
    n = _pyr_levels(h, w, levels)
    diff = src - dst
    # Gaussian pyramids of the difference and the mask, Laplacian pyramid of the difference.
    g_d, g_m = [diff], [m]
    for _ in range(n):
        g_d.append(cv2.pyrDown(g_d[-1]))
        g_m.append(cv2.pyrDown(g_m[-1]))
    lap = []
    for i in range(n):
        up = cv2.pyrUp(g_d[i + 1], dstsize=(g_d[i].shape[1], g_d[i].shape[0]))
        lap.append(g_d[i] - up)
    lap.append(g_d[n])
    acc = lap[n] * g_m[n][..., None]
    for i in range(n - 1, -1, -1):
        acc = cv2.pyrUp(acc, dstsize=(lap[i].shape[1], lap[i].shape[0]))
        acc = acc + lap[i] * g_m[i][..., None]
    out = np.clip(dst + acc, 0.0, 1.0)
    r = multiband_support_radius(n)
    support = cv2.dilate((m > 0).astype(np.uint8),
                         cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1)))
    return np.where(support[..., None] > 0, out, dst).astype(np.float32)


def blend(mode: str, src, dst, mask) -> np.ndarray:
    """Dispatch to poisson_blend, multiband_blend (5 levels) or alpha_blend by name."""
    if mode == "poisson":
        return poisson_blend(src, dst, mask)
    if mode == "multiband":
        return multiband_blend(src, dst, mask)
    if mode == "alpha":
        return alpha_blend(src, dst, mask)
    raise ValueError(f"SwapForge blend: unknown blend mode {mode!r}. Expected one of {BLEND_MODES}.")
