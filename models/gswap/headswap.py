"""The whole GSwap head swap on the embedded route (paper sec. III), stage by stage:

1. target head masks M_head (head_mask.py, GrabCut on the 68-landmark prior, temporally smoothed) and the hole
   to remove: the same masks without the neck zone under the jaw (the target keeps its neck and clothes; the
   source's neck is laid over it);
2. background Î_tgt: the hole filled from the clip itself (background.py);
3. source preparation (source.py, done by the caller) and Fig. 4: each frame's region M_head is the union of
   the target's mask, the hole and the source head mask carried by the 5 keypoints;
4. I_gen and A_gen: the source head reenacted to every target frame over Î_tgt (reenact.py);
5. tracking (track.py): the target's landmarks give the inference track; I_gen is re-tracked from it
   (re-track mode) on the landmarks it was built to, its head pose refined and the target's expression kept
   (I_gen carries the target's expression on the source's face: re-fitting the expression would turn the
   source's proportions into expression coefficients the inference track does not have);
6. fitting (fit.py): the neural Gaussian field on the head and neck of the surface (the triangles that face the
   camera in some frame) plus E_bg and U, trained on
   I_gen with A_gen, M_head, Î_tgt and the background term against the original frames I_tgt, temporal
   features c_t in training;
7. rendering (rerenderer.py) with c_1 on the re-track of I_gen (default, `render_track="generated"`) or on
   the target's own track (`"target"`, the paper's choice), and the composite: inside M_head the render where
   the avatar covers (M_fore) and Î_tgt elsewhere, the target's own pixels outside M_head (bit-identical).
   Why the re-track by default: the paper's I_gen come from a diffusion model, inconsistent from frame to
   frame, so it renders on the target's track; here I_gen is built on the target's landmarks, so its re-track
   is the target's motion carried by the source's face (same expression, head pose refined). Rendering the
   avatar on the target's own track puts the source's head where the target's face proportions put it, a
   systematic pose offset: on lp_d6 + astronaut, 400 steps, 9.2 degrees of pose error on the target's track
   against 4.2 on the re-track, with flicker 0.0011 against 0.0003 (I_gen alone: 0.016).

Fitting and rendering run on one crop window per clip (the union of the head regions over the clip, padded):
the camera's principal point is shifted into the window, so the result is the same as rendering the whole
frame, at the cost of the window only.

Frames without a target face pass through unchanged and are flagged (their pose is interpolated by the
tracker, but nothing is pasted on them).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import background as bglib
from . import head_mask as hmlib
from .fit import fit_avatar
from .reenact import reenact_clip
from .rerenderer import render_frame
from .source import SourceSet
from .surface import BodyParams, BodySurface
from .track import BodyTrack, fit_track

Progress = Callable[[str, int, int], None]


@dataclass
class HeadSwapConfig:
    """neck_line: where the source head and M_head end below the chin (face heights); hole_neck_line: how far
    below the jaw line the removed target head reaches (0: the target keeps everything under its jaw); hair: hair allowance of the masks; colour:
    strength of the source-to-target colour match; track_iters / retrack_iters: tracker steps for the target
    and for I_gen; fit_steps, uv_resolution, batch_frames, seed: the Gaussian fit (Gaussians on the head and
    neck only); smooth_radius: temporal mask smoothing (+- frames); crop_margin: padding of the crop window (of
    the frame's long side); scale_factor: initial Gaussian size in texels (small Gaussians overlap less: fewer
    pixel-Gaussian pairs, faster steps; the fit grows them where needed); deterministic: one CPU thread during the
    fit (restored after); render_scale: splatting scale of the avatar (rerenderer.render_frame), default 0.5 on a
    CPU (fitted Gaussians are about 2 px wide at full size, so a half-size splat upsampled keeps nearly all of
    the image at a quarter of the work) and 1 (the paper) elsewhere; render_track: "generated" (the re-track
    of I_gen, default) or "target" (the target's own track, the paper's choice; see the module docstring)."""
    neck_line: float = 0.2
    hole_neck_line: float = 0.0
    scale_factor: float = 0.5
    render_scale: Optional[float] = None
    hair: float = 1.0
    colour: float = 0.6
    mouth: str = "target"
    track_iters: int = 300
    retrack_iters: int = 100
    fit_steps: int = 400
    uv_resolution: int = 256
    batch_frames: int = 1
    seed: int = 0
    smooth_radius: int = 2
    crop_margin: float = 0.04
    deterministic: bool = False
    render_track: str = "generated"


RENDER_TRACKS = ("generated", "target")


@dataclass
class HeadSwapResult:
    frames: np.ndarray          # [T, H, W, 3] the swapped video
    generated: np.ndarray       # [T, H, W, 3] I_gen
    a_gen: np.ndarray           # [T, H, W]
    m_head: np.ndarray          # [T, H, W]
    backgrounds: np.ndarray     # [T, H, W, 3] Î_tgt
    avatar: object
    track: BodyTrack
    retrack: BodyTrack
    flagged: List[int]
    seconds_by_stage: Dict[str, float]
    report: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ stages

def target_masks(frames: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, cfg: HeadSwapConfig,
                 progress: Optional[Callable[[int], None]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(M_head of the target [T, H, W], hole [T, H, W]) (stage 1)."""
    T, H, W = frames.shape[:3]
    masks = np.zeros((T, H, W), np.float32)
    for t in range(T):
        if valid[t]:
            masks[t] = hmlib.head_mask(frames[t], landmarks[t], neck_line=cfg.neck_line, hair=cfg.hair)
        if progress is not None:
            progress(t)
    masks = hmlib.smooth_masks(masks, np.nan_to_num(landmarks), valid, cfg.smooth_radius)
    holes = np.stack([masks[t] * hmlib.without_neck(landmarks[t], (H, W), cfg.hole_neck_line) if valid[t]
                      else masks[t] for t in range(T)])
    return masks, holes


