"""GSwap head swap (models/gswap): body model, tracking, avatar fitting, neural rerendering, avatar files.

Types: SWAPFORGE_BODY_MODEL (a models.gswap.body.BodySurface), SWAPFORGE_BODY_TRACK (models.gswap.track.BodyTrack),
SWAPFORGE_AVATAR (models.gswap.avatar.Avatar).

Batch rules: every per-frame input (frames, masks, backgrounds) has one entry per tracked frame; a MASK or
background of batch 1 is shared by all frames (as ComfyUI's SolidMask gives it). Anything else is an error that
names both sizes.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..models.face.identity import person_per_frame
from ..models.face.records import has_landmarks68, no_landmarks68_message
from ..models.gswap import avatar as avlib
from ..models.gswap import body as bodylib
from ..models.gswap import headswap as hslib
from ..models.gswap import track as tracklib
from ..models.gswap.losses import load_perceptual
from ..models.gswap.rerenderer import render_frame
from . import services
from .common import FACES, images_np, mask_np, progress, to_image, to_mask

CATEGORY = "SwapForge/Head swap"
BODY_MODEL = "SWAPFORGE_BODY_MODEL"
BODY_TRACK = "SWAPFORGE_BODY_TRACK"
AVATAR = "SWAPFORGE_AVATAR"

KIND_TEMPLATE, KIND_ANNY, KIND_SMPLX = "template (embedded)", "anny (embedded)", "smplx"
_SURFACES: dict = {}


def _smplx_importable() -> bool:
    import importlib.util
    return importlib.util.find_spec("smplx") is not None


def body_kinds():
    """The body models to offer: Anny first (the embedded default, in requirements.txt; a clear error says how
    to install it if it is missing), the procedural template head, and SMPL-X when the smplx package imports."""
    kinds = [KIND_ANNY, KIND_TEMPLATE]
    if _smplx_importable():
        kinds.append(KIND_SMPLX)
    return kinds


def _load_surface(kind: str):
    if kind not in _SURFACES:
        # built outside inference mode: its buffers take part in the trackers' and fitters' autograd graphs
        with torch.inference_mode(False):
            if kind == KIND_SMPLX:
                roots = services.folder_paths_for("swapforge_smplx")
                found = [r for r in roots if os.path.isfile(os.path.join(r, "smplx", "SMPLX_NEUTRAL.npz"))]
                if not found:
                    raise bodylib.smplx_missing_error(
                        os.path.join(services.default_folder("swapforge_smplx"), "smplx", "SMPLX_NEUTRAL.npz"))
                surface = bodylib.load_surface("smplx", found[0])
            elif kind in (KIND_TEMPLATE, KIND_ANNY):
                surface = bodylib.load_surface(kind.split(" ")[0])
            else:
                raise ValueError(f"SwapForge: unknown body model {kind!r}. Expected one of {', '.join(body_kinds())}.")
        _SURFACES[kind] = surface
    return _SURFACES[kind]


def _per_frame(a: np.ndarray, T: int, what: str, ref: str) -> np.ndarray:
    """a [B, ...] with B == T, or B == 1 (shared, repeated)."""
    if a.shape[0] == T:
        return a
    if a.shape[0] == 1:
        return np.repeat(a, T, axis=0)
    raise ValueError(f"SwapForge: {what} has {a.shape[0]} frame(s) but {ref} has {T}. Expected one per frame "
                     f"(or a single one shared by all frames). Connect a {what} made for these same frames.")


def _check_size(a: np.ndarray, hw, what: str, ref: str) -> None:
    if tuple(a.shape[1:3]) != tuple(hw):
        raise ValueError(f"SwapForge: {what} is {a.shape[2]}x{a.shape[1]} px but {ref} is {hw[1]}x{hw[0]} px. "
                         f"Expected the same size. Scale the {what} to the frames' size.")


def _check_track(track, body_model, T: int, hw, what: str) -> None:
    if track.surface and track.surface != body_model.name:
        raise ValueError(f"SwapForge: the track was fitted with the {track.surface!r} body model but the body model "
                         f"given is {body_model.name!r}. Connect the body model the track was made with.")
    if len(track) != T:
        raise ValueError(f"SwapForge: the track has {len(track)} frame(s) but {what} has {T}. Expected one tracked "
                         f"frame per image. Connect the track made on these frames.")
    if tuple(track.image_size) != tuple(hw):
        raise ValueError(f"SwapForge: the track was made on {track.image_size[1]}x{track.image_size[0]} px frames but "
                         f"{what} is {hw[1]}x{hw[0]} px. Expected the same size. Track the frames you pass here.")


def _slice_params(params: bodylib.BodyParams, i: int, j: int) -> bodylib.BodyParams:
    return bodylib.BodyParams(**{k: (None if v is None else v[i:j]) for k, v in params.__dict__.items()})


def _posed(body_model, track, i: int = 0, j: int = None):
    """(rest_vertices [n, V, 3], transforms [n, V, 3, 4]) of track frames i..j."""
    with torch.no_grad():
        out = body_model(_slice_params(track.params, i, len(track) if j is None else j))
    return out.rest_vertices, out.transforms


def draw_track(frames: np.ndarray, track) -> np.ndarray:
    """Preview: the track's projected 68 landmarks as dots (green; orange on interpolated frames)."""
    import cv2

    out = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    pts = track.projected68.detach().cpu().numpy()
    dot = max(1, int(round(min(out.shape[1:3]) / 200)))
    for t in range(len(out)):
        color = (255, 160, 0) if bool(track.interpolated[t]) else (0, 255, 0)
        canvas = np.ascontiguousarray(out[t])
        for x, y in pts[t]:
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(canvas, (int(round(float(x))), int(round(float(y)))), dot, color, -1, cv2.LINE_AA)
        out[t] = canvas
    return out.astype(np.float32) / 255.0


