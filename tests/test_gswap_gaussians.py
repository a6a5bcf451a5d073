"""GSwap neural Gaussian field, rerenderer, losses and avatar files (models/gswap/{gaussians, rerenderer,
losses, avatar}.py) against hand-built layouts, rotation matrices and direct formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.gswap.avatar import Avatar, load_avatar, save_avatar
from models.gswap.gaussians import NeuralGaussianField, nearest_rotation, quat_multiply, sample_uv_layout
from models.gswap.losses import LPIPSVGG, gswap_losses, load_perceptual, perceptual_substitute
from models.gswap.rasterize import rasterize
from models.gswap.rerenderer import (BackgroundEncoder, GSwapRenderer, NeuralRerenderer, compose,
                                     render_frame)

torch.set_num_threads(2)


def _quat_matrix_ref(q):
    """Rotation matrix of a unit wxyz quaternion by rotating the basis vectors (v' = q v q*)."""
    w, u = q[0], q[1:]
    cols = []
    for e in torch.eye(3, dtype=q.dtype):
        uv = torch.linalg.cross(u, e)
        cols.append(e + 2 * w * uv + 2 * torch.linalg.cross(u, uv))
    return torch.stack(cols, 1)


def _axis_angle(axis, angle):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _tetra_mesh():
    """4 vertices, 2 faces, a UV layout: two triangles covering the unit square."""
    verts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [1.0, 1.0, 0.2], [0.0, 1.0, -0.1]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return verts, faces, uv, faces.clone()


# ------------------------------------------------------------------------------------------- UV sampling

def test_uv_layout_of_unit_square_assigns_every_texel_and_barycentrics_reproduce_texel_centres():
    _, _, uv, uv_faces = _tetra_mesh()
    res = 7
    face_idx, bary, texel = sample_uv_layout(uv, uv_faces, res, return_texels=True)
    assert face_idx.shape == (res * res,) and bary.shape == (res * res, 3)
    assert sorted((texel[:, 0] * res + texel[:, 1]).tolist()) == list(range(res * res))
    rc = texel.double()
    centre = torch.stack([(rc[:, 1] + 0.5) / res, 1 - (rc[:, 0] + 0.5) / res], -1)
    recon = (uv.double()[uv_faces[face_idx]] * bary.double()[..., None]).sum(1)
    assert torch.allclose(recon, centre, atol=1e-6)
    assert (bary >= -1e-6).all() and torch.allclose(bary.sum(-1), torch.ones(res * res))
    # triangle 0 (0,0)-(1,0)-(1,1) holds u > v; the diagonal (u == v, odd res) goes to the lower id 0
    u, v = centre[:, 0], centre[:, 1]
    assert torch.equal(face_idx, torch.where(u >= v - 1e-12, 0, 1))


def test_uv_layout_skips_uncovered_texels_and_degenerate_triangles():
    uv = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [0.7, 0.7]])
    uv_faces = torch.tensor([[0, 1, 2], [3, 3, 3]])
    res = 10
    face_idx, bary, texel = sample_uv_layout(uv, uv_faces, res, return_texels=True)
    u = (texel[:, 1].double() + 0.5) / res
    v = 1 - (texel[:, 0].double() + 0.5) / res
    assert (face_idx == 0).all()
    assert ((u + v) <= 0.5 + 1e-9).all()
    # independent count: texel centres with u + v <= 0.5 in the lower-left corner
    cu = (torch.arange(res, dtype=torch.float64) + 0.5) / res
    expected = int(((cu[:, None] + cu[None, :]) <= 0.5 + 1e-9).sum())
    assert face_idx.numel() == expected


# ----------------------------------------------------------------------------------------- deformation

def _field(num_frames=3):
    verts, faces, uv, uv_faces = _tetra_mesh()
    f = NeuralGaussianField.from_surface(faces, uv, uv_faces, verts, num_frames, resolution=6, seed=3)
    with torch.no_grad():  # random base rotations so the composition is exercised
        f.rotation.copy_(torch.randn(f.num_gaussians, 4, generator=torch.Generator().manual_seed(1)))
        f.vertex_offsets.copy_(0.05 * torch.randn(4, 3, generator=torch.Generator().manual_seed(2)))
    return f, verts, faces


def test_identity_transforms_place_gaussians_at_barycentric_points_of_offset_rest_vertices():
    f, verts, faces = _field()
    T = torch.eye(3, 4).repeat(4, 1, 1)
    out = f(verts, T, 0)
    v = (verts + f.vertex_offsets).detach()
    expected = torch.stack([sum(f.bary[n, k] * v[faces[f.face_idx[n], k]] for k in range(3))
                            for n in range(f.num_gaussians)])
    assert torch.allclose(out["means"], expected, atol=1e-6)
    assert torch.allclose(out["quats"], F.normalize(f.rotation, dim=-1), atol=1e-6)
    assert torch.allclose(out["opacities"], torch.sigmoid(f.opacity_logit))
    assert torch.allclose(out["scales"], f.log_scale.exp())


