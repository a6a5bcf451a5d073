"""Differentiable tile rasteriser for 3D Gaussians (GSwap pipeline step 5: splat the 32-channel foreground
feature image phi_fore and the alpha A_out).

`rasterize` renders one camera. It has two backends with the same semantics:

- ``"gsplat"``: `gsplat.rasterization` (CUDA only; imported lazily, never for CPU tensors).
- ``"torch"``: plain PyTorch, runs on CPU (and on CUDA when gsplat is missing); autograd gives the gradients.

The torch path follows gsplat 1.5.3's "classic" pinhole pipeline (``ProjectionEWA3DGSFused.cu``,
``IntersectTile.cu``, ``RasterizeToPixels3DGSFwd.cu``):

1. Covariance Sigma = R S S^T R^T from the normalised quaternion (wxyz) and the linear scales; camera-space
   mean t = R_v mu + t_v and covariance R_v Sigma R_v^T.
2. EWA: J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]] with tx/z, ty/z clamped to the view frustum widened
   by 30 % (for a centred principal point that is 1.3 tan(fov/2)); Sigma2d = J Sigma_c J^T + eps2d I;
   conic = Sigma2d^-1; mean2d = (fx x/z + cx, fy y/z + cy).
3. Culling: depth outside [near, far], opacity < 1/255, or the bounding box outside the image.
   Bounding box: per axis, radius = ceil(extend * sqrt(Sigma2d_ii)) with the opacity-aware
   extend = min(3.33, sqrt(2 ln(255 opacity))) of gsplat 1.5.3. Outside this box every pixel has
   alpha < 1/255 (the box bounds the level set opacity * exp(-d^T conic d / 2) = 1/255), so the tile
   culling changes no pixel: the result equals a brute-force loop over all Gaussians.
4. Each Gaussian is listed in every tile of ``tile_size`` x ``tile_size`` pixels its box touches; each tile's
   list is sorted front to back by camera depth.
5. Per pixel (centre at x + 0.5, y + 0.5), front to back: alpha_i = min(0.999, o_i exp(-d^T conic_i d / 2));
   Gaussians with alpha_i < 1/255 are skipped; if T (1 - alpha_i) <= 1e-4 the pixel stops before Gaussian i;
   otherwise C += alpha_i T f_i and T *= 1 - alpha_i. Output C + T * background and alpha = 1 - T.

The torch path has two evaluation orders with the same result (both equal a brute-force loop, tests):
- "pairs" (default): step 4 is done per pixel instead of per tile: every (pixel, Gaussian) pair inside the
  Gaussian's bounding box whose alpha reaches 1/255 is listed, the list is sorted by pixel and depth, and
  step 5 runs as a segmented cumulative sum of log(1 - alpha) over it. Nothing is padded, so the work is
  proportional to the pairs that contribute (the fastest order on CPUs).
- "tiles": gsplat's tile lists, every active tile against the next block of its sorted Gaussians (padded), at
  most ``max_chunk_elements`` pixel-Gaussian pairs at a time; the transmittance is carried between blocks in
  log space, and tiles whose pixels have all stopped are dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # Gaussians with a smaller alpha at a pixel are skipped there (gsplat).
MAX_ALPHA = 0.999  # alpha is clamped to this value (gsplat).
TRANSMITTANCE_EPS = 1e-4  # a pixel stops before the Gaussian that would bring T to this or below (gsplat).
MAX_EXTEND = 3.33  # largest bounding-box extent in standard deviations (gsplat 1.5.3).

_LOG_TRANSMITTANCE_EPS = math.log(TRANSMITTANCE_EPS)
_NEG_LOG_MAX_ALPHA = -math.log(MAX_ALPHA)
_LOG_INV_ALPHA_THRESHOLD = -math.log(ALPHA_THRESHOLD)


@dataclass
class Projection:
    """Screen-space Gaussians of one camera (gsplat's `fully_fused_projection` outputs, packed=False).

    means2d [N, 2] pixel coordinates; conics [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]];
    depths [N] camera-space z; radii [N, 2] int32 bounding-box half sizes in pixels (x, y), 0 where culled.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariance R S S^T R^T from quaternions [N, 4] (wxyz, normalised here) and linear scales [N, 3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))
    M = R * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """EWA projection of N Gaussians into one pinhole camera (steps 1-3 of the module docstring).

    means [N, 3], quats [N, 4] (wxyz), scales [N, 3] (linear), opacities [N], viewmat [4, 4] world->camera
    (OpenCV: x right, y down, z forward), K [3, 3]. Differentiable w.r.t. means, quats, scales (and viewmat);
    the radii are not. Culled Gaussians get zero radii; their other outputs are finite but meaningless.
    """
    R = viewmat[:3, :3]
    means_c = means @ R.transpose(0, 1) + viewmat[:3, 3]
    covars_c = R @ quat_scale_to_covar(quats, scales) @ R.transpose(0, 1)
    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    z = torch.where(in_depth, z, torch.ones_like(z))  # finite values (and gradients) for culled Gaussians

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -(cx / fx + 0.3 * tan_fovx)), (width - cx) / fx + 0.3 * tan_fovx)
    ty = z * torch.minimum(torch.maximum(y / z, -(cy / fy + 0.3 * tan_fovy)), (height - cy) / fy + 0.3 * tan_fovy)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    cov2d = J @ covars_c @ J.transpose(-1, -2)
    a = cov2d[:, 0, 0] + eps2d
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c = cov2d[:, 1, 1] + eps2d
    det_raw = a * c - b * b
    det = det_raw.clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)

    with torch.no_grad():
        op = opacities.detach()
        extend = torch.sqrt(2.0 * torch.log((op / ALPHA_THRESHOLD).clamp_min(1.0))).clamp_max(MAX_EXTEND)
        radii = torch.stack(
            [torch.ceil(extend * a.detach().clamp_min(0).sqrt()), torch.ceil(extend * c.detach().clamp_min(0).sqrt())],
            -1,
        )
        m = means2d.detach()
        valid = (
            in_depth
            & (det_raw.detach() > 0)
            & (op >= ALPHA_THRESHOLD)
            & ((radii[:, 0] > 0) | (radii[:, 1] > 0))
            & (m[:, 0] + radii[:, 0] > 0)
            & (m[:, 0] - radii[:, 0] < width)
            & (m[:, 1] + radii[:, 1] > 0)
            & (m[:, 1] - radii[:, 1] < height)
        )
        radii = torch.where(valid[:, None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=means_c[:, 2], radii=radii)


@torch.no_grad()
def isect_tiles(
    means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tiles_x: int, tiles_y: int
) -> Tuple[Tensor, Tensor]:
    """Tile-Gaussian intersections sorted by tile, then front to back (stable: ties keep Gaussian order).

    means2d [N, 2], radii [N, 2] (0 = culled), depths [N]. Returns (tile_ids [M], gauss_ids [M]) int64,
    tile id = tile_y * tiles_x + tile_x. A Gaussian covers tiles floor(m/ts - r/ts) .. ceil(m/ts + r/ts) - 1.
    """
    device = means2d.device
    N = means2d.shape[0]
    r = radii.to(means2d.dtype)
    lo = torch.floor(means2d / tile_size - r / tile_size).long()
    hi = torch.ceil(means2d / tile_size + r / tile_size).long()
    limit = torch.tensor([tiles_x, tiles_y], device=device)
    lo = torch.minimum(lo.clamp_min(0), limit)
    hi = torch.minimum(hi.clamp_min(0), limit)
    span = hi - lo
    counts = span[:, 0] * span[:, 1] * (radii > 0).all(-1)
    gid = torch.repeat_interleave(torch.arange(N, device=device), counts)
    if gid.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    k = torch.arange(gid.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[gid]
    w = span[gid, 0]
    tile_ids = (lo[gid, 1] + k // w) * tiles_x + lo[gid, 0] + k % w
    rank = torch.empty(N, dtype=torch.long, device=device)
    rank[torch.sort(depths, stable=True).indices] = torch.arange(N, device=device)
    order = torch.argsort(tile_ids * N + rank[gid])
    return tile_ids[order], gid[order]


def _composite_tiles(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    features: Tensor,
    tile_ids: Tensor,
    gauss_ids: Tensor,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
    width: int,
    height: int,
    max_chunk_elements: int,
) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing per tile (step 5). Returns colour [n_tiles, ts*ts, D] and log T [n_tiles, ts*ts].

    Pixels of a tile are row-major; the sorted intersections come from `isect_tiles`.
    """
    device, dtype = features.device, features.dtype
    n_tiles, P, D = tiles_x * tiles_y, tile_size * tile_size, features.shape[1]
    colour = features.new_zeros(n_tiles, P, D)
    log_t_all = features.new_zeros(n_tiles, P)  # log T over every non-skipped Gaussian so far (stop test)
    log_t_kept = features.new_zeros(n_tiles, P)  # log T over the Gaussians actually composited
    M = tile_ids.numel()
    if M == 0:
        return colour, log_t_kept

    counts = torch.bincount(tile_ids, minlength=n_tiles)
    starts = torch.cumsum(counts, 0) - counts
    lane = torch.arange(tile_size, device=device)
    tile_x0 = (torch.arange(n_tiles, device=device) % tiles_x) * tile_size
    tile_y0 = (torch.arange(n_tiles, device=device) // tiles_x) * tile_size
    in_image = (
        ((tile_y0[:, None] + lane) < height)[:, :, None] & ((tile_x0[:, None] + lane) < width)[:, None, :]
    ).reshape(n_tiles, P)
    conics_a, conics_b, conics_c = conics.unbind(-1)

    active = torch.nonzero(counts).squeeze(1)
    done_at = 0  # Gaussians [0, done_at) of every tile's list are composited
    while active.numel() > 0:
        T = active.numel()
        B = max(1, min(max_chunk_elements // (T * P), int(counts[active].max()) - done_at))
        j = done_at + torch.arange(B, device=device)
        n_act = counts[active]
        present = j[None, :] < n_act[:, None]  # [T, B]
        g = gauss_ids[(starts[active][:, None] + j).clamp_max(M - 1)]  # [T, B]

        px = (tile_x0[active][:, None] + lane).to(dtype) + 0.5  # [T, ts] pixel centre x per column
        py = (tile_y0[active][:, None] + lane).to(dtype) + 0.5  # [T, ts] pixel centre y per row
        dx = px[:, :, None] - means2d[g, 0][:, None, :]  # [T, ts(cols), B]
        dy = py[:, :, None] - means2d[g, 1][:, None, :]  # [T, ts(rows), B]
        a, b, c = conics_a[g][:, None, :], conics_b[g][:, None, :], conics_c[g][:, None, :]
        # sigma - log(opacity) = d^T conic d / 2 - log(o); padding gets o = 0 (alpha 0, skipped)
        log_op = torch.where(present, torch.log(opacities[g]), torch.full((), -math.inf, dtype=dtype, device=device))
        row = 0.5 * c * dy * dy - log_op[:, None, :]  # [T, ts(rows), B]
        col = 0.5 * a * dx * dx  # [T, ts(cols), B]
        sigma = (row[:, :, None, :] + col[:, None, :, :] + dy[:, :, None, :] * (b * dx)[:, None, :, :]).reshape(T, P, B)
        # alpha = min(0.999, o exp(-q)), skipped below 1/255 (q >= 0: conics of kept Gaussians are positive definite)
        # (clamping above the skip threshold too keeps exp away from denormals, which are very slow on CPUs)
        alpha = torch.exp(-torch.clamp(sigma, _NEG_LOG_MAX_ALPHA, _LOG_INV_ALPHA_THRESHOLD + 1.0))
        alpha = torch.where(sigma <= _LOG_INV_ALPHA_THRESHOLD, alpha, torch.zeros((), dtype=dtype, device=device))
        log_1m = torch.log1p(-alpha)
        log_t_incl = log_t_all[active][:, :, None] + torch.cumsum(log_1m, -1)  # log T after each Gaussian
        keep = log_t_incl.detach() > _LOG_TRANSMITTANCE_EPS  # a prefix: T only decreases
        # T before each Gaussian; clamped below where keep is False anyway (no denormals past the stop)
        t_excl = torch.exp(torch.clamp_min(log_t_incl - log_1m, _LOG_TRANSMITTANCE_EPS - 1.0))
        weight = torch.where(keep, alpha * t_excl, torch.zeros((), dtype=dtype, device=device))

        colour = colour.index_add(0, active, torch.bmm(weight, features[g]))
        log_t_kept = log_t_kept.index_add(0, active, (log_1m * keep).sum(-1))
        log_t_all = log_t_all.index_copy(0, active, log_t_incl[:, :, -1])

        done_at += B
        with torch.no_grad():
            alive = torch.where(in_image[active], log_t_all[active], torch.full((), -math.inf, dtype=dtype, device=device))
            still = (n_act > done_at) & (alive.amax(-1) > _LOG_TRANSMITTANCE_EPS)
        active = active[still]
    return colour, log_t_kept


def stable_argsort_small(keys: Tensor) -> Tensor:
    """Stable argsort of non-negative int64 keys below 2^32: least-significant-digit radix sort in 16-bit digits
    (numpy's stable sort of uint16 is a counting sort; one pass when every key is below 2^16, e.g. the pixel
    ids of frames up to 256 x 256). Several times faster than a comparison sort on CPUs."""
    k = keys.detach().cpu().numpy()
    if k.size and int(k.max()) >= 1 << 32:
        return torch.sort(keys, stable=True).indices
    order = np.argsort((k & 0xFFFF).astype(np.uint16), kind="stable")
    if k.size and int(k.max()) >= 1 << 16:
        order = order[np.argsort((k[order] >> 16).astype(np.uint16), kind="stable")]
    return torch.from_numpy(order.astype(np.int64)).to(keys.device)


@torch.no_grad()
def pixel_pairs(means2d: Tensor, radii: Tensor, depths: Tensor, conics: Tensor, opacities: Tensor, width: int,
                height: int) -> Tuple[Tensor, Tensor]:
    """Every (pixel, Gaussian) pair where the Gaussian reaches alpha >= 1/255, sorted by pixel, then front to
    back (stable: equal depths keep Gaussian order, as `isect_tiles`).

    means2d [N, 2], radii [N, 2] (0 = culled), depths [N], conics [N, 3], opacities [N]. A Gaussian is tried at
    the pixels whose centre lies inside its bounding box (|x + 0.5 - mean_x| <= radius_x, same for y), which
    holds every pixel where its alpha can reach 1/255 (`project`), and kept where
    d^T conic d / 2 - log(o) <= log(255). The pairs are listed Gaussian by Gaussian in depth order, so one
    stable sort by pixel id gives the compositing order. Returns (pixel_ids [M] = y * width + x, gauss_ids [M])
    int64.
    """
    device = means2d.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    ids = torch.nonzero((radii > 0).all(-1)).squeeze(1)
    if ids.numel() == 0:
        return empty, empty
    ids = ids[torch.sort(depths[ids], stable=True).indices]  # front to back, ties in Gaussian order
    m = means2d[ids].double()
    r = radii[ids].double()
    x0 = torch.ceil(m[:, 0] - r[:, 0] - 0.5).clamp(0, width).long()
    x1 = torch.floor(m[:, 0] + r[:, 0] - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(m[:, 1] - r[:, 1] - 0.5).clamp(0, height).long()
    y1 = torch.floor(m[:, 1] + r[:, 1] - 0.5).clamp(-1, height - 1).long()
    w = (x1 - x0 + 1).clamp_min(0)
    counts = w * (y1 - y0 + 1).clamp_min(0)
    local = torch.repeat_interleave(torch.arange(ids.numel(), device=device), counts)
    if local.numel() == 0:
        return empty, empty
    k = torch.arange(local.numel(), device=device) - (torch.cumsum(counts, 0) - counts).index_select(0, local)
    wl = w.index_select(0, local)
    row = torch.div(k, wl, rounding_mode="floor")
    px = x0.index_select(0, local) + (k - row * wl)
    py = y0.index_select(0, local) + row
    attrs = torch.cat([means2d[ids], conics[ids], torch.log(opacities[ids])[:, None]], 1).index_select(0, local)
    dx = px.to(attrs.dtype) + 0.5 - attrs[:, 0]
    dy = py.to(attrs.dtype) + 0.5 - attrs[:, 1]
    sigma = 0.5 * (attrs[:, 2] * dx * dx + attrs[:, 4] * dy * dy) + attrs[:, 3] * dx * dy - attrs[:, 5]
    kept = torch.nonzero(sigma <= _LOG_INV_ALPHA_THRESHOLD).squeeze(1)
    if kept.numel() == 0:
        return empty, empty
    pix = (py * width + px).index_select(0, kept)
    gid = ids.index_select(0, local.index_select(0, kept))
    order = stable_argsort_small(pix)
    return pix.index_select(0, order), gid.index_select(0, order)


def _composite_pairs(means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, pixel_ids: Tensor,
                     gauss_ids: Tensor, width: int, height: int) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing (step 5) over the sorted pixel-Gaussian pairs of `pixel_pairs`: no padding,
    so the cost is proportional to the pairs that matter. Per pixel the transmittance before each pair is a
    segmented cumulative sum of log(1 - alpha) (float64, so the differences of the running sum stay exact to
    about 1e-10); the stop rule and thresholds are the tile path's. Returns colour [H*W, D] and log T [H*W]."""
    HW, D = width * height, features.shape[1]
    colour = features.new_zeros(HW, D)
    log_t = features.new_zeros(HW)
    M = gauss_ids.numel()
    if M == 0:
        return colour, log_t
    g, pix = gauss_ids, pixel_ids
    row = torch.div(pix, width, rounding_mode="floor")
    px = (pix - row * width).to(features.dtype) + 0.5
    py = row.to(features.dtype) + 0.5
    a = torch.cat([means2d, conics, torch.log(opacities)[:, None]], 1).index_select(0, g)
    dx, dy = px - a[:, 0], py - a[:, 1]
    sigma = 0.5 * (a[:, 2] * dx * dx + a[:, 4] * dy * dy) + a[:, 3] * dx * dy - a[:, 5]
    alpha = torch.exp(-torch.clamp(sigma, _NEG_LOG_MAX_ALPHA, _LOG_INV_ALPHA_THRESHOLD + 1.0))
    log_1m = torch.log1p(-alpha)
    with torch.no_grad():
        first = torch.ones(M, dtype=torch.bool, device=pix.device)
        first[1:] = pix[1:] != pix[:-1]
        start = torch.cummax(torch.where(first, torch.arange(M, device=pix.device), torch.zeros_like(pix)), 0).values
    cs = torch.cumsum(log_1m.double(), 0)
    base = (cs - log_1m.double())[start]  # running sum before each pixel's first pair
    log_t_incl = (cs - base).to(features.dtype)  # log T after each pair
    keep = log_t_incl.detach() > _LOG_TRANSMITTANCE_EPS  # a prefix of each pixel's list: T only decreases
    t_excl = torch.exp(torch.clamp_min(log_t_incl - log_1m, _LOG_TRANSMITTANCE_EPS - 1.0))
    weight = torch.where(keep, alpha * t_excl, torch.zeros((), dtype=features.dtype, device=features.device))
    colour = colour.index_add(0, pix, weight[:, None] * features.index_select(0, g))
    log_t = log_t.index_add(0, pix, log_1m * keep)
    return colour, log_t


def _untile(x: Tensor, tile_size: int, tiles_x: int, tiles_y: int, width: int, height: int) -> Tensor:
    """[n_tiles, ts*ts, C] tile-major pixels -> [height, width, C] image."""
    C = x.shape[-1]
    x = x.reshape(tiles_y, tiles_x, tile_size, tile_size, C).permute(0, 2, 1, 3, 4)
    return x.reshape(tiles_y * tile_size, tiles_x * tile_size, C)[:height, :width]


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    background: Optional[Tensor] = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    backend: str = "auto",
    max_chunk_elements: int = 1 << 22,
    method: str = "pairs",
) -> Tuple[Tensor, Tensor]:
    """Render N 3D Gaussians with D-channel features into one pinhole camera (GSwap step 5).

    Args:
        means: [N, 3] world positions.
        quats: [N, 4] rotations, wxyz, need not be normalised.
        scales: [N, 3] linear (not log) standard deviations along the rotated axes.
        opacities: [N] in 0..1.
        features: [N, D] per-Gaussian features (RGB, or GSwap's 32-channel neural features).
        viewmat: [4, 4] world->camera, OpenCV convention (x right, y down, z forward).
        K: [3, 3] pinhole intrinsics (fx, fy, cx, cy in pixels).
        width, height: image size in pixels.
        background: [D] added as T_final * background; None means zeros.
        near, far: Gaussians whose camera depth is outside [near, far] are culled.
        eps2d: added to the diagonal of every 2D covariance (gsplat "classic" mode, no compensation).
        tile_size: tile edge in pixels; the result does not depend on it.
        backend: "torch", "gsplat" (CUDA tensors only) or "auto" (gsplat for CUDA tensors when it imports,
            otherwise torch). Errors raised by gsplat itself are not caught: pass "torch" to avoid it.
        max_chunk_elements: torch backend, "tiles" method only; bound on the pixel-Gaussian pairs evaluated at
            once (memory per intermediate tensor is about 4 bytes times this in float32).
        method: torch backend only. "pairs" (default): the list of (pixel, Gaussian) pairs that reach alpha
            1/255, sorted per pixel front to back and composited with a segmented scan (cost proportional to
            the pairs that matter; several times faster on CPUs). "tiles": gsplat's tile layout evaluated in
            padded blocks. Both give the brute-force result (tests).

    Returns:
        image [H, W, D] = sum_i w_i f_i + T_final * background, and alpha [H, W, 1] = 1 - T_final.
        Differentiable w.r.t. means, quats, scales, opacities, features (and, on the torch path, viewmat and
        background).
    """
    N = means.shape[0]
    if means.shape != (N, 3) or quats.shape != (N, 4) or scales.shape != (N, 3) or opacities.shape != (N,):
        raise ValueError(
            f"SwapForge rasterize: got means {tuple(means.shape)}, quats {tuple(quats.shape)}, scales "
            f"{tuple(scales.shape)}, opacities {tuple(opacities.shape)}. Expected [N,3], [N,4], [N,3], [N]. "
            "Pass one camera's Gaussians without a batch dimension."
        )
    if features.dim() != 2 or features.shape[0] != N:
        raise ValueError(
            f"SwapForge rasterize: features have shape {tuple(features.shape)}. Expected [N={N}, D]. "
            "Flatten per-Gaussian features to one vector each."
        )
    if viewmat.shape != (4, 4) or K.shape != (3, 3):
        raise ValueError(
            f"SwapForge rasterize: viewmat {tuple(viewmat.shape)} and K {tuple(K.shape)}. Expected [4,4] and "
            "[3,3]. Pass a single camera."
        )
    D = features.shape[1]
    if background is not None and background.shape != (D,):
        raise ValueError(
            f"SwapForge rasterize: background has shape {tuple(background.shape)}. Expected [D={D}]. "
            "Give one value per feature channel or None."
        )
    if method not in ("pairs", "tiles"):
        raise ValueError(f"SwapForge rasterize: unknown method {method!r}. Expected 'pairs' or 'tiles'.")
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"SwapForge rasterize: unknown backend {backend!r}. Expected 'auto', 'torch' or 'gsplat'.")
    if backend == "gsplat" and not means.is_cuda:
        raise ValueError(
            "SwapForge rasterize: backend 'gsplat' needs CUDA tensors. Got tensors on "
            f"{means.device}. Use backend 'torch' or 'auto' on this device."
        )
    if backend == "gsplat" or (backend == "auto" and means.is_cuda and _gsplat_available()):
        return _rasterize_gsplat(
            means, quats, scales, opacities, features, viewmat, K, width, height, background, near, far, eps2d,
            tile_size,
        )

    proj = project(means, quats, scales, opacities, viewmat, K, width, height, near, far, eps2d)
    if method == "pairs":
        pix, gid = pixel_pairs(proj.means2d.detach(), proj.radii, proj.depths.detach(), proj.conics.detach(),
                               opacities.detach(), width, height)
        colour, log_t = _composite_pairs(proj.means2d, proj.conics, opacities, features, pix, gid, width, height)
        t_final = torch.exp(log_t).reshape(height, width, 1)
        image = colour.reshape(height, width, -1)
        if background is not None:
            image = image + t_final * background
        return image, 1.0 - t_final
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    tile_ids, gauss_ids = isect_tiles(proj.means2d.detach(), proj.radii, proj.depths.detach(), tile_size, tiles_x, tiles_y)
    colour, log_t = _composite_tiles(
        proj.means2d, proj.conics, opacities, features, tile_ids, gauss_ids, tile_size, tiles_x, tiles_y,
        width, height, max_chunk_elements,
    )
    t_final = torch.exp(log_t)[..., None]
    image = _untile(colour, tile_size, tiles_x, tiles_y, width, height)
    t_final = _untile(t_final, tile_size, tiles_x, tiles_y, width, height)
    if background is not None:
        image = image + t_final * background
    return image, 1.0 - t_final


def _rasterize_gsplat(
    means, quats, scales, opacities, features, viewmat, K, width, height, background, near, far, eps2d, tile_size
) -> Tuple[Tensor, Tensor]:
    """gsplat.rasterization with the torch path's semantics (classic mode, packed=False); float32 inside."""
    import gsplat

    dtype = features.dtype
    f32 = lambda t: t.float()  # noqa: E731  (gsplat's kernels are float32 only)
    colors, alphas, _ = gsplat.rasterization(
        f32(means), f32(quats), f32(scales), f32(opacities), f32(features), f32(viewmat)[None], f32(K)[None],
        width, height, near_plane=near, far_plane=far, eps2d=eps2d, packed=False, tile_size=tile_size,
        backgrounds=None if background is None else f32(background)[None], render_mode="RGB",
        rasterize_mode="classic",
    )
    return colors[0].to(dtype), alphas[0].to(dtype)
