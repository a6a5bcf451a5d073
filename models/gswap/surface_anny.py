"""The free Anny body (`anny` package: Apache-2.0 code, CC0 MakeHuman assets) as a GSwap surface."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .surface import BodyOutput, BodyParams, BodySurface, apply_transforms, barycentric_points, batch_rodrigues, embed_landmarks68

# Anny is z-up with the face towards -y; SwapForge surfaces are y-up with the face towards +z.
ANNY_TO_SURFACE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# The facial actions (ARKit-style blendshapes shipped with Anny) used as the surface's expression: the ones
# the 68 landmarks can see (brows, lids, jaw, lips). Each coefficient is in 0..1 (`expression_range`).
ANNY_EXPRESSIONS = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawOpen", "jawLeft", "jawRight",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthStretchLeft", "mouthStretchRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "mouthPressLeft", "mouthPressRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
)


LOWER_INNER_LIP = (65, 66, 67)  # iBUG inner lower lip: on the closed mouth these rays hit the lip seam


def _lower_inner_lip_on_the_jaw(rest: np.ndarray, faces: np.ndarray, f: np.ndarray, b: np.ndarray,
                                jaw_open: np.ndarray, moving: float = 0.01):
    """On a closed mouth the rays of the inner lower-lip landmarks (65-67) land on the seam, usually on the upper
    lip, so they would not follow the jaw. Each is moved to the nearest vertex that jawOpen moves by more than
    `moving` metres (the lower lip), as a barycentric point of one of its triangles."""
    f, b = f.copy(), b.copy()
    moved = np.linalg.norm(jaw_open, axis=-1) > moving
    cand = np.flatnonzero(moved)
    for i in LOWER_INNER_LIP:
        hit = (rest[faces[f[i]]] * b[i][:, None]).sum(0)
        v = int(cand[np.argmin(np.linalg.norm(rest[cand] - hit, axis=-1))])
        tri = int(np.flatnonzero((faces == v).any(1))[0])
        f[i] = tri
        b[i] = (faces[tri] == v).astype(np.float64)
    return f, b


class AnnySurface(BodySurface):
    """The free Anny body (`anny` 0.6.2: Apache-2.0 code, CC0 MakeHuman assets; 13,718 vertices, 104 bones),
    default rig and topology. Expression = Anny's facial actions listed in `expressions` (default
    ANNY_EXPRESSIONS: jaw, lips, lids and brows), linear blendshapes added to the rest vertices, coefficients
    in 0..1; they move no bone (the rig has no jaw bone), so the bones come from the shape alone.

    The rest model depends on the shape only, so when every frame of a batch has the same betas (a track
    shares them) it is built once for the batch and the per-frame expression offsets are added to it; only
    the bone chain is evaluated per frame.

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
    expression_range = (0.0, 1.0)

    def __init__(self, expressions=ANNY_EXPRESSIONS):
        super().__init__()
        try:
            import anny
        except ImportError as e:
            raise ImportError("SwapForge: the Anny body surface needs the `anny` package (pip install anny==0.6.2 "
                              "with your torch version pinned); install it into ComfyUI's Python and restart, or "
                              "choose the 'template' surface.") from e
        expressions = tuple(expressions or ())
        m = anny.Anny(facial_actions="all" if expressions else "none")
        m.requires_grad_(False)
        self.model = m
        self.expression_labels = expressions
        self.num_expression = len(expressions)
        n_fa = len(m.facial_action_labels)
        unknown = [e for e in expressions if e not in m.facial_action_labels]
        if unknown:
            raise ValueError(f"SwapForge: unknown Anny facial actions {unknown}. Expected names from "
                             f"{list(m.facial_action_labels)}.")
        # coefficient order of Anny's blendshape stack: phenotype basis, facial actions, local changes
        self._n_phen_coeffs = int(m.blendshapes.shape[0]) - n_fa - 2 * len(m.local_change_labels)
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
        if expressions:
            cols = [self._n_phen_coeffs + list(m.facial_action_labels).index(e) for e in expressions]
            basis = m.blendshapes[cols].to(torch.float64) @ C.T  # [E, V, 3] in the surface frame
            self.register_buffer("expression_basis", basis.to(dt))
        else:
            self.register_buffer("expression_basis", torch.zeros(0, faces.max().item() + 1, 3, dtype=dt))
        with torch.no_grad():
            out = m()
            rest = (out["rest_vertices"][0].to(torch.float64) @ C.T)
            kp = anny.KeypointsRegressor.coco(m, labels=["left_eye", "right_eye", "left_ear", "right_ear"])(
                {"vertices": out["rest_vertices"]})[0].to(torch.float64) @ C.T
        self.register_buffer("v_template", rest.to(dt))
        le, re_, lear, rear = kp.numpy()
        f, b = embed_landmarks68(rest.numpy(), faces.numpy(), (le + re_) / 2, le - re_, np.array([0.0, 1.0, 0.0]),
                                 float(np.linalg.norm(le - re_)))
        if "jawOpen" in expressions:
            f, b = _lower_inner_lip_on_the_jaw(rest.numpy(), faces.numpy(), f, b,
                                               self.expression_basis[expressions.index("jawOpen")].numpy())
        self.register_buffer("lmk_faces_idx", torch.tensor(f, dtype=torch.long))
        self.register_buffer("lmk_bary_coords", torch.tensor(b, dtype=dt))
        self.register_buffer("head_center", torch.tensor((lear + rear) / 2, dtype=dt))

    def rest_template(self) -> torch.Tensor:
        return self.v_template

    HEAD_BONES = ("neck01", "neck02", "neck03", "head", "eye.L", "eye.R")

    def head_faces(self) -> torch.Tensor:
        """The triangles skinned mostly (> 50 %) to the neck, head and eye bones (9,270 of 27,420)."""
        m = self.model
        labels = list(m.bone_labels)
        ids = torch.tensor([labels.index(b) for b in self.HEAD_BONES])
        w = (m.vertex_bone_weights * torch.isin(m.vertex_bone_indices, ids)).sum(-1) > 0.5
        return w[self.faces].all(-1)

    def anny_outputs(self, params: BodyParams):
        """Anny's own rest model (batch 1 when every frame has the same betas) and bone transforms (batch B, or 1
        when there is no body pose) for the params, in Anny's z-up frame, float64, without the expression (it
        moves no bone) and without global_orient / transl (applied in `forward`)."""
        m = self.model
        B = params.batch_size
        mdt = m.dtype
        betas = params.betas.expand(B, -1)
        shared = B == 1 or bool((betas.detach() == betas[:1].detach()).all())
        phen = ((betas[:1] if shared else betas) + 0.5).to(mdt)
        # without a body pose (the face tracker's case) every frame has the same bones: chain them once
        posed = params.body_pose is not None and (params.body_pose.requires_grad or bool(params.body_pose.any()))
        delta = torch.eye(4, dtype=mdt).repeat(B if posed else 1, self.num_body_joints + 1, 1, 1)
        if posed:
            R = batch_rodrigues(params.body_pose.reshape(-1, 3).to(mdt)).view(B, -1, 3, 3)
            delta = torch.cat([delta[:, :1], torch.cat([torch.cat([R, delta[:, 1:, :3, 3:]], -1), delta[:, 1:, 3:]], -2)], 1)
        # same shape and no pose: the rest model and bones of the last call (inference tensors are kept apart:
        # ComfyUI runs nodes in inference mode, and those cannot enter a later autograd graph)
        cache = getattr(self, "_rest_cache", None)
        frozen = not phen.requires_grad
        key = torch.is_inference_mode_enabled()
        if frozen and not posed and cache is not None and cache[0] == key and torch.equal(cache[1], phen):
            return cache[2], cache[3], cache[4], delta, phen
        pose, phen_p, lc, fa = m.get_tensor_inputs(delta, phen, None, None)
        coeffs = m._get_phenotype_blendshape_coefficients(phen_p, lc, fa)
        rest_out = m.get_rest_model(coeffs)
        bone_T, bone_poses = m.get_bone_transforms(pose, rest_out["rest_bone_poses"])
        if frozen and not posed:
            self._rest_cache = (key, phen.detach().clone(), rest_out, bone_T, bone_poses)
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
        Tb = bone_T[:, idx.reshape(-1), :3, :].reshape(bone_T.shape[0], idx.shape[0], idx.shape[1], 3, 4)
        T = (w[None, :, :, None, None] * Tb).sum(2)                                  # Anny frame
        T = torch.cat([C @ T[..., :3] @ C.T, (C @ T[..., 3:])], -1).expand(B, -1, -1, -1)  # surface frame
        rest = (rest.to(torch.float32) @ C.T).expand(B, -1, -1)
        if self.num_expression and params.expression is not None:
            basis = self.expression_basis if vertex_ids is None else self.expression_basis[:, vertex_ids]
            rest = rest + torch.einsum("be,evd->bvd", params.expression.to(torch.float32), basis)
        joints = (bone_poses[..., :3, 3].to(torch.float32) @ C.T).expand(B, -1, -1)
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
