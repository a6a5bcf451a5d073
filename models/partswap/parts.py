"""FuseAnyPart part regions: part boxes, part polygons and soft part masks from 68 landmarks.

FuseAnyPart (Yu et al., NeurIPS 2024, sec. 3 and the released samples) works on three facial parts:
"eyes" (one region covering both eyes and both eyebrows), "nose" and "mouth"; everything else is the
"remain". The paper detects each part with Grounding DINO as an axis-aligned box; the released samples
post-process the three boxes so that they tile vertically (eyes bottom = nose top, nose bottom = mouth
top). Boxes are stored row-first and normalised: [y0, x0, y1, x1] in 0..1. Here the boxes come from the
iBUG 68 landmarks instead of Grounding DINO (no text detector needed; same convention).

Normalisation: points are (x, y) px with pixel centres at integer coordinates (models/face/records.py),
so the frame covers [-0.5, W - 0.5] x [-0.5, H - 0.5]; a pixel coordinate c maps to (c + 0.5) / size.
Pixel (row i, column j) lies inside a box when its centre does: y0 <= (i + 0.5) / H < y1 and
x0 <= (j + 0.5) / W < x1 (see `box_mask`).

The classic cut-and-paste baseline (models/partswap/classic.py, "FacePartsSwap" in the paper's Table 1)
uses the soft part masks of `part_masks`, which follow the landmarks' convex hulls instead of the boxes.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt

from ..face.geometry import check_points
from ..face.records import FaceSet, PartBoxes, PartSet, no_landmarks68_message

PARTS = ("eyes", "nose", "mouth")

# iBUG 300-W indices of each part's landmarks.
EYES_IDX = tuple(range(17, 27)) + tuple(range(36, 48))  # both brows (17-26) and both eyes (36-47)
NOSE_IDX = tuple(range(27, 36))                          # bridge 27-30, base 31-35
MOUTH_IDX = tuple(range(48, 68))                         # outer lip 48-59, inner lip 60-67
PART_LANDMARKS: Dict[str, Tuple[int, ...]] = {"eyes": EYES_IDX, "nose": NOSE_IDX, "mouth": MOUTH_IDX}

# Preview colours (RGB 0..1) used by draw_parts.
PART_COLORS = {"eyes": (1.0, 0.2, 0.2), "nose": (0.2, 1.0, 0.2), "mouth": (0.2, 0.4, 1.0)}


# ---------------------------------------------------------------- validation helpers

def _landmarks(landmarks68, what: str = "landmarks68") -> np.ndarray:
    a = np.asarray(landmarks68)
    if a.shape == (68, 2) and np.all(np.isnan(a)):   # the analyzer's mark: it gives no 68 landmarks
        raise ValueError(no_landmarks68_message("Part boxes and masks from landmarks"))
    return check_points(landmarks68, 68, what, "parts")


def _frame_size(frame_size) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in frame_size)
    except (TypeError, ValueError):
        raise ValueError(f"SwapForge parts: frame_size must be (H, W), got {frame_size!r}.") from None
    if h < 1 or w < 1:
        raise ValueError(f"SwapForge parts: frame_size must be positive (H, W), got {(h, w)}.")
    return h, w


def _check_parts(parts: Iterable[str]) -> Tuple[str, ...]:
    parts = tuple(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"SwapForge parts: unknown part(s) {bad}. Expected any of {PARTS}.")
    return parts


# ---------------------------------------------------------------- boxes (FuseAnyPart convention)

def _split(upper_pts_bottom: float, upper_box_bottom: float, lower_pts_top: float, lower_box_top: float) -> float:
    """Row (px) where an upper part's box ends and the lower part's box begins (see part_boxes_from_landmarks)."""
    if upper_pts_bottom > lower_pts_top:
        # The parts' landmarks overlap vertically (always true for the eyes and the nose bridge): the
        # upper part keeps all its points and its margin.
        return upper_box_bottom
    mid = 0.5 * (upper_box_bottom + lower_box_top)
    return float(np.clip(mid, upper_pts_bottom, lower_pts_top))


def part_boxes_from_landmarks(landmarks68, frame_size, margin: float = 0.1) -> PartBoxes:
    """FuseAnyPart part boxes of one face from its 68 landmarks: [y0, x0, y1, x1] normalised, float32.

    Paper convention (FuseAnyPart sec. 3, released samples): one "eyes" box covering both eyes and both
    brows, one "nose" box, one "mouth" box, tiled vertically. Steps:

    1. Raw boxes: bounds of the brows + eyes (17-26, 36-47), of the nose (27-35), of the mouth (48-67).
    2. Each box is widened on every side by `margin` times its own width (left/right) or height
       (top/bottom).
    3. Tiling. The split between an upper and a lower part (eyes/nose, then nose/mouth) is the midpoint
       between the upper box's widened bottom and the lower box's widened top, clamped so that no
       landmark changes part (between the upper part's lowest and the lower part's highest landmark).
       When the two parts' landmarks overlap vertically, which is always the case for the eyes and the
       nose bridge (27, often 28, lie between the eyes), the upper part wins: the split is the upper
       box's widened bottom. Hence nose points 27-28 (sometimes 29 on a tilted head) may lie in the
       eyes box, above the nose box; all brow/eye points are in the eyes box, nose points 30-35 in the
       nose box and all mouth points in the mouth box whenever the nose base lies above the upper lip.
       Result: eyes y1 == nose y0 and nose y1 == mouth y0 exactly.
    4. Clipped to the frame and normalised ((c + 0.5) / size, module docstring).

    The tiling assumes an upright face (roll well under 45 degrees), as on the paper's aligned crops; a
    face whose eyes, nose and mouth are not stacked top to bottom raises ValueError.
    """
    lm = _landmarks(landmarks68)
    h, w = _frame_size(frame_size)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"SwapForge parts: margin must be >= 0 (a fraction of each part's size), got {margin}.")

    raw = {}
    for part, idx in PART_LANDMARKS.items():
        pts = lm[list(idx)]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        bw, bh = x1 - x0, y1 - y0
        raw[part] = (pts, np.array([y0 - margin * bh, x0 - margin * bw, y1 + margin * bh, x1 + margin * bw]))

    (e_pts, eb), (n_pts, nb), (m_pts, mb) = raw["eyes"], raw["nose"], raw["mouth"]
    s1 = _split(e_pts[:, 1].max(), eb[2], n_pts[:, 1].min(), nb[0])
    s2 = _split(n_pts[:, 1].max(), nb[2], m_pts[:, 1].min(), mb[0])
    if not (eb[0] < s1 < s2 < mb[2]):
        raise ValueError(
            "SwapForge parts: the eyes, nose and mouth of this face are not stacked top to bottom, so the "
            "FuseAnyPart boxes cannot be tiled. The boxes expect an upright face (roll under about 45 "
            "degrees); rotate the frame or use aligned face crops.")
    eb[2], nb[0], nb[2], mb[0] = s1, s1, s2, s2

    out = {}
    for part, b in (("eyes", eb), ("nose", nb), ("mouth", mb)):
        ny = np.clip((np.array([b[0], b[2]]) + 0.5) / h, 0.0, 1.0)
        nx = np.clip((np.array([b[1], b[3]]) + 0.5) / w, 0.0, 1.0)
        box = np.array([ny[0], nx[0], ny[1], nx[1]], np.float32)
        if not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f"SwapForge parts: the {part} of this face lies outside the {h}x{w} frame, so it "
                             f"has no box. Use frames where the whole face is visible.")
        out[part] = box
    # Same float64 split -> same float32 value in both boxes: the tiling is exact.
    return PartBoxes(**out)


def compute_parts(faceset: FaceSet, margin: float = 0.1) -> PartSet:
    """SWAPFORGE_PARTS for every face of every frame (same order as the FaceSet); see part_boxes_from_landmarks."""
    frames = []
    for fi, ff in enumerate(faceset.frames):
        boxes = []
        for k in range(len(ff)):
            try:
                boxes.append(part_boxes_from_landmarks(ff.landmarks68[k], faceset.frame_size, margin))
            except ValueError as e:
                raise ValueError(f"{e} (frame {fi}, face {k})") from None
        frames.append(boxes)
    return PartSet(frames=frames, frame_size=tuple(faceset.frame_size), source="landmarks",
                   track_ids=[ff.track_ids.copy() for ff in faceset.frames])


def box_mask(box_yxyx_norm, frame_size) -> np.ndarray:
    """Hard mask [H, W] float32 of one normalised [y0, x0, y1, x1] box: 1 for pixels whose centre is inside.

    This is how the FuseAnyPart authors draw their inpainting mask (the union of the part boxes at full
    resolution, paper sec. 3.3). Pixel (i, j) is inside when y0 <= (i + 0.5) / H < y1 and
    x0 <= (j + 0.5) / W < x1.
    """
    h, w = _frame_size(frame_size)
    b = np.asarray(box_yxyx_norm, np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"SwapForge parts: a part box must be 4 finite numbers [y0, x0, y1, x1] in 0..1, got {b}.")
    yc = (np.arange(h) + 0.5) / h
    xc = (np.arange(w) + 0.5) / w
    iy = (yc >= b[0]) & (yc < b[2])
    ix = (xc >= b[1]) & (xc < b[3])
    return (iy[:, None] & ix[None, :]).astype(np.float32)


# ---------------------------------------------------------------- polygons and soft masks (classic swap)

def part_polygons(landmarks68) -> Dict[str, np.ndarray]:
    """Convex hull [K, 2] (x, y) px, float32, of each part's landmarks (same groups as the boxes)."""
    lm = _landmarks(landmarks68)
    out = {}
    for part, idx in PART_LANDMARKS.items():
        hull = cv2.convexHull(lm[list(idx)].astype(np.float32))
        out[part] = hull.reshape(-1, 2).astype(np.float32)
    return out


