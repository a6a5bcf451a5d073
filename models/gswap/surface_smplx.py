"""SMPL-X through the `smplx` package from `<model_dir>/smplx/SMPLX_NEUTRAL.npz` (licence-gated: never downloaded,
the user puts it there); pose-corrective offsets folded into the transforms' translation."""
from __future__ import annotations

import math
import os
import tempfile
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .surface import BodyOutput, BodyParams, BodySurface, _subset, apply_transforms, blend_transforms
from .surface_template import EYE_LEVEL, _smoothstep, head_landmarks68, head_weights, procedural_head

SMPLX_LICENCE_SOURCE = ("the SMPL-X project website (smpl-x.is.tue.mpg.de, Download page: register, accept the "
                        "SMPL-X licence (non-commercial research use only) and download 'SMPL-X v1.1 (NPZ+PKL)' "
                        "or 'SMPL-X with removed head bun (NPZ)')")

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

    def head_faces(self) -> torch.Tensor:
        """The triangles skinned mostly to the neck (12), head (15), jaw (22) and eyes (23, 24)."""
        return self._faces_skinned_to(self.model.lbs_weights, (12, 15, 22, 23, 24))

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