def test_rigid_transform_moves_means_and_composes_rotations_exactly():
    f, verts, faces = _field()
    R = _axis_angle([0.3, -0.5, 0.8], 1.1)
    t = torch.tensor([0.2, -0.7, 1.5], dtype=torch.float64)
    T = torch.cat([R, t[:, None]], 1).float()[None].repeat(4, 1, 1)
    out = f(verts, T, 1)
    ident = f(verts, torch.eye(3, 4).repeat(4, 1, 1), 1)
    expected_means = ident["means"].double() @ R.T + t
    assert torch.allclose(out["means"].double(), expected_means, atol=1e-5)
    for n in range(f.num_gaussians):
        base = _quat_matrix_ref(F.normalize(f.rotation[n].detach().double(), dim=0))
        got = _quat_matrix_ref(out["quats"][n].detach().double())
        assert torch.allclose(got, R @ base, atol=1e-5)


def test_blended_transforms_use_interpolated_matrix_for_position_and_its_polar_rotation():
    f, verts, faces = _field()
    Rs = [_axis_angle([0, 0, 1], a) for a in (0.0, 0.4, 0.8, 1.2)]
    ts = [torch.tensor([0.1 * k, 0.0, 0.0], dtype=torch.float64) for k in range(4)]
    T = torch.stack([torch.cat([R, t[:, None]], 1) for R, t in zip(Rs, ts)]).float()
    out = f(verts, T, 0)
    v = (verts + f.vertex_offsets).detach().double()
    for n in range(f.num_gaussians):
        tri = faces[f.face_idx[n]]
        b = f.bary[n].double()
        M = sum(b[k] * T[tri[k]].double() for k in range(3))
        x_c = sum(b[k] * v[tri[k]] for k in range(3))
        assert torch.allclose(out["means"][n].double(), M[:, :3] @ x_c + M[:, 3], atol=1e-5)
        # rotations about one axis blend to a scaled rotation; its polar factor is the rotation by the
        # angle atan2(M10, M00)
        polar = _axis_angle([0, 0, 1], math.atan2(M[1, 0], M[0, 0]))
        base = _quat_matrix_ref(F.normalize(f.rotation[n].detach().double(), dim=0))
        assert torch.allclose(_quat_matrix_ref(out["quats"][n].detach().double()), polar @ base, atol=1e-5)


def test_quaternion_product_matches_rotation_matrix_product():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1)
    ab = quat_multiply(a, b)
    for i in range(5):
        assert torch.allclose(_quat_matrix_ref(ab[i]), _quat_matrix_ref(a[i]) @ _quat_matrix_ref(b[i]), atol=1e-12)


def test_nearest_rotation_equals_svd_polar_factor():
    g = torch.Generator().manual_seed(3)
    M = torch.randn(200, 3, 3, generator=g, dtype=torch.float64)
    M = torch.where(torch.det(M)[:, None, None] < 0, -M, M)
    U, _, Vh = torch.linalg.svd(M)
    assert torch.allclose(nearest_rotation(M), U @ Vh, atol=1e-10)


def test_temporal_features_broadcast_per_frame_and_none_uses_first_frame():
    f, verts, _ = _field(num_frames=3)
    with torch.no_grad():
        f.temporal.copy_(torch.arange(24.0).view(3, 8))
    T = torch.eye(3, 4).repeat(4, 1, 1)
    for t in range(3):
        feats = f(verts, T, t)["features"]
        assert feats.shape == (f.num_gaussians, 40)
        assert torch.equal(feats[:, :32], f.features.detach())
        assert torch.equal(feats[:, 32:], torch.arange(8.0 * t, 8.0 * t + 8).expand(f.num_gaussians, 8))
    assert torch.equal(f(verts, T, None)["features"], f(verts, T, 0)["features"])
    with pytest.raises(IndexError):
        f(verts, T, 3)


def test_gradients_reach_offsets_features_temporal_and_gaussian_parameters():
    f, verts, _ = _field()
    T = torch.eye(3, 4).repeat(4, 1, 1)
    out = f(verts, T, 2)
    loss = sum((v * torch.linspace(0.1, 1, v.numel()).view(v.shape)).sum() for v in out.values())
    loss.backward()
    for name in ("vertex_offsets", "features", "opacity_logit", "log_scale", "rotation"):
        assert getattr(f, name).grad.abs().sum() > 0, name
    assert f.temporal.grad[2].abs().sum() > 0 and f.temporal.grad[:2].abs().sum() == 0


