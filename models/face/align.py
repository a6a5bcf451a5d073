"""Face alignment: template affines (FFHQ, ArcFace), aligned crops and soft face masks.

Pixel convention (records.py, and the one cv2.warpAffine uses): points are (x, y) pixels with pixel
*centres* at integer coordinates, so the outer edge of an image of width W runs from x = -0.5 to
x = W - 0.5. An affine A (2x3) maps frame pixels to crop pixels, x_crop = A @ [x, y, 1], and
``cv2.warpAffine(frame, A, (size, size))`` produces the crop without any half-pixel correction.

Sources:
- FFHQ: Karras et al. 2019, NVlabs/ffhq-dataset ``download_ffhq.py: recreate_aligned_images``.
- ArcFace: Deng et al. 2019; the 112x112 5-point template and its scaling follow insightface
  ``python-package/insightface/utils/face_align.py`` (``arcface_dst``, ``estimate_norm``).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np

from .geometry import apply_affine, check_points, umeyama
from .records import Crop, CropSet, FaceSet

TEMPLATES = ("ffhq", "arcface")
SIZES = (256, 512, 1024)
MIN_SIZE = 16

#: insightface ``arcface_dst``: left eye, right eye, nose tip, left / right mouth corner, 112x112 crop.
ARCFACE_112 = np.array([[38.2946, 51.6963],
                        [73.5318, 51.5014],
                        [56.0252, 71.7366],
                        [41.5493, 92.3655],
                        [70.7299, 92.2041]], np.float64)

Progress = Optional[Callable[[], None]]


def _check_size(size) -> int:
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"SwapForge align: crop size must be an integer >= {MIN_SIZE}, got {size!r}. "
                         f"Pick one of {SIZES}.")
    return int(size)


def _points(a, n: int, what: str) -> np.ndarray:
    return check_points(a, n, what, "align")


def ffhq_quad(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """The FFHQ crop quadrilateral [4, 2] (top-left, bottom-left, bottom-right, top-right).

    Transcribes ``recreate_aligned_images`` of NVlabs/ffhq-dataset step by step:
    eye_avg = (eye_left + eye_right)/2, eye_to_eye = eye_right - eye_left,
    mouth_avg = (mouth_left + mouth_right)/2, eye_to_mouth = mouth_avg - eye_avg,
    x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1], x /= |x|,
    x *= max(|eye_to_eye| * 2.0, |eye_to_mouth| * 1.8), y = flipud(x) * [-1, 1],
    c = eye_avg + eye_to_mouth * 0.1, quad = [c - x - y, c - x + y, c + x + y, c + x - y].
    The quad is a square of side 2|x|; the recipe's shrink / pad / crop steps only serve speed and
    antialiasing and do not change the geometry, so they are not reproduced.
    """
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    mouth_left, mouth_right = np.asarray(mouth_left, np.float64), np.asarray(mouth_right, np.float64)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not norm > 1e-6:
        raise ValueError("SwapForge align: the eye and mouth points coincide, so no FFHQ crop can be "
                         "built. Expected distinct eye and mouth positions; check the landmarks of this face.")
    x = x / norm
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_quad_targets(size: int) -> np.ndarray:
    """Where the FFHQ quad corners land in a size x size crop, in pixel-centre coordinates.

    ffhq-dataset calls ``PIL.Image.transform(..., QUAD, (quad + 0.5).flatten())``: the +0.5 turns
    dlib's centre-at-integer points into PIL's edge coordinates, and PIL sends the quad corners to the
    *outer corners* of the output, (0, 0) .. (size, size) in edge coordinates. In our (and cv2's)
    centre-at-integer coordinates those corners are (-0.5, -0.5), (-0.5, size - 0.5),
    (size - 0.5, size - 0.5), (size - 0.5, -0.5); the quad centre c lands on the crop centre
    ((size - 1)/2, (size - 1)/2).
    """
    lo, hi = -0.5, size - 0.5
    return np.array([[lo, lo], [lo, hi], [hi, hi], [hi, lo]], np.float64)


def _ffhq_affine_from_points(eye_left, eye_right, mouth_left, mouth_right, size) -> np.ndarray:
    size = _check_size(size)
    quad = ffhq_quad(eye_left, eye_right, mouth_left, mouth_right)
    # The quad is an exact square, so the least-squares similarity (Umeyama 1991) is exact.
    return umeyama(quad, ffhq_quad_targets(size))


def ffhq_affine(landmarks68, size: int) -> np.ndarray:
    """2x3 similarity mapping frame pixels onto an FFHQ-aligned size x size crop (68 landmarks).

    Eyes are the means of landmarks 36-41 and 42-47, the mouth corners are 48 and 54 (iBUG order),
    as in ffhq-dataset. See ``ffhq_quad`` for the recipe and ``ffhq_quad_targets`` for the pixel
    convention.
    """
    lm = _points(landmarks68, 68, "landmarks68")
    return _ffhq_affine_from_points(lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54], size)


def ffhq_affine_from_kps5(kps5, size: int) -> np.ndarray:
    """FFHQ alignment from the 5 keypoints (eye centres and mouth corners in insightface order).

    Same recipe as ``ffhq_affine``; the eye keypoints stand in for the means of the eye contours.
    """
    k = _points(kps5, 5, "kps5")
    return _ffhq_affine_from_points(k[0], k[1], k[3], k[4], size)


def arcface_affine(kps5, size: int) -> np.ndarray:
    """2x3 similarity taking the 5 keypoints onto the ArcFace template scaled to the crop size.

    dst = ARCFACE_112 * size / 112 (insightface ``estimate_norm`` uses this ratio for sizes that are
    multiples of 112); least-squares similarity by Umeyama 1991 (``geometry.umeyama``). The template is
    already in cv2's pixel-centre convention (insightface warps with cv2.warpAffine directly).
    """
    k = _points(kps5, 5, "kps5")
    size = _check_size(size)
    return umeyama(k, ARCFACE_112 * (size / 112.0))


def kps5_from_landmarks68(landmarks68) -> np.ndarray:
    """The 5 insightface keypoints from 68 iBUG landmarks: eye-contour means (36-41, 42-47), nose tip
    (30), mouth corners (48, 54)."""
    lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def has_points(pts) -> bool:
    """True when a point array holds usable points: all finite and not all the same point (detectors
    that give no 68 landmarks leave zeros there)."""
    pts = np.asarray(pts, np.float64)
    return bool(pts.size and np.all(np.isfinite(pts)) and np.ptp(pts, axis=0).max() > 1e-3)


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img
    k = 2 * int(np.ceil(3.0 * sigma)) + 1
    return cv2.GaussianBlur(img, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def _fill_convex(points: np.ndarray, size: int) -> np.ndarray:
    """Filled convex hull of float points, sub-pixel accurate (cv2 fixed-point with 4 fraction bits)."""
    hull = cv2.convexHull(np.round(np.asarray(points, np.float64) * 16).astype(np.int32))
    out = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(out, hull, 1.0, lineType=cv2.LINE_8, shift=4)
    return out


def snap_mask(m: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Clip a soft mask to 0..1 and snap values within eps of 0 or 1 to exactly 0 or 1, so float32
    round-off of blurs and interpolation (0.99999994) does not leave "inside" pixels a hair short of
    opaque, nor "outside" pixels a hair above zero."""
    m = np.clip(np.asarray(m, np.float32), 0.0, 1.0)
    m[m > 1.0 - eps] = 1.0
    m[m < eps] = 0.0
    return m


def _mask_sigma(size: int) -> float:
    """Smoothing of the hull masks: 2 px at 512, scaled with the crop size, at least 1 px."""
    return max(1.0, size / 256.0)


def face_hull_mask(landmarks68, size: int, forehead: float = 0.5) -> np.ndarray:
    """Soft face-region mask [size, size] float32 (1 inside, 0 outside) from 68 crop-space landmarks.

    Polygon: the jaw line (0-16) plus the brows (17-26) moved "up" by forehead * d, where up is the unit
    vector from the nose tip (30) to the brow centre (mean of 17-26) and d is that distance (so the lift
    follows the head's roll). Its convex hull is filled and blurred with a Gaussian of sigma
    max(1, size/256) px (2 px at 512).
    """
    size = _check_size(size)
    lm = _points(landmarks68, 68, "landmarks68")
    if forehead < 0:
        raise ValueError(f"SwapForge align: forehead must be >= 0 (a fraction of the brow-to-nose "
                         f"distance), got {forehead}.")
    brows = lm[17:27]
    up = brows.mean(0) - lm[30]
    brows = brows + forehead * up  # |up| is the brow-to-nose-tip distance, up/|up| the direction
    mask = _fill_convex(np.concatenate([lm[0:17], brows]), size)
    return snap_mask(_gaussian(mask, _mask_sigma(size)))


def kps5_face_mask(kps5, size: int) -> np.ndarray:
    """Soft face mask from 5 crop-space keypoints, for faces that have no 68 landmarks.

    A heuristic ellipse in the face's own frame: with e = eye distance and m = eye-to-mouth distance,
    centred 0.35 m below the eye midpoint (towards the mouth), half-axes 1.0 e across and 1.05 m along
    the face (roughly brow-top to chin on average faces); smoothed like ``face_hull_mask``.
    """
    size = _check_size(size)
    k = _points(kps5, 5, "kps5")
    eye_mid = (k[0] + k[1]) / 2
    mouth_mid = (k[3] + k[4]) / 2
    e = np.hypot(*(k[1] - k[0]))
    down = mouth_mid - eye_mid
    m = np.hypot(*down)
    if e < 1e-6 or m < 1e-6:
        raise ValueError("SwapForge align: the 5 keypoints are degenerate (eyes or mouth coincide). "
                         "Check the detection of this face.")
    centre = eye_mid + 0.35 * down
    angle = np.degrees(np.arctan2(down[1], down[0])) - 90.0  # ellipse x-axis along the eye line
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                (int(round(1.0 * e * 16)), int(round(1.05 * m * 16))), angle, 0, 360, 1.0, -1,
                cv2.LINE_8, 4)
    return snap_mask(_gaussian(mask, _mask_sigma(size)))


