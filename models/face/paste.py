"""Paste edited face crops back into their frames (the inverse of align.align_crop).

Pixel convention as in align.py: pixel centres at integer coordinates, the convention of
cv2.warpAffine, so the crop affine and its WARP_INVERSE_MAP use need no half-pixel correction.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import cv2
import numpy as np

from .align import snap_mask
from .color import COLOR_SPACES, match_color
from .records import CropSet

Progress = Optional[Callable[[], None]]


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    k = 2 * int(np.ceil(3.0 * sigma)) + 1  # odd kernel covering +-3 sigma
    return cv2.GaussianBlur(img, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def _morph(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    op = cv2.dilate if dilate else cv2.erode
    return op(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0.0)


def erode_feather(mask: np.ndarray, erode: int, feather: int) -> np.ndarray:
    """Shrink (erode > 0) or grow (erode < 0) a mask by |erode| px, then soften its edge inward.

    1. Grey-level erosion / dilation with an elliptical (disc) kernel of radius |erode|
       (cv2.MORPH_ELLIPSE, size 2|erode|+1): a disc of radius R becomes one of radius R - erode.
       Call the result E.
    2. Feather (feather > 0): Gaussian blur with sigma = feather / 2 (odd kernel, +-3 sigma) of E
       eroded by a further `feather` px (= 2 sigma), then min() with E. The extra erosion moves the
       blur's transition inside E, so at E's edge the blurred value is only ~Phi(-2) = 0.02 (a straight
       edge) and the min() with E, which guarantees the result never exceeds E (nor E's binary support),
       leaves no visible step there. The 0.5 level of the soft edge sits about `feather` px inside E.
       (Blurring E itself and cutting with E would leave a 0.5 step on E's edge: a seam.)

    3. Values within 1e-5 of 0 or 1 are snapped to 0 or 1 (``align.snap_mask``: float32 round-off).

    mask: [H, W] float in 0..1. Returns [H, W] float32 in 0..1.
    """
    m = np.asarray(mask, np.float32)
    if m.ndim != 2:
        raise ValueError(f"SwapForge paste: a mask must be [H, W], got shape {m.shape}.")
    if feather < 0:
        raise ValueError(f"SwapForge paste: feather must be >= 0 px, got {feather}. Use 0 for a hard edge.")
    m = np.clip(m, 0.0, 1.0)
    erode = int(erode)
    if erode != 0:
        m = _morph(m, abs(erode), dilate=erode < 0)
    if feather > 0:
        inner = _morph(m, int(feather), dilate=False)
        m = np.minimum(_gaussian_blur(inner, feather / 2.0), m)
    return snap_mask(m)


def _resize(img: np.ndarray, size: int, linear: bool = False) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    if linear:
        interp = cv2.INTER_LINEAR
    else:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def paste_back(frames: np.ndarray, crops: np.ndarray, cropset: CropSet, masks: Optional[np.ndarray] = None,
               erode: int = 0, feather: int = 8, color_match: str = "none",
               progress: Progress = None) -> Tuple[np.ndarray, np.ndarray]:
    """Composite edited crops into their frames; returns (frames_out [B,H,W,3], pasted_mask [B,H,W]).

    For each valid crop (placeholders, valid=False, are skipped, so frames without a face pass through
    bit-identical), in cropset order:
    - crops (and masks) whose side S differs from crop.size are resized to crop.size (INTER_AREA when
      shrinking, INTER_CUBIC when enlarging; masks INTER_LINEAR);
    - color_match "rgb" / "lab": ``color.match_color`` (Reinhard et al. 2001) of the edited crop to the
      original frame warped into crop space, statistics over mask > 0.5 (the whole square without masks);
    - the crop goes back to frame space with cv2.warpAffine(crop.affine, WARP_INVERSE_MAP), INTER_CUBIC,
      BORDER_REPLICATE, clipped to 0..1; the mask (given, else the full square) with INTER_LINEAR and
      BORDER_CONSTANT 0, then ``erode_feather`` in frame space;
    - out = frame * (1 - m) + warped * m where m > 0, and the frame's own values (bit-identical) where
      m == 0 (np.where). Several faces of one frame composite one after another.
    The returned mask is the union (max) of the masks actually used.

    progress() (no arguments, like nodes/services.Progress) is called once per crop, placeholders
    included (len(cropset) calls); its exceptions (interrupts) propagate.
    """
    if color_match not in COLOR_SPACES:
        raise ValueError(f"SwapForge paste: color_match must be one of {COLOR_SPACES}, got {color_match!r}.")
    frames = np.asarray(frames)
    crops = np.asarray(crops)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"SwapForge paste: frames must be [B, H, W, 3], got shape {frames.shape}. "
                         f"Pass the RGB IMAGE batch the crops were taken from.")
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"SwapForge paste: crops must be square [N, S, S, 3], got shape {crops.shape}. "
                         f"Pass the (edited) crop IMAGE batch.")
    n = len(cropset)
    if len(crops) != n:
        raise ValueError(f"SwapForge paste: {len(crops)} crop image(s) but the crop record describes {n}. "
                         f"Expected one crop image per record row; connect the crops made by the same Align "
                         f"& Crop run (and do not drop or add batch entries in between).")
    b, h, w = frames.shape[:3]
    if b != cropset.num_frames:
        raise ValueError(f"SwapForge paste: the crops were cut from {cropset.num_frames} frame(s) but "
                         f"{b} frame(s) were given. Connect the same image batch that went into Align & Crop.")
    if (h, w) != tuple(cropset.frame_size):
        raise ValueError(f"SwapForge paste: the crops were cut from {cropset.frame_size[0]}x"
                         f"{cropset.frame_size[1]} (HxW) frames but these frames are {h}x{w}. "
                         f"Connect the same image batch that went into Align & Crop.")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.ndim != 3 or len(masks) != n or masks.shape[1] != masks.shape[2]:
            raise ValueError(f"SwapForge paste: masks must be [N, S, S] with N = {n} (one per crop), got "
                             f"shape {masks.shape}. Connect the masks made by the same Align & Crop run.")
    for i, c in enumerate(cropset.crops):
        if not 0 <= c.frame_index < b:
            raise ValueError(f"SwapForge paste: crop {i} belongs to frame {c.frame_index}, outside the "
                             f"{b}-frame batch. The crop record does not match these frames.")
        if c.valid and not np.all(np.isfinite(crops[i])):
            raise ValueError(f"SwapForge paste: crop {i} (frame {c.frame_index}) contains NaN or infinite "
                             f"values. Expected finite pixels in 0..1; check the model that edited the crops.")
        if masks is not None and c.valid and not np.all(np.isfinite(masks[i])):
            raise ValueError(f"SwapForge paste: mask {i} (frame {c.frame_index}) contains NaN or infinite "
                             f"values. Expected a mask in 0..1.")

    src = frames.astype(np.float32, copy=False)
    out = src.copy()
    union = np.zeros((b, h, w), np.float32)
    for i, c in enumerate(cropset.crops):
        if c.valid:
            s = int(c.size)
            crop = _resize(np.asarray(crops[i], np.float32), s)
            if masks is None:
                m_crop = np.ones((s, s), np.float32)
            else:
                m_crop = np.clip(_resize(np.asarray(masks[i], np.float32), s, linear=True), 0.0, 1.0)
            frame = src[c.frame_index]
            if color_match != "none":
                ref = cv2.warpAffine(frame, c.affine, (s, s), flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REFLECT101)
                crop = match_color(crop, np.clip(ref, 0.0, 1.0), m_crop, space=color_match)
            inv = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
            warped = np.clip(cv2.warpAffine(np.ascontiguousarray(crop), c.affine, (w, h), flags=inv,
                                            borderMode=cv2.BORDER_REPLICATE), 0.0, 1.0)
            m = cv2.warpAffine(m_crop, c.affine, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
            m = erode_feather(m, erode, feather)
            cur = out[c.frame_index]
            m3 = m[..., None]
            out[c.frame_index] = np.where(m3 > 0, cur * (1.0 - m3) + warped * m3, cur)
            np.maximum(union[c.frame_index], m, out=union[c.frame_index])
        if progress is not None:
            progress()
    return out, union
