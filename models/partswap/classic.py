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

Masks ("seam-aware", the default; part_region). The older mask, the target's own part hull grown by
dilate_frac x sqrt(width x height) of the part ("landmark hulls", parts.part_masks), left the donor's part
sticking out wherever the two parts differ in shape (the target's open lips under a smaller pasted mouth: a
double mouth), reached far sideways into temples and hair (the eyes part is about five times wider than
high), and took its colour statistics from inside the parts, whose content differs (teeth against an open
mouth). The seam-aware mask:

- is the hull of the target's part landmarks and of the donor's, mapped by the warp, so both parts are
  covered;
- is grown by dilate_frac and feathered (Gaussian, as parts.part_masks) by feather_frac times the smaller
  side of the target part's landmark box, so it hugs the part instead of reaching into the temples, the hair
  fringe and the cheeks;
- is cut where the warp has no source pixels (faded to 0 over the last 4 px, a 1 px Gaussian on the
  source area eroded by 4 px, and exactly 0 beyond): a part near the donor photo's edge would otherwise show
  the mirrored border as a hard straight edge;
- colours are matched (color_match) on the ring between the hull and the mask's outer edge (mostly skin in
  both images) instead of on the part itself.

Tried and dropped (worse on the seam metric or visibly): restricting the grown zone to pixels that a
per-face skin-colour model calls skin in both images (hard mask edges where makeup or shadow were not
"skin"); leaving outlier boundary pixels out of Poisson's boundary condition (steps at hair crossings, the
donor's grey temple hair pasted); clipping the result to the local colour range of both images (a hard line
where the clip stopped, or donor texture washed out when applied to the whole part).

Seams are measured with models/partswap/seams.py (bench/bench_part_swap_seams.py; README).

Pose: faces turned more than max_yaw degrees (models/face/pose.py) are left unchanged and reported as
"skipped: pose". DEFAULT_MAX_YAW = 25: frontal parts fit the slightly turned bundled portraits (obama2 at
-21 degrees, biden at 14, obama3 at 15) and the talking-head clips (at most 24 degrees except two), while on
the most turned faces seen here, Vermeer's "Girl with a Pearl Earring" (-28.5), a frame of the LivePortrait
clip s32 (-30) and an upward-looking portrait (31), the frontal eye pair already runs off the far side of the
face and the mouth is skewed. Profiles were not available to check; the estimate says "far turned" there.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..face.color import COLOR_SPACES, match_color
from ..face.geometry import apply_affine, check_points, umeyama
from ..face.pose import yaw_degrees
from ..face.records import FaceSet, has_landmarks68, no_landmarks68_message
from .blend import BLEND_MODES, blend
from .parts import PART_LANDMARKS, PARTS, part_masks, soft_polygon_mask

MASK_MODES = ("seam-aware", "landmark hulls")
DEFAULT_MAX_YAW = 25.0

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