def track_report(track) -> str:
    errs = track.errors_px.detach().cpu().numpy()
    lines = [f"{track.surface} body, {len(track)} frame(s), {track.iterations} iteration(s), "
             f"mean landmark error {np.nanmean(errs):.2f} px"]
    flagged = [t for t in range(len(track)) if bool(track.interpolated[t])]
    lines.append(f"flagged (no face, interpolated): {flagged if flagged else 'none'}")
    for t in range(len(track)):
        lines.append(f"frame {t}: " + ("no face, interpolated" if bool(track.interpolated[t])
                                       else f"{errs[t]:.2f} px"))
    return "\n".join(lines)


def _comfy_preview(image: torch.Tensor):
    """[H, W, 3] 0..1 -> ComfyUI's progress preview tuple ("JPEG", PIL image, max size)."""
    from PIL import Image
    a = (image.detach().cpu().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return ("JPEG", Image.fromarray(a), 512)


class SwapForgeBodyModelLoader:
    DESCRIPTION = ("Loads the body surface GSwap's Gaussians live on: the free Anny body (the embedded default, "
                   "installed with requirements.txt), a procedural head and neck (needs nothing, fastest) or SMPL-X "
                   "(when the smplx package is installed and you put SMPLX_NEUTRAL.npz in "
                   "models/swapforge/smplx/smplx/).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (BODY_MODEL,)
    RETURN_NAMES = ("body_model",)
    OUTPUT_TOOLTIPS = ("The body surface, for Body Tracker, Gaussian Fitter and Neural Rerenderer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        kinds = body_kinds()
        return {"required": {"kind": (kinds, {"default": kinds[0], "tooltip":
                "anny (embedded): the free Anny body (Apache-2.0 code, CC0 assets; its first use on a machine "
                "builds a cache in about 70 s). template (embedded): a procedural head and neck, needs nothing, "
                "fastest. smplx: SMPL-X from models/swapforge/smplx/smplx/SMPLX_NEUTRAL.npz (licence-gated, "
                "non-commercial; never downloaded; listed when the smplx package is installed)."})}}

    def load(self, kind):
        return (_load_surface(kind),)


class SwapForgeBodyTracker:
    DESCRIPTION = ("Fits the body model to the 68 face landmarks of one person in every frame (the first track "
                   "after Track Faces, else face 0 of each frame): head "
                   "rotation and position, jaw, neck, shape. Frames without a face keep their place: their pose is "
                   "interpolated and flagged. Give init_track to re-track generated frames from an earlier track.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (BODY_TRACK, "IMAGE", "STRING")
    RETURN_NAMES = ("track", "preview", "report")
    OUTPUT_TOOLTIPS = ("The per-frame body track (one entry per frame).",
                       "The frames with the fitted landmarks drawn (orange on interpolated frames).",
                       "Landmark reprojection error per frame in px, and the flagged frames.")
    FUNCTION = "track"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "body_model": (BODY_MODEL, {"tooltip": "From Body Model Loader."}),
            "image": ("IMAGE", {"tooltip": "The frames (a video batch)."}),
            "faces": (FACES, {"tooltip": "From Detect Faces / Track Faces on these frames. After Track Faces one "
                                         "person is followed (the lowest track id); untracked, face 0 of each "
                                         "frame. Frames without that face (or a tracker-filled one) are "
                                         "interpolated."}),
            "iterations": ("INT", {"default": 300, "min": 1, "max": 10000, "tooltip":
                           "Maximum optimiser steps (stops early when converged). Re-tracking needs fewer."}),
            "smoothness": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 100.0, "step": 0.01, "tooltip":
                           "Weight of the temporal smoothness term (0 = none; higher = steadier, less responsive)."}),
        }, "optional": {
            "init_track": (BODY_TRACK, {"tooltip": "Re-track mode: start from this track (same frame count), e.g. "
                                                   "the original video's track when tracking generated frames."}),
            "retrack_expression": (["keep", "fit"], {"default": "keep", "tooltip":
                                   "Re-track mode: keep init_track's expression and refine the head pose only (GSwap's "
                                   "generated frames carry the target's expression on another face), or fit it too."}),
        }}

    def track(self, body_model, image, faces, iterations, smoothness, init_track=None, retrack_expression="keep"):
        frames = images_np(image)
        T, H, W = frames.shape[:3]
        faces.check_batch(T)
        lm = np.full((T, 68, 2), np.nan, np.float32)
        for t, (ff, k) in enumerate(zip(faces.frames, person_per_frame(faces, 0))):  # one person, by track id
            if k is not None and not bool(ff.interpolated[k]):
                if not has_landmarks68(ff.landmarks68[k]):
                    raise ValueError(f"{no_landmarks68_message('The Body Tracker')} (frame {t})")
                lm[t] = ff.landmarks68[k]
        if tuple(faces.frame_size) != (H, W):
            raise ValueError(f"SwapForge: the faces were detected on {faces.frame_size[1]}x{faces.frame_size[0]} px "
                             f"frames but the image is {W}x{H} px. Detect the faces on these same frames.")
        if init_track is not None:
            _check_track(init_track, body_model, T, (H, W), "the image")
        bar = progress(int(iterations))
        with torch.inference_mode(False), torch.enable_grad():
            tr = tracklib.fit_track(body_model, lm, (H, W), valid=np.isfinite(lm).all(axis=(1, 2)),
                                    iters=int(iterations), smooth=float(smoothness), init=init_track,
                                    fit_expression=init_track is None or retrack_expression == "fit",
                                    progress=lambda step, total: bar.update(1))
        return (tr, to_image(draw_track(frames, tr)), track_report(tr))