def union_region(target_mask: np.ndarray, hole_grown: np.ndarray, sources: SourceSet, kps5: np.ndarray,
                 valid: np.ndarray) -> np.ndarray:
    """M_head [T, H, W] (paper Fig. 4): the target's head mask, the removed hole and the source head carried by
    the 5 keypoints, united."""
    T, H, W = target_mask.shape
    out = np.maximum(target_mask, hole_grown.astype(np.float32))
    src = sources.main
    for t in range(T):
        if valid[t]:
            out[t] = np.maximum(out[t], hmlib.carry_mask(src.mask, src.kps5, kps5[t], (H, W)))
    return out


def rasteriser_name(device=None) -> str:
    """Which rasteriser `rasterize(backend="auto")` uses on `device`: gsplat on CUDA when it imports, else the
    torch path."""
    from .rasterize import _gsplat_available

    dev = torch.device(device or "cpu")
    return f"gsplat on {dev}" if dev.type == "cuda" and _gsplat_available() else f"torch on {dev}"


def facing_faces(surface: BodySurface, rest: torch.Tensor, transforms: torch.Tensor, viewmats: torch.Tensor,
                 min_cos: float = -0.2) -> torch.Tensor:
    """bool [F]: triangles that face the camera (cosine between the normal and the direction to the camera above
    min_cos) in at least one frame. A Gaussian on any other triangle is never seen in training (it gets no
    gradient) nor at inference on the same clip's poses: no Gaussians go there."""
    F = surface.faces
    keep = torch.zeros(F.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for t in range(rest.shape[0]):
            v = (transforms[t, :, :, :3] @ rest[t][..., None])[..., 0] + transforms[t, :, :, 3]
            n = torch.linalg.cross(v[F[:, 1]] - v[F[:, 0]], v[F[:, 2]] - v[F[:, 0]])
            R, tv = viewmats[t, :3, :3], viewmats[t, :3, 3]
            d = (-R.T @ tv) - v[F].mean(1)
            keep |= (n * d).sum(-1) > min_cos * n.norm(dim=-1) * d.norm(dim=-1)
    return keep


def crop_window(masks: List[np.ndarray], shape, margin: float) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the bounding box of every mask > 0.02 over the clip, padded by margin * long side."""
    H, W = shape[:2]
    any_m = np.zeros((H, W), bool)
    for m in masks:
        any_m |= (m > 0.02).any(0)
    if not any_m.any():
        return 0, 0, W, H
    ys, xs = np.nonzero(any_m)
    pad = int(round(margin * max(H, W)))
    return (max(0, int(xs.min()) - pad), max(0, int(ys.min()) - pad), min(W, int(xs.max()) + pad + 1),
            min(H, int(ys.max()) + pad + 1))


def shift_K(K: torch.Tensor, x0: int, y0: int) -> torch.Tensor:
    K = K.clone()
    K[..., 0, 2] -= x0
    K[..., 1, 2] -= y0
    return K


def _slice(params: BodyParams, i: int, j: int) -> BodyParams:
    return BodyParams(**{k: (None if v is None else v[i:j]) for k, v in params.__dict__.items()})


def posed(surface: BodySurface, track: BodyTrack, i: int = 0, j: Optional[int] = None):
    """(rest_vertices [n, V, 3], transforms [n, V, 3, 4]) of track frames i..j."""
    with torch.no_grad():
        out = surface(_slice(track.params, i, len(track) if j is None else j))
    return out.rest_vertices, out.transforms


def render_clip(avatar, surface: BodySurface, track: BodyTrack, backgrounds: np.ndarray, m_head: np.ndarray,
                window: Tuple[int, int, int, int], device=None, progress: Optional[Callable[[int], None]] = None,
                sink: Optional[Callable[[int, np.ndarray, np.ndarray], None]] = None):
    """The avatar rendered on `track` (c_1) inside the crop window: (images [T, h, w, 3], m_fore [T, h, w]); with
    `sink`, each frame goes to sink(t, image, m_fore) instead and nothing is kept (returns (None, None))."""
    x0, y0, x1, y1 = window
    T = len(track)
    K = shift_K(track.K, x0, y0)
    dev = torch.device("cpu") if device is None else torch.device(device)
    if sink is None:
        imgs = np.zeros((T, y1 - y0, x1 - x0, 3), np.float32)
        fores = np.zeros((T, y1 - y0, x1 - x0), np.float32)

        def sink(t, img, fore):
            imgs[t], fores[t] = img, fore
    else:
        imgs = fores = None
    chunk = 16  # the surface is posed for 16 frames at a time (one batched call; memory stays bounded)
    with torch.no_grad():
        for t in range(T):
            if t % chunk == 0:
                rest_c, trans_c = posed(surface, track, t, min(t + chunk, T))
            rest, trans = rest_c[t % chunk: t % chunk + 1], trans_c[t % chunk: t % chunk + 1]
            out = render_frame(avatar.field, avatar.renderer, rest[0].to(dev), trans[0].to(dev), K.to(dev),
                               track.extrinsics[t].to(dev),
                               torch.from_numpy(np.ascontiguousarray(backgrounds[t, y0:y1, x0:x1])).to(dev),
                               torch.from_numpy(np.ascontiguousarray(m_head[t, y0:y1, x0:x1])).to(dev), None,
                               render_scale=float(avatar.config.get("render_scale", 1.0)))
            sink(t, out["display"].cpu().numpy(), out["m_fore"].cpu().numpy())
            if progress is not None:
                progress(t)
    return imgs, fores


def composite(target: np.ndarray, render: np.ndarray, m_head: np.ndarray, window, background: np.ndarray,
              m_fore: np.ndarray, feather_px: float = 1.5) -> np.ndarray:
    """The final frame [H, W, 3]: the target's own pixels outside M_head; inside it the rerendered avatar where
    the avatar covers (M_fore) and the filled background Î_tgt elsewhere (the head region the avatar does not
    cover), both masks feathered by a Gaussian of feather_px (weights within 1/1024 of 0 or 1 snapped to it, so the
    pixels outside M_head are the target's, bit for bit)."""
    import cv2

    x0, y0, x1, y1 = window
    out = target.copy()
    blur = (lambda m: cv2.GaussianBlur(m, (0, 0), feather_px)) if feather_px > 0 else (lambda m: m)  # noqa: E731
    mh = np.clip(blur(np.ascontiguousarray(m_head[y0:y1, x0:x1])), 0, 1)
    mh = np.where(mh < 1.0 / 1024, 0.0, np.where(mh > 1 - 1.0 / 1024, 1.0, mh))[..., None]  # blur tails snapped
    mf = np.clip(blur(np.ascontiguousarray(m_fore)), 0, 1)
    mf = np.where(mf < 1.0 / 1024, 0.0, np.where(mf > 1 - 1.0 / 1024, 1.0, mf))[..., None]
    inside = mf * render + (1 - mf) * background[y0:y1, x0:x1]
    tgt = target[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.where(mh > 0, mh * inside + (1 - mh) * tgt, tgt)
    return out


def default_render_scale(device=None) -> float:
    """The splat scale of HeadSwapConfig.render_scale=None: 1 (the paper) on CUDA, 0.5 on other devices."""
    return 1.0 if torch.device(device or "cpu").type == "cuda" else 0.5


def fit_clip(surface: BodySurface, track: BodyTrack, frames: np.ndarray, fg_masks: np.ndarray, m_head: np.ndarray,
             backgrounds: np.ndarray, target_frames: np.ndarray, cfg: HeadSwapConfig, perceptual=None, device=None,
             progress=None, resume_from=None, region: str = "head and neck", crop: bool = True, preview_every: int = 0):
    """Stage 6: the avatar fitted on `frames` (I_gen) with `track` (the re-track), A_gen `fg_masks`, M_head,
    Î_tgt and I_tgt, on the crop window of the head regions (`crop`), with Gaussians on the head and neck
    triangles that face the camera in some frame (`region` "head and neck"; "whole surface": every triangle),
    cfg's steps, UV resolution, initial scale and splat scale. Returns (avatar, loss history, window)."""
    T, H, W = frames.shape[:3]
    window = crop_window([m_head, fg_masks], (H, W), cfg.crop_margin) if crop else (0, 0, W, H)
    x0, y0, x1, y1 = window
    rest, trans = posed(surface, track)
    c = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, y0:y1, x0:x1]))  # noqa: E731
    subset = None
    if region == "head and neck":
        subset = surface.head_faces() & facing_faces(surface, rest, trans, track.extrinsics)
    avatar, history = fit_avatar(
        surface.faces, surface.uv, surface.uv_faces, rest, trans, shift_K(track.K, x0, y0), track.extrinsics,
        c(frames), c(fg_masks), c(m_head), c(backgrounds), target_frames=c(target_frames),
        steps=cfg.fit_steps, seed=cfg.seed, batch_frames=cfg.batch_frames, uv_resolution=cfg.uv_resolution,
        perceptual=perceptual, surface_kind=surface.name, scale_factor=cfg.scale_factor, device=device,
        render_scale=cfg.render_scale or default_render_scale(device), face_subset=subset,
        deterministic=cfg.deterministic, progress=progress, resume_from=resume_from, preview_every=preview_every)
    return avatar, history, window


