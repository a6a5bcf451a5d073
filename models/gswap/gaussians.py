"""GSwap's dynamic neural Gaussian field (paper pipeline step 4; deformation as in PortraitGen).

- `sample_uv_layout`: Gaussians are sampled by rasterising the surface's UV layout (PortraitGen: ~185 x 185
  texels): every covered texel centre gives one Gaussian as (triangle id, barycentric coordinates).
- `NeuralGaussianField`: per Gaussian a 32-channel neural feature, an opacity, a scale and a rotation; per
  vertex a learnable offset dM (init 0); per training frame an 8-channel temporal condition feature c_t
  (init 0), broadcast to every Gaussian; inference uses c_1 (`frame_index=None`).

Deformation (PortraitGen): the Gaussian on triangle (i, j, k) with barycentrics (b_i, b_j, b_k) has
    canonical position  x_c = sum b (rest_v + dM_v)
    transform           T   = sum b T_v          (T_v: per-vertex 3x4 skinning transform, body.py)
    position            x   = R x_c + t          (T = [R | t]; R is the blended, not re-orthonormalised, matrix,
                                                  i.e. linear blend skinning of the Gaussian centre)
    rotation            q   = quat(polar(R)) * q_base   (polar(R): the nearest rotation, by Newton iteration)
Scales are not changed by the deformation (the transforms are rigid per bone).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEATURE_DIM = 32  # neural feature channels per Gaussian (paper)
TEMPORAL_DIM = 8  # temporal condition channels c_t (paper)


# ------------------------------------------------------------------------------------------ UV sampling

def sample_uv_layout(uv, uv_faces, resolution: int, return_texels: bool = False):
    """Rasterise a UV layout at resolution x resolution texels.

    uv [Vt, 2] in 0..1 (u right, v up), uv_faces [F, 3] (tensors or arrays). Texel (row r, column c) has its
    centre at u = (c + 0.5) / res, v = 1 - (r + 0.5) / res (row 0 at the top, v = 1). A texel is covered
    when its centre lies in a triangle (edges included, 1e-9 tolerance in barycentric units); a texel on a
    shared edge goes to the lowest triangle id. Degenerate UV triangles are skipped.

    Returns (face_idx [N] int64, bary [N, 3] float32), ordered by texel (row-major); with `return_texels`
    also texel [N, 2] int64 (row, column). bary @ uv[uv_faces[face_idx]] equals the texel centre (computed
    in float64).
    """
    uv = uv.detach().double().cpu() if torch.is_tensor(uv) else torch.as_tensor(np.asarray(uv), dtype=torch.float64)
    uv_faces = (uv_faces.detach().long().cpu() if torch.is_tensor(uv_faces)
                else torch.as_tensor(np.asarray(uv_faces)).long())
    res = int(resolution)
    if res < 1:
        raise ValueError(f"SwapForge sample_uv_layout: resolution {res}. Expected a positive texel count. "
                         "Use e.g. 128.")
    tri = uv[uv_faces]  # [F, 3, 2]
    # texel-space coordinates: x = u * res - 0.5 (column of the centre), y = (1 - v) * res - 0.5 (row)
    px = tri[..., 0] * res - 0.5
    py = (1.0 - tri[..., 1]) * res - 0.5
    c0 = torch.ceil(px.min(1).values - 1e-9).clamp(0, res).long()
    c1 = torch.floor(px.max(1).values + 1e-9).clamp(-1, res - 1).long()
    r0 = torch.ceil(py.min(1).values - 1e-9).clamp(0, res).long()
    r1 = torch.floor(py.max(1).values + 1e-9).clamp(-1, res - 1).long()
    w = (c1 - c0 + 1).clamp_min(0)
    h = (r1 - r0 + 1).clamp_min(0)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = det.abs() > 1e-20
    counts = w * h * ok
    fid = torch.repeat_interleave(torch.arange(len(uv_faces)), counts)
    if fid.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        out = (empty, torch.zeros(0, 3))
        return out + (torch.zeros(0, 2, dtype=torch.long),) if return_texels else out
    k = torch.arange(fid.numel()) - (torch.cumsum(counts, 0) - counts)[fid]
    col = c0[fid] + k % w[fid]
    row = r0[fid] + k // w[fid]
    pu = (col.double() + 0.5) / res
    pv = 1.0 - (row.double() + 0.5) / res
    d = torch.stack([pu, pv], -1) - tri[fid, 0]
    inv = 1.0 / det[fid]
    b1 = (d[:, 0] * e2[fid, 1] - d[:, 1] * e2[fid, 0]) * inv
    b2 = (e1[fid, 0] * d[:, 1] - e1[fid, 1] * d[:, 0]) * inv
    b0 = 1.0 - b1 - b2
    inside = (b0 >= -1e-9) & (b1 >= -1e-9) & (b2 >= -1e-9)
    fid, row, col = fid[inside], row[inside], col[inside]
    bary = torch.stack([b0, b1, b2], -1)[inside]
    texel = row * res + col
    # one Gaussian per texel: the lowest face id wins (sort by texel then face id)
    order = torch.argsort(texel * len(uv_faces) + fid)
    texel, fid, bary, row, col = texel[order], fid[order], bary[order], row[order], col[order]
    first = torch.ones_like(texel, dtype=torch.bool)
    first[1:] = texel[1:] != texel[:-1]
    out = (fid[first], bary[first].float())
    if return_texels:
        return out + (torch.stack([row[first], col[first]], -1),)
    return out


# --------------------------------------------------------------------------------------- rotation maths

def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of wxyz quaternions [..., 4] (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def matrix_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit wxyz quaternions [..., 4] with w >= 0 (Shepperd's method:
    each row uses the largest of the four diagonal combinations, so no division by a small number)."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cand = torch.stack([
        torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # [..., 4, 4]; row k is 4 q_k q (up to sign)
    diag = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_matrix(q: Tensor) -> Tensor:
    """wxyz quaternions [..., 4] (normalised here) -> rotation matrices [..., 3, 3]."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))


