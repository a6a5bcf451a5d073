"""Head masks M_head (paper step 2 and Fig. 4) from 68 landmarks and colour segmentation, with no model weights.

`head_prior` lays out, from the 68 landmarks, where a head can be: the face (jaw line and a forehead above the
brows), an ellipse around it for hair and ears, and the neck down to `neck_line` face heights below the chin.
`head_mask` refines that prior with OpenCV's GrabCut on the frame (a crop around the head, at most
`work_size` px): the inner face is sure foreground, the face and cranium probable foreground, the rest of the prior
(hair, ears, neck) and a band around it probable background that must win on colour, everything further away sure
background; the result is cut to the prior (grown a little), cut
below the neck line, reduced to the region joined to the face, its holes filled, and feathered. Any other MASK
(SAM, a segmenter) can stand in for it.

`smooth_masks` steadies a clip's masks: each frame's mask is the median of its neighbours' (+-radius frames)
after carrying them onto it by the similarity between the frames' landmarks (so head motion does not smear).

`carry_mask` is Fig. 4's step: a source head mask carried onto a target frame by the similarity that maps the
source's 5 keypoints onto the target's (Umeyama), to be united with the target's own mask so the region
covers both head shapes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..face.geometry import umeyama

FACE_CONTOUR = list(range(17))
BROWS = list(range(17, 27))


def _face_frame(lm: np.ndarray):
    """Eye centre, chin, face width and the head's up vector (unit, image coordinates) of 68 landmarks."""
    eyes = 0.5 * (lm[36:42].mean(0) + lm[42:48].mean(0))
    chin = lm[8]
    up = eyes - chin
    height = float(np.linalg.norm(up))
    up = up / max(height, 1e-6)
    width = float(np.linalg.norm(lm[16] - lm[0]))
    return eyes, chin, width, height, up


def head_prior(lm: np.ndarray, shape, neck_line: float = 0.35, hair: float = 1.0):
    """Masks (uint8 0/1, shape [H, W]) from 68 landmarks [68, 2]: (face hull with forehead, head ellipse for hair
    and ears, neck band, below-the-neck-line region). neck_line: how far below the chin the mask ends, in face
    heights (eyes to chin); hair: scale of the hair allowance above the brows (1 = about one face height)."""
    import cv2

    H, W = shape[:2]
    eyes, chin, width, height, up = _face_frame(lm)
    right = np.array([-up[1], up[0]])
    if right @ (lm[16] - lm[0]) < 0:
        right = -right
    forehead = lm[BROWS] + up * 0.45 * height
    face = np.concatenate([lm[FACE_CONTOUR], forehead[::-1]]).astype(np.float32)
    hull = cv2.convexHull(face).astype(np.int32)
    face_m = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(face_m, hull, 1)
    # head ellipse: from the chin to the top of the hair (eyes + (0.95 + 0.4 hair) face heights; the skull top is
    # about one face height above the eyes), wide enough for ears and hair
    top = 0.95 + 0.4 * hair
    centre = eyes + up * 0.5 * (top - 1.0) * height
    axes = (0.72 * width, 0.5 * (top + 1.0) * height)
    angle = float(np.degrees(np.arctan2(up[0], -up[1])))
    ell = np.zeros((H, W), np.uint8)
    cv2.ellipse(ell, ((float(centre[0]), float(centre[1])), (2 * float(axes[0]), 2 * float(axes[1])), angle), 1, -1)
    # cranium: surely head (hair or skin) in every pose a frontal detector finds
    cran = np.zeros((H, W), np.uint8)
    cc = eyes + up * 0.45 * height
    cv2.ellipse(cran, ((float(cc[0]), float(cc[1])), (0.8 * width, 0.9 * height), angle), 1, -1)
    face_m = face_m | cran
    # neck: a band from the jaw down to the neck line
    nl = chin - up * neck_line * height
    half = 0.36 * width
    neck_poly = np.array([lm[4], lm[12], nl + right * half, nl - right * half], np.float32)
    neck = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(neck, cv2.convexHull(neck_poly).astype(np.int32), 1)
    # everything beyond the neck line (the side of the line away from the face)
    yy, xx = np.mgrid[0:H, 0:W]
    below = (((xx - nl[0]) * up[0] + (yy - nl[1]) * up[1]) < 0).astype(np.uint8)
    return face_m, ell, neck, below