def fit_affine(frame_size: Tuple[int, int], size: int) -> np.ndarray:
    """Affine fitting a whole H x W frame, centred and aspect-preserving, into a size x size square.

    Scale s = size / max(H, W); the frame centre ((W-1)/2, (H-1)/2) maps to ((size-1)/2, (size-1)/2),
    so the frame's outer edges land on the square's edges along the long side.
    """
    h, w = frame_size
    s = size / float(max(h, w))
    return np.array([[s, 0.0, (size - 1) / 2.0 - s * (w - 1) / 2.0],
                     [0.0, s, (size - 1) / 2.0 - s * (h - 1) / 2.0]], np.float64)


def warp_to_crop(image: np.ndarray, affine: np.ndarray, size: int,
                 border: int = cv2.BORDER_REFLECT101) -> np.ndarray:
    """cv2.warpAffine with INTER_CUBIC, clipped to 0..1, float32 [size, size, C]."""
    out = cv2.warpAffine(np.ascontiguousarray(image, np.float32), np.asarray(affine, np.float64),
                         (size, size), flags=cv2.INTER_CUBIC, borderMode=border)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def frame_validity(frame_size: Tuple[int, int], affine: np.ndarray, size: int) -> np.ndarray:
    """[size, size] float32: 1 where the crop pixel comes from inside the frame, 0 outside (a ones image
    warped with INTER_LINEAR and BORDER_CONSTANT 0, so soft over the last pixel)."""
    h, w = frame_size
    return snap_mask(cv2.warpAffine(np.ones((h, w), np.float32), np.asarray(affine, np.float64), (size, size),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0))


