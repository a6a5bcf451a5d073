"""Fitting a GSwap avatar to a clip (paper steps 4-7): the neural Gaussian field on the tracked surface, the
background encoder, the feature reducer and the rerenderer U, trained jointly with the step-7 losses.

Learning rates default to PortraitGen's (the same lab's public code; GSwap gives none):
positions / vertex offsets 1.6e-5, features 1e-3, renderer (E_bg, reducer, U) 3e-3, opacity 0.05,
scaling 5e-3, rotation 1e-3; the temporal features c_t use the feature rate 1e-3. Adam, one group each.
(PortraitGen also decays the position rate and adds Laplacian/SSIM regularisers; not done here.)

Determinism: every random choice (feature init, network init, frame order) comes from `seed` through a
local generator or a forked RNG; the global RNG is left untouched. With two threads, repeated 2-step fits in one
process differed in the last bits of the rasterised parameters' updates in 2 of 6 tries on the shared test
machine (the forward losses were identical, so some parallel CPU backward kernel accumulates in a varying
order). `deterministic=True` (an option, off by default) runs the fit with one intra-op CPU thread and restores
the thread count afterwards: the same inputs and seed then give the same avatar bit for bit on CPU. The thread
count is a process-wide setting, so inside ComfyUI the option slows everything else running meanwhile.

Where the Gaussians go: `face_subset` (bool per surface triangle, e.g. BodySurface.head_faces()) keeps them on
the head and neck; the rest of the body never enters the head region. `device`: where the fit runs (ComfyUI's
device through the node; the torch rasteriser runs anywhere, gsplat on CUDA).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .avatar import Avatar
from .gaussians import NeuralGaussianField
from .losses import gswap_losses
from .rerenderer import GSwapRenderer, render_frame

PORTRAITGEN_LRS: Dict[str, float] = dict(offsets=1.6e-5, features=1e-3, renderer=3e-3, opacity=0.05,
                                         scaling=5e-3, rotation=1e-3, temporal=1e-3)


def _per_frame(x: Tensor, T: int, tail: Tuple[int, ...], name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.shape == tail:
        x = x[None].expand((T,) + tail)
    if x.shape != (T,) + tail:
        raise ValueError(f"SwapForge fit_avatar: {name} has shape {tuple(x.shape)}. Expected {list((T,) + tail)} "
                         f"(one per frame) or {list(tail)} (shared). Give one entry per frame.")
    return x.detach().float().clone()


def fit_avatar(faces: Tensor, uv: Tensor, uv_faces: Tensor, rest_vertices: Tensor, transforms: Tensor,
               Ks: Tensor, viewmats: Tensor, frames: Tensor, fg_masks: Tensor, head_masks: Tensor,
               backgrounds: Tensor, *, target_frames: Optional[Tensor] = None, steps: int = 1000, seed: int = 0,
               lrs: Optional[Dict[str, float]] = None, batch_frames: int = 1, uv_resolution: int = 128,
               init_opacity: float = 0.1, scale_factor: float = 1.0, feature_std: float = 0.1, perceptual=None,
               progress: Optional[Callable[[int, int, Optional[Tensor]], None]] = None, preview_every: int = 0,
               resume_from: Optional[Avatar] = None, surface_kind: str = "custom",
               backend: str = "auto", deterministic: bool = False, face_subset=None,
               device=None, render_scale: float = 1.0) -> Tuple[Avatar, List[Dict[str, float]]]:
    """Fits an avatar to T frames of size H x W.

    Surface: faces [F, 3], uv [Vt, 2], uv_faces [F, 3]; rest_vertices [T, V, 3] or [V, 3]; transforms
    [T, V, 3, 4] (body.py's BodyOutput.rest_vertices / .transforms per frame). Cameras: Ks [T, 3, 3] or [3, 3],
    viewmats [T, 4, 4] or [4, 4] (world->camera, OpenCV). Images (0..1): frames [T, H, W, 3] (I_gen, the
    generated frames), fg_masks [T, H, W] (A_gen), head_masks [T, H, W] (M_head), backgrounds [T, H, W, 3]
    (inpainted background), target_frames [T, H, W, 3] (I_tgt for the background term; default `frames`).

    steps: optimiser steps; each renders `batch_frames` frames (an epoch-wise shuffled order from `seed`) and
    averages their losses. lrs: overrides of PORTRAITGEN_LRS. perceptual: an LPIPSVGG, or None for the
    Laplacian-pyramid substitute (losses.py). progress(step, steps, preview) is called after every step
    (1-based); it may raise to interrupt. preview is None except every `preview_every` steps (and the last
    step), when it is frame 0 re-rendered with c_1, [H, W, 3] in 0..1. resume_from: continue from an Avatar
    (same surface layout and frame count); its settings win over uv_resolution/init_opacity/scale_factor.

    Returns (Avatar, history): one dict of float losses per step (total, l1, mask, perceptual, background).
    Runs with gradients enabled even when called under torch.inference_mode (ComfyUI). deterministic: one
    intra-op CPU thread during the fit, restored afterwards (bit-reproducible; see the module docstring).
    face_subset: triangles that carry Gaussians (default all). device: torch device of the fit (default CPU);
    the returned avatar lives there. render_scale: the splatting scale (rerenderer.render_frame; 1 = the paper),
    kept in the avatar's config so that it renders as it was trained (a resumed fit keeps its own).
    """
    threads = torch.get_num_threads()
    if deterministic:
        torch.set_num_threads(1)
    try:
        return _fit(faces, uv, uv_faces, rest_vertices, transforms, Ks, viewmats, frames, fg_masks, head_masks,
                    backgrounds, target_frames, steps, seed, lrs, batch_frames, uv_resolution, init_opacity,
                    scale_factor, feature_std, perceptual, progress, preview_every, resume_from, surface_kind, backend,
                    face_subset, torch.device("cpu") if device is None else torch.device(device), render_scale)
    finally:
        if deterministic:
            torch.set_num_threads(threads)


def _fit(faces, uv, uv_faces, rest_vertices, transforms, Ks, viewmats, frames, fg_masks, head_masks, backgrounds,
         target_frames, steps, seed, lrs, batch_frames, uv_resolution, init_opacity, scale_factor, feature_std,
         perceptual, progress, preview_every, resume_from, surface_kind, backend, face_subset, device, render_scale):
    with torch.inference_mode(False), torch.enable_grad():
        T = int(torch.as_tensor(frames).shape[0])
        H, W = int(frames.shape[1]), int(frames.shape[2])
        frames_ = _per_frame(frames, T, (H, W, 3), "frames")
        V = int(torch.as_tensor(rest_vertices).shape[-2])
        rest_ = _per_frame(rest_vertices, T, (V, 3), "rest_vertices")
        trans_ = _per_frame(transforms, T, (V, 3, 4), "transforms")
        Ks_ = _per_frame(Ks, T, (3, 3), "Ks")
        views_ = _per_frame(viewmats, T, (4, 4), "viewmats")
        fg_ = _per_frame(fg_masks, T, (H, W), "fg_masks")
        head_ = _per_frame(head_masks, T, (H, W), "head_masks")
        bg_ = _per_frame(backgrounds, T, (H, W, 3), "backgrounds")
        tgt_ = frames_ if target_frames is None else _per_frame(target_frames, T, (H, W, 3), "target_frames")
        faces_ = torch.as_tensor(faces).long().clone()
        uv_ = torch.as_tensor(uv).float().clone()
        uv_faces_ = torch.as_tensor(uv_faces).long().clone()
        rates = dict(PORTRAITGEN_LRS)
        rates.update(lrs or {})

        if resume_from is not None:
            if resume_from.field.num_frames != T or resume_from.field.faces.shape != faces_.shape:
                raise ValueError(f"SwapForge fit_avatar: the avatar to resume has {resume_from.field.num_frames} "
                                 f"frames and {resume_from.field.faces.shape[0]} faces; this clip has {T} frames and "
                                 f"{faces_.shape[0]} faces. Expected the same clip and surface. Resume only the "
                                 "avatar fitted on this clip, or start a new fit.")
            field = copy.deepcopy(resume_from.field)
            renderer = copy.deepcopy(resume_from.renderer)
            config = dict(resume_from.config)
            config["steps"] = int(config.get("steps", 0)) + int(steps)
        else:
            field = NeuralGaussianField.from_surface(faces_, uv_, uv_faces_, rest_[0], T, resolution=uv_resolution,
                                                     seed=seed, init_opacity=init_opacity, scale_factor=scale_factor,
                                                     feature_std=feature_std, face_subset=face_subset)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                renderer = GSwapRenderer(in_dim=field.features.shape[1] + field.temporal.shape[1])
            config = dict(uv_resolution=int(uv_resolution), init_opacity=float(init_opacity),
                          scale_factor=float(scale_factor), feature_std=float(feature_std), steps=int(steps),
                          region="all" if face_subset is None else "subset", render_scale=float(render_scale))
        config.update(seed=int(seed), lrs=rates, batch_frames=int(batch_frames), height=H, width=W,
                      perceptual="lpips_vgg" if perceptual is not None else "laplacian_pyramid_l1")
        field.to(device).train()
        renderer.to(device).train()
        if perceptual is not None:
            perceptual = perceptual.to(device)
        groups = [
            dict(params=[field.vertex_offsets], lr=rates["offsets"], name="offsets"),
            dict(params=[field.features], lr=rates["features"], name="features"),
            dict(params=[field.opacity_logit], lr=rates["opacity"], name="opacity"),
            dict(params=[field.log_scale], lr=rates["scaling"], name="scaling"),
            dict(params=[field.rotation], lr=rates["rotation"], name="rotation"),
            dict(params=[field.temporal], lr=rates["temporal"], name="temporal"),
            dict(params=list(renderer.parameters()), lr=rates["renderer"], name="renderer"),
        ]
        opt = torch.optim.Adam(groups, eps=1e-15)
        gen = torch.Generator().manual_seed(int(seed) + 1)
        order: List[int] = []
        history: List[Dict[str, float]] = []
        nb = max(1, min(int(batch_frames), T))

        on = lambda x: x.to(device, non_blocking=True)  # noqa: E731  (frames stay on the CPU; one at a time moves)

        scale = float(config.get("render_scale", 1.0))

        def render(t: int, frame_index: Optional[int]):
            return render_frame(field, renderer, on(rest_[t]), on(trans_[t]), on(Ks_[t]), on(views_[t]), on(bg_[t]),
                                on(head_[t]), frame_index, backend=backend, render_scale=scale)

        for step in range(1, int(steps) + 1):
            batch = []
            while len(batch) < nb:
                if not order:
                    order = torch.randperm(T, generator=gen).tolist()
                batch.append(order.pop(0))
            opt.zero_grad(set_to_none=True)
            sums: Dict[str, float] = {}
            for t in batch:
                out = render(t, t)
                nchw = lambda x: x.permute(2, 0, 1)[None]  # noqa: E731
                losses = gswap_losses(nchw(out["image"]), out["alpha"][None, None], out["m_fore"][None, None],
                                      nchw(on(frames_[t])), on(fg_[t])[None, None], nchw(on(tgt_[t])), perceptual)
                (losses["total"] / nb).backward()
                for k, v in losses.items():
                    if torch.is_tensor(v):
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) / nb
            opt.step()
            history.append(sums)
            preview = None
            if progress is not None:
                if preview_every and (step % int(preview_every) == 0 or step == int(steps)):
                    with torch.no_grad():
                        preview = render(0, None)["display"].detach().clone()
                progress(step, int(steps), preview)

        field.eval()
        renderer.eval()
        avatar = Avatar(field=field, renderer=renderer, surface_kind=surface_kind, uv=uv_, uv_faces=uv_faces_,
                        rest_vertices=rest_[0].clone(), num_frames=T, config=config)
        return avatar, history