def head_mask(image: np.ndarray, lm: np.ndarray, neck_line: float = 0.35, hair: float = 1.0, iterations: int = 3,
              work_size: int = 160, feather: float = 0.02, grabcut: bool = True) -> np.ndarray:
    """Soft head mask [H, W] float32 in 0..1 of one frame: image [H, W, 3] float 0..1 or uint8, lm [68, 2]."""
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    H, W = img.shape[:2]
    face_m, ell, neck, below = head_prior(lm, (H, W), neck_line, hair)
    prior = ((ell | neck) & (1 - below)) | face_m
    eyes, chin, width, height, up = _face_frame(lm)
    if not grabcut:
        hard = prior
    else:
        ys, xs = np.nonzero(prior)
        pad = int(0.5 * width) + 2
        x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + pad + 1)
        y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + pad + 1)
        crop = img[y0:y1, x0:x1]
        s = min(1.0, work_size / max(crop.shape[:2]))
        size = (max(8, int(round(crop.shape[1] * s))), max(8, int(round(crop.shape[0] * s))))
        small = lambda m: cv2.resize(m[y0:y1, x0:x1], size, interpolation=cv2.INTER_NEAREST)  # noqa: E731
        gc = np.full(size[::-1], cv2.GC_BGD, np.uint8)
        grown = cv2.dilate(prior, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pad + 1,) * 2))
        # the colour models start from the surely-head regions: face and cranium are probably head; the rest of
        # the prior (hair, ears, the neck) starts as probably background and must win on colour, so a collar
        # or a scarf inside the neck band stays out while neck skin (the face's colours) comes in
        gc[small(grown) > 0] = cv2.GC_PR_BGD
        gc[small(face_m) > 0] = cv2.GC_PR_FGD
        core = cv2.erode(face_m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(0.15 * width)) | 1,) * 2))
        gc[small(core) > 0] = cv2.GC_FGD
        gc[small(below) > 0] = cv2.GC_BGD
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        work = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        try:
            cv2.grabCut(work, gc, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
            fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
        except cv2.error:  # degenerate colour models (e.g. a flat frame): keep the prior
            fg = small(prior)
        full = np.zeros((H, W), np.uint8)
        full[y0:y1, x0:x1] = cv2.resize(fg, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        margin = cv2.dilate(prior, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(0.1 * width)) | 1,) * 2))
        hard = (full & margin & (1 - below)) | face_m
        hard = _largest_joined_to(hard, face_m)
        hard = _fill_holes(hard)
    sigma = max(0.5, feather * height * 2)
    soft = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), sigma)
    return np.clip(soft, 0, 1).astype(np.float32)


def _largest_joined_to(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    import cv2

    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = np.unique(lab[(seed > 0) & (lab > 0)])
    return np.isin(lab, keep).astype(np.uint8) if len(keep) else mask.astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    H, W = m.shape
    flood = np.pad(1 - m, 1, constant_values=1)
    ff = np.zeros((H + 4, W + 4), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 2)
    return ((m > 0) | (flood[1:-1, 1:-1] == 1)).astype(np.uint8)


def similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, translation) mapping src_pts onto dst_pts, least squares."""
    return umeyama(np.asarray(src_pts, np.float64), np.asarray(dst_pts, np.float64), True)


def carry_mask(mask: np.ndarray, src_kps5: np.ndarray, dst_kps5: np.ndarray, dst_shape) -> np.ndarray:
    """Paper Fig. 4: a mask [h, w] carried onto a frame of size dst_shape by the similarity that maps the source's
    5 keypoints onto the target's. Returns [H, W] float32."""
    import cv2

    M = similarity(src_kps5, dst_kps5)
    H, W = dst_shape[:2]
    return cv2.warpAffine(np.asarray(mask, np.float32), M, (W, H), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def smooth_masks(masks: np.ndarray, landmarks: np.ndarray, valid: Optional[Sequence[bool]] = None,
                 radius: int = 2) -> np.ndarray:
    """Temporal median of each frame's mask and its +-radius neighbours, each carried onto the frame by the
    similarity between their landmarks (the rigid points of the face). masks [T, H, W], landmarks [T, 68, 2];
    frames with valid False are neither smoothed nor used."""
    import cv2

    T, H, W = masks.shape
    valid = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    rigid = [27, 30, 33, 36, 39, 42, 45, 8]
    out = masks.copy()
    for t in range(T):
        if not valid[t] or radius <= 0:
            continue
        stack = [masks[t]]
        for u in range(max(0, t - radius), min(T, t + radius + 1)):
            if u == t or not valid[u]:
                continue
            M = similarity(landmarks[u, rigid], landmarks[t, rigid])
            stack.append(cv2.warpAffine(masks[u], M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
        out[t] = np.median(np.stack(stack), axis=0)
    return out.astype(np.float32)


def without_neck(lm: np.ndarray, shape, offset: float = 0.0, soft: float = 0.03) -> np.ndarray:
    """[H, W] float32: 0 in the neck zone under the jaw (below the lower jaw line, landmarks 3-13, moved down by
    `offset` face heights, between the jaw corners), 1 elsewhere, with a ramp `soft` face heights wide. Hair or
    anything else beside the neck stays outside the zone."""
    import cv2

    H, W = shape[:2]
    eyes, chin, width, height, up = _face_frame(lm)
    jaw = lm[3:14] - up * offset * height
    poly = np.concatenate([jaw, [jaw[-1] - up * 3 * height, jaw[0] - up * 3 * height]]).astype(np.float32)
    zone = np.zeros((H, W), np.float32)
    cv2.fillPoly(zone, [np.round(poly * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    if soft > 0:
        zone = cv2.GaussianBlur(zone, (0, 0), max(0.5, soft * height))
    return (1.0 - np.clip(zone, 0, 1)).astype(np.float32)


def neck_fade(lm: np.ndarray, shape, length: float) -> np.ndarray:
    """[H, W] float32: 1 everywhere except in the neck zone under the jaw (`without_neck`'s zone), where it falls
    linearly from 1 at the chin to 0 at `length` face heights below it: a source neck laid over the target's
    neck fades into it instead of ending in an edge."""
    H, W = shape[:2]
    eyes, chin, width, height, up = _face_frame(lm)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    below = -((xx - chin[0]) * up[0] + (yy - chin[1]) * up[1])  # px below the chin along the face's axis
    ramp = np.clip(1.0 - below / max(length * height, 1e-3), 0, 1)
    zone = 1.0 - without_neck(lm, shape, 0.0, soft=0.0)
    return (1.0 - zone * (1.0 - ramp)).astype(np.float32)