def face_affine(kps5, landmarks68, size: int, template: str) -> np.ndarray:
    """The crop affine of one face: FFHQ from the 68 landmarks when usable, else from the 5 keypoints;
    ArcFace from the 5 keypoints (derived from the 68 landmarks when the keypoints are missing)."""
    lm_ok, k_ok = has_points(landmarks68), has_points(kps5)
    if not (lm_ok or k_ok):
        raise ValueError("SwapForge align: a face has neither usable 5 keypoints nor 68 landmarks. "
                         "Expected finite, distinct points; re-run the detector with landmarks enabled.")
    if template == "ffhq":
        return ffhq_affine(landmarks68, size) if lm_ok else ffhq_affine_from_kps5(kps5, size)
    if template == "arcface":
        return arcface_affine(kps5 if k_ok else kps5_from_landmarks68(landmarks68), size)
    raise ValueError(f"SwapForge align: template must be one of {TEMPLATES}, got {template!r}.")


def align_crop(images: np.ndarray, faceset: FaceSet, size: int = 512, template: str = "ffhq",
               progress: Progress = None) -> Tuple[np.ndarray, CropSet, np.ndarray]:
    """One aligned crop per face, in frame order then face order.

    images: [B, H, W, 3] float32 in 0..1. Returns (crops [N, size, size, 3] float32, CropSet,
    masks [N, size, size] float32). Crop pixels: cv2.warpAffine INTER_CUBIC, BORDER_REFLECT101,
    clipped to 0..1. Masks: ``face_hull_mask`` of the warped 68 landmarks (``kps5_face_mask`` when a
    face has none) times the in-frame validity (``frame_validity``). Interpolated (tracker-filled)
    faces are aligned like detections.

    A frame without faces yields ONE placeholder crop (valid=False, face_index=-1, track_id=-1):
    the whole frame fitted into the square (``fit_affine``, BORDER_CONSTANT 0) with an all-zero mask,
    so a single-face video keeps exactly one crop per frame.

    progress() (no arguments, like nodes/services.Progress) is called once per crop made, placeholders
    included; exceptions it raises (interrupts) propagate.
    """
    size = _check_size(size)
    if template not in TEMPLATES:
        raise ValueError(f"SwapForge align: template must be one of {TEMPLATES}, got {template!r}.")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"SwapForge align: images must be [B, H, W, 3], got shape {images.shape}. "
                         f"Pass an RGB IMAGE batch.")
    b, h, w = images.shape[:3]
    if b == 0:
        raise ValueError("SwapForge align: the image batch is empty. Expected at least one frame; "
                         "check the node that feeds the images.")
    faceset.check_batch(b)
    if tuple(faceset.frame_size) != (h, w):
        raise ValueError(f"SwapForge align: the faces were detected on {faceset.frame_size[0]}x"
                         f"{faceset.frame_size[1]} (HxW) frames but the images are {h}x{w}. "
                         f"Connect the faces that were detected on these same images.")

    crops: List[np.ndarray] = []
    masks: List[np.ndarray] = []
    records: List[Crop] = []
    for i in range(b):
        frame = np.asarray(images[i], np.float32)
        faces = faceset.frames[i]
        if len(faces) == 0:
            a = fit_affine((h, w), size)
            crops.append(warp_to_crop(frame, a, size, border=cv2.BORDER_CONSTANT))
            masks.append(np.zeros((size, size), np.float32))
            records.append(Crop(i, -1, a, size, track_id=-1, valid=False))
            if progress is not None:
                progress()
        for j in range(len(faces)):
            lm, kps = faces.landmarks68[j], faces.kps5[j]
            a = face_affine(kps, lm, size, template)
            crops.append(warp_to_crop(frame, a, size))
            if has_points(lm):
                m = face_hull_mask(apply_affine(a, lm), size)
            else:
                m = kps5_face_mask(apply_affine(a, kps), size)
            masks.append(snap_mask(m * frame_validity((h, w), a, size)))
            records.append(Crop(i, j, a, size, track_id=int(faces.track_ids[j]), valid=True))
            if progress is not None:
                progress()
    cropset = CropSet(records, (h, w), b, template)
    return np.stack(crops).astype(np.float32, copy=False), cropset, np.stack(masks)
