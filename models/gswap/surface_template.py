"""The procedural template head: an ellipsoid skull with a nose ridge, a neck and a jaw hinge (3 bones, UV-sphere
layout). Needs no files; the fastest surface."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .surface import (EYE_DISTANCE_M, BodyOutput, BodyParams, BodySurface, apply_transforms, barycentric_points,
                      batch_rodrigues, blend_transforms, embed_landmarks68, rigid_chain)

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
