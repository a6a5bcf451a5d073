"""Fitting the GSwap avatar (models/gswap/fit.py) on synthetic clips with known surfaces and motion.

Clip 1 (sphere): a UV sphere (radius 0.5, 12 x 16 segments) with a smooth colour texture
c(u, v) = 0.5 + 0.35 (sin 2 pi u, cos 2 pi v, sin 2 pi (u + v)), turning about y by -0.3, 0, 0.3 rad (with a small
shift) in front of a gradient background. Ground truth is rendered by the rasteriser from RGB Gaussians on
the same UV layout (opacity 0.95, texture colour at each Gaussian's UV). Held-out frame: 0.15 rad.

Clip 2 (card): tests/data/obama.jpg on a flat 1 x 1.25 card (aspect of the photo) turning by stated small
rotations (about y: -8, 0, 8 degrees; about x: 3, -3, 0 degrees) in front of a flat grey background.
Ground truth is an independent ray-plane renderer: every pixel (4 x 4 supersampled) is intersected with the
card plane, mapped to the photo and sampled bilinearly. Held-out frame: y 4, x 1.5 degrees.

Both fits use short step counts with raised learning rates (FAST_LRS: features 5e-2, renderer 1e-2, temporal
1e-2; the PortraitGen rates are tuned for thousands of steps on a GPU), an initial opacity of 0.9 instead of
3DGS's 0.1 and Gaussians of 0.6 texel lengths (both only make the CPU rasteriser cheaper: fewer
Gaussian-pixel pairs). The PSNRs measured with these settings are in the asserts' comments.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch

from models.gswap.avatar import load_avatar, save_avatar
from models.gswap.fit import fit_avatar
from models.gswap.gaussians import NeuralGaussianField
from models.gswap.rasterize import rasterize
from models.gswap.rerenderer import render_frame

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SIZE = 64
K = torch.tensor([[70.0, 0.0, 32.0], [0.0, 70.0, 32.0], [0.0, 0.0, 1.0]])
# world->camera (OpenCV): the camera sits at z = +2 looking down -z, world y up
VIEW = torch.tensor([[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, 2.0], [0, 0, 0, 1.0]])
FAST_LRS = dict(features=5e-2, renderer=1e-2, opacity=0.05, scaling=5e-3, rotation=1e-3, temporal=1e-2, offsets=1.6e-5)


class RigidSurface:
    """A surface with body.py's interface (faces, uv, uv_faces, rest vertices, per-vertex 3x4 transforms)
    whose every vertex follows one rigid motion per frame."""

    def __init__(self, vertices, faces, uv, uv_faces):
        self.rest = torch.as_tensor(vertices, dtype=torch.float32)
        self.faces = torch.as_tensor(faces, dtype=torch.long)
        self.uv = torch.as_tensor(uv, dtype=torch.float32)
        self.uv_faces = torch.as_tensor(uv_faces, dtype=torch.long)

    def transforms(self, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        T = torch.cat([R, t[:, None]], 1)
        return T[None].expand(self.rest.shape[0], 3, 4).clone()


def rot(axis: str, a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    if axis == "y":
        return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]])


def uv_sphere(nlat=12, nlon=16, radius=0.5) -> RigidSurface:
    verts, uv = [], []
    for i in range(nlat + 1):
        th = math.pi * i / nlat
        for j in range(nlon + 1):
            ph = 2 * math.pi * j / nlon
            verts.append([radius * math.sin(th) * math.sin(ph), radius * math.cos(th),
                          radius * math.sin(th) * math.cos(ph)])
            uv.append([j / nlon, 1 - i / nlat])
    faces = []
    for i in range(nlat):
        for j in range(nlon):
            a, b = i * (nlon + 1) + j, (i + 1) * (nlon + 1) + j
            c, d = b + 1, a + 1
            if i > 0:
                faces.append([a, b, d])
            if i < nlat - 1:
                faces.append([b, c, d])
    # seam and pole vertices are duplicated in position, so faces and uv_faces coincide here
    return RigidSurface(np.array(verts), np.array(faces), np.array(uv), np.array(faces))


def sphere_texture(uv: torch.Tensor) -> torch.Tensor:
    u, v = uv[:, 0], uv[:, 1]
    tp = 2 * math.pi
    return 0.5 + 0.35 * torch.stack([torch.sin(tp * u), torch.cos(tp * v), torch.sin(tp * (u + v))], -1)


def gradient_background() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    return torch.stack([0.2 + 0.5 * x, 0.3 + 0.3 * y, 0.6 - 0.3 * x * y], -1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean()))


SPHERE_SCALE = 0.6  # Gaussian sigma in texel lengths (GT and fit): smaller footprints, cheaper CPU steps


def sphere_clip(angles, gt_res=40):
    """Ground-truth frames of the textured sphere: (surface, rest, transforms [T, V, 3, 4], frames, masks, bg)."""
    surf = uv_sphere()
    gt = NeuralGaussianField.from_surface(surf.faces, surf.uv, surf.uv_faces, surf.rest, 1, resolution=gt_res,
                                          scale_factor=SPHERE_SCALE)
    gauss_uv = (surf.uv[surf.uv_faces[gt.face_idx]] * gt.bary[..., None]).sum(1)
    colours = sphere_texture(gauss_uv)
    bg = gradient_background()
    frames, masks, trans = [], [], []
    for k, a in enumerate(angles):
        T = surf.transforms(rot("y", a), torch.tensor([0.05 * a, 0.02 * k, 0.0]))
        with torch.no_grad():
            g = gt(surf.rest, T)
            img, alpha = rasterize(g["means"], g["quats"], g["scales"], torch.full_like(g["opacities"], 0.95), colours,
                                   VIEW, K, SIZE, SIZE)
        frames.append(img + (1 - alpha) * bg)
        masks.append(alpha[..., 0])
        trans.append(T)
    return surf, torch.stack(trans), torch.stack(frames), torch.stack(masks), bg


def fit_sphere(steps, seed=0, train_angles=(-0.3, 0.0, 0.3), held_out=0.15, **kw):
    surf, trans, frames, masks, bg = sphere_clip(list(train_angles) + [held_out])
    T = len(train_angles)
    avatar, hist = fit_avatar(surf.faces, surf.uv, surf.uv_faces, surf.rest, trans[:T], K, VIEW, frames[:T],
                              masks[:T], torch.ones(T, SIZE, SIZE), bg[None].expand(T, -1, -1, -1), steps=steps,
                              seed=seed, lrs=FAST_LRS, uv_resolution=32, init_opacity=0.9,
                              scale_factor=SPHERE_SCALE, **kw)
    with torch.no_grad():
        out = render_frame(avatar.field, avatar.renderer, surf.rest, trans[T], K, VIEW, bg, torch.ones(SIZE, SIZE))
    return avatar, hist, psnr(out["display"], frames[T]), out


def test_fit_sphere_reaches_held_out_psnr_and_same_seed_gives_same_avatar():
    torch.set_num_threads(2)
    t0 = time.time()
    avatar, hist, p, _ = fit_sphere(steps=150)
    elapsed = time.time() - t0
    print(f"sphere: held-out PSNR {p:.2f} dB after 150 steps ({elapsed:.1f} s)")
    # measured (CPU, one thread): 32.8 dB after 150 steps (12 s unloaded), 35.9 dB after 300 steps
    assert hist[-1]["total"] < 0.5 * hist[0]["total"]
    assert p >= 30.0
    a2, h2, _, _ = fit_sphere(steps=2, seed=7, deterministic=True)
    a3, h3, _, _ = fit_sphere(steps=2, seed=7, deterministic=True)
    a4, _, _, _ = fit_sphere(steps=2, seed=8, deterministic=True)
    assert torch.get_num_threads() == 2  # the option restores the thread count
    for m2, m3, m4 in ((a2.field, a3.field, a4.field), (a2.renderer, a3.renderer, a4.renderer)):
        s2, s3, s4 = m2.state_dict(), m3.state_dict(), m4.state_dict()
        for k in s2:
            assert torch.equal(s2[k], s3[k]), k
        assert any(not torch.equal(s2[k], s4[k]) for k in s2)
    assert h2 == h3


def test_fit_leaves_the_process_thread_count_alone_unless_deterministic_is_asked(monkeypatch):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n))[1])
    fit_sphere(steps=1)
    assert calls == []
    fit_sphere(steps=1, deterministic=True)
    assert calls == [1, torch.get_num_threads()]

CARD_HALF = (0.56, 0.7)  # half width, half height (the photo's 410 x 512 aspect)
CARD_TRAIN = ((-8.0, 3.0), (0.0, -3.0), (8.0, 0.0))  # (about y, about x) degrees per training frame
CARD_HELD_OUT = (4.0, 1.5)


def card_surface(n=3) -> RigidSurface:
    hw, hh = CARD_HALF
    verts, uv = [], []
    for i in range(n):
        for j in range(n):
            u, v = j / (n - 1), 1 - i / (n - 1)
            verts.append([(2 * u - 1) * hw, (2 * v - 1) * hh, 0.0])
            uv.append([u, v])
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1
            faces += [[a, b, c], [a, c, d]]
    return RigidSurface(np.array(verts), np.array(faces), np.array(uv), np.array(faces))


def card_pose(deg_y: float, deg_x: float):
    return rot("y", math.radians(deg_y)) @ rot("x", math.radians(deg_x)), torch.tensor([0.0, 0.0, 0.0])


def render_card_reference(texture: np.ndarray, R: torch.Tensor, t: torch.Tensor, bg: np.ndarray, ss: int = 4):
    """Independent ground truth: ray-plane intersection per subpixel (ss x ss per pixel), bilinear texture
    look-up, box-averaged. Returns (image [H, W, 3], coverage [H, W])."""
    import cv2

    n = SIZE * ss
    ys, xs = np.meshgrid((np.arange(n) + 0.5) / ss, (np.arange(n) + 0.5) / ss, indexing="ij")
    Kn, V = K.double().numpy(), VIEW.double().numpy()
    d_c = np.stack([(xs - Kn[0, 2]) / Kn[0, 0], (ys - Kn[1, 2]) / Kn[1, 1], np.ones_like(xs)], -1)
    Rv, tv = V[:3, :3], V[:3, 3]
    C = -Rv.T @ tv
    d_w = d_c @ Rv  # R^T d per row
    Rf, tf = R.double().numpy(), t.double().numpy()
    normal = Rf[:, 2]
    s = ((tf - C) @ normal) / (d_w @ normal)
    X = C + s[..., None] * d_w
    local = (X - tf) @ Rf  # R^T (X - t)
    hw, hh = CARD_HALF
    u = (local[..., 0] / hw + 1) / 2
    v = (local[..., 1] / hh + 1) / 2
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1) & (s > 0)
    th, tw = texture.shape[:2]
    mapx = (u * tw - 0.5).astype(np.float32)
    mapy = ((1 - v) * th - 0.5).astype(np.float32)
    col = cv2.remap(texture, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bg_up = np.repeat(np.repeat(bg, ss, 0), ss, 1)
    img = np.where(inside[..., None], col, bg_up)
    img = img.reshape(SIZE, ss, SIZE, ss, 3).mean((1, 3))
    cov = inside.reshape(SIZE, ss, SIZE, ss).mean((1, 3))
    return torch.tensor(img, dtype=torch.float32), torch.tensor(cov, dtype=torch.float32)


def card_clip():
    from PIL import Image

    with Image.open(os.path.join(DATA, "obama.jpg")) as im:
        tex = np.asarray(im.convert("RGB").resize((205, 256), Image.BILINEAR), np.float32) / 255.0
    surf = card_surface()
    bg = gradient_background()
    frames, masks, trans = [], [], []
    for ay, ax in list(CARD_TRAIN) + [CARD_HELD_OUT]:
        R, t = card_pose(ay, ax)
        img, cov = render_card_reference(tex, R, t, bg.numpy())
        frames.append(img)
        masks.append(cov)
        trans.append(surf.transforms(R, t))
    return surf, torch.stack(trans), torch.stack(frames), torch.stack(masks), bg


def fit_card(steps, seed=0, uv_resolution=40, scale_factor=0.6, **kw):
    surf, trans, frames, masks, bg = card_clip()
    T = len(CARD_TRAIN)
    avatar, hist = fit_avatar(surf.faces, surf.uv, surf.uv_faces, surf.rest, trans[:T], K, VIEW, frames[:T],
                              masks[:T], torch.ones(T, SIZE, SIZE), bg[None].expand(T, -1, -1, -1), steps=steps,
                              seed=seed, lrs=FAST_LRS, uv_resolution=uv_resolution, init_opacity=0.9,
                              scale_factor=scale_factor, **kw)
    with torch.no_grad():
        out = render_frame(avatar.field, avatar.renderer, surf.rest, trans[T], K, VIEW, bg, torch.ones(SIZE, SIZE))
    return avatar, hist, psnr(out["display"], frames[T]), out, frames[T]


def test_fit_card_from_real_photo_rerenders_held_out_pose():
    torch.set_num_threads(2)
    surf, trans, frames, masks, bg = card_clip()
    background_only = psnr(bg, frames[-1])
    t0 = time.time()
    avatar, hist, p, out, gt = fit_card(steps=150)
    print(f"card (obama.jpg): held-out PSNR {p:.2f} dB after 150 steps ({time.time() - t0:.1f} s); "
          f"background alone {background_only:.2f} dB")
    # measured: 24.1 dB after 150 steps (12 s unloaded), 25.9 dB after 300, 26.9 dB after 1000; background
    # alone 13.85 dB
    assert p >= background_only + 8.0
    assert p >= 22.5
    # the card's silhouette: A_out matches the reference coverage
    assert (out["alpha"] - masks[-1]).abs().mean() < 0.05


def test_fit_reports_progress_previews_interrupts_resumes_and_runs_under_inference_mode(tmp_path):
    torch.set_num_threads(2)
    surf, trans, frames, masks, bg = card_clip()
    args = (surf.faces, surf.uv, surf.uv_faces, surf.rest, trans[:3], K, VIEW, frames[:3], masks[:3],
            torch.ones(3, SIZE, SIZE), bg[None].expand(3, -1, -1, -1))
    calls = []

    def progress(step, total, preview):
        calls.append((step, total, None if preview is None else tuple(preview.shape)))
        if step == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        fit_avatar(*args, steps=10, uv_resolution=12, progress=progress, preview_every=2)
    assert calls == [(1, 10, None), (2, 10, (SIZE, SIZE, 3)), (3, 10, None)]

    with torch.inference_mode():
        avatar, hist = fit_avatar(*args, steps=2, seed=1, uv_resolution=12, batch_frames=2)
    assert len(hist) == 2 and set(hist[0]) == {"total", "l1", "mask", "perceptual", "background"}
    assert avatar.num_frames == 3 and avatar.config["perceptual"] == "laplacian_pyramid_l1"
    path = save_avatar(avatar, str(tmp_path / "a.safetensors"))
    loaded = load_avatar(path)
    resumed, hist2 = fit_avatar(*args, steps=1, seed=1, resume_from=loaded)
    assert resumed.config["steps"] == 3 and resumed.field.num_gaussians == avatar.field.num_gaussians
    assert not torch.equal(resumed.field.features, loaded.field.features)
    with pytest.raises(ValueError, match="same clip"):
        fit_avatar(*(a[:2] if i in (4, 7, 8, 9, 10) else a for i, a in enumerate(args)), steps=1,
                   resume_from=loaded)