# ------------------------------------------------------------------------------------------- rerenderer

def test_compose_follows_eqs_9_to_11_on_hand_tensors():
    phi_fore = torch.full((1, 8, 2, 2), 2.0)
    phi_bg = torch.full((1, 8, 2, 2), -1.0)
    alpha = torch.tensor([[1.0, 0.5], [0.0, 1.0]]).view(1, 1, 2, 2)
    head = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    fused, m = compose(phi_fore, alpha, head, phi_bg)
    assert torch.equal(m, torch.tensor([[1.0, 0.5], [0.0, 0.0]]).view(1, 1, 2, 2))
    expected = torch.tensor([[2.0, 0.5], [-1.0, -1.0]]).view(1, 1, 2, 2).expand(1, 8, 2, 2)
    assert torch.equal(fused, expected)
    with pytest.raises(ValueError):
        compose(phi_fore[:, :5], alpha, head, phi_bg)


def test_rerenderer_layers_shapes_and_relu_after_every_conv():
    U = NeuralRerenderer()
    convs = list(U.convs)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (8, 8, (3, 3), (1, 1)), (8, 8, (3, 3), (1, 1)), (8, 3, (3, 3), (1, 1))]
    x = torch.randn(2, 8, 5, 6, generator=torch.Generator().manual_seed(0))
    h = x
    for c in convs:
        h = torch.relu(F.conv2d(h, c.weight, c.bias, padding=1))
    out = U(x)
    assert out.shape == (2, 3, 5, 6) and torch.allclose(out, h) and (out >= 0).all()
    with torch.no_grad():
        convs[-1].bias.fill_(-100.0)
    assert torch.equal(U(x), torch.zeros(2, 3, 5, 6))  # the last ReLU clips negative outputs
    E = BackgroundEncoder()
    assert [(c.in_channels, c.out_channels) for c in (E.conv1, E.conv2)] == [(3, 8), (8, 5)]
    bg = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    phi_bg = E(bg)
    assert phi_bg.shape == (1, 8, 4, 4) and torch.equal(phi_bg[:, 5:], bg)
    ref = F.conv2d(torch.relu(F.conv2d(bg, E.conv1.weight, E.conv1.bias, padding=1)), E.conv2.weight, E.conv2.bias,
                   padding=1)
    assert torch.allclose(phi_bg[:, :5], ref)


def test_reducing_features_before_splatting_equals_reducing_the_splatted_image():
    f, verts, _ = _field()
    r = GSwapRenderer()
    g = f(verts, torch.eye(3, 4).repeat(4, 1, 1), 0)
    view = torch.tensor([[1.0, 0, 0, -0.5], [0, 1.0, 0, -0.5], [0, 0, 1.0, 2.0], [0, 0, 0, 1]])
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    with torch.no_grad():
        img40, a1 = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["features"], view, K, 32, 32)
        img8, a2 = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], r.reducer(g["features"]), view, K,
                             32, 32)
    assert a1.max() > 0.5
    assert torch.allclose(r.reducer(img40.permute(2, 0, 1)[None])[0].permute(1, 2, 0), img8, atol=1e-5)


# ---------------------------------------------------------------------------------------------- losses

def test_losses_match_direct_formulas_and_name_the_perceptual_term():
    g = torch.Generator().manual_seed(0)
    img, gen, tgt = (torch.rand(1, 3, 16, 16, generator=g) for _ in range(3))
    alpha, mgen, m = (torch.rand(1, 1, 16, 16, generator=g) for _ in range(3))
    out = gswap_losses(img, alpha, m, gen, mgen, tgt)
    assert out["perceptual_kind"] == "laplacian_pyramid_l1"
    assert torch.allclose(out["l1"], (img - gen).abs().mean())
    assert torch.allclose(out["mask"], (alpha - mgen).abs().mean())
    assert torch.allclose(out["background"], ((img - tgt) * (1 - m)).abs().mean())
    assert torch.allclose(out["total"], out["l1"] + out["mask"] + out["perceptual"] + out["background"])
    assert perceptual_substitute(img, img) == 0 and out["perceptual"] > 0
    # a constant offset only shows at the coarsest level: |c| there, 0 in the band-pass levels
    assert torch.allclose(perceptual_substitute(img + 0.25, img), torch.tensor(0.25), atol=1e-6)


