"""One body-surface interface for GSwap's dynamic neural Gaussian field (paper sec. "Dynamic neural
Gaussian field": Gaussians live on the posed mesh M(beta, theta, psi) and move with it).

Every provider returns, per frame, the posed vertices and the per-vertex 3x4 skinning transforms
T_i = sum_j w_ij A_j (PortraitGen's deformation, which the stock `smplx` package does not return), built
so that applying T_i to the vertex's rest position (shape + expression applied, no pose) reproduces
the posed vertex exactly:

    vertices[b, i] == T[b, i, :, :3] @ rest_vertices[b, i] + T[b, i, :, 3]

Pose-corrective blend shapes (SMPL-X `posedirs`) are not a rigid motion: their offsets d_i are folded
into the translation column (t_i = sum_j w_ij A_j[:3, 3] + R_i d_i + transl), so a Gaussian placed on
the rest surface follows them as a translation.

Providers:
- `SMPLXSurface(model_dir)`: SMPL-X through the `smplx` package from
  `<model_dir>/smplx/SMPLX_NEUTRAL.npz` (licence-gated: never downloaded, the user puts it there).
- `AnnySurface()`: the free Anny body (`anny` package, Apache-2.0 code, CC0 assets) when installed.
- `TemplateHeadSurface()`: a procedural head (ellipsoid skull with a nose ridge, neck, jaw hinge; 3
  bones, UV-sphere layout) that needs nothing; the embedded default (see `load_surface`).

The 68 landmarks are iBUG 300-W order (the order of dlib's and insightface's 68-point detectors).
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

SMPLX_LICENCE_SOURCE = ("the SMPL-X project website (smpl-x.is.tue.mpg.de, Download page: register, accept the "
                        "SMPL-X licence (non-commercial research use only) and download 'SMPL-X v1.1 (NPZ+PKL)' "
                        "or 'SMPL-X with removed head bun (NPZ)')")

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
    num_vertices; num_betas; num_expression (0 if none); num_body_joints (body_pose has 3 * this);
    neck_slot (index of the neck joint within body_pose, or None); has_jaw; head_center [3] (rest pose, for
    trackers: the point a head rotation is centred on); name.
    """
    name = "surface"
    num_betas = 0
    num_expression = 0
    num_body_joints = 0
    neck_slot: Optional[int] = None
    has_jaw = True

    @property
    def num_vertices(self) -> int:
        return int(self.rest_template().shape[0])

    def rest_template(self) -> torch.Tensor:
        raise NotImplementedError

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


# ------------------------------------------------------------------------------------ procedural head

def _uv_sphere(nlat: int, nlon: int) -> Dict[str, np.ndarray]:
    """Unit UV sphere: rings from the top pole (theta) and meridians (phi in [-pi, pi), seam at the back,
    phi = 0 at +z). Returns dirs [V, 3], faces [F, 3], uv [Vt, 2], uv_faces [F, 3]."""
    dirs = [[0.0, 1.0, 0.0]]
    for i in range(1, nlat):
        th = math.pi * i / nlat
        for j in range(nlon):
            ph = -math.pi + 2 * math.pi * j / nlon
            dirs.append([math.sin(th) * math.sin(ph), math.cos(th), math.sin(th) * math.cos(ph)])
    dirs.append([0.0, -1.0, 0.0])
    dirs = np.array(dirs)
    vid = lambda i, j: 0 if i == 0 else (len(dirs) - 1 if i == nlat else 1 + (i - 1) * nlon + j % nlon)  # noqa
    uvid = lambda i, j: i * (nlon + 1) + j  # noqa: E731
    uv = np.array([[j / nlon, 1 - i / nlat] for i in range(nlat + 1) for j in range(nlon + 1)])
    faces, uv_faces = [], []
    for i in range(nlat):
        for j in range(nlon):
            a, b, c, d = (i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)
            for tri in ((a, b, c), (a, c, d)):
                ids = [vid(*p) for p in tri]
                if len(set(ids)) == 3:
                    faces.append(ids)
                    uv_faces.append([uvid(*p) for p in tri])
    return dict(dirs=dirs, faces=np.array(faces), uv=uv, uv_faces=np.array(uv_faces))


HEAD_AXES = (0.078, 0.118, 0.098)  # ellipsoid semi-axes of the procedural skull (x, y, z), metres
EYE_LEVEL = 0.012                  # eye centres above the skull centre


