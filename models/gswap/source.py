"""Source preparation (paper sec. III-B): the source person's head from a few photos, ready to be carried onto
the target video.

`prepare_sources` takes each photo's 68 landmarks (one face per photo: the caller chooses it and says so), cuts
the head out with `head_mask.head_mask`, estimates the head pose and lifts the landmarks to the photo's own
68-point face shape in model coordinates (headpose.py). The identity shape of the source is the median of the
photos' shapes; the photo with the most frontal head is the `primary`, whose pixels the embedded reenactment
carries (reenact.py).

`place_on_background` is the paper's "paste the source person onto the target's background" step: a photo's
head, cut out by its mask, placed on a target background frame by the similarity that maps its 5 keypoints onto
the target's (same scale, place and in-plane angle as the target's head). It gives the images a
diffusion-based I_gen route adapts on; the embedded route does not need them. (Clothing removal is not done.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from . import headpose
from .head_mask import carry_mask, head_mask, similarity


@dataclass
class SourceHead:
    """One source photo: image [h, w, 3] float32 0..1; landmarks68 [68, 2]; kps5 [5, 2]; mask [h, w] head mask;
    shape [68, 3] lifted face shape (model mm); euler [3] yaw, pitch, roll (degrees); photo index; note."""
    image: np.ndarray
    landmarks68: np.ndarray
    kps5: np.ndarray
    mask: np.ndarray
    shape: np.ndarray
    euler: np.ndarray
    pose_R: np.ndarray
    pose_t: np.ndarray
    K: np.ndarray
    index: int = 0
    note: str = ""


@dataclass
class SourceSet:
    """The source person: heads (one per usable photo), primary (index into heads: the most frontal), shape
    [68, 3] (median of the heads' shapes), report lines, neck_line the heads were cut at."""
    heads: List[SourceHead]
    primary: int
    shape: np.ndarray
    report: List[str] = field(default_factory=list)
    neck_line: float = 0.35

    @property
    def main(self) -> SourceHead:
        return self.heads[self.primary]


def prepare_sources(images: List[np.ndarray], landmarks: List[Optional[np.ndarray]], kps5: List[Optional[np.ndarray]],
                    notes: Optional[List[str]] = None, neck_line: float = 0.35, hair: float = 1.0) -> SourceSet:
    """images: source photos [h, w, 3] float 0..1; landmarks / kps5: the chosen face's 68 landmarks and 5 keypoints
    per photo (None: the photo had no face). Raises ValueError when no photo has a face."""
    heads, report = [], []
    for i, (img, lm, k5) in enumerate(zip(images, landmarks, kps5)):
        note = notes[i] if notes else ""
        if lm is None or not np.isfinite(lm).all():
            report.append(f"source {i}: no face, not used" + (f" ({note})" if note else ""))
            continue
        lm = np.asarray(lm, np.float64)
        pose = headpose.head_poses(lm[None], img.shape[:2])
        if not pose.ok[0]:
            report.append(f"source {i}: head pose could not be estimated, not used")
            continue
        mask = head_mask(img, lm, neck_line=neck_line, hair=hair)
        shape = headpose.lift_landmarks(lm[None], pose)[0]
        euler = headpose.euler_deg(pose.R)[0]
        heads.append(SourceHead(image=np.asarray(img, np.float32), landmarks68=lm, kps5=np.asarray(k5, np.float64),
                                mask=mask, shape=shape, euler=euler, pose_R=pose.R[0], pose_t=pose.t[0], K=pose.K,
                                index=i, note=note))
        report.append(f"source {i}: yaw {euler[0]:+.1f}, pitch {euler[1]:+.1f}, roll {euler[2]:+.1f} deg"
                      + (f"; {note}" if note else ""))
    if not heads:
        raise ValueError("SwapForge: no source photo shows a face the detector finds. Expected at least one photo "
                         "with the source person's face clearly visible. Connect photos of the source person's "
                         "face (frontal or near frontal works best).")
    frontal = [abs(h.euler[0]) + 0.5 * abs(h.euler[2]) for h in heads]
    primary = int(np.argmin(frontal))
    shape = np.median(np.stack([h.shape for h in heads]), axis=0)
    report.append(f"primary (most frontal): source {heads[primary].index}; identity shape from {len(heads)} photo(s)")
    return SourceSet(heads=heads, primary=primary, shape=shape, report=report, neck_line=float(neck_line))


def place_on_background(head: SourceHead, background: np.ndarray, target_kps5: np.ndarray):
    """(image [H, W, 3], mask [H, W]): the photo's head (its mask) over `background`, placed by the similarity
    from the photo's 5 keypoints to `target_kps5`."""
    import cv2

    H, W = background.shape[:2]
    M = similarity(head.kps5, target_kps5)
    warped = cv2.warpAffine(head.image, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = carry_mask(head.mask, head.kps5, target_kps5, (H, W))[..., None]
    return (alpha * warped + (1 - alpha) * background).astype(np.float32), alpha[..., 0]