def test_lpips_vgg_loads_user_files_and_is_zero_for_identical_images(tmp_path):
    assert load_perceptual(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPSVGG.from_folder(str(tmp_path))
    torch.manual_seed(0)
    from models.gswap.losses import _vgg16_features
    feats = _vgg16_features()
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()} | {"classifier.0.weight": torch.zeros(1)},
               tmp_path / "vgg16-397923af.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))},
               tmp_path / "vgg.pth")
    lp = load_perceptual(str(tmp_path))
    assert isinstance(lp, LPIPSVGG)
    assert torch.equal(lp.features[0].weight, feats[0].weight)
    x = torch.rand(1, 3, 32, 32)
    assert float(lp(x, x)) == 0.0 and float(lp(x, x.flip(-1))) > 0
    out = gswap_losses(x, x[:, :1], x[:, :1], x, x[:, :1], x, perceptual=lp)
    assert out["perceptual_kind"] == "lpips_vgg"


# ---------------------------------------------------------------------------------------------- avatar

def test_avatar_save_load_round_trip_is_exact(tmp_path):
    f, verts, faces = _field(num_frames=2)
    with torch.no_grad():
        f.temporal.normal_(generator=torch.Generator().manual_seed(4))
    torch.manual_seed(5)
    r = GSwapRenderer()
    _, _, uv, uv_faces = _tetra_mesh()
    av = Avatar(field=f, renderer=r, surface_kind="tetra", uv=uv, uv_faces=uv_faces, rest_vertices=verts,
                num_frames=2, config=dict(uv_resolution=6, lrs=dict(features=1e-3)))
    path = save_avatar(av, str(tmp_path / "a.safetensors"))
    back = load_avatar(path)
    for mod_a, mod_b in ((av.field, back.field), (av.renderer, back.renderer)):
        sa, sb = mod_a.state_dict(), mod_b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert back.surface_kind == "tetra" and back.num_frames == 2 and back.config == av.config
    for a, b in ((av.uv, back.uv), (av.uv_faces, back.uv_faces), (av.rest_vertices, back.rest_vertices)):
        assert torch.equal(a, b)
    view = torch.tensor([[1.0, 0, 0, -0.5], [0, 1.0, 0, -0.5], [0, 0, 1.0, 2.0], [0, 0, 0, 1]])
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    bg = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(6))
    T = torch.eye(3, 4).repeat(4, 1, 1)
    with torch.no_grad():
        o1 = render_frame(av.field, av.renderer, verts, T, K, view, bg, torch.ones(32, 32), 1)
        o2 = render_frame(back.field, back.renderer, back.rest_vertices, T, K, view, bg, torch.ones(32, 32), 1)
    assert o1["alpha"].max() > 0.5
    assert torch.equal(o1["image"], o2["image"])
    with pytest.raises(FileNotFoundError):
        load_avatar(str(tmp_path / "missing.safetensors"))


def test_field_on_body_template_head_follows_posed_surface():
    from models.gswap.body import BodyParams, TemplateHeadSurface, barycentric_points

    surf = TemplateHeadSurface(nlat=16, nlon=20)
    p = surf.zero_params(1)
    p = BodyParams(betas=p.betas, global_orient=torch.tensor([[0.0, 0.3, 0.1]]),
                   body_pose=torch.tensor([[0.2, -0.1, 0.0]]) if p.body_pose is not None else None,
                   jaw_pose=torch.tensor([[0.2, 0.0, 0.0]]) if p.jaw_pose is not None else None,
                   expression=p.expression, transl=torch.tensor([[0.01, -0.02, 0.5]]))
    with torch.no_grad():
        out = surf(p)
    f = NeuralGaussianField.from_surface(surf.faces, surf.uv, surf.uv_faces, out.rest_vertices[0], 1, resolution=48)
    with torch.no_grad():
        g = f(out.rest_vertices[0], out.transforms[0])
    posed = barycentric_points(out.vertices, surf.faces, f.face_idx, f.bary)[0]
    err = (g["means"] - posed).norm(dim=-1)
    tri_T = out.transforms[0][surf.faces[f.face_idx]]  # [N, 3, 3, 4]
    rigid = (tri_T - tri_T[:, :1]).abs().amax((1, 2, 3)) < 1e-7
    assert rigid.sum() > 100 and (~rigid).sum() > 100
    # exact where the triangle's three vertices share one transform; where the skinning blends, the
    # interpolated transform applied to the interpolated rest point departs from the flat posed triangle by
    # second-order terms only (a few mm on this coarse head at these angles)
    assert err[rigid].max() < 1e-5
    assert err[~rigid].max() < 3e-3
    assert torch.allclose(g["quats"].norm(dim=-1), torch.ones(f.num_gaussians), atol=1e-5)