def part_region(target_landmarks68: np.ndarray, source_landmarks68: np.ndarray, affine: np.ndarray,
                source_shape, part: str, frame_size, dilate_frac: float = 0.15,
                feather_frac: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """The seam-aware soft mask [H, W] of one part and the ring [H, W] (0/1) its colours are matched on
    (module docstring, "Masks")."""
    h, w = (int(v) for v in frame_size)
    idx = list(PART_LANDMARKS[part])
    t_pts = np.asarray(target_landmarks68, np.float64)[idx]
    d_pts = apply_affine(affine, np.asarray(source_landmarks68, np.float64)[idx])
    poly = cv2.convexHull(np.concatenate([t_pts, d_pts]).astype(np.float32)).reshape(-1, 2)
    size = float(max(1.0, (t_pts.max(0) - t_pts.min(0)).min()))
    m = soft_polygon_mask(poly, h, w, dilate_frac * size, feather_frac * size)
    valid = cv2.warpAffine(np.ones(tuple(source_shape[:2]), np.float32), affine, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    soft_valid = cv2.GaussianBlur(cv2.erode(valid, np.ones((9, 9), np.uint8)), (0, 0), 1.0)
    m = np.where((m > 0) & (valid >= 1.0), m * soft_valid, 0.0).astype(np.float32)
    hull = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull, np.round(poly * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    ring = ((m > 0.02) & (hull == 0)).astype(np.float32)
    return m, ring


def swap_parts_frame(target, target_landmarks68, sources: Dict[str, Source], blend_mode: str = "poisson",
                     color_match: str = "rgb", dilate_frac: float = 0.15, feather_frac: float = 0.1,
                     masks: str = "seam-aware", record: Optional[list] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Classic part swap on one face of one frame: (out [H, W, 3] f32, mask [H, W] f32).

    For each part in `sources` (in the order eyes, nose, mouth): warp_part, the part's mask (masks =
    "seam-aware": part_region, with Poisson's robust boundary; "landmark hulls": parts.part_masks, the
    target's own part hull grown by dilate_frac and feathered by feather_frac), match_color of the warped
    source to the target inside the mask (statistics of both over mask > 0.5), then blend into the running
    result with that mask. `mask` is the union (maximum) of the swapped parts' masks. Parts not in
    `sources` are untouched. With "poisson" and "alpha" every pixel where mask == 0 is the target's, bit for
    bit; "multiband" also changes a band of up to blend.multiband_support_radius(5) px around the mask.
    `record`, when a list, receives per part {"part", "before", "donor", "mask", "after"} (seams.py).
    """
    tgt = _image(target, "the target image")
    t_lm = _lm(target_landmarks68, "the target landmarks")
    srcs = _check_sources(sources)
    _check_options(blend_mode, color_match)
    if masks not in MASK_MODES:
        raise ValueError(f"SwapForge classic swap: unknown mask mode {masks!r}. Expected one of {MASK_MODES}.")
    h, w = tgt.shape[:2]
    todo = [p for p in PARTS if p in srcs]
    out = tgt.copy()
    union = np.zeros((h, w), np.float32)
    if not todo:
        return out, union
    hulls = part_masks(t_lm, (h, w), dilate_frac, feather_frac, todo) if masks == MASK_MODES[1] else None
    for p in todo:
        img, s_lm = srcs[p]
        warped, affine = warp_part(img, s_lm, t_lm, p, (h, w))
        m, ring = (hulls[p], None) if hulls is not None else part_region(t_lm, s_lm, affine, img.shape, p, (h, w),
                                                                          dilate_frac, feather_frac)
        stats = ring if ring is not None and ring.sum() >= 16 else m
        warped = match_color(warped, tgt, mask=stats, space=color_match)
        new = blend(blend_mode, warped, out, m)
        if record is not None:
            record.append({"part": p, "before": out, "donor": warped, "mask": m, "after": new})
        out = new
        np.maximum(union, m, out=union)
    return out, union


def swap_parts_batch(targets, target_faces: FaceSet, sources: Dict[str, Source], face_index: Optional[int] = 0,
                     blend_mode: str = "poisson", color_match: str = "rgb", dilate_frac: float = 0.15,
                     feather_frac: float = 0.1, progress: Optional[Callable[[], None]] = None,
                     max_yaw: float = DEFAULT_MAX_YAW, masks: str = "seam-aware"
                     ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Classic part swap over a batch: (out [B, H, W, 3] f32, mask [B, H, W] f32, status per frame).

    targets [B, H, W, 3] float32 0..1, target_faces detected on that same batch. face_index: which face
    of each frame to edit (detector order), None = every face (swapped one after the other). A face whose
    yaw (models/face/pose.py) exceeds max_yaw degrees is left unchanged (frontal parts on a turned face give
    doubled features). Status per frame: "swapped"; "no face" (the frame has none); "face K out of range
    (N faces)"; "skipped: pose (yaw Y deg, max_yaw M)"; with face_index None and several faces, one entry
    per face joined by "; " ("face 0 swapped; face 1 skipped: pose (...)"). A frame where nothing was
    swapped is passed through bit-identical with an all-zero mask. The output always has B frames.
    `progress`, if given, is called with no argument once per frame (it may raise to interrupt).
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
    if not (np.isfinite(max_yaw) and 0 <= max_yaw <= 90):
        raise ValueError(f"SwapForge classic swap: max_yaw must be 0..90 degrees, got {max_yaw}. "
                         f"{DEFAULT_MAX_YAW:g} swaps faces turned up to about a quarter of the way to a profile.")
    srcs = _check_sources(sources)
    _check_options(blend_mode, color_match)

    out = tg.copy()
    mask = np.zeros((b, h, w), np.float32)
    status: List[str] = []
    for i, ff in enumerate(target_faces.frames):
        n = len(ff)
        if n == 0:
            status.append("no face")
        elif face_index is not None and face_index >= n:
            status.append(f"face {face_index} out of range ({n} face{'s' if n > 1 else ''})")
        else:
            frame = tg[i]
            notes = []
            for k in (range(n) if face_index is None else [int(face_index)]):
                if not has_landmarks68(ff.landmarks68[k]):
                    raise ValueError(f"{no_landmarks68_message('The classic part swap')} (frame {i}, face {k})")
                if not np.all(np.isfinite(ff.landmarks68[k])):
                    raise ValueError(f"SwapForge classic swap: the landmarks of face {k} in frame {i} contain NaN "
                                     f"or infinite values. Re-run the face detection on these frames.")
                yaw = yaw_degrees(ff.landmarks68[k])
                if abs(yaw) > max_yaw:
                    notes.append(f"skipped: pose (yaw {yaw:+.0f} deg, max_yaw {max_yaw:g})")
                    continue
                frame, m = swap_parts_frame(frame, ff.landmarks68[k], srcs, blend_mode, color_match,
                                            dilate_frac, feather_frac, masks)
                np.maximum(mask[i], m, out=mask[i])
                notes.append("swapped")
            out[i] = frame
            if face_index is not None or n == 1:
                status.append(notes[0])
            else:
                status.append("; ".join(f"face {k} {note}" for k, note in enumerate(notes)))
        if progress is not None:
            progress()
    return out, mask, status
