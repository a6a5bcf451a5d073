"""Body surfaces for GSwap: per-vertex skinning transforms reproduce the posed vertices, landmarks, UVs."""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import pytest
import torch

from models.gswap import body


@functools.lru_cache(maxsize=None)
def _template():
    return body.TemplateHeadSurface()


def _posed_params(surface, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = surface.zero_params(B)
    p.global_orient = 0.3 * torch.randn(B, 3, generator=g)
    if p.body_pose is not None:
        p.body_pose = 0.2 * torch.randn(p.body_pose.shape, generator=g)
    if p.jaw_pose is not None:
        p.jaw_pose = torch.tensor([[0.3, 0.0, 0.0]]).expand(B, -1).clone()
    if p.expression is not None:
        p.expression = torch.randn(p.expression.shape, generator=g)
    p.betas = 0.5 * torch.randn(p.betas.shape, generator=g)
    p.transl = 0.1 * torch.randn(B, 3, generator=g)
    return p


def test_template_transforms_reproduce_vertices_and_keep_rigid_rotations():
    s = _template()
    p = _posed_params(s)
    out = s(p)
    recon = (out.transforms[..., :3] @ out.rest_vertices[..., None])[..., 0] + out.transforms[..., 3]
    assert torch.allclose(recon, out.vertices, atol=1e-6)
    # A vertex weighted fully to the head bone moves rigidly: its 3x3 block is a rotation.
    top = int(torch.argmax(s.v_template[:, 1]))
    R = out.transforms[:, top, :, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5)


def test_template_pose_moves_only_the_right_parts():
    s = _template()
    p0 = s.zero_params(1)
    p1 = s.zero_params(1)
    p1.jaw_pose = torch.tensor([[0.4, 0.0, 0.0]])
    a, b = s(p0), s(p1)
    moved = (a.landmarks68 - b.landmarks68).norm(dim=-1)[0]
    assert moved[8] > 0.01                 # chin follows the jaw
    assert moved[57] > 0.005               # lower lip
    assert moved[36:48].max() < 1e-6       # eyes stay
    assert moved[27:31].max() < 1e-6       # nose bridge stays


def test_template_landmarks_have_frontal_face_layout():
    lm = _template()(_template().zero_params(1)).landmarks68[0]
    eye_l, eye_r = lm[42:48].mean(0), lm[36:42].mean(0)   # subject's left eye is at +x
    assert abs(float((eye_l - eye_r)[0]) - body.EYE_DISTANCE_M) < 0.004
    assert lm[30, 2] > lm[36:48, 2].max()                # nose tip in front of the eyes
    assert lm[8, 1] < lm[57, 1] < lm[33, 1] < lm[27, 1]  # chin < lower lip < nostrils < bridge (y up)


def test_template_uv_layout_is_per_face_and_in_range():
    s = _template()
    assert s.uv_faces.shape == s.faces.shape
    assert float(s.uv.min()) >= 0 and float(s.uv.max()) <= 1
    assert int(s.uv_faces.max()) < s.uv.shape[0]


def test_synthetic_smplx_npz_has_official_keys(tmp_path):
    arrays = body.synthetic_smplx_arrays()
    for key in ("v_template", "f", "vt", "ft", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
                "lmk_faces_idx", "lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
                "hands_componentsl", "hands_meanl"):
        assert key in arrays
    V = arrays["v_template"].shape[0]
    assert V >= 9930 and arrays["posedirs"].shape == (V, 3, 486) and arrays["J_regressor"].shape == (55, V)
    assert np.allclose(arrays["weights"].sum(1), 1.0, atol=1e-5)


def test_smplx_missing_file_error_names_file_folder_licence_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        body.SMPLXSurface(str(tmp_path))
    msg = str(e.value)
    assert "SMPLX_NEUTRAL.npz" in msg and os.path.join(str(tmp_path), "smplx") in msg
    assert "non-commercial" in msg and "smpl-x.is.tue.mpg.de" in msg


@pytest.fixture(scope="module")
def smplx_surface(tmp_path_factory):
    pytest.importorskip("smplx")
    d = tmp_path_factory.mktemp("swapforge_models")
    body.write_synthetic_smplx_npz(str(d))
    return body.SMPLXSurface(str(d))


def test_smplx_transforms_reproduce_smplx_package_vertices_and_landmarks(smplx_surface):
    s = smplx_surface
    p = _posed_params(s, B=2)
    out = s(p)
    z = torch.zeros(2, 3)
    ref = s.model(betas=p.betas, global_orient=p.global_orient, body_pose=p.body_pose, jaw_pose=p.jaw_pose,
                  expression=p.expression, transl=p.transl, leye_pose=z, reye_pose=z,
                  left_hand_pose=torch.zeros(2, 45), right_hand_pose=torch.zeros(2, 45))
    recon = (out.transforms[..., :3] @ out.rest_vertices[..., None])[..., 0] + out.transforms[..., 3]
    assert torch.allclose(recon, ref.vertices, atol=1e-5)
    # smplx appends 51 static + 17 contour landmarks after its joints; ours are iBUG order (contour first).
    ref_lmk = torch.cat([ref.joints[:, -17:], ref.joints[:, -68:-17]], 1)
    assert torch.allclose(out.landmarks68, ref_lmk, atol=1e-5)
    lmk_fast, _ = s.landmark_forward(p)
    assert torch.allclose(lmk_fast, out.landmarks68, atol=1e-5)


def test_smplx_pose_correctives_are_folded_into_translation(smplx_surface):
    s = smplx_surface
    p = s.zero_params(1)
    p.body_pose[:, 3 * 11:3 * 11 + 3] = torch.tensor([0.5, 0.0, 0.0])  # neck
    out = s(p)
    m = s.model
    # Without correctives the pure blend of bone transforms would miss the posed vertices by the offsets.
    rot_only = (out.transforms[..., :3] @ out.rest_vertices[..., None])[..., 0]
    assert torch.allclose(rot_only + out.transforms[..., 3], out.vertices, atol=1e-6)
    assert float(m.posedirs.abs().max()) > 0


needs_anny = pytest.mark.skipif(importlib.util.find_spec("anny") is None,
                                reason="anny not installed (it is in requirements.txt: the embedded body model)")


@pytest.fixture(scope="module")
def anny_surface():
    """The Anny surface; the first use on a machine builds Anny's cache (about 70 s on 2 cores, 0.8 GB)."""
    return body.AnnySurface()


@needs_anny
def test_anny_transforms_reproduce_vertices_and_match_anny_skinning(anny_surface):
    s = anny_surface
    p = _posed_params(s, B=1)
    p.body_pose = 0.1 * p.body_pose
    out = s(p)
    recon = (out.transforms[..., :3] @ out.rest_vertices[..., None])[..., 0] + out.transforms[..., 3]
    assert torch.allclose(recon, out.vertices, atol=1e-5)
    p0 = p.detach()
    p0.global_orient.zero_()
    p0.transl.zero_()
    p0.expression = p0.expression.clamp(0, 1)
    _, _, _, delta, phen = s.anny_outputs(p0)
    labels = list(s.model.facial_action_labels)
    fa = torch.zeros(1, len(labels), dtype=s.model.dtype)
    fa[:, [labels.index(e) for e in s.expression_labels]] = p0.expression.to(fa.dtype)
    ref = s.model(delta, phen, None, fa)["vertices"].float() @ s.C.T   # Anny's own (warp) skinning, y-up frame
    assert torch.allclose(s(p0).vertices, ref, atol=1e-4)
    assert s.uv_faces.shape == s.faces.shape and s.num_vertices == 13718
    lm = out.landmarks68[0]
    assert lm.shape == (68, 3) and torch.isfinite(lm).all()


@needs_anny
def test_anny_expression_opens_the_mouth_and_the_unposed_rest_model_is_reused_exactly(anny_surface):
    s = anny_surface
    p = s.zero_params(2)
    p.expression[1, s.expression_labels.index("jawOpen")] = 1.0
    lm = s(p).landmarks68
    gap = (lm[:, 66] - lm[:, 62]).norm(dim=-1)  # inner lips, bottom - top
    assert gap[1] > gap[0] + 0.01  # jawOpen parts the inner lips by more than 1 cm more than the neutral face
    s._rest_cache = None
    fresh = s(p).vertices
    cached = s(p).vertices  # second call: the rest model and bones come from the cache
    assert s._rest_cache is not None and torch.equal(fresh, cached)
    p.betas = p.betas + 0.2  # another shape: recomputed, not the cached one
    assert not torch.allclose(s(p).vertices, fresh, atol=1e-3)


@needs_anny
def test_anny_landmark_forward_skins_only_the_landmark_triangles_and_equals_the_full_mesh(anny_surface):
    s = anny_surface
    p = _posed_params(s, B=3)
    p.body_pose = 0.1 * p.body_pose
    full = s(p)
    lm, joints = s.landmark_forward(p)
    assert torch.equal(lm, full.landmarks68) and torch.equal(joints, full.joints)
    ids, _ = body._subset(s.faces, s.lmk_faces_idx)
    assert len(ids) <= 3 * 68 < s.num_vertices


def test_load_surface_kinds(tmp_path):
    assert isinstance(body.load_surface("template"), body.TemplateHeadSurface)
    with pytest.raises(ValueError):
        body.load_surface("flame")
    with pytest.raises(ValueError):
        body.load_surface("smplx")