class SwapForgeGaussianFitter:
    DESCRIPTION = ("Trains a GSwap avatar (paper steps 4-7): neural Gaussians on the tracked body surface plus the "
                   "background encoder and rerenderer, on frames with their foreground and head masks. Batch sizes "
                   "must match the track; masks/backgrounds of batch 1 are shared. Slow: start with few steps.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (AVATAR, "IMAGE", "STRING")
    RETURN_NAMES = ("avatar", "preview", "report")
    OUTPUT_TOOLTIPS = ("The fitted avatar, for Neural Rerenderer and Save Avatar.",
                       "Frame 0 re-rendered by the trained avatar (inference features c_1).",
                       "Losses at the start and end, steps, Gaussians and the perceptual loss used.")
    FUNCTION = "fit"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "body_model": (BODY_MODEL, {"tooltip": "The body model the track was made with."}),
            "track": (BODY_TRACK, {"tooltip": "The track of these frames (re-tracked generated frames in GSwap)."}),
            "frames": ("IMAGE", {"tooltip": "The training frames (I_gen: the head-swapped generated frames)."}),
            "fg_mask": ("MASK", {"tooltip": "Foreground (person) mask per frame (A_gen); batch 1 = shared."}),
            "steps": ("INT", {"default": 300, "min": 1, "max": 100000, "tooltip":
                      "Optimiser steps (each renders batch_frames frames). The CPU renders a few steps a second at "
                      "small sizes; GSwap's quality needs thousands on a GPU."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip":
                     "Seed of the feature init, network init and frame order (same seed, same avatar)."}),
            "batch_frames": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Frames per optimiser step."}),
            "uv_resolution": ("INT", {"default": 128, "min": 8, "max": 512, "tooltip":
                              "Side of the UV grid the Gaussians are sampled on (more = more Gaussians, slower)."}),
            "preview_every": ("INT", {"default": 50, "min": 0, "max": 100000, "tooltip":
                              "Show a preview render of frame 0 in the node every this many steps (0 = never)."}),
        }, "optional": {
            "head_mask": ("MASK", {"tooltip": "Head region per frame (M_head); default: fg_mask."}),
            "backgrounds": ("IMAGE", {"tooltip": "Target frames with the head removed and inpainted; default: the "
                                                 "frames with the head_mask region set to black."}),
            "resume_avatar": (AVATAR, {"tooltip": "Continue training this avatar (fitted on these same frames)."}),
            "target_frames": ("IMAGE", {"tooltip": "I_tgt, the original target frames: the background loss (eq. 15) "
                                                   "compares with them outside M_fore; default: the training frames."}),
            "region": (["head and neck", "whole surface"], {"default": "head and neck", "tooltip":
                       "Where the Gaussians go: the head and neck triangles that face the camera in some frame, "
                       "starting half a texel wide (GSwap), or every triangle, a texel wide."}),
            "crop_to_head": ("BOOLEAN", {"default": True, "tooltip":
                             "Train on the window around the head regions only (same result, less work)."}),
            "deterministic": ("BOOLEAN", {"default": False, "tooltip":
                              "Bit-reproducible on the CPU: one thread while fitting (process-wide, restored after)."}),
            "render_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                             "Splat the Gaussians at this fraction of the frame size (1 = the paper; 0 = automatic: "
                             "1 on CUDA, 0.5 on a CPU, about 4x less work). The avatar keeps it for rendering."}),
        }}

    def fit(self, body_model, track, frames, fg_mask, steps, seed, batch_frames, uv_resolution, preview_every,
            head_mask=None, backgrounds=None, resume_avatar=None, target_frames=None, region="head and neck",
            crop_to_head=True, deterministic=False, render_scale=0.0):
        img = images_np(frames)
        T, H, W = img.shape[:3]
        _check_track(track, body_model, T, (H, W), "the frames")
        fg = _per_frame(mask_np(fg_mask), T, "fg_mask", "the frames")
        _check_size(fg, (H, W), "fg_mask", "the frames")
        head = fg if head_mask is None else _per_frame(mask_np(head_mask), T, "head_mask", "the frames")
        _check_size(head, (H, W), "head_mask", "the frames")
        if backgrounds is None:
            bg = img * (1.0 - head[..., None])
        else:
            bg = _per_frame(images_np(backgrounds), T, "backgrounds", "the frames")
            _check_size(bg, (H, W), "backgrounds", "the frames")
        tgt = img if target_frames is None else _per_frame(images_np(target_frames), T, "target_frames", "the frames")
        _check_size(tgt, (H, W), "target_frames", "the frames")
        lpips_dir = os.path.join(services.models_dir(), "swapforge", "lpips")
        perceptual = load_perceptual(lpips_dir)
        bar = progress(int(steps))
        device = services.torch_device()
        head_region = region == "head and neck"
        cfg = hslib.HeadSwapConfig(fit_steps=int(steps), seed=int(seed), batch_frames=int(batch_frames),
                                   uv_resolution=int(uv_resolution), deterministic=bool(deterministic),
                                   scale_factor=0.5 if head_region else 1.0,
                                   render_scale=float(render_scale) or None)
        avatar, history, (x0, y0, x1, y1) = hslib.fit_clip(
            body_model, track, img, fg, head, bg, tgt, cfg, perceptual=perceptual, device=device,
            resume_from=resume_avatar, region=region, crop=bool(crop_to_head), preview_every=int(preview_every),
            progress=lambda step, total, pv: bar.update(1, None if pv is None else _comfy_preview(pv)))
        rest, transforms = _posed(body_model, track, 0, 1)
        crop = lambda a: torch.from_numpy(np.ascontiguousarray(a[:1, y0:y1, x0:x1]))  # noqa: E731
        with torch.no_grad():
            first = render_frame(avatar.field, avatar.renderer, rest[0].to(device), transforms[0].to(device),
                                 hslib.shift_K(track.K, x0, y0).to(device), track.extrinsics[0].to(device),
                                 crop(bg)[0].to(device), crop(head)[0].to(device), None,
                                 render_scale=float(avatar.config.get("render_scale", 1.0)))
        preview = img[:1].copy()
        preview[0, y0:y1, x0:x1] = first["display"].cpu().numpy()
        report = (f"{len(history)} step(s) on {T} frame(s) ({x1 - x0}x{y1 - y0} window), "
                  f"{avatar.field.num_gaussians} Gaussians ({region}), rasteriser {hslib.rasteriser_name(device)}, "
                  f"perceptual: {avatar.config.get('perceptual')}"
                  + ("" if perceptual is not None else f" (LPIPS weights not found in {lpips_dir})") + "\n"
                  f"loss start {history[0]['total']:.4f} -> end {history[-1]['total']:.4f}\n"
                  + "end: " + ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if k != "total"))
        return (avatar, to_image(preview), report)


