"""The body-surface interface shared by GSwap's surfaces (paper sec. "Dynamic neural Gaussian field": Gaussians
live on the posed mesh M(beta, theta, psi) and move with it), and the maths they share: records, linear blend
skinning transforms, forward kinematics, barycentric points and the 68-landmark embedding.

Every surface returns, per frame, the posed vertices and the per-vertex 3x4 skinning transforms
T_i = sum_j w_ij A_j (PortraitGen's deformation, which the stock `smplx` package does not return), built
so that applying T_i to the vertex's rest position (shape + expression applied, no pose) reproduces
the posed vertex exactly:

    vertices[b, i] == T[b, i, :, :3] @ rest_vertices[b, i] + T[b, i, :, 3]

The surfaces, one file each: surface_template.py (procedural head), surface_smplx.py (SMPL-X), surface_anny.py
(Anny); body.py chooses between them. The 68 landmarks are iBUG 300-W order (the order of dlib's and
insightface's 68-point detectors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

# Mean frontal iBUG-68 layout in image coordinates (x right, y down), in units of the distance between the
# two eye centres, origin at the midpoint of the eye centres. Measured with dlib's 68-point predictor on six
# frontal public-domain portraits (tests/data: obama, obama2, obama3, biden, grace_hopper, astronaut):
# each similarity-normalised, mirrored (with the iBUG left/right relabelling) and averaged.
IBUG68_FRONTAL = np.array([
    [-1.122, 0.143], [-1.101, 0.426], [-1.067, 0.716], [-1.013, 0.998], [-0.912, 1.263], [-0.756, 1.497],
    [-0.543, 1.696], [-0.300, 1.843], [0.000, 1.891], [0.300, 1.843], [0.543, 1.696], [0.756, 1.497],
    [0.912, 1.263], [1.013, 0.998], [1.067, 0.716], [1.101, 0.426], [1.122, 0.143],
    [-0.904, -0.119], [-0.781, -0.282], [-0.596, -0.347], [-0.386, -0.346], [-0.189, -0.281],
    [0.189, -0.281], [0.386, -0.346], [0.596, -0.347], [0.781, -0.282], [0.904, -0.119],
    [0.000, -0.057], [0.000, 0.130], [0.000, 0.319], [0.000, 0.508],
    [-0.264, 0.653], [-0.139, 0.687], [0.000, 0.721], [0.139, 0.687], [0.264, 0.653],
    [-0.687, 0.022], [-0.574, -0.062], [-0.436, -0.072], [-0.301, 0.018], [-0.433, 0.046], [-0.569, 0.048],
    [0.301, 0.018], [0.436, -0.072], [0.574, -0.062], [0.687, 0.022], [0.569, 0.048], [0.433, 0.046],
    [-0.490, 1.034], [-0.316, 0.953], [-0.135, 0.909], [0.000, 0.938], [0.135, 0.909], [0.316, 0.953],
    [0.490, 1.034], [0.322, 1.192], [0.144, 1.266], [0.000, 1.277], [-0.144, 1.266], [-0.322, 1.192],
    [-0.426, 1.049], [-0.137, 1.010], [0.000, 1.018], [0.137, 1.010], [0.426, 1.049],
    [0.141, 1.123], [0.000, 1.139], [-0.141, 1.123]], np.float64)
EYE_DISTANCE_M = 0.062  # adult distance between the eye centres, metres


# ----------------------------------------------------------------------------------------------- records

@dataclass
class BodyParams:
    """Parameters of a batch of B bodies (one per frame). Tensors are float32; `None` where the model lacks
    the part (e.g. expression for the template head) or where zeros are meant.

    betas [B, num_betas]; global_orient [B, 3] axis-angle of the root about the root joint;
    body_pose [B, 3 * num_body_joints] axis-angle per body joint (SMPL-X: the 21 body joints, the neck is
    joint 12 -> slot 11); jaw_pose [B, 3]; expression [B, num_expression]; transl [B, 3] added last.
    """
    betas: torch.Tensor
    global_orient: torch.Tensor
    body_pose: Optional[torch.Tensor] = None
    jaw_pose: Optional[torch.Tensor] = None
    expression: Optional[torch.Tensor] = None
    transl: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return int(self.global_orient.shape[0])

    def detach(self) -> "BodyParams":
        return BodyParams(**{k: (None if v is None else v.detach().clone()) for k, v in self.__dict__.items()})


@dataclass
class BodyOutput:
    """vertices [B, V, 3] posed; rest_vertices [B, V, 3] (shape + expression, no pose); transforms
    [B, V, 3, 4] with vertices == transforms[..., :3] @ rest + transforms[..., 3]; joints [B, J, 3] posed;
    landmarks68 [B, 68, 3] posed (iBUG order)."""
    vertices: torch.Tensor
    rest_vertices: torch.Tensor
    transforms: torch.Tensor
    joints: torch.Tensor
    landmarks68: torch.Tensor


class BodySurface(torch.nn.Module):
    """A posable surface with UVs, skinning transforms and a 68-landmark embedding.

    Attributes: faces LongTensor [F, 3]; uv FloatTensor [Vt, 2] in 0..1 (v up); uv_faces LongTensor [F, 3];
    num_vertices; num_betas; num_expression (0 if none); expression_range (per-coefficient bounds or None); num_body_joints (body_pose has 3 * this);
    neck_slot (index of the neck joint within body_pose, or None); has_jaw; head_center [3] (rest pose, for
    trackers: the point a head rotation is centred on); name.
    """
    name = "surface"
    num_betas = 0
    num_expression = 0
    num_body_joints = 0
    neck_slot: Optional[int] = None
    has_jaw = True
    expression_range: Optional[Tuple[float, float]] = None  # bounds of each expression coefficient, if any

    @property
    def num_vertices(self) -> int:
        return int(self.rest_template().shape[0])

    def rest_template(self) -> torch.Tensor:
        raise NotImplementedError

    def head_faces(self) -> torch.Tensor:
        """bool [F]: the triangles of the head and neck (where GSwap's Gaussians go); default every triangle."""
        return torch.ones(self.faces.shape[0], dtype=torch.bool)

    def _faces_skinned_to(self, weights: torch.Tensor, joints, threshold: float = 0.5) -> torch.Tensor:
        """bool [F]: triangles whose three vertices have more than `threshold` of their skinning weight on
        `joints` (weights [V, J])."""
        w = weights[:, list(joints)].sum(-1) > threshold
        return w[self.faces].all(-1)

    def zero_params(self, batch: int = 1) -> BodyParams:
        z = lambda n: torch.zeros(batch, n) if n else None  # noqa: E731
        return BodyParams(betas=torch.zeros(batch, self.num_betas), global_orient=torch.zeros(batch, 3),
                          body_pose=z(3 * self.num_body_joints), jaw_pose=torch.zeros(batch, 3) if self.has_jaw else None,
                          expression=z(self.num_expression), transl=torch.zeros(batch, 3))

    def forward(self, params: BodyParams) -> BodyOutput:
        raise NotImplementedError

    def landmark_forward(self, params: BodyParams) -> Tuple[torch.Tensor, torch.Tensor]:
        """(landmarks68 [B, 68, 3], joints [B, J, 3]) posed; providers may skip the rest of the mesh (fitting)."""
        out = self.forward(params)
        return out.landmarks68, out.joints

    def subset_landmark_forward(self, params: BodyParams) -> Tuple[torch.Tensor, torch.Tensor]:
        """landmark_forward for surfaces whose forward(params, vertex_ids) poses only the given vertices and
        that embed their landmarks as (faces, lmk_faces_idx, lmk_bary_coords): only the landmark triangles'
        vertices are posed (the tracker's inner loop). The vertex subset is found once."""
        if getattr(self, "_lmk_subset", None) is None:
            self._lmk_subset = _subset(self.faces, self.lmk_faces_idx)
        ids, local_faces = self._lmk_subset
        out = self.forward(params, ids)
        return barycentric_points(out.vertices, local_faces, self.lmk_faces_idx, self.lmk_bary_coords), out.joints


def _subset(faces: torch.Tensor, face_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Vertex ids used by `face_ids` and the full face table remapped to those ids (-1 elsewhere)."""
    ids = torch.unique(faces[face_ids.reshape(-1)].reshape(-1))
    remap = torch.full((int(faces.max()) + 1,), -1, dtype=torch.long)
    remap[ids] = torch.arange(len(ids))
    return ids, remap[faces]


# ---------------------------------------------------------------------------------------------- helpers

def batch_rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    """Axis-angle [N, 3] -> rotation matrices [N, 3, 3] (same formula as smplx.lbs.batch_rodrigues, with a
    safe gradient at zero)."""
    angle = torch.sqrt((rot_vecs ** 2).sum(-1, keepdim=True) + 1e-16)
    axis = rot_vecs / angle
    c, s = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)
    return eye + s * K + (1 - c) * (K @ K)


def rigid_chain(rot_mats: torch.Tensor, joints: torch.Tensor, parents) -> Tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics (smplx.lbs.batch_rigid_transform): rot_mats [B, J, 3, 3] local rotations, joints
    [B, J, 3] rest joint positions, parents list (parents[0] = -1, parents[j] < j). Returns posed joints
    [B, J, 3] and the relative skinning transforms A [B, J, 4, 4] (rest space -> posed space)."""
    B, J = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, list(parents[1:])]
    local = torch.zeros(B, J, 4, 4, dtype=joints.dtype, device=joints.device)
    local[..., :3, :3] = rot_mats
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1
    chain = [local[:, 0]]
    for j in range(1, J):
        chain.append(chain[int(parents[j])] @ local[:, j])
    world = torch.stack(chain, 1)
    posed = world[..., :3, 3]
    A = world.clone()
    A[..., :3, 3] = world[..., :3, 3] - (world[..., :3, :3] @ joints[..., None])[..., 0]
    return posed, A


def blend_transforms(weights: torch.Tensor, A: torch.Tensor, pose_offsets: Optional[torch.Tensor] = None,
                     transl: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-vertex transforms T_i = sum_j w_ij A_j (PortraitGen / GSwap deformation) as [B, V, 3, 4].

    weights [V, J] (or [B, V, J]); A [B, J, 4, 4]; pose_offsets [B, V, 3] are rest-space corrective offsets
    folded into the translation (T_i applied to rest_i gives R_i (rest_i + d_i) + t_i); transl [B, 3]."""
    B, J = A.shape[:2]
    T = torch.matmul(weights, A[:, :, :3, :].reshape(B, J, 12)).reshape(B, -1, 3, 4)
    if pose_offsets is not None:
        T = torch.cat([T[..., :3], T[..., 3:] + T[..., :3] @ pose_offsets[..., None]], -1)
    if transl is not None:
        T = torch.cat([T[..., :3], T[..., 3:] + transl[:, None, :, None]], -1)
    return T


def apply_transforms(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """[B, V, 3, 4] transforms applied to [B, V, 3] points."""
    return (T[..., :3] @ points[..., None])[..., 0] + T[..., 3]


def barycentric_points(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                       bary: torch.Tensor) -> torch.Tensor:
    """Points given by (face, barycentric) on a batch of meshes: vertices [B, V, 3], faces [F, 3], face_idx
    [L] or [B, L], bary [L, 3] or [B, L, 3] -> [B, L, 3]."""
    B = vertices.shape[0]
    if face_idx.dim() == 1:
        face_idx = face_idx[None].expand(B, -1)
    if bary.dim() == 2:
        bary = bary[None].expand(B, -1, -1)
    tri = faces[face_idx]  # [B, L, 3]
    pts = torch.gather(vertices, 1, tri.reshape(B, -1, 1).expand(-1, -1, 3)).reshape(B, -1, 3, 3)
    return (pts * bary[..., None]).sum(-2)


def ray_cast(vertices: np.ndarray, faces: np.ndarray, origins: np.ndarray, direction: np.ndarray
             ) -> Tuple[np.ndarray, np.ndarray]:
    """First hit of rays origins [L, 3] + s * direction [3] (s > 0) on a triangle mesh (Moller-Trumbore).
    Returns (face index [L], barycentric [L, 3]); a ray that misses gets the face nearest to the ray."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    d = direction / np.linalg.norm(direction)
    p = np.cross(d, e2)
    det = (e1 * p).sum(-1)
    ok_det = np.abs(det) > 1e-12
    inv = np.where(ok_det, 1.0 / np.where(ok_det, det, 1.0), 0.0)
    out_f = np.zeros(len(origins), np.int64)
    out_b = np.zeros((len(origins), 3))
    centers = (v0 + v1 + v2) / 3
    for n, o in enumerate(origins):
        s = o - v0
        u = (s * p).sum(-1) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = (e2 * q).sum(-1) * inv
        hit = ok_det & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 0)
        if hit.any():
            f = int(np.flatnonzero(hit)[np.argmin(t[hit])])
            u_, v_ = float(np.clip(u[f], 0, 1)), float(np.clip(v[f], 0, 1))
            out_f[n], out_b[n] = f, (1 - u_ - v_, u_, v_)
        else:
            rel = centers - o
            dist = np.linalg.norm(rel - (rel @ d)[:, None] * d, axis=-1)
            out_f[n], out_b[n] = int(np.argmin(dist)), (1 / 3, 1 / 3, 1 / 3)
    return out_f, out_b


def embed_landmarks68(vertices: np.ndarray, faces: np.ndarray, eye_center: np.ndarray, right: np.ndarray,
                      up: np.ndarray, eye_distance: float) -> Tuple[np.ndarray, np.ndarray]:
    """Place IBUG68_FRONTAL on a face: the 2D template, scaled by `eye_distance` and laid in the plane
    through `eye_center` spanned by `right` (towards the subject's left = image right of a frontal view) and
    `up`, is projected along the face's backward direction onto the mesh. Returns (face idx [68], bary [68, 3])."""
    right = right / np.linalg.norm(right)
    up = up - (up @ right) * right
    up = up / np.linalg.norm(up)
    fwd = np.cross(right, up)  # right-handed: x right, y up, z towards the viewer
    pts2 = IBUG68_FRONTAL * eye_distance
    origins = eye_center + pts2[:, :1] * right - pts2[:, 1:] * up + fwd * (4 * eye_distance)
    return ray_cast(vertices, faces, origins, -fwd)