# -------------------------------------------------------------------------------------------------- run

def run(frames: np.ndarray, landmarks: np.ndarray, kps5: np.ndarray, valid: np.ndarray, sources: SourceSet,
        surface: BodySurface, cfg: Optional[HeadSwapConfig] = None, perceptual=None, device=None,
        progress: Optional[Progress] = None, inpaint=None) -> HeadSwapResult:
    """The head swap of module docstring. frames [T, H, W, 3] float 0..1 (the target video); landmarks
    [T, 68, 2], kps5 [T, 5, 2] of the tracked target face (NaN where none); valid [T] (frames with a face);
    sources from source.prepare_sources; surface from body.load_surface. progress(stage, done, total) after
    every frame / step of a stage; it may raise to interrupt."""
    cfg = cfg or HeadSwapConfig()
    if cfg.render_track not in RENDER_TRACKS:
        raise ValueError(f"SwapForge: render_track must be one of {RENDER_TRACKS}, got {cfg.render_track!r}.")
    T, H, W = frames.shape[:3]
    valid = np.asarray(valid, bool) & np.isfinite(landmarks).all(axis=(1, 2))
    if not valid.any():
        raise ValueError("SwapForge: no frame of the target video has a face the detector finds. Expected a video "
                         "with the target's face visible in at least one frame. Check the detector's settings.")
    secs: Dict[str, float] = {}
    report: List[str] = []
    p = progress or (lambda stage, done, total: None)

    def stage(name):
        return lambda i: p(name, i + 1, T)

    t0 = time.perf_counter()
    mask_t, hole = target_masks(frames, landmarks, valid, cfg, stage("head masks"))
    secs["head_masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    backgrounds, hole_grown, info = bglib.fill_backgrounds(frames, hole, inpaint=inpaint, progress=stage("background"))
    secs["background"] = time.perf_counter() - t0
    report.append(f"background: {info['route']} ({info['inpainter']}; {100 * info['plate_coverage']:.0f} % of the "
                  "hole seen in other frames)")

    t0 = time.perf_counter()
    m_head = union_region(mask_t, hole_grown, sources, kps5, valid)
    del mask_t, hole, hole_grown  # only M_head is needed from here on
    i_gen, a_gen, lm_drv, flagged = reenact_clip(sources, frames, landmarks, valid, backgrounds, cfg.colour,
                                                 cfg.mouth, progress=stage("generate"))
    secs["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes in inference mode
        track = fit_track(surface, np.where(valid[:, None, None], landmarks, np.nan), (H, W), valid=valid,
                          iters=cfg.track_iters, progress=lambda s, n: p("track target", s, n))
        gen_ok = valid & np.isfinite(lm_drv).all(axis=(1, 2))
        retrack = fit_track(surface, np.where(gen_ok[:, None, None], lm_drv, np.nan), (H, W), valid=gen_ok,
                            iters=cfg.retrack_iters, init=track, fit_expression=False,
                            progress=lambda s, n: p("re-track", s, n))
    secs["tracking"] = time.perf_counter() - t0
    report.append(f"tracking: target {np.nanmean(track.errors_px.numpy()):.2f} px, generated frames "
                  f"{np.nanmean(retrack.errors_px.numpy()):.2f} px mean landmark error")

    t0 = time.perf_counter()
    avatar, history, window = fit_clip(surface, retrack, i_gen, a_gen, m_head, backgrounds, frames, cfg,
                                       perceptual=perceptual, device=device,
                                       progress=lambda s, n, pv: p("fit", s, n))
    x0, y0, x1, y1 = window
    secs["fit"] = time.perf_counter() - t0
    report.append(f"fit: {cfg.fit_steps} steps on a {x1 - x0}x{y1 - y0} window, {avatar.field.num_gaussians} "
                  f"Gaussians on the head and neck, loss {history[0]['total']:.4f} -> {history[-1]['total']:.4f}; "
                  f"rasteriser: {rasteriser_name(device)}, splat scale {avatar.config.get('render_scale', 1.0)}")

    t0 = time.perf_counter()
    out = frames.copy()  # flagged frames stay the target's

    def put(t, img, fore):  # each rendered frame composited at once: no clip of renders is kept
        if t not in flagged:
            out[t] = composite(frames[t], img, m_head[t], window, backgrounds[t], fore)

    render_clip(avatar, surface, retrack if cfg.render_track == "generated" else track, backgrounds, m_head, window,
                device, stage("render"), sink=put)
    secs["render"] = time.perf_counter() - t0
    report.append(f"render: on the {'re-track of I_gen' if cfg.render_track == 'generated' else 'target track'}, "
                  f"{T / max(secs['render'], 1e-9):.1f} frames/s (render, rerender and composite)")
    report.append("flagged (no target face, passed through): " + (", ".join(map(str, flagged)) if flagged else "none"))
    return HeadSwapResult(frames=out, generated=i_gen, a_gen=a_gen, m_head=m_head, backgrounds=backgrounds,
                          avatar=avatar, track=track, retrack=retrack, flagged=flagged, seconds_by_stage=secs,
                          report=report)


# ------------------------------------------------------------------------------------------ faces in

def face_arrays(faceset, face_index: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """One person's face per frame from a FaceSet (models/face/records.py), by the pack's shared rule
    (models/face/identity.py: person_per_frame): on tracked faces the `face_index`-th track, on untracked ones
    face `face_index` of each frame. Returns (landmarks [T, 68, 2], kps5 [T, 5, 2], valid [T], interpolated [T]
    (entries the tracker filled in), a label); NaN and valid False where the frame has no such face."""
    from ..face.identity import person_label, person_per_frame

    T = len(faceset.frames)
    lm = np.full((T, 68, 2), np.nan, np.float32)
    k5 = np.full((T, 5, 2), np.nan, np.float32)
    valid, interp = np.zeros(T, bool), np.zeros(T, bool)
    for t, (f, j) in enumerate(zip(faceset.frames, person_per_frame(faceset, face_index))):
        if j is None:
            continue
        lm[t], k5[t] = f.landmarks68[j], f.kps5[j]
        valid[t] = bool(np.isfinite(f.landmarks68[j]).all() and np.any(f.landmarks68[j]))
        interp[t] = bool(f.interpolated[j])
    note = (f"{person_label(faceset, face_index)}: a face in {int(valid.sum())} of {T} frames"
            + (f" ({int(interp.sum())} filled in by the tracker)" if interp.any() else ""))
    return lm, k5, valid, interp, note