class SwapForgeNeuralRerenderer:
    DESCRIPTION = ("Renders the avatar on the target tracks (paper steps 5-6, inference features c_1): splats the "
                   "Gaussians, fuses them with the background inside the head mask and rerenders. One output frame "
                   "per tracked frame.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "m_fore")
    OUTPUT_TOOLTIPS = ("The rerendered frames (one per tracked frame).",
                       "M_fore per frame: the avatar's alpha inside the head mask.")
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "avatar": (AVATAR, {"tooltip": "From Gaussian Fitter or Load Avatar."}),
            "body_model": (BODY_MODEL, {"tooltip": "The body model the avatar and the track were made with."}),
            "track": (BODY_TRACK, {"tooltip": "The target video's track (drives the avatar's pose)."}),
            "backgrounds": ("IMAGE", {"tooltip": "Target frames with the head removed and inpainted (batch 1 = shared)."}),
            "head_mask": ("MASK", {"tooltip": "Head region per target frame (M_head); batch 1 = shared."}),
        }, "optional": {
            "target_frames": ("IMAGE", {"tooltip": "The target frames: when given, the output is composited: inside "
                                                   "M_head the render where the avatar covers and the background "
                                                   "elsewhere, the target's own pixels outside M_head."}),
        }}

    def render(self, avatar, body_model, track, backgrounds, head_mask, target_frames=None):
        if avatar.surface_kind and avatar.surface_kind != body_model.name:
            raise ValueError(f"SwapForge: the avatar was fitted on the {avatar.surface_kind!r} body model but the body "
                             f"model given is {body_model.name!r}. Connect the body model the avatar was fitted with.")
        T = len(track)
        bg = _per_frame(images_np(backgrounds), T, "backgrounds", "the track")
        hw = track.image_size
        _check_size(bg, hw, "backgrounds", "the track's frames")
        head = _per_frame(mask_np(head_mask), T, "head_mask", "the track")
        _check_size(head, hw, "head_mask", "the track's frames")
        _check_track(track, body_model, T, hw, "the backgrounds")
        bar = progress(T)
        window = hslib.crop_window([head], hw, 0.04)
        x0, y0, x1, y1 = window
        # through ComfyUI's memory manager (ModelPatcher + load_models_gpu): loaded on its device like its models
        managed = services.ManagedModel(torch.nn.ModuleDict({"field": avatar.field, "renderer": avatar.renderer}))
        managed.load()
        device = managed.device
        crops, fores = hslib.render_clip(avatar, body_model, track, bg, head, window, device,
                                         progress=lambda t: bar.update(1))
        masks = np.zeros((T,) + tuple(hw), np.float32)
        masks[:, y0:y1, x0:x1] = fores
        if target_frames is not None:
            tgt = _per_frame(images_np(target_frames), T, "target_frames", "the track")
            _check_size(tgt, hw, "target_frames", "the track's frames")
            images = np.stack([hslib.composite(tgt[t], crops[t], head[t], window, bg[t], fores[t]) for t in range(T)])
        else:  # the rerendered window over the backgrounds (outside the window the render is the background)
            images = bg.copy()
            images[:, y0:y1, x0:x1] = crops
        return (to_image(images), to_mask(masks))


