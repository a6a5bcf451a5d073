"""GSwap head swap on video (models/gswap: head_mask, background, source, reenact, headswap, metrics): the stages
of the paper's pipeline as nodes, the all-in-one Head Swap, and the swap metrics.

Types: SWAPFORGE_SOURCE_HEADS (models.gswap.source.SourceSet), SWAPFORGE_INPAINT_MODEL
(models.gswap.inpaint.InpaintModel). Batches are videos: every per-frame output has the target's frame count; a
frame without a target face passes through unchanged and is named in the report.
"""
from __future__ import annotations

import json

import numpy as np

from ..models.face import detect as detlib
from ..models.face import video
from ..models.face.records import FaceSet, FrameFaces
from ..models.gswap import background as bglib
from ..models.gswap import head_mask as hmlib
from ..models.gswap import headswap as hslib
from ..models.gswap import metrics as mlib
from ..models.gswap import reenact as relib
from ..models.gswap import source as srclib
from ..models.gswap.inpaint import load_inpaint_model
from ..models.gswap.losses import load_perceptual
from . import services
from .common import FACE_MODEL, FACES, images_np, mask_np, progress, to_image, to_mask
from .gswap import AVATAR, BODY_MODEL, _load_surface, body_kinds

CATEGORY = "SwapForge/Head swap"
SOURCE_MIN_SCORE = 0.5  # the Detect Faces default: dlib's clear faces (its scores run -1..2), insightface 0..1
SOURCE_HEADS = "SWAPFORGE_SOURCE_HEADS"
INPAINT_MODEL = "SWAPFORGE_INPAINT_MODEL"


def _frames_and_faces(image, faces, what="the image"):
    frames = images_np(image)
    faces.check_batch(len(frames), what)
    if tuple(faces.frame_size) != tuple(frames.shape[1:3]):
        raise ValueError(f"SwapForge: the faces were detected on {faces.frame_size[1]}x{faces.frame_size[0]} px "
                         f"frames but {what} is {frames.shape[2]}x{frames.shape[1]} px. Expected the same size. "
                         "Detect the faces on these same frames.")
    return frames, hslib.face_arrays(faces)


def _same_frames(a: np.ndarray, frames: np.ndarray, what: str, ref: str) -> np.ndarray:
    if a.shape[0] == 1 and frames.shape[0] > 1:
        a = np.repeat(a, frames.shape[0], 0)
    if a.shape[0] != frames.shape[0] or a.shape[1:3] != frames.shape[1:3]:
        raise ValueError(f"SwapForge: {what} is {a.shape[0]} frame(s) of {a.shape[2]}x{a.shape[1]} px but {ref} is "
                         f"{frames.shape[0]} frame(s) of {frames.shape[2]}x{frames.shape[1]} px. Expected one per "
                         f"frame at the same size (or a single one). Connect the {what} made for these frames.")
    return a