def procedural_head(nlat: int = 40, nlon: int = 56, neck_rings: int = 6, neck_len: float = 0.14
                    ) -> Dict[str, np.ndarray]:
    """Head mesh in metres, skull centre at the origin, y up, face towards +z, the subject's left at +x:
    an ellipsoid with a nose ridge and tip, plus an open neck tube below. Returns verts, faces, uv, uv_faces
    (UV: sphere layout in v 0.25..1, neck in v 0..0.2) and the boolean mask `neck` of neck vertices."""
    s = _uv_sphere(nlat, nlon)
    d = s["dirs"]
    a, b, c = HEAD_AXES
    v = d * np.array([a, b, c])
    # Nose: a ridge from the eyes to the tip (EYE_LEVEL - 0.51 eye distances), pushed out along +z.
    ey = EYE_LEVEL
    tip_y = ey - 0.508 * EYE_DISTANCE_M
    y = v[:, 1]
    ramp = np.clip((ey + 0.005 - y) / (ey + 0.005 - tip_y), 0, 1)
    prof = np.where(y >= tip_y, 0.35 + 0.65 * ramp ** 1.5, np.exp(-((y - tip_y) / 0.007) ** 2))
    width = 0.009 + 0.007 * np.clip((ey - y) / (ey - tip_y), 0, 1)
    bump = 0.024 * prof * np.exp(-(v[:, 0] / width) ** 2) * (v[:, 2] > 0)
    v = v + bump[:, None] * np.array([0.0, 0.0, 1.0])
    # Neck tube.
    nv = []
    r_neck, top = 0.05, -0.55 * b
    for i in range(neck_rings):
        yy = top - neck_len * i / (neck_rings - 1)
        for j in range(nlon):
            ph = -math.pi + 2 * math.pi * j / nlon
            nv.append([r_neck * math.sin(ph), yy, r_neck * math.cos(ph) - 0.01])
    off = len(v)
    verts = np.concatenate([v, np.array(nv)])
    uv = s["uv"] * np.array([1.0, 0.75]) + np.array([0.0, 0.25])
    uv_off = len(uv)
    nuv = np.array([[j / nlon, 0.2 * (1 - i / (neck_rings - 1))] for i in range(neck_rings) for j in range(nlon + 1)])
    faces, uv_faces = [s["faces"]], [s["uv_faces"]]
    for i in range(neck_rings - 1):
        for j in range(nlon):
            p = [off + i * nlon + j, off + (i + 1) * nlon + j, off + (i + 1) * nlon + (j + 1) % nlon,
                 off + i * nlon + (j + 1) % nlon]
            q = [uv_off + i * (nlon + 1) + j, uv_off + (i + 1) * (nlon + 1) + j,
                 uv_off + (i + 1) * (nlon + 1) + j + 1, uv_off + i * (nlon + 1) + j + 1]
            faces.append(np.array([[p[0], p[1], p[2]], [p[0], p[2], p[3]]]))
            uv_faces.append(np.array([[q[0], q[1], q[2]], [q[0], q[2], q[3]]]))
    neck = np.zeros(len(verts), bool)
    neck[off:] = True
    return dict(verts=verts, faces=np.concatenate(faces), uv=np.concatenate([uv, nuv]),
                uv_faces=np.concatenate(uv_faces), neck=neck)


def head_landmarks68(verts: np.ndarray, faces: np.ndarray, center=(0.0, 0.0, 0.0)) -> Tuple[np.ndarray, np.ndarray]:
    """The 68-landmark embedding of `procedural_head` (optionally moved by `center`)."""
    eye = np.asarray(center, np.float64) + np.array([0.0, EYE_LEVEL, 0.0])
    return embed_landmarks68(verts, faces, eye, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), EYE_DISTANCE_M)