class SwapForgeSaveAvatar:
    DESCRIPTION = "Saves a GSwap avatar as a .safetensors file in models/swapforge/avatars."
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "avatar": (AVATAR, {"tooltip": "From Gaussian Fitter."}),
            "filename": ("STRING", {"default": "avatar", "tooltip": "File name (.safetensors is added)."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of that name."}),
        }}

    def save(self, avatar, filename, overwrite):
        path = services.new_file_path("swapforge_avatars", filename, "avatar", overwrite)
        avlib.save_avatar(avatar, path)
        return {"ui": {"text": [f"saved {path}"]}}


class SwapForgeLoadAvatar:
    DESCRIPTION = "Loads a GSwap avatar saved by Save Avatar from models/swapforge/avatars."
    CATEGORY = CATEGORY
    RETURN_TYPES = (AVATAR,)
    RETURN_NAMES = ("avatar",)
    OUTPUT_TOOLTIPS = ("The avatar stored in the file.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (services.list_files("swapforge_avatars"), {
            "tooltip": "An avatar file in models/swapforge/avatars."})}}

    def load(self, name):
        path = services.require_file("swapforge_avatars", name,
                                     "Save one with Save Avatar (avatars are .safetensors files).")
        with torch.inference_mode(False):  # normal tensors: the avatar may be trained further (resume)
            return (avlib.load_avatar(path),)


NODE_CLASS_MAPPINGS = {
    "SwapForge_BodyModelLoader": SwapForgeBodyModelLoader,
    "SwapForge_BodyTracker": SwapForgeBodyTracker,
    "SwapForge_GaussianFitter": SwapForgeGaussianFitter,
    "SwapForge_NeuralRerenderer": SwapForgeNeuralRerenderer,
    "SwapForge_SaveAvatar": SwapForgeSaveAvatar,
    "SwapForge_LoadAvatar": SwapForgeLoadAvatar,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SwapForge_BodyModelLoader": "Body Model Loader (SwapForge)",
    "SwapForge_BodyTracker": "Body Tracker (SwapForge)",
    "SwapForge_GaussianFitter": "Gaussian Fitter (SwapForge)",
    "SwapForge_NeuralRerenderer": "Neural Rerenderer (SwapForge)",
    "SwapForge_SaveAvatar": "Save Avatar (SwapForge)",
    "SwapForge_LoadAvatar": "Load Avatar (SwapForge)",
}