def _cofactor(M: Tensor) -> Tensor:
    """Cofactor matrices of [..., 3, 3] (cof(M) = det(M) M^-T), elementwise."""
    a, b, c = M[..., 0, :], M[..., 1, :], M[..., 2, :]
    return torch.stack([_cross(b, c), _cross(c, a), _cross(a, b)], -2)


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return torch.stack([u[..., 1] * v[..., 2] - u[..., 2] * v[..., 1], u[..., 2] * v[..., 0] - u[..., 0] * v[..., 2],
                        u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]], -1)


def nearest_rotation(M: Tensor, iterations: int = 12, tol: float = 1e-7) -> Tensor:
    """Polar factor of [..., 3, 3] matrices with positive determinant: the rotation nearest in Frobenius norm
    (blended skinning matrices are not orthonormal). Scaled Newton iteration X <- (g X + (g X)^-T) / 2 with
    g = |det X|^(-1/3) (Higham), written with cofactors so that it is elementwise (no BLAS/LAPACK calls,
    whose results can depend on threading and memory alignment: the fit must be bit-reproducible). The iteration
    converges quadratically; it stops once no entry moves by more than `tol` (skinning blends of neighbouring
    vertices are nearly orthonormal: 3-4 iterations instead of `iterations`), a test on the values alone, so the
    result stays reproducible."""
    X = M
    for _ in range(iterations):
        det = (X[..., 0, :] * _cross(X[..., 1, :], X[..., 2, :])).sum(-1)
        det = torch.where(det.abs() > 1e-30, det, torch.full_like(det, 1e-30))
        g = det.abs().pow(-1.0 / 3.0)[..., None, None]
        X_next = 0.5 * (g * X + _cofactor(X) / (g * det[..., None, None]))
        step = float((X_next - X).detach().abs().max()) if X.numel() else 0.0
        X = X_next
        if step <= tol:
            break
    return X


