"""The target's background with the head removed, Î_tgt (paper step 6: "remove the head from the target frame and
inpaint it"), from the clip itself or from an inpainting model.

`clean_plate` (embedded default, no weights): when the camera is still, a pixel hidden by the head in one frame
is often visible in another. The plate is the per-pixel mean of the frames where the pixel lies outside the
(grown) head mask; `camera_still` checks the premise (the frames outside the masks agree with the plate).
`fill_backgrounds` fills each frame's hole from the plate, with the plate's exposure matched to the frame in a
ring around the hole, and the pixels no frame ever showed by OpenCV's inpainting (Telea) of the plate, once, so
the fill is the same in every frame (no flicker). When the camera moves, each frame is inpainted on its own.
An `inpaint` callable (a LaMa-type model loaded through spandrel: image [H, W, 3] and hole mask [H, W] -> image)
replaces OpenCV's inpainting in both cases.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

Inpainter = Callable[[np.ndarray, np.ndarray], np.ndarray]


def grow(masks: np.ndarray, pixels: int) -> np.ndarray:
    """Binary hole masks (> 0.05) grown by `pixels` (elliptic structuring element). [T, H, W] -> uint8."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(pixels) + 1,) * 2)
    return np.stack([cv2.dilate((m > 0.05).astype(np.uint8), k) for m in masks])


def clean_plate(frames: np.ndarray, holes: np.ndarray):
    """(plate [H, W, 3], seen [H, W] bool): the mean of each pixel over the frames where it is not in the hole."""
    frames = np.asarray(frames, np.float32)
    keep = (1 - holes.astype(np.float32))[..., None]
    total = np.zeros(frames.shape[1:], np.float64)
    count = np.zeros(frames.shape[1:3] + (1,), np.float64)
    for t in range(len(frames)):  # one frame at a time: no [T, H, W, 3] temporaries
        total += frames[t] * keep[t]
        count += keep[t]
    plate = (total / np.maximum(count, 1)).astype(np.float32)
    return plate, count[..., 0] > 0


def camera_still(frames: np.ndarray, holes: np.ndarray, plate: np.ndarray, tolerance: float = 0.04) -> bool:
    """True when the median over frames of the mean absolute difference to the plate outside the holes is below
    `tolerance` (a still camera; lighting changes and small motion stay below it)."""
    diffs = []
    for t in range(len(frames)):
        keep = holes[t] == 0
        if keep.any():
            diffs.append(float(np.abs(frames[t][keep] - plate[keep]).mean()))
    return bool(diffs) and float(np.median(diffs)) < tolerance


def opencv_inpaint(image: np.ndarray, hole: np.ndarray, radius: int = 5) -> np.ndarray:
    """OpenCV's Telea inpainting of `hole` (nonzero) in a float 0..1 image."""
    import cv2

    u8 = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    out = cv2.inpaint(u8, (hole > 0).astype(np.uint8), radius, cv2.INPAINT_TELEA)
    return out.astype(np.float32) / 255.0


def _ring(hole: np.ndarray, width: int) -> np.ndarray:
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1,) * 2)
    return (cv2.dilate(hole, k) > 0) & (hole == 0)


def fill_backgrounds(frames: np.ndarray, head_masks: np.ndarray, grow_px: Optional[int] = None,
                     inpaint: Optional[Inpainter] = None, still: Optional[bool] = None, progress=None):
    """Î_tgt for every frame: frames [T, H, W, 3] float 0..1, head_masks [T, H, W] (the region to remove).

    grow_px: how far the hole reaches beyond the mask (default 2 % of the frame's long side). still: force the
    still-camera route (True) or the per-frame route (False); default: `camera_still`. progress(t) after each
    frame. Returns (backgrounds [T, H, W, 3] float32, holes [T, H, W] uint8, info dict: route, plate coverage)."""
    T, H, W = frames.shape[:3]
    grow_px = int(round(0.02 * max(H, W))) if grow_px is None else int(grow_px)
    holes = grow(head_masks, grow_px)
    fill = inpaint or opencv_inpaint
    out = np.empty_like(frames, dtype=np.float32)
    plate, seen = clean_plate(frames, holes)
    if still is None:
        still = camera_still(frames, holes, plate)
    info = dict(route="clean plate" if still else "per-frame inpainting",
                plate_coverage=float(seen[holes.any(0) > 0].mean()) if holes.any() else 1.0,
                inpainter="model" if inpaint is not None else "opencv telea")
    if still:
        plate_full = fill(plate, ~seen) if (~seen).any() else plate
        for t in range(T):
            hole = holes[t]
            ring = _ring(hole, max(2, grow_px))
            gain = np.ones(3, np.float32)
            if ring.any():  # exposure of this frame against the plate, around the hole
                gain = (frames[t][ring].mean(0) + 1e-3) / (plate_full[ring].mean(0) + 1e-3)
            out[t] = np.where(hole[..., None] > 0, np.clip(plate_full * gain, 0, 1), frames[t])
            if progress is not None:
                progress(t)
    else:
        for t in range(T):
            out[t] = np.where(holes[t][..., None] > 0, fill(frames[t], holes[t]), frames[t])
            if progress is not None:
                progress(t)
    return out, holes, info