def _smoothstep(x):
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def head_weights(verts: np.ndarray, neck_mask: np.ndarray, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Skinning weights [V, 3] over (neck base, head, jaw) for `procedural_head` vertices: the jaw takes the
    front of the face below the mouth line, the neck base the neck tube below its upper third."""
    p = verts - np.asarray(center)
    w = np.zeros((len(verts), 3))
    mouth_y = EYE_LEVEL - 1.02 * EYE_DISTANCE_M
    jaw = _smoothstep((mouth_y - 0.004 - p[:, 1]) / 0.012) * _smoothstep((p[:, 2] + 0.01) / 0.04)
    jaw[neck_mask] = 0
    neck_w = np.where(neck_mask, _smoothstep((-0.55 * HEAD_AXES[1] - 0.03 - p[:, 1]) / 0.06), 0.0)
    w[:, 2] = jaw
    w[:, 0] = neck_w
    w[:, 1] = 1 - jaw - neck_w
    return w


class TemplateHeadSurface(BodySurface):
    """Procedural head with 3 bones: neck base (root, rotated by global_orient), head (rotated by the neck
    rotation body_pose[:, 0:3] about the top of the neck) and jaw (jaw_pose, hinge below the ears).
    Shape: 4 betas (head width, height, depth, nose length scale; each +1 = +10 %). No expression basis
    (the jaw carries mouth opening). Landmarks: IBUG68_FRONTAL projected onto the face (static contour).
    Accuracy: a generic head; real faces differ in proportions by several per cent."""
    name = "template"
    num_betas = 4
    num_expression = 0
    num_body_joints = 1
    neck_slot = 0
    has_jaw = True
    parents = [-1, 0, 1]

    def __init__(self, nlat: int = 40, nlon: int = 56):
        super().__init__()
        h = procedural_head(nlat, nlon)
        center = np.array([0.0, 0.0, 0.0])
        verts = h["verts"]
        self.register_buffer("v_template", torch.tensor(verts, dtype=torch.float32))
        self.register_buffer("faces", torch.tensor(h["faces"], dtype=torch.long))
        self.register_buffer("uv", torch.tensor(h["uv"], dtype=torch.float32))
        self.register_buffer("uv_faces", torch.tensor(h["uv_faces"], dtype=torch.long))
        self.register_buffer("lbs_weights", torch.tensor(head_weights(verts, h["neck"], center), dtype=torch.float32))
        joints = np.array([[0.0, -0.55 * HEAD_AXES[1] - 0.1, -0.01],   # neck base
                           [0.0, -0.55 * HEAD_AXES[1] + 0.01, -0.01],  # top of the neck (head rotation)
                           [0.0, EYE_LEVEL - 0.045, -0.025]])          # jaw hinge
        self.register_buffer("j_template", torch.tensor(joints, dtype=torch.float32))
        # Shape directions [V, 3, 4]: scale x, y, z of the skull about its centre; nose protrusion.
        dirs = np.zeros((len(verts), 3, 4))
        rel = verts - center
        for k in range(3):
            dirs[:, k, k] = 0.1 * rel[:, k]
        nose = np.clip(rel[:, 2] - np.sqrt(np.clip(1 - (rel[:, 0] / HEAD_AXES[0]) ** 2 - (rel[:, 1] / HEAD_AXES[1]) ** 2,
                                                   0, 1)) * HEAD_AXES[2], 0, None)
        nose[h["neck"]] = 0
        dirs[:, 2, 3] = 0.1 * nose
        self.register_buffer("shapedirs", torch.tensor(dirs, dtype=torch.float32))
        jdirs = np.zeros((3, 3, 4))
        for k in range(3):
            jdirs[:, k, k] = 0.1 * (joints[:, k] - center[k])
        self.register_buffer("j_shapedirs", torch.tensor(jdirs, dtype=torch.float32))
        f, bary = head_landmarks68(verts, h["faces"], center)
        self.register_buffer("lmk_faces_idx", torch.tensor(f, dtype=torch.long))
        self.register_buffer("lmk_bary_coords", torch.tensor(bary, dtype=torch.float32))
        self.register_buffer("head_center", torch.tensor(center, dtype=torch.float32))

    def rest_template(self) -> torch.Tensor:
        return self.v_template

    landmark_forward = BodySurface.subset_landmark_forward

    def forward(self, params: BodyParams, vertex_ids: Optional[torch.Tensor] = None) -> BodyOutput:
        """vertex_ids: evaluate only these vertices (landmarks68 is then not computed: None)."""
        B = params.batch_size
        betas = params.betas.expand(B, -1)
        sel = (lambda x: x) if vertex_ids is None else (lambda x: x[vertex_ids])  # noqa: E731
        rest = sel(self.v_template) + torch.einsum("bk,vdk->bvd", betas, sel(self.shapedirs))
        joints = self.j_template + torch.einsum("bk,jdk->bjd", betas, self.j_shapedirs)
        zeros = torch.zeros(B, 3)
        neck = params.body_pose[:, :3] if params.body_pose is not None else zeros
        jaw = params.jaw_pose if params.jaw_pose is not None else zeros
        rot = batch_rodrigues(torch.stack([params.global_orient, neck, jaw], 1).reshape(-1, 3)).view(B, 3, 3, 3)
        posed_j, A = rigid_chain(rot, joints, self.parents)
        transl = params.transl if params.transl is not None else zeros
        T = blend_transforms(sel(self.lbs_weights), A, None, transl)
        verts = apply_transforms(T, rest)
        lmk = None if vertex_ids is not None else barycentric_points(verts, self.faces, self.lmk_faces_idx,
                                                                      self.lmk_bary_coords)
        return BodyOutput(vertices=verts, rest_vertices=rest, transforms=T, joints=posed_j + transl[:, None],
                          landmarks68=lmk)


# ------------------------------------------------------------------------------------------------ SMPL-X

SMPLX_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
                 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]


# What smplx.SMPLX reads from the npz (SMPL, SMPL-H and SMPL-X parts); all numeric.
SMPLX_REQUIRED_ARRAYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
                         "hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr", "lmk_faces_idx",
                         "lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")


def smplx_missing_error(path: str) -> FileNotFoundError:
    folder = os.path.dirname(path)
    return FileNotFoundError(
        f"SwapForge: no SMPL-X model at {path}. Expected SMPLX_NEUTRAL.npz (the official NPZ, about 100-170 MB) "
        f"in the folder {folder}; it is licence-gated (SMPL-X licence: non-commercial use only, registration "
        f"required) and is never downloaded. Get it from {SMPLX_LICENCE_SOURCE}, put SMPLX_NEUTRAL.npz there "
        f"(the .pkl files are not supported: they need chumpy) and refresh the node.")


def read_smplx_arrays(path: str) -> Dict[str, np.ndarray]:
    """The numeric arrays of an SMPL-X ``.npz``, read with ``allow_pickle=False`` (nothing is unpickled, so the
    file cannot run code). Entries stored as pickled Python objects (the official file's ``joint2num`` and
    ``part2num`` dicts, which neither smplx's SMPLX model nor SwapForge use) are skipped."""
    out: Dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            try:
                out[key] = np.asarray(npz[key])
            except ValueError:  # "Object arrays cannot be loaded when allow_pickle=False"
                continue
    missing = [k for k in SMPLX_REQUIRED_ARRAYS if k not in out]
    if missing:
        raise ValueError(f"SwapForge: {path} lacks the numeric SMPL-X arrays {missing}. Expected the official "
                         f"SMPLX_NEUTRAL.npz from the SMPL-X project's download page (licence-gated).")
    return out


class SMPLXSurface(BodySurface):
    """SMPL-X through the `smplx` package (v0.1.28), from `<model_dir>/smplx/SMPLX_NEUTRAL.npz`.

    The forward pass reuses the smplx model's buffers and its lbs steps (blend shapes, joint regression,
    pose correctives, batch_rigid_transform) and additionally returns the per-vertex transforms
    T_i = sum_j w_ij A_j (pose correctives folded into the translation, see the module docstring).
    Landmarks68 = smplx's 17 dynamic face-contour points (yaw look-up table, `use_face_contour=True`)
    followed by its 51 static landmarks (iBUG 17-67), i.e. iBUG 0-67 order. Hands are flat (no PCA).
    UVs from the npz 'vt'/'ft' (the official v1.1 npz has them); without them a cylindrical layout is used.
    """
    name = "smplx"
    num_body_joints = 21
    neck_slot = 11  # joint 12 (neck) is body joint 11
    has_jaw = True
    NECK_JOINT, HEAD_JOINT = 12, 15

    def __init__(self, model_dir: str, num_betas: int = 10, num_expression: int = 10):
        super().__init__()
        path = os.path.join(model_dir, "smplx", "SMPLX_NEUTRAL.npz")
        if not os.path.isfile(path):
            raise smplx_missing_error(path)
        try:
            import smplx
            from smplx import lbs as smplx_lbs
        except ImportError as e:
            raise ImportError("SwapForge: the SMPL-X surface needs the `smplx` package (pip install smplx==0.1.28); "
                              "install it into ComfyUI's Python and restart.") from e
        self._lbs = smplx_lbs
        data = read_smplx_arrays(path)
        with tempfile.TemporaryDirectory(prefix="swapforge_smplx_") as tmp:
            # smplx reads its file with allow_pickle=True; give it a copy holding only the numeric arrays, so
            # nothing in the user's file is ever unpickled (the official npz has pickled dict entries)
            clean = os.path.join(tmp, "SMPLX_NEUTRAL.npz")
            np.savez(clean, **data)
            self.model = smplx.SMPLX(clean, ext="npz", num_betas=num_betas, num_expression_coeffs=num_expression,
                                     use_pca=False, flat_hand_mean=True, use_face_contour=True, batch_size=1)
        self.model.requires_grad_(False)
        self.num_betas = int(self.model.num_betas)
        self.num_expression = int(self.model.num_expression_coeffs)
        self.register_buffer("faces", torch.as_tensor(np.asarray(data["f"], np.int64)))
        if "vt" in data and "ft" in data:
            uv, uv_faces = np.asarray(data["vt"], np.float32), np.asarray(data["ft"], np.int64)
        else:
            v = np.asarray(data["v_template"], np.float64)
            uv = np.stack([(np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5),
                           (v[:, 1] - v[:, 1].min()) / np.ptp(v[:, 1])], -1).astype(np.float32)
            uv_faces = np.asarray(data["f"], np.int64)
        self.register_buffer("uv", torch.as_tensor(uv))
        self.register_buffer("uv_faces", torch.as_tensor(uv_faces))
        with torch.no_grad():
            J = self._lbs.vertices2joints(self.model.J_regressor, self.model.v_template[None])[0]
        self.register_buffer("head_center", J[self.HEAD_JOINT].clone())

    def rest_template(self) -> torch.Tensor:
        return self.model.v_template

    def landmark_forward(self, params: BodyParams) -> Tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        if not hasattr(self, "_lmk_ids"):
            fids = torch.cat([m.lmk_faces_idx.reshape(-1), m.dynamic_lmk_faces_idx.reshape(-1)])
            self._lmk_ids, self._lmk_faces = _subset(m.faces_tensor.long(), fids)
        out = self.forward(params, self._lmk_ids)
        return out.landmarks68, out.joints

    def forward(self, params: BodyParams, vertex_ids: Optional[torch.Tensor] = None) -> BodyOutput:
        """vertex_ids: evaluate only these vertices (used by `landmark_forward`; the extra vertex joints of
        smplx's vertex_joint_selector are then left out of `joints`)."""
        m, L = self.model, self._lbs
        B = params.batch_size
        dev, dt = m.v_template.device, m.v_template.dtype
        z = lambda n: torch.zeros(B, n, device=dev, dtype=dt)  # noqa: E731
        body = params.body_pose if params.body_pose is not None else z(63)
        jaw = params.jaw_pose if params.jaw_pose is not None else z(3)
        expr = params.expression if params.expression is not None else z(self.num_expression)
        transl = params.transl if params.transl is not None else z(3)
        full_pose = torch.cat([params.global_orient, body, jaw, z(6), z(90)], 1) + m.pose_mean
        shape = torch.cat([params.betas.expand(B, -1), expr], -1)
        dirs = torch.cat([m.shapedirs, m.expr_dirs], -1)
        if vertex_ids is None:
            rest = m.v_template + L.blend_shapes(shape, dirs)
            J = L.vertices2joints(m.J_regressor, rest)
            posedirs, weights, faces = m.posedirs, m.lbs_weights, m.faces_tensor
        else:
            if not hasattr(self, "_J_dirs"):
                self._J_dirs = torch.einsum("jv,vdk->jdk", m.J_regressor, dirs)
                self._J_template = m.J_regressor @ m.v_template
            rest = m.v_template[vertex_ids] + L.blend_shapes(shape, dirs[vertex_ids])
            J = self._J_template + torch.einsum("bk,jdk->bjd", shape, self._J_dirs)
            cols = (vertex_ids[:, None] * 3 + torch.arange(3)).reshape(-1)
            posedirs, weights, faces = m.posedirs[:, cols], m.lbs_weights[vertex_ids], self._lmk_faces
        rot = L.batch_rodrigues(full_pose.reshape(-1, 3)).view(B, -1, 3, 3)
        ident = torch.eye(3, dtype=dt, device=dev)
        pose_offsets = torch.matmul((rot[:, 1:] - ident).reshape(B, -1), posedirs).view(B, -1, 3)
        posed_j, A = L.batch_rigid_transform(rot, J, m.parents, dtype=dt)
        T = blend_transforms(weights, A, pose_offsets, transl)
        verts = apply_transforms(T, rest)
        dyn_f, dyn_b = L.find_dynamic_lmk_idx_and_bcoords(verts, full_pose, m.dynamic_lmk_faces_idx,
                                                          m.dynamic_lmk_bary_coords, m.neck_kin_chain, pose2rot=True)
        f = torch.cat([dyn_f, m.lmk_faces_idx[None].expand(B, -1)], 1)
        b = torch.cat([dyn_b, m.lmk_bary_coords[None].expand(B, -1, -1)], 1)
        lmk = L.vertices2landmarks(verts, faces, f, b)
        joints = posed_j + transl[:, None]
        if vertex_ids is None:
            joints = m.vertex_joint_selector(verts, joints)
        return BodyOutput(vertices=verts, rest_vertices=rest, transforms=T, joints=joints, landmarks68=lmk)


def synthetic_smplx_arrays(seed: int = 0, n_body_rings: int = 120) -> Dict[str, np.ndarray]:
    """Test utility: arrays in the official SMPLX_NEUTRAL.npz key layout (v_template, f, vt, ft, shapedirs
    with 10 shape + 10 expression components, posedirs [V, 3, 486], J_regressor [55, V], weights [V, 55],
    kintree_table [2, 55], hands_* , lmk_faces_idx [51], lmk_bary_coords [51, 3], dynamic_lmk_faces_idx
    [79, 17], dynamic_lmk_bary_coords [79, 17, 3]) on a small made-up body: the procedural head on a body
    tube, >= 9930 vertices because smplx's vertex_joint_selector indexes vertices up to 9929.
    Not SMPL-X: only for tests of code that loads the official files."""
    rng = np.random.default_rng(seed)
    h = procedural_head(nlat=40, nlon=56)
    head_c = np.array([0.0, 0.55, 0.0])
    hv = h["verts"] + head_c
    nlon = 64
    n_body = max(9930 - len(hv), n_body_rings * nlon)
    rings = int(math.ceil(n_body / nlon))
    bv, bf, off = [], [], len(hv)
    for i in range(rings):
        y = 0.38 - 1.3 * i / (rings - 1)
        for j in range(nlon):
            ph = 2 * math.pi * j / nlon
            bv.append([0.12 * math.sin(ph), y, 0.08 * math.cos(ph)])
    for i in range(rings - 1):
        for j in range(nlon):
            p = [off + i * nlon + j, off + (i + 1) * nlon + j, off + (i + 1) * nlon + (j + 1) % nlon,
                 off + i * nlon + (j + 1) % nlon]
            bf += [[p[0], p[1], p[2]], [p[0], p[2], p[3]]]
    v = np.concatenate([hv, np.array(bv)])
    faces = np.concatenate([h["faces"], np.array(bf)])
    V = len(v)
    # Joints: pelvis and body joints along the tube axis (rings' centres), head joints in the head.
    body_joints = [j for j in range(55) if j not in (12, 15, 22, 23, 24)]
    J_reg = np.zeros((55, V))
    weights = np.zeros((V, 55))
    for k, j in enumerate(body_joints):
        ring = int(round(k * (rings - 1) / (len(body_joints) - 1)))
        J_reg[j, off + ring * nlon: off + (ring + 1) * nlon] = 1.0 / nlon
    for i in range(rings):  # each ring follows its nearest body joint
        k = int(round(i * (len(body_joints) - 1) / (rings - 1)))
        weights[off + i * nlon: off + (i + 1) * nlon, body_joints[k]] = 1.0
    hw = head_weights(h["verts"], h["neck"])
    weights[:len(hv), 12] = hw[:, 0]
    weights[:len(hv), 15] = hw[:, 1]
    weights[:len(hv), 22] = hw[:, 2]
    # Head joints regressed from neck-tube rings / skull rings (centroids on the axis), jaw from the neck top.
    nlon_h = 56
    neck_idx = np.flatnonzero(h["neck"])
    J_reg[12, neck_idx[-nlon_h:]] = 1.0 / nlon_h                 # neck: bottom ring of the neck tube
    J_reg[15, neck_idx[:nlon_h]] = 1.0 / nlon_h                  # head: top ring of the neck tube
    eq = np.flatnonzero(np.abs(h["verts"][:, 1] - (EYE_LEVEL - 0.045)) < 0.004)
    eq = eq[~h["neck"][eq]]
    for j in (22, 23, 24):
        J_reg[j, eq] = 1.0 / len(eq)
    # Shape: 10 smooth global directions + 10 expression directions on the lower face.
    rel = v - v.mean(0)
    shapedirs = np.zeros((V, 3, 20))
    for k in range(10):
        a = rng.normal(size=(3, 3)) * 0.02
        shapedirs[:, :, k] = rel @ a.T
    lower = hw[:, 2] + 0.3 * _smoothstep((EYE_LEVEL - 0.03 - h["verts"][:, 1]) / 0.02) * (h["verts"][:, 2] > 0)
    for k in range(10):
        dirv = rng.normal(size=3) * 0.004
        shapedirs[:len(hv), :, 10 + k] = lower[:, None] * dirv * np.cos(3 * h["verts"][:, :1] / 0.05 + k)
    posedirs = np.zeros((V, 3, 486))
    for j in (12, 15, 22):  # small correctives on the head driven by neck, head and jaw rotations
        for c in range(9):
            posedirs[:len(hv), :, (j - 1) * 9 + c] = rng.normal(size=3) * 0.002 * hw[:, 1:2]
    kintree = np.array([[4294967295] + SMPLX_PARENTS[1:], list(range(55))], np.int64)
    f68, b68 = head_landmarks68(hv, h["faces"], head_c)
    lmk_f, lmk_b = f68[17:], b68[17:]
    dyn_f = np.tile(f68[None, :17], (79, 1))
    dyn_b = np.tile(b68[None, :17], (79, 1, 1))
    vt = np.concatenate([h["uv"] * 0.5, np.array([[0.5 + 0.5 * (j / nlon), 0.5 * i / (rings - 1)]
                                                  for i in range(rings) for j in range(nlon)])])
    ft = np.concatenate([h["uv_faces"], np.array(bf) - off + len(h["uv"])])
    return dict(v_template=v.astype(np.float32), f=faces.astype(np.int32), vt=vt.astype(np.float32),
                ft=ft.astype(np.int32), shapedirs=shapedirs.astype(np.float32),
                posedirs=posedirs.astype(np.float32), J_regressor=J_reg.astype(np.float32),
                weights=weights.astype(np.float32), kintree_table=kintree,
                hands_componentsl=np.eye(45, dtype=np.float32), hands_componentsr=np.eye(45, dtype=np.float32),
                hands_meanl=np.zeros(45, np.float32), hands_meanr=np.zeros(45, np.float32),
                lmk_faces_idx=lmk_f.astype(np.int64), lmk_bary_coords=lmk_b.astype(np.float32),
                dynamic_lmk_faces_idx=dyn_f.astype(np.int64), dynamic_lmk_bary_coords=dyn_b.astype(np.float32))


def write_synthetic_smplx_npz(model_dir: str, seed: int = 0) -> str:
    """Writes `synthetic_smplx_arrays` to <model_dir>/smplx/SMPLX_NEUTRAL.npz (compressed); returns the path."""
    path = os.path.join(model_dir, "smplx", "SMPLX_NEUTRAL.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **synthetic_smplx_arrays(seed))
    return path


# -------------------------------------------------------------------------------------------------- Anny

# Anny is z-up with the face towards -y; SwapForge surfaces are y-up with the face towards +z.
ANNY_TO_SURFACE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


class AnnySurface(BodySurface):
    """The free Anny body (`anny` 0.6.2: Apache-2.0 code, CC0 MakeHuman assets; 13,718 vertices, 104 bones),
    default rig and topology, no facial actions (so no jaw and no expression).

    betas = Anny's 6 phenotype parameters (gender, age, muscle, weight, height, proportions) minus 0.5
    (0 = Anny's neutral default). body_pose = axis-angle per bone 1..103 in Anny's "local-ref"
    parameterisation; neck_slot is bone 'neck01'. global_orient rotates the whole body about the root bone
    head, in the y-up surface frame. Skinning is evaluated here in torch (Anny's sparse weights: 9 bones per
    vertex) so that T_i = sum_k w_ik B_k is returned; it matches Anny's own (warp) skinning (test).

    68 landmarks: IBUG68_FRONTAL laid on the face plane through Anny's COCO eye keypoints (scaled by the
    distance between them, up = the body's up axis) and ray-cast backwards onto the neutral rest mesh; the
    (face, barycentric) pairs are then fixed. Contour points (0-16) are static, so under large yaw they do
    not slide to the silhouette as detector contours do; nose/eyes/mouth points are within a few mm of the
    anatomical spots on Anny's neutral face (no per-point hand-correction was made).
    First construction builds Anny's cache under ~/.cache/anny (minutes on 2 cores, about 0.8 GB).
    """
    name = "anny"
    num_expression = 0
    has_jaw = False

    def __init__(self):
        super().__init__()
        try:
            import anny
        except ImportError as e:
            raise ImportError("SwapForge: the Anny body surface needs the `anny` package (pip install anny==0.6.2 "
                              "with your torch version pinned); install it into ComfyUI's Python and restart, or "
                              "choose the 'template' surface.") from e
        m = anny.Anny()
        m.requires_grad_(False)
        self.model = m
        labels = list(m.bone_labels)
        self.num_betas = len(m.phenotype_labels)
        self.num_body_joints = len(labels) - 1
        self.neck_slot = labels.index("neck01") - 1
        dt = torch.float32
        C = ANNY_TO_SURFACE.to(torch.float64)
        self.register_buffer("C", C.to(dt))
        tc = m.texture_coordinates.detach()
        self.register_buffer("uv", tc.to(dt))
        self.register_buffer("uv_faces", m.face_texture_coordinate_indices.detach().long())
        faces = m.get_triangular_faces().detach().long()
        if faces.shape[0] != self.uv_faces.shape[0]:
            raise RuntimeError("SwapForge: Anny's triangulated faces do not match its per-face UV indices.")
        self.register_buffer("faces", faces)
        with torch.no_grad():
            out = m()
            rest = (out["rest_vertices"][0].to(torch.float64) @ C.T)
            kp = anny.KeypointsRegressor.coco(m, labels=["left_eye", "right_eye", "left_ear", "right_ear"])(
                {"vertices": out["rest_vertices"]})[0].to(torch.float64) @ C.T
        self.register_buffer("v_template", rest.to(dt))
        le, re_, lear, rear = kp.numpy()
        f, b = embed_landmarks68(rest.numpy(), faces.numpy(), (le + re_) / 2, le - re_, np.array([0.0, 1.0, 0.0]),
                                 float(np.linalg.norm(le - re_)))
        self.register_buffer("lmk_faces_idx", torch.tensor(f, dtype=torch.long))
        self.register_buffer("lmk_bary_coords", torch.tensor(b, dtype=dt))
        self.register_buffer("head_center", torch.tensor((lear + rear) / 2, dtype=dt))

    def rest_template(self) -> torch.Tensor:
        return self.v_template

    def anny_outputs(self, params: BodyParams):
        """Anny's own rest model and bone transforms for the params (in Anny's z-up frame, float64)."""
        m = self.model
        B = params.batch_size
        mdt = m.dtype
        phen = (params.betas.expand(B, -1) + 0.5).to(mdt)
        delta = torch.eye(4, dtype=mdt).repeat(B, self.num_body_joints + 1, 1, 1)
        if params.body_pose is not None:
            R = batch_rodrigues(params.body_pose.reshape(-1, 3).to(mdt)).view(B, -1, 3, 3)
            delta = torch.cat([delta[:, :1], torch.cat([torch.cat([R, delta[:, 1:, :3, 3:]], -1), delta[:, 1:, 3:]], -2)], 1)
        pose, phen_p, lc, fa = m.get_tensor_inputs(delta, phen, None, None)
        coeffs = m._get_phenotype_blendshape_coefficients(phen_p, lc, fa)
        rest_out = m.get_rest_model(coeffs)
        bone_T, bone_poses = m.get_bone_transforms(pose, rest_out["rest_bone_poses"])
        return rest_out, bone_T, bone_poses, delta, phen

    # only the landmark triangles are skinned (about 5x cheaper than the whole mesh; equal landmarks, test)
    landmark_forward = BodySurface.subset_landmark_forward

    def forward(self, params: BodyParams, vertex_ids: Optional[torch.Tensor] = None) -> BodyOutput:
        """vertex_ids: skin only these vertices (landmarks68 is then not computed: None)."""
        m = self.model
        B = params.batch_size
        rest_out, bone_T, bone_poses, _, _ = self.anny_outputs(params)
        C = self.C
        bone_T = bone_T.to(torch.float32)
        w, idx = m.vertex_bone_weights.to(torch.float32), m.vertex_bone_indices
        rest = rest_out["rest_vertices"]
        if vertex_ids is not None:
            w, idx, rest = w[vertex_ids], idx[vertex_ids], rest[:, vertex_ids]
        Tb = bone_T[:, idx.reshape(-1), :3, :].reshape(B, idx.shape[0], idx.shape[1], 3, 4)
        T = (w[None, :, :, None, None] * Tb).sum(2)                                  # Anny frame
        T = torch.cat([C @ T[..., :3] @ C.T, (C @ T[..., 3:])], -1)                  # surface frame
        rest = rest.to(torch.float32).expand(B, -1, -1) @ C.T
        joints = bone_poses[..., :3, 3].to(torch.float32) @ C.T
        root = (rest_out["rest_bone_heads"][:, 0].to(torch.float32) @ C.T).expand(B, -1)
        Rg = batch_rodrigues(params.global_orient)
        transl = params.transl if params.transl is not None else torch.zeros(B, 3)
        shift = root - (Rg @ root[..., None])[..., 0] + transl
        T = torch.cat([Rg[:, None] @ T[..., :3], Rg[:, None] @ T[..., 3:] + shift[:, None, :, None]], -1)
        verts = apply_transforms(T, rest)
        joints = (Rg[:, None] @ joints[..., None])[..., 0] + shift[:, None]
        lmk = None if vertex_ids is not None else barycentric_points(verts, self.faces, self.lmk_faces_idx,
                                                                      self.lmk_bary_coords)
        return BodyOutput(vertices=verts, rest_vertices=rest, transforms=T, joints=joints, landmarks68=lmk)


# ---------------------------------------------------------------------------------------------- factory

SURFACE_KINDS = ("auto", "anny", "smplx", "template")


def anny_available() -> bool:
    try:
        import importlib.util
        return importlib.util.find_spec("anny") is not None
    except (ImportError, ValueError):
        return False


def load_surface(kind: str = "auto", model_dir: Optional[str] = None) -> BodySurface:
    """The body surface of `kind`: "anny" (needs the anny package), "smplx" (needs the smplx package and
    <model_dir>/smplx/SMPLX_NEUTRAL.npz), "template" (always available) or "auto" (anny when installed,
    else template)."""
    if kind == "auto":
        kind = "anny" if anny_available() else "template"
    if kind == "anny":
        return AnnySurface()
    if kind == "template":
        return TemplateHeadSurface()
    if kind == "smplx":
        if model_dir is None:
            raise ValueError("SwapForge: the SMPL-X surface needs model_dir (the folder models/swapforge that holds "
                             "smplx/SMPLX_NEUTRAL.npz).")
        return SMPLXSurface(model_dir)
    raise ValueError(f"SwapForge: unknown body surface {kind!r}; expected one of {', '.join(SURFACE_KINDS)}.")