def part_size(poly: np.ndarray) -> float:
    """A part's size in px: the geometric mean of its landmark bounds' width and height."""
    span = poly.max(0) - poly.min(0)
    return float(np.sqrt(max(span[0], 1.0) * max(span[1], 1.0)))


def soft_polygon_mask(poly: np.ndarray, h: int, w: int, dilate_px: float, sigma_px: float) -> np.ndarray:
    """Filled polygon dilated by dilate_px (value 1), then exp(-d^2 / (2 sigma^2)) at distance d outside,
    cut to 0 beyond 4 sigma. Computed in an ROI that may extend past the frame, so distances are true."""
    reach = 4.0 * sigma_px
    pad = int(np.ceil(dilate_px + reach)) + 2
    ex0 = int(np.floor(poly[:, 0].min())) - pad
    ey0 = int(np.floor(poly[:, 1].min())) - pad
    ex1 = int(np.ceil(poly[:, 0].max())) + pad + 1
    ey1 = int(np.ceil(poly[:, 1].max())) + pad + 1
    x0, y0, x1, y1 = max(ex0, 0), max(ey0, 0), min(ex1, w), min(ey1, h)
    out = np.zeros((h, w), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out  # the part is entirely outside the frame
    roi = np.zeros((ey1 - ey0, ex1 - ex0), np.uint8)
    shift = 4  # sub-pixel vertices (1/16 px)
    pts = np.round((poly - [ex0, ey0]) * (1 << shift)).astype(np.int32)
    cv2.fillConvexPoly(roi, pts, 255, lineType=cv2.LINE_8, shift=shift)
    r = int(round(dilate_px))
    if r > 0:
        roi = cv2.dilate(roi, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    if sigma_px > 0:
        # exact Euclidean distance to the region. scipy's, not cv2.distanceTransform(DIST_MASK_PRECISE): the
        # latter's multithreaded float results varied between calls on equal input (flaky masks, seen in tests)
        d = distance_transform_edt(roi == 0)
        m = np.exp(-0.5 * (d / sigma_px) ** 2).astype(np.float32)
        m[d > reach] = 0.0
    else:
        m = (roi > 0).astype(np.float32)
    out[y0:y1, x0:x1] = m[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]
    return out


def part_masks(landmarks68, frame_size, dilate_frac: float = 0.15, feather_frac: float = 0.1,
               parts: Sequence[str] = PARTS) -> Dict[str, np.ndarray]:
    """Soft masks [H, W] float32 of each part of one face (the classic cut-and-paste region).

    Each part's convex hull (part_polygons) is filled and dilated by `dilate_frac` x the part's size
    (elliptical structuring element), where size = sqrt(width x height) of the part's landmark bounds;
    the mask is exactly 1 there. Outside, it is feathered with a Gaussian profile: exp(-d^2 / (2 s^2))
    at distance d px from the dilated region, s = `feather_frac` x size, and exactly 0 beyond d = 4 s
    (where the profile is 3.4e-4, under half an 8-bit step). Feathering outward keeps the whole part
    (e.g. the lower eyelids, which lie close to the eyes hull's edge) at full weight, so a pasted part
    never shows a ghost of the target's part; a Gaussian blur of the dilated hull would leave ~0.9 there.
    feather_frac = 0 gives the hard dilated hull.
    """
    h, w = _frame_size(frame_size)
    parts = _check_parts(parts)
    if not (np.isfinite(dilate_frac) and dilate_frac >= 0 and np.isfinite(feather_frac) and feather_frac >= 0):
        raise ValueError(f"SwapForge parts: dilate_frac and feather_frac must be >= 0, got {dilate_frac}, {feather_frac}.")
    polys = part_polygons(landmarks68)
    out = {}
    for p in parts:
        size = part_size(polys[p])
        out[p] = soft_polygon_mask(polys[p], h, w, dilate_frac * size, feather_frac * size)
    return out


def render_part_masks(faceset: FaceSet, parts: Sequence[str] = PARTS, face_index: Optional[int] = None,
                      dilate_frac: float = 0.15, feather_frac: float = 0.1) -> Dict[str, np.ndarray]:
    """Per part, soft masks [B, H, W] float32 for a whole FaceSet (see part_masks).

    A frame's mask is the union (maximum) over its faces, or only face `face_index` when given. Frames
    without a face (or without that face index) get zeros.
    """
    parts = _check_parts(parts)
    h, w = _frame_size(faceset.frame_size)
    b = len(faceset.frames)
    out = {p: np.zeros((b, h, w), np.float32) for p in parts}
    for fi, ff in enumerate(faceset.frames):
        if face_index is None:
            faces = range(len(ff))
        else:
            faces = [face_index] if 0 <= face_index < len(ff) else []
        for k in faces:
            masks = part_masks(ff.landmarks68[k], (h, w), dilate_frac, feather_frac, parts)
            for p in parts:
                np.maximum(out[p][fi], masks[p], out=out[p][fi])
    return out


def draw_parts(images, partset: PartSet, thickness: Optional[int] = None) -> np.ndarray:
    """Preview: [B, H, W, 3] float32 copies of `images` with each face's part boxes outlined.

    Eyes red, nose green, mouth blue. A box [y0, x0, y1, x1] is drawn around the pixels box_mask selects.
    """
    imgs = np.asarray(images, np.float32)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise ValueError(f"SwapForge parts: images must be [B, H, W, 3], got shape {imgs.shape}.")
    b, h, w = imgs.shape[:3]
    if len(partset.frames) != b:
        raise ValueError(f"SwapForge parts: the parts were computed on {len(partset.frames)} frame(s) but the "
                         f"image has {b}. Connect the parts computed on this same image.")
    if tuple(partset.frame_size) != (h, w):
        raise ValueError(f"SwapForge parts: the parts were computed on {tuple(partset.frame_size)} frames but the "
                         f"image is {(h, w)}. Connect the parts computed on this same image.")
    t = thickness if thickness is not None else max(1, int(round(min(h, w) / 256)))
    out = imgs.copy()
    for fi, faces in enumerate(partset.frames):
        canvas = np.ascontiguousarray(out[fi])
        for pb in faces:
            for part, box in pb.as_dict().items():
                # First and last pixel rows/columns whose centres are inside the box.
                r0 = int(np.ceil(box[0] * h - 0.5))
                c0 = int(np.ceil(box[1] * w - 0.5))
                r1 = int(np.ceil(box[2] * h - 0.5)) - 1
                c1 = int(np.ceil(box[3] * w - 0.5)) - 1
                cv2.rectangle(canvas, (c0, r0), (c1, r1), PART_COLORS[part], t)
        out[fi] = canvas
    return out
