"""The classic cut-and-paste part swap: the "FacePartsSwap" baseline of FuseAnyPart.

FuseAnyPart (Yu et al., NeurIPS 2024, sec. 4 and Table 1: FID 44.23 vs 10.54 for the diffusion model)
compares against swapping facial parts by cutting them from the reference photo and pasting them onto
the target. Here, for each requested part (eyes+brows, nose, mouth):

1. warp: a least-squares similarity (Umeyama 1991) maps the source part's landmarks onto the target's
   same landmarks, and the source photo is warped into the target frame with it (warp_part);
2. colour: the warped source is colour-matched to the target inside the part mask (Reinhard et al.
   2001, models/face/color.py);
3. blend: it is blended into the running result with the soft part mask (models/partswap/blend.py:
   Poisson, multiband or alpha).

No learning is involved; this is the reference point the diffusion swap should beat.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..face.color import COLOR_SPACES, match_color
from ..face.geometry import check_points, umeyama
from ..face.records import FaceSet, has_landmarks68, no_landmarks68_message
from .blend import BLEND_MODES, blend
from .parts import PART_LANDMARKS, PARTS, part_masks

Source = Tuple[np.ndarray, np.ndarray]  # (image [h, w, 3] float32 0..1, landmarks68 [68, 2] px)


def _image(a, what: str) -> np.ndarray:
    a = np.asarray(a, np.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"SwapForge classic swap: {what} must be an RGB image [H, W, 3], got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"SwapForge classic swap: {what} contains NaN or infinite values. Check the node that "
                         f"produced it.")
    return a


def _lm(a, what: str) -> np.ndarray:
    return check_points(a, 68, what, "classic swap")


def _check_sources(sources: Dict[str, Source]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    if not isinstance(sources, dict):
        raise ValueError("SwapForge classic swap: sources must be a dict part -> (image, landmarks68).")
    bad = [p for p in sources if p not in PARTS]
    if bad:
        raise ValueError(f"SwapForge classic swap: unknown part(s) {bad} in sources. Expected any of {PARTS}.")
    out = {}
    for p, src in sources.items():
        try:
            img, lm = src
        except (TypeError, ValueError):
            raise ValueError(f"SwapForge classic swap: sources[{p!r}] must be a pair (image, landmarks68).") from None
        out[p] = (_image(img, f"the {p} source image"), _lm(lm, f"the {p} source landmarks"))
    return out


def _check_options(blend_mode: str, color_match: str) -> None:
    if blend_mode not in BLEND_MODES:
        raise ValueError(f"SwapForge classic swap: unknown blend mode {blend_mode!r}. Expected one of {BLEND_MODES}.")
    if color_match not in COLOR_SPACES:
        raise ValueError(f"SwapForge classic swap: unknown colour matching {color_match!r}. Expected one of "
                         f"{COLOR_SPACES}.")


def warp_part(source_image, source_landmarks68, target_landmarks68, part: str,
              frame_size) -> Tuple[np.ndarray, np.ndarray]:
    """Warp the source photo so that its `part` lands on the target's part: (warped [H, W, 3] f32, affine 2x3).

    The similarity (rotation, uniform scale, translation; Umeyama 1991 via models/face/geometry.py) is
    fitted on the part's own landmarks only (eyes+brows 22 points, nose 9, mouth 20), source -> target.
    The eye centres are deliberately not added for the nose and mouth: they would tie the fit to the
    inter-ocular geometry and shift the pasted part whenever the source's proportions differ from the
    target's, and each group already has enough points spread in 2-D for a 4-parameter fit. The affine
    maps source pixels to target pixels (x' = A @ [x, y, 1]). Warping: cv2.warpAffine, bicubic, border
    reflect-101, clipped to 0..1.
    """
    if part not in PARTS:
        raise ValueError(f"SwapForge classic swap: unknown part {part!r}. Expected one of {PARTS}.")
    img = _image(source_image, "the source image")
    s_lm = _lm(source_landmarks68, "the source landmarks")
    t_lm = _lm(target_landmarks68, "the target landmarks")
    h, w = (int(v) for v in frame_size)
    idx = list(PART_LANDMARKS[part])
    affine = umeyama(s_lm[idx], t_lm[idx])
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:, :2])) < 1e-12:
        raise ValueError(f"SwapForge classic swap: the {part} landmarks are degenerate (all in one point), so the "
                         f"source cannot be aligned. Re-detect the faces.")
    warped = cv2.warpAffine(img, affine, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    return np.clip(warped, 0.0, 1.0).astype(np.float32), affine


def swap_parts_frame(target, target_landmarks68, sources: Dict[str, Source], blend_mode: str = "poisson",
                     color_match: str = "rgb", dilate_frac: float = 0.15,
                     feather_frac: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """Classic part swap on one face of one frame: (out [H, W, 3] f32, mask [H, W] f32).

    For each part in `sources` (in the order eyes, nose, mouth): warp_part, match_color of the warped
    source to the target inside the target's part mask (statistics of both over mask > 0.5), then blend
    into the running result with that soft mask (parts.part_masks with dilate_frac/feather_frac). `mask`
    is the union (maximum) of the swapped parts' masks. Parts not in `sources` are untouched. With
    "poisson" and "alpha" every pixel where mask == 0 is the target's, bit for bit; "multiband" also
    changes a band of up to blend.multiband_support_radius(5) px around the mask.
    """
    tgt = _image(target, "the target image")
    t_lm = _lm(target_landmarks68, "the target landmarks")
    srcs = _check_sources(sources)
    _check_options(blend_mode, color_match)
    h, w = tgt.shape[:2]
    todo = [p for p in PARTS if p in srcs]
    out = tgt.copy()
    union = np.zeros((h, w), np.float32)
    if not todo:
        return out, union
    masks = part_masks(t_lm, (h, w), dilate_frac, feather_frac, todo)
    for p in todo:
        img, s_lm = srcs[p]
        warped, _ = warp_part(img, s_lm, t_lm, p, (h, w))
        m = masks[p]
        warped = match_color(warped, tgt, mask=m, space=color_match)
        out = blend(blend_mode, warped, out, m)
        np.maximum(union, m, out=union)
    return out, union


def swap_parts_batch(targets, target_faces: FaceSet, sources: Dict[str, Source], face_index: Optional[int] = 0,
                     blend_mode: str = "poisson", color_match: str = "rgb", dilate_frac: float = 0.15,
                     feather_frac: float = 0.1, progress: Optional[Callable[[], None]] = None
                     ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Classic part swap over a batch: (out [B, H, W, 3] f32, mask [B, H, W] f32, status per frame).

    targets [B, H, W, 3] float32 0..1, target_faces detected on that same batch. face_index: which face
    of each frame to edit (detector order), None = every face (swapped one after the other). A frame
    without a face, or without face `face_index`, is passed through bit-identical with an all-zero mask
    and status "no face"; the others get "swapped" (see swap_parts_frame). The output always has B
    frames. `progress`, if given, is called with no argument once per frame (it may raise to interrupt).
    """
    tg = np.asarray(targets, np.float32)
    if tg.ndim != 4 or tg.shape[-1] != 3:
        raise ValueError(f"SwapForge classic swap: targets must be an image batch [B, H, W, 3], got shape {tg.shape}.")
    if not np.all(np.isfinite(tg)):
        raise ValueError("SwapForge classic swap: the target images contain NaN or infinite values. Check the node "
                         "that produced them.")
    b, h, w = tg.shape[:3]
    target_faces.check_batch(b, "target image")
    if tuple(int(v) for v in target_faces.frame_size) != (h, w):
        raise ValueError(f"SwapForge classic swap: the faces were detected on {tuple(target_faces.frame_size)} frames "
                         f"but the target image is {(h, w)}. Connect the faces detected on this same image.")
    if face_index is not None and (int(face_index) != face_index or face_index < 0):
        raise ValueError(f"SwapForge classic swap: face_index must be a face number >= 0 or None (all faces), "
                         f"got {face_index!r}.")
    srcs = _check_sources(sources)
    _check_options(blend_mode, color_match)

    out = tg.copy()
    mask = np.zeros((b, h, w), np.float32)
    status: List[str] = []
    for i, ff in enumerate(target_faces.frames):
        if face_index is None:
            faces = list(range(len(ff)))
        else:
            faces = [int(face_index)] if face_index < len(ff) else []
        if not faces:
            status.append("no face")
        else:
            frame = tg[i]
            for k in faces:
                if not has_landmarks68(ff.landmarks68[k]):
                    raise ValueError(f"{no_landmarks68_message('The classic part swap')} (frame {i}, face {k})")
                frame, m = swap_parts_frame(frame, ff.landmarks68[k], srcs, blend_mode, color_match,
                                            dilate_frac, feather_frac)
                np.maximum(mask[i], m, out=mask[i])
            out[i] = frame
            status.append("swapped")
        if progress is not None:
            progress()
    return out, mask, status