def _overlay(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Preview: the frames dimmed outside the mask."""
    return frames * (0.35 + 0.65 * mask[..., None])


def _source_images(*images):
    """Each connected source IMAGE input, every frame of it a photo: a list of [h, w, 3] arrays."""
    out = []
    for img in images:
        if img is not None:
            out.extend(list(images_np(img)))
    return out


def _prepare_sources(face_model, photos, neck_line, hair):
    """Detect the largest face of each photo and prepare the source heads (report notes which were skipped)."""
    lms, k5s, notes = [], [], []
    for i, ph in enumerate(photos):
        found = detlib.filter_faces(face_model.detect(detlib.to_uint8(ph)), SOURCE_MIN_SCORE, 32, 0, "largest_first")
        if len(found) == 0:
            lms.append(None), k5s.append(None), notes.append("no face found")
            continue
        lms.append(found.landmarks68[0]), k5s.append(found.kps5[0])
        notes.append(f"{len(found)} faces, the largest used" if len(found) > 1 else "")
    return srclib.prepare_sources(photos, lms, k5s, notes, neck_line=neck_line, hair=hair)


# ------------------------------------------------------------------------------------------------- masks

class SwapForgeHeadMask:
    DESCRIPTION = ("Head mask M_head of every frame without model weights: the 68 landmarks lay out face, hair, "
                   "ears and the neck down to a line, GrabCut refines it on the colours, and neighbouring frames "
                   "steady it. Any other MASK (SAM, a segmenter) can be used instead.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("head_mask", "preview", "report")
    OUTPUT_TOOLTIPS = ("One soft head mask per frame (0 where the frame has no face).",
                       "The frames dimmed outside the mask.", "Frames without a face.")
    FUNCTION = "mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The frames (a video batch or one photo)."}),
            "faces": (FACES, {"tooltip": "Faces of these frames (Detect Faces, Track Faces): the tracked person, or "
                                         "face 0 of each frame."}),
            "neck_line": ("FLOAT", {"default": 0.2, "min": -0.5, "max": 1.5, "step": 0.01, "tooltip":
                          "Where the mask ends below the chin, in face heights (eyes to chin). 0 keeps the target's "
                          "neck (the hole to remove in a target), 0.2 takes the neck (a source head, M_head)."}),
            "hair": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip":
                     "How far above the brows hair may reach (1 = about one face height; raise for big hair)."}),
            "smoothing": ("INT", {"default": 2, "min": 0, "max": 10, "tooltip":
                          "Temporal median over +- this many frames, aligned by the landmarks (0 = none)."}),
            "grabcut": ("BOOLEAN", {"default": True, "tooltip":
                        "Refine the landmark layout on the colours (off: the layout alone, faster)."}),
        }}

    def mask(self, image, faces, neck_line, hair, smoothing, grabcut):
        frames, (lm, _, valid, _, note) = _frames_and_faces(image, faces)
        T, H, W = frames.shape[:3]
        masks = np.zeros((T, H, W), np.float32)
        bar = progress(T)
        for t in range(T):
            if valid[t]:
                masks[t] = hmlib.head_mask(frames[t], lm[t], neck_line=neck_line, hair=hair, grabcut=grabcut)
            bar.update(1)
        masks = hmlib.smooth_masks(masks, np.nan_to_num(lm), valid, int(smoothing))
        missing = [t for t in range(T) if not valid[t]]
        report = f"{note}\nno face (empty mask): " + (", ".join(map(str, missing)) if missing else "none")
        return (to_mask(masks), to_image(_overlay(frames, masks)), report)


# -------------------------------------------------------------------------------------------- background

class SwapForgeLoadInpaintModel:
    DESCRIPTION = ("Loads a LaMa-type inpainting model from models/inpaint through spandrel (e.g. big-lama.pt), "
                   "for Head Background. Without one, Head Background fills from the clip and OpenCV.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (INPAINT_MODEL,)
    RETURN_NAMES = ("inpaint_model",)
    OUTPUT_TOOLTIPS = ("The inpainting model.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (services.list_files("inpaint", (".pt", ".pth", ".safetensors")), {
            "tooltip": "A file in models/inpaint (LaMa: big-lama.pt, Apache-2.0)."})}}

    def load(self, name):
        path = services.require_file("inpaint", name, "Expected a LaMa-type inpainting model such as big-lama.pt "
                                     "(Apache-2.0), as the ComfyUI inpainting packs distribute it.")
        return (load_inpaint_model(path),)


class SwapForgeHeadBackground:
    DESCRIPTION = ("The target's background with the head removed (Î_tgt, paper step 6): with a still camera each "
                   "hidden pixel comes from frames where it shows, the rest is inpainted once for the whole clip "
                   "(no flicker); with a moving camera every frame is inpainted. An inpainting model replaces "
                   "OpenCV's fill.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("backgrounds", "hole", "report")
    OUTPUT_TOOLTIPS = ("The frames with the head region filled.", "The region that was filled (the grown mask).",
                       "The route taken (clean plate or per frame) and the share of the hole seen in other frames.")
    FUNCTION = "fill"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The target frames."}),
            "head_mask": ("MASK", {"tooltip": "What to remove per frame (Head Mask with a low neck_line keeps the "
                                              "target's neck and clothes)."}),
            "grow": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip":
                     "Pixels the hole reaches beyond the mask (0 = 2 % of the frame's long side)."}),
            "camera": (["auto", "still", "moving"], {"default": "auto", "tooltip":
                       "still: fill from the other frames; moving: inpaint each frame; auto: decide from the clip."}),
        }, "optional": {
            "inpaint_model": (INPAINT_MODEL, {"tooltip": "From Load Inpaint Model (LaMa); default OpenCV (Telea)."}),
        }}

    def fill(self, image, head_mask, grow, camera, inpaint_model=None):
        frames = images_np(image)
        masks = _same_frames(mask_np(head_mask)[..., None], frames, "head_mask", "the image")[..., 0]
        bar = progress(len(frames))
        still = None if camera == "auto" else camera == "still"
        bgs, holes, info = bglib.fill_backgrounds(frames, masks, grow_px=(int(grow) or None), inpaint=inpaint_model,
                                                  still=still, progress=lambda t: bar.update(1))
        report = (f"route: {info['route']}; fill: {info['inpainter']}; {100 * info['plate_coverage']:.0f} % of the "
                  "hole seen in other frames")
        return (to_image(bgs), to_mask(holes.astype(np.float32)), report)


# ---------------------------------------------------------------------------------------------- sources

class SwapForgeSourceHeads:
    DESCRIPTION = ("Prepares the source person (paper sec. III-B): the largest face of each photo, its head cut out "
                   "(face, hair, ears, neck), its pose and face shape. With a target background and faces, each "
                   "head is also placed on the target's background at the target head's scale and place.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (SOURCE_HEADS, "IMAGE", "STRING")
    RETURN_NAMES = ("sources", "placed", "report")
    OUTPUT_TOOLTIPS = ("The source heads, for Generate Head Frames.",
                       "Each usable photo's head on the first target background frame (or on black).",
                       "Per photo: the face used, its pose; the primary (most frontal) photo.")
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "Finds the face in each source photo."}),
            "source": ("IMAGE", {"tooltip": "Photos of the source person (a batch; each photo's largest face)."}),
            "neck_line": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.5, "step": 0.01,
                                    "tooltip": "Where the source head ends below the chin (face heights)."}),
            "hair": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                               "tooltip": "Hair allowance above the brows (1 = about one face height)."}),
        }, "optional": {
            "source_2": ("IMAGE", {"tooltip": "More photos of the same person (any size)."}),
            "source_3": ("IMAGE", {"tooltip": "More photos of the same person (any size)."}),
            "target_background": ("IMAGE", {"tooltip": "Head Background output: the first frame is the canvas."}),
            "target_faces": (FACES, {"tooltip": "The target's faces: their first face's 5 keypoints place the heads."}),
        }}

    def prepare(self, face_model, source, neck_line, hair, source_2=None, source_3=None, target_background=None,
                target_faces=None):
        photos = _source_images(source, source_2, source_3)
        sources = _prepare_sources(face_model, photos, neck_line, hair)
        placed = []
        if target_background is not None and target_faces is not None:
            bg = images_np(target_background)[0]
            _, k5, valid, _, _ = hslib.face_arrays(target_faces)
            if not valid.any():
                raise ValueError("SwapForge: target_faces has no face in any frame. Expected the target's faces "
                                 "(Detect Faces on the target frames).")
            first = int(np.flatnonzero(valid)[0])
            for head in sources.heads:
                placed.append(srclib.place_on_background(head, bg, k5[first])[0])
        else:
            size = max(max(h.image.shape[:2]) for h in sources.heads)
            for head in sources.heads:
                canvas = np.zeros((size, size, 3), np.float32)
                h, w = head.image.shape[:2]
                canvas[:h, :w] = head.image * head.mask[..., None]
                placed.append(canvas)
        return (sources, to_image(np.stack(placed)), "\n".join(sources.report))


class SwapForgeGenerateHeadFrames:
    DESCRIPTION = ("The generated frames I_gen (embedded route, no diffusion model): the source head carried to "
                   "each target frame's pose and expression through a 3D face model, colour-matched and laid over "
                   "the background. A diffusion route can replace this node: the stages after it only need I_gen, "
                   "A_gen and M_head.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "MASK", FACES, "STRING")
    RETURN_NAMES = ("generated", "a_gen", "m_head", "generated_faces", "report")
    OUTPUT_TOOLTIPS = ("I_gen: one frame per target frame (frames without a target face pass through).",
                       "A_gen: where the source head is in each generated frame.",
                       "M_head: the target's head mask, the removed hole and the source head united (Fig. 4).",
                       "The landmarks each generated frame was built to (for the Body Tracker's re-track).",
                       "Flagged frames and the colour match.")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The target frames (I_tgt)."}),
            "faces": (FACES, {"tooltip": "The target's faces (Track Faces for a video)."}),
            "backgrounds": ("IMAGE", {"tooltip": "Head Background: the target with the head removed."}),
            "sources": (SOURCE_HEADS, {"tooltip": "From Source Heads."}),
            "colour": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                       "How far the source's skin colour moves towards the target's lighting (0 = not at all)."}),
        }, "optional": {
            "head_mask": ("MASK", {"tooltip": "The target's head mask (Head Mask), united into m_head."}),
            "hole": ("MASK", {"tooltip": "Head Background's hole, united into m_head."}),
        }}

    def generate(self, image, faces, backgrounds, sources, colour, head_mask=None, hole=None):
        frames, (lm, k5, valid, _, note) = _frames_and_faces(image, faces)
        T, H, W = frames.shape[:3]
        bgs = _same_frames(images_np(backgrounds), frames, "backgrounds", "the image")
        bar = progress(T)
        i_gen, a_gen, lm_drv, flagged = relib.reenact_clip(sources, frames, lm, valid, bgs, colour,
                                                           progress=lambda t: bar.update(1))
        zeros = np.zeros((T, H, W), np.float32)
        tm = zeros if head_mask is None else _same_frames(mask_np(head_mask)[..., None], frames, "head_mask", "the image")[..., 0]
        hl = zeros if hole is None else _same_frames(mask_np(hole)[..., None], frames, "hole", "the image")[..., 0]
        m_head = np.maximum(hslib.union_region(tm, hl, sources, k5, valid & ~np.isin(np.arange(T), flagged)), a_gen)
        gen_faces = FaceSet([FrameFaces(boxes=_boxes(lm_drv[t:t + 1]), scores=[1.0], kps5=detlib.kps5_from_landmarks68(lm_drv[t:t + 1]),
                                        landmarks68=lm_drv[t:t + 1]) if np.isfinite(lm_drv[t]).all() else FrameFaces.empty()
                             for t in range(T)], (H, W), "driven landmarks")
        report = (f"target: {note}\nflagged (no target face, passed through): "
                  + (", ".join(map(str, flagged)) if flagged else "none"))
        return (to_image(i_gen), to_mask(a_gen), to_mask(m_head), gen_faces, report)


def _boxes(lm: np.ndarray) -> np.ndarray:
    return np.concatenate([lm.min(1), lm.max(1)], -1).astype(np.float32)


# ----------------------------------------------------------------------------------------------- all in one

class SwapForgeHeadSwap:
    DESCRIPTION = ("GSwap head swap in one node: the target video and a few photos of another person in, the video "
                   "with that person's head out (masks, background, generated frames, tracking, Gaussian avatar "
                   "fitting on the head, neural rerendering, composite). Slow on a CPU: minutes for a short clip.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE", AVATAR, "STRING")
    RETURN_NAMES = ("image", "generated", "avatar", "report")
    OUTPUT_TOOLTIPS = ("The swapped video: one frame per target frame (frames without a face pass through).",
                       "I_gen, the generated frames the avatar was fitted on (to compare).",
                       "The fitted avatar (Save Avatar keeps it).",
                       "Stages, times, tracking errors, the fit's losses and the flagged frames.")
    FUNCTION = "swap"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "Finds and tracks the faces (Face Model Loader)."}),
            "image": ("IMAGE", {"tooltip": "The target video's frames (GetVideoComponents), or one photo."}),
            "source": ("IMAGE", {"tooltip": "Photos of the person whose head goes in (largest face of each)."}),
            "steps": ("INT", {"default": 400, "min": 1, "max": 100000, "tooltip":
                      "Avatar fitting steps (one frame each). About 1 s a step at 256 px on 2 CPU cores."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "tooltip": "Seed of the avatar fit."}),
            "colour": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.05,
                                 "tooltip": "How far the source's skin colour moves towards the target's lighting."}),
            "hair": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                               "tooltip": "Hair allowance of the head masks (1 = about one face height)."}),
        }, "optional": {
            "source_2": ("IMAGE", {"tooltip": "More photos of the same person (any size)."}),
            "source_3": ("IMAGE", {"tooltip": "More photos of the same person (any size)."}),
            "body_model": (BODY_MODEL, {"tooltip": "The surface the avatar lives on (default: the embedded Anny)."}),
            "inpaint_model": (INPAINT_MODEL, {"tooltip": "An inpainting model for the background (default: embedded)."}),
            "uv_resolution": ("INT", {"default": 256, "min": 32, "max": 1024, "tooltip":
                              "UV texels per side; the head and neck get about a third (256: about 14k Gaussians on "
                              "Anny)."}),
            "deterministic": ("BOOLEAN", {"default": False, "tooltip":
                              "Bit-reproducible fit: one CPU thread while fitting (process-wide, restored after)."}),
            "face_index": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip":
                           "Which person of the target video: the faces are tracked and numbered in order of first "
                           "appearance (0 = the first)."}),
            "render_on": (list(hslib.RENDER_TRACKS), {"default": "generated", "tooltip":
                          "The track the avatar is rendered on: 'generated' (the re-track of the generated frames: "
                          "the target's motion on the source's face, default) or 'target' (the target's own track, "
                          "the paper's choice; the source's head then sits where the target's face proportions "
                          "put it, a few degrees off)."}),
        }}

    def swap(self, face_model, image, source, steps, seed, colour, hair, source_2=None, source_3=None,
             body_model=None, inpaint_model=None, uv_resolution=256, deterministic=False, face_index=0,
             render_on="generated"):
        frames = images_np(image)
        T = len(frames)
        cfg = hslib.HeadSwapConfig(fit_steps=int(steps), seed=int(seed), colour=float(colour), hair=float(hair),
                                   uv_resolution=int(uv_resolution), deterministic=bool(deterministic),
                                   render_track=str(render_on))
        surface = body_model if body_model is not None else _load_surface(body_kinds()[0])
        stages = {"detect": T, "head masks": T, "background": T, "generate": T, "track target": cfg.track_iters,
                  "re-track": cfg.retrack_iters, "fit": cfg.fit_steps, "render": T}
        bar = progress(sum(stages.values()))
        # a video is tracked (detector on keyframes, landmarks followed in between: ids stay stable)
        faces = video.detect_or_track(face_model, frames, progress=lambda: bar.update(1))
        lm, k5, valid, interp, note = hslib.face_arrays(faces, int(face_index))
        sources = _prepare_sources(face_model, _source_images(source, source_2, source_3), cfg.neck_line, cfg.hair)
        done = {}

        def on_progress(stage, i, n):
            step = i - done.get(stage, 0)
            done[stage] = i
            bar.update(max(step, 0))

        import os
        perceptual = load_perceptual(os.path.join(services.models_dir(), "swapforge", "lpips"))
        # a face the tracker only filled in (no detection) is not swapped: the frame passes through, flagged
        result = hslib.run(frames, lm, k5, valid & ~interp, sources, surface, cfg, perceptual=perceptual,
                           device=services.torch_device(), progress=on_progress, inpaint=inpaint_model)
        report = [f"target: {note}"] + sources.report + result.report + [
            "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds_by_stage.items())]
        return (to_image(result.frames), to_image(result.generated), result.avatar, "\n".join(report))


# --------------------------------------------------------------------------------------------- metrics

class SwapForgeSwapMetrics:
    DESCRIPTION = ("Measures a swapped clip: identity similarity to the source and to the target (the embedded "
                   "recogniser, not ArcFace), head pose and expression kept from the target (68-landmark "
                   "stand-ins for the paper's APD and AED), and flicker inside the head region beyond the target's "
                   "own motion. JSON in the report.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = ("report", "csim_source", "frames_closer_to_source")
    OUTPUT_TOOLTIPS = ("The metrics as JSON (means and per-frame values).", "Mean identity cosine to the source.",
                       "Fraction of frames whose face is closer to the source than to the target.")
    FUNCTION = "measure"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "Detects the faces and embeds identities (dlib: 128-d)."}),
            "image": ("IMAGE", {"tooltip": "The swapped video."}),
            "target": ("IMAGE", {"tooltip": "The original target video (same frames)."}),
            "source": ("IMAGE", {"tooltip": "The source photos (the identity to reach)."}),
        }, "optional": {
            "head_mask": ("MASK", {"tooltip": "Region for the flicker measure (M_head); without it no flicker."}),
            "generated": ("IMAGE", {"tooltip": "I_gen too: its flicker and identity are reported beside the output's."}),
        }}

    def measure(self, face_model, image, target, source, head_mask=None, generated=None):
        out = images_np(image)
        tgt = _same_frames(images_np(target), out, "target", "the image")
        region = None if head_mask is None else _same_frames(mask_np(head_mask)[..., None], out, "head_mask", "the image")[..., 0]
        bar = progress(len(out) * (3 if generated is not None else 2))
        src_emb = []
        for ph in _source_images(source):
            u8 = detlib.to_uint8(ph)
            f = detlib.filter_faces(face_model.detect(u8), SOURCE_MIN_SCORE, 32, 1, "largest_first")
            if len(f):
                src_emb.append(face_model.embed(u8, f)[0])
        if not src_emb:
            raise ValueError("SwapForge: no face found in the source photos. Expected photos of the source person's "
                             "face. Connect them to `source`.")
        sid = mlib.identity(np.stack(src_emb))
        data = lambda fr: mlib.clip_faces(face_model, fr, lambda: bar.update(1), SOURCE_MIN_SCORE)  # noqa: E731
        tdat = data(tgt)
        res = mlib.swap_metrics(data(out), tdat, sid, out.shape[1:3], out, tgt, region)
        if generated is not None:
            gen = _same_frames(images_np(generated), out, "generated", "the image")
            res.update(mlib.swap_metrics(data(gen), tdat, sid, out.shape[1:3], gen, tgt, region, prefix="generated_"))
        return (json.dumps(res, indent=1), float(res["csim_source_mean"]), float(res["frames_closer_to_source"]))


NODE_CLASS_MAPPINGS = {
    "SwapForge_HeadMask": SwapForgeHeadMask,
    "SwapForge_LoadInpaintModel": SwapForgeLoadInpaintModel,
    "SwapForge_HeadBackground": SwapForgeHeadBackground,
    "SwapForge_SourceHeads": SwapForgeSourceHeads,
    "SwapForge_GenerateHeadFrames": SwapForgeGenerateHeadFrames,
    "SwapForge_HeadSwap": SwapForgeHeadSwap,
    "SwapForge_SwapMetrics": SwapForgeSwapMetrics,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SwapForge_HeadMask": "Head Mask (SwapForge)",
    "SwapForge_LoadInpaintModel": "Load Inpaint Model (SwapForge)",
    "SwapForge_HeadBackground": "Head Background (SwapForge)",
    "SwapForge_SourceHeads": "Source Heads (SwapForge)",
    "SwapForge_GenerateHeadFrames": "Generate Head Frames (SwapForge)",
    "SwapForge_HeadSwap": "Head Swap (SwapForge)",
    "SwapForge_SwapMetrics": "Swap Metrics (SwapForge)",
}