# ----------------------------------------------------------------------------------------------- field

class NeuralGaussianField(nn.Module):
    """Neural Gaussians in the surface's UV layout (paper step 4).

    Buffers: faces [F, 3] (vertex ids), face_idx [N], bary [N, 3].
    Parameters: features [N, 32]; opacity_logit [N] (opacity = sigmoid); log_scale [N, 3] (scale = exp);
    rotation [N, 4] wxyz base rotation (unnormalised, identity at init); vertex_offsets [V, 3] (dM, init 0);
    temporal [T, 8] (c_t, init 0).
    """

    def __init__(self, faces: Tensor, face_idx: Tensor, bary: Tensor, num_vertices: int, num_frames: int,
                 feature_dim: int = FEATURE_DIM, temporal_dim: int = TEMPORAL_DIM):
        super().__init__()
        N = int(face_idx.shape[0])
        self.register_buffer("faces", torch.as_tensor(faces).long().clone())
        self.register_buffer("face_idx", torch.as_tensor(face_idx).long().clone())
        self.register_buffer("bary", torch.as_tensor(bary).float().clone())
        self.features = nn.Parameter(torch.zeros(N, feature_dim))
        self.opacity_logit = nn.Parameter(torch.zeros(N))
        self.log_scale = nn.Parameter(torch.zeros(N, 3))
        self.rotation = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(N, 1))
        self.vertex_offsets = nn.Parameter(torch.zeros(int(num_vertices), 3))
        self.temporal = nn.Parameter(torch.zeros(max(1, int(num_frames)), temporal_dim))

    @property
    def num_gaussians(self) -> int:
        return int(self.face_idx.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.temporal.shape[0])

    def config(self) -> Dict[str, int]:
        return dict(num_gaussians=self.num_gaussians, num_vertices=int(self.vertex_offsets.shape[0]),
                    num_faces=int(self.faces.shape[0]), num_frames=self.num_frames,
                    feature_dim=int(self.features.shape[1]), temporal_dim=int(self.temporal.shape[1]))

    @classmethod
    def from_surface(cls, faces, uv, uv_faces, rest_vertices, num_frames: int, resolution: int = 128,
                     seed: int = 0, init_opacity: float = 0.1, feature_std: float = 1e-1,
                     scale_factor: float = 1.0, face_subset=None) -> "NeuralGaussianField":
        """Samples the UV layout and initialises the Gaussians: features N(0, feature_std^2) from a generator
        seeded with `seed`; opacity `init_opacity` (3DGS's 0.1); isotropic scale = the 3D length of one texel on
        its triangle, sqrt(area_3d / area_uv) / resolution, times `scale_factor`; identity rotation.
        face_subset: bool [F] (or indices): only these triangles carry Gaussians (e.g. the head and neck; the
        texels of other triangles stay empty); default all."""
        faces = torch.as_tensor(np.asarray(faces) if not torch.is_tensor(faces) else faces).long()
        rest = torch.as_tensor(rest_vertices).float()
        uv_faces_t = torch.as_tensor(np.asarray(uv_faces) if not torch.is_tensor(uv_faces) else uv_faces).long()
        if face_subset is None:
            face_idx, bary = sample_uv_layout(uv, uv_faces_t, resolution)
        else:
            keep = torch.as_tensor(np.asarray(face_subset) if not torch.is_tensor(face_subset) else face_subset)
            keep = torch.nonzero(keep).squeeze(1) if keep.dtype == torch.bool else keep.long()
            sub, bary = sample_uv_layout(uv, uv_faces_t[keep], resolution)
            face_idx = keep[sub]
        if face_idx.numel() == 0:
            raise ValueError(f"SwapForge: the UV layout covers no texel centre at resolution {resolution}. Expected "
                             "UVs in 0..1 with non-degenerate triangles. Check the surface's uv/uv_faces or raise "
                             "the resolution.")
        field = cls(faces, face_idx, bary, rest.shape[0], num_frames)
        g = torch.Generator().manual_seed(int(seed))
        uvt = torch.as_tensor(np.asarray(uv) if not torch.is_tensor(uv) else uv).double()
        uvf = torch.as_tensor(np.asarray(uv_faces) if not torch.is_tensor(uv_faces) else uv_faces).long()
        t2 = uvt[uvf]
        a_uv = 0.5 * ((t2[:, 1, 0] - t2[:, 0, 0]) * (t2[:, 2, 1] - t2[:, 0, 1])
                      - (t2[:, 1, 1] - t2[:, 0, 1]) * (t2[:, 2, 0] - t2[:, 0, 0])).abs()
        t3 = rest.double()[faces]
        a_3d = 0.5 * torch.linalg.cross(t3[:, 1] - t3[:, 0], t3[:, 2] - t3[:, 0]).norm(dim=-1)
        texel = (a_3d / a_uv.clamp_min(1e-20)).sqrt() / resolution * scale_factor
        with torch.no_grad():
            field.features.copy_(torch.randn(field.features.shape, generator=g) * feature_std)
            field.opacity_logit.fill_(math.log(init_opacity / (1 - init_opacity)))
            field.log_scale.copy_(texel[face_idx].clamp_min(1e-8).log().float()[:, None].expand(-1, 3))
        return field

    def canonical(self, rest_vertices: Tensor) -> Tensor:
        """Barycentric points of (rest vertices + offsets): [N, 3]."""
        v = rest_vertices + self.vertex_offsets
        tri = v[self.faces[self.face_idx]]  # [N, 3, 3]
        return (tri * self.bary[..., None]).sum(-2)

    def forward(self, rest_vertices: Tensor, transforms: Tensor, frame_index: Optional[int] = None
                ) -> Dict[str, Tensor]:
        """rest_vertices [V, 3] (shape + expression, no pose), transforms [V, 3, 4] (posed = R rest + t), one
        frame; frame_index selects c_t (None -> c_1 = temporal[0], the paper's inference choice).

        Returns means [N, 3], quats [N, 4] (wxyz, unit), scales [N, 3] (linear), opacities [N],
        features [N, 32 + 8] = concat(feature, c_t).
        """
        if rest_vertices.dim() != 2 or transforms.shape != rest_vertices.shape[:1] + (3, 4):
            raise ValueError(f"SwapForge NeuralGaussianField: rest_vertices {tuple(rest_vertices.shape)}, transforms "
                             f"{tuple(transforms.shape)}. Expected [V, 3] and [V, 3, 4] for one frame. Index the "
                             "batch (frame) dimension first.")
        rest_vertices = rest_vertices.to(self.features)
        transforms = transforms.to(self.features)
        x_c = self.canonical(rest_vertices)
        tri_T = transforms[self.faces[self.face_idx]]  # [N, 3, 3, 4]
        T = (tri_T * self.bary[:, :, None, None]).sum(1)  # [N, 3, 4]
        R, t = T[..., :3], T[..., 3]
        means = (R * x_c[:, None, :]).sum(-1) + t  # elementwise (bit-reproducible, see nearest_rotation)
        q_def = matrix_to_quat(nearest_rotation(R))
        quats = quat_multiply(q_def, F.normalize(self.rotation, dim=-1))
        if frame_index is None:
            frame_index = 0
        if not 0 <= int(frame_index) < self.num_frames:
            raise IndexError(f"SwapForge NeuralGaussianField: frame_index {frame_index} outside the {self.num_frames} "
                             "training frames. Pass None (c_1) for frames that were not trained.")
        c = self.temporal[int(frame_index)]
        feats = torch.cat([self.features, c[None].expand(self.num_gaussians, -1)], -1)
        return dict(means=means, quats=quats, scales=self.log_scale.exp(),
                    opacities=torch.sigmoid(self.opacity_logit), features=feats)
