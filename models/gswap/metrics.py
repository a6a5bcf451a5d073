"""Swap metrics (the paper's Table II protocol with embedded stand-ins, see ../shared notes): identity, pose,
expression and temporal stability of a swapped clip against its target and its source.

- Identity (CSIM): cosine similarity of each output frame's face embedding to the source identity (the mean of
  the source photos' unit embeddings) and to the target's own identity (the mean over the original target
  frames). The paper uses ArcFace; the embedded recogniser here is dlib's ResNet (128-d), so the numbers are
  not comparable with the paper's, only with each other. `frames_closer_to_source` is the fraction of frames
  whose face is more similar to the source than to the target (a frame without a detected face counts as not
  closer).
- Pose: yaw, pitch and roll of each output face and of its target frame, estimated the same way
  (headpose.head_poses: PnP of the 68 landmarks against one fixed 3D face model); `pose_error_deg` is the mean
  absolute difference over the three angles and the frames (the paper's APD uses SMIRK poses instead).
- Expression: mouth opening, mouth width and both eye openings, each divided by the face's own inter-ocular
  distance (headpose.expression_measures); `expression_error` is the mean absolute difference between output
  and target over the four measures and the frames (a landmark stand-in for the paper's AED).
- Flicker: the mean absolute frame-to-frame change of the pixels inside the head region, minus the same for
  the target (its own motion): what a result adds on top of the target's motion (lower is steadier).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from . import headpose


def identity(embeddings: np.ndarray) -> np.ndarray:
    """Unit mean of unit embeddings [N, D] -> [D]."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    m = e.mean(0)
    return m / max(np.linalg.norm(m), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of a [N, D] with b [D] (rows of NaN give NaN)."""
    a = np.asarray(a, np.float64)
    n = np.linalg.norm(a, axis=-1) * np.linalg.norm(b)
    return (a @ b) / np.where(n > 0, n, np.nan)


def flicker(frames: np.ndarray, region: np.ndarray) -> float:
    """Mean |I_t - I_{t-1}| over pixels where both frames' region masks are set, averaged over frame pairs.
    frames [T, H, W, 3] 0..1, region [T, H, W] (>= 0.5 inside)."""
    if len(frames) < 2:
        return 0.0
    vals = []
    for t in range(1, len(frames)):
        m = (region[t] >= 0.5) & (region[t - 1] >= 0.5)
        if m.any():
            vals.append(float(np.abs(frames[t][m] - frames[t - 1][m]).mean()))
    return float(np.mean(vals)) if vals else 0.0


@dataclass
class FrameFaceData:
    """Per frame of one clip: landmarks [T, 68, 2] (NaN where no face), embeddings [T, D] (NaN where no face)."""
    landmarks: np.ndarray
    embeddings: np.ndarray


def swap_metrics(output: FrameFaceData, target: FrameFaceData, source_identity: np.ndarray,
                 image_size, frames_out: Optional[np.ndarray] = None, frames_tgt: Optional[np.ndarray] = None,
                 region: Optional[np.ndarray] = None, prefix: str = "") -> Dict[str, object]:
    """The metrics of module docstring for one output clip. Returns a dict of floats and per-frame lists."""
    T = len(output.landmarks)
    have = np.isfinite(output.landmarks).all(axis=(1, 2)) & np.isfinite(output.embeddings).all(1)
    tgt_ok = np.isfinite(target.landmarks).all(axis=(1, 2)) & np.isfinite(target.embeddings).all(1)
    target_id = identity(target.embeddings[tgt_ok]) if tgt_ok.any() else np.full(output.embeddings.shape[1], np.nan)
    cs_src = cosine(output.embeddings, source_identity)
    cs_tgt = cosine(output.embeddings, target_id)
    closer = np.where(have, cs_src > cs_tgt, False)
    both = have & tgt_ok
    pose_o = headpose.head_poses(output.landmarks, image_size)
    pose_t = headpose.head_poses(target.landmarks, image_size)
    ok = both & pose_o.ok & pose_t.ok
    e_o, e_t = headpose.euler_deg(pose_o.R), headpose.euler_deg(pose_t.R)
    pose_err = np.abs(e_o - e_t).mean(1)
    x_o, x_t = headpose.expression_measures(output.landmarks), headpose.expression_measures(target.landmarks)
    expr_err = np.abs(x_o - x_t).mean(1)
    nanmean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")  # noqa: E731
    out = {
        f"{prefix}frames_with_face": int(have.sum()),
        f"{prefix}csim_source_mean": nanmean(np.where(have, cs_src, np.nan)),
        f"{prefix}csim_target_mean": nanmean(np.where(have, cs_tgt, np.nan)),
        f"{prefix}frames_closer_to_source": float(closer.mean()) if T else 0.0,
        f"{prefix}pose_error_deg": nanmean(np.where(ok, pose_err, np.nan)),
        f"{prefix}expression_error": nanmean(np.where(both, expr_err, np.nan)),
        f"{prefix}per_frame": {
            "csim_source": [None if not np.isfinite(v) else round(float(v), 4) for v in cs_src],
            "csim_target": [None if not np.isfinite(v) else round(float(v), 4) for v in cs_tgt],
            "pose_error_deg": [None if not ok[i] else round(float(pose_err[i]), 3) for i in range(T)],
            "expression_error": [None if not both[i] else round(float(expr_err[i]), 4) for i in range(T)],
        },
    }
    if frames_out is not None and frames_tgt is not None and region is not None:
        out[f"{prefix}flicker"] = flicker(frames_out, region) - flicker(frames_tgt, region)
    return out


def clip_faces(analyzer, frames: np.ndarray, progress=None, min_score: float = 0.5) -> FrameFaceData:
    """The largest face (detector score >= min_score) of every frame through a face analyzer
    (models/face/detect.py: detect, embed): landmarks and unit embeddings, NaN where a frame has no face.
    progress() after each frame."""
    T = len(frames)
    L = np.full((T, 68, 2), np.nan)
    E = np.full((T, int(analyzer.embedding_dim)), np.nan)
    for i, x in enumerate(frames):
        u8 = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
        f = analyzer.detect(u8)
        f = f.take(np.flatnonzero(f.scores >= min_score))
        if len(f):
            area = (f.boxes[:, 2] - f.boxes[:, 0]) * (f.boxes[:, 3] - f.boxes[:, 1])
            f = f.take([int(np.argmax(area))])
            L[i] = f.landmarks68[0]
            E[i] = analyzer.embed(u8, f)[0]
        if progress is not None:
            progress()
    return FrameFaceData(L, E)
