"""Face tracking across frames: stable track ids, gap filling and zero-lag smoothing.

Per frame, the faces are assigned to the live tracks by the Hungarian algorithm
(scipy.optimize.linear_sum_assignment) on the cost

    cost(track, face) = 0.5 * (1 - IoU(predicted box, face box)) + 0.5 * min(1, d_kps / s)

where the predicted box is the track's last box moved by its constant velocity (px per frame) times the
frames elapsed, d_kps is the mean distance between the track's last 5 keypoints moved the same way and
the face's 5 keypoints, and s = sqrt(width * height) of the predicted box. Pairs with
IoU < iou_threshold are never matched; unmatched faces start new tracks.

A track unseen for up to max_gap frames that is matched again gets entries filled in for the missing
frames, linear in boxes, kps5 and landmarks68 (interpolated=True, score 0). A track unseen for more than
max_gap frames ends. After tracking, each track's boxes, kps5 and landmarks68 are smoothed over time by
a zero-lag forward-backward exponential filter (`zero_lag_ema`).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .geometry import box_overlaps
from .records import FaceSet, FrameFaces

_NO_MATCH = 1e6


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of a [M, 4] with every box of b [N, 4] (x0, y0, x1, y1) -> [M, N]."""
    return box_overlaps(a, b)[0]


def _line_extension(x: np.ndarray, m: int, steps: np.ndarray) -> np.ndarray:
    """Least-squares line through the first m samples of x [T, ...], evaluated at times `steps`."""
    t = np.arange(m, dtype=np.float64)
    seg = x[:m]
    tc = t - t.mean()
    shape = (-1,) + (1,) * (x.ndim - 1)
    slope = (tc.reshape(shape) * (seg - seg.mean(0))).sum(0) / max(float((tc ** 2).sum()), 1e-12)
    return seg.mean(0) + (steps - t.mean()).reshape(shape) * slope


def zero_lag_ema(x: np.ndarray, smoothing: float) -> np.ndarray:
    """Zero-lag exponential smoothing along axis 0 of x [T, ...].

    One pass is y[t] = alpha * x[t] + (1 - alpha) * y[t-1] with alpha = 1 - smoothing (smoothing = 0:
    output equals input; towards 1: smoother; the time constant is about 1 / alpha frames). The pass runs
    forward, then backward over its result, so the lag of the forward pass is cancelled by the lead of the
    backward one: a linear trajectory comes back unchanged. Each end is extended by the least-squares line
    through its first/last max(3, 4 / alpha) samples, long enough (log(1e-4) / log(smoothing) samples) for
    the filter's start-up transient to decay to 1e-4, so the ends are neither lagged nor pinned to one
    noisy sample.
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    if smoothing <= 0 or n < 2:
        return x.copy()
    keep = float(smoothing)
    alpha = 1.0 - keep
    pad = int(np.ceil(np.log(1e-4) / np.log(keep)))
    m = min(n, max(3, int(np.ceil(4.0 / alpha))))
    head = _line_extension(x, m, np.arange(-pad, 0, dtype=np.float64))
    tail = _line_extension(x[::-1], m, np.arange(-pad, 0, dtype=np.float64))[::-1]
    ext = np.concatenate([head, x, tail], axis=0)
    y = ext.copy()
    for t in range(1, len(y)):
        y[t] = alpha * ext[t] + keep * y[t - 1]
    for t in range(len(y) - 2, -1, -1):
        y[t] = alpha * y[t] + keep * y[t + 1]
    return y[pad:pad + n]


class _Track:
    """One track while tracking: per-frame entries (frame -> box, score, kps5, landmarks68, interpolated)."""

    def __init__(self, tid: int, frame: int, box, score, kps, lm, interp):
        self.id = tid
        self.entries = {frame: (box, score, kps, lm, interp)}
        self.last_frame = frame
        self.velocity = np.zeros(4)
        self.observations = 1

    def predict(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        """Box [4] and kps5 [5, 2] moved by the constant velocity to `frame`."""
        box, _, kps, _, _ = self.entries[self.last_frame]
        dt = frame - self.last_frame
        v = self.velocity
        shift = np.array([(v[0] + v[2]) / 2, (v[1] + v[3]) / 2])
        return box + v * dt, kps + shift * dt

    def add(self, frame: int, box, score, kps, lm, interp) -> int:
        """Append a matched face; fill the frames since the last one linearly. Returns frames filled."""
        lbox, _, lkps, llm, _ = self.entries[self.last_frame]
        dt = frame - self.last_frame
        for k in range(1, dt):
            w = k / dt
            self.entries[self.last_frame + k] = ((1 - w) * lbox + w * box, 0.0, (1 - w) * lkps + w * kps,
                                                 (1 - w) * llm + w * lm, True)
        v_new = (box - lbox) / dt
        self.velocity = v_new if self.observations == 1 else 0.5 * self.velocity + 0.5 * v_new
        self.observations += 1
        self.entries[frame] = (box, score, kps, lm, interp)
        self.last_frame = frame
        return dt - 1


def track_faces(faceset: FaceSet, iou_threshold: float = 0.3, max_gap: int = 5, smoothing: float = 0.5,
                progress: Optional[Callable[[], None]] = None, keep_ids: bool = True) -> Tuple[FaceSet, str]:
    """Give every face a stable track id across the frames (see the module docstring for the method).

    Args:
        faceset: faces per frame. When keep_ids is True and every face already has a track id (>= 0, as
            video.track_video gives them), those ids are kept: faces with one id form one track, and only
            the gap filling and smoothing below apply (a gap longer than max_gap is not filled). Otherwise
            the ids are assigned here.
        iou_threshold: minimum IoU between a track's predicted box and a face to continue the track.
        max_gap: the most consecutive frames a track may miss and still continue (filled by linear
            interpolation); 0 = a missed frame ends the track.
        smoothing: 0 <= smoothing < 1, the zero_lag_ema factor (alpha = 1 - smoothing); 0 = no smoothing.
        progress: called once per frame.

    Returns (FaceSet with track_ids set, faces ordered by track id within each frame and interpolated
    entries added, report text).
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"SwapForge: smoothing must be in 0..1 (1 excluded), got {smoothing}. Use 0 for none, "
                         f"0.5 for moderate, 0.9 for strong smoothing.")
    if max_gap < 0:
        raise ValueError(f"SwapForge: max_gap must be 0 or more frames, got {max_gap}.")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"SwapForge: iou_threshold must be in 0..1, got {iou_threshold}.")

    has_ids = all(bool((ff.track_ids >= 0).all()) and len(set(ff.track_ids.tolist())) == len(ff)
                  for ff in faceset.frames)
    if keep_ids and has_ids and any(len(ff) for ff in faceset.frames):
        tracks, filled = _tracks_from_ids(faceset, max_gap, progress)
    else:
        tracks, filled = _assign_tracks(faceset, iou_threshold, max_gap, progress)
        has_ids = False
    return _finish(faceset, tracks, filled, smoothing, iou_threshold, max_gap, has_ids)


def _tracks_from_ids(faceset: FaceSet, max_gap: int, progress) -> Tuple[List["_Track"], dict]:
    """Tracks made of the faces sharing a track id; a gap longer than max_gap splits one into segments."""
    segments: dict = {}
    tracks: List[_Track] = []
    filled: dict = {}
    for t, faces in enumerate(faceset.frames):
        for c in range(len(faces)):
            tid = int(faces.track_ids[c])
            args = (faces.boxes[c].astype(np.float64), float(faces.scores[c]), faces.kps5[c].astype(np.float64),
                    faces.landmarks68[c].astype(np.float64), bool(faces.interpolated[c]))
            tr = segments.get(tid)
            if tr is not None and tr.last_frame < t and t - tr.last_frame - 1 <= max_gap:
                filled[id(tr)] = filled.get(id(tr), 0) + tr.add(t, *args)
            else:
                tr = _Track(tid, t, *args)
                segments[tid] = tr
                tracks.append(tr)
        if progress is not None:
            progress()
    return tracks, filled


def _assign_tracks(faceset: FaceSet, iou_threshold: float, max_gap: int, progress) -> Tuple[List["_Track"], dict]:
    """Hungarian assignment of each frame's faces to the live tracks (module docstring)."""
    tracks: List[_Track] = []
    live: List[_Track] = []
    filled = {}
    for t, faces in enumerate(faceset.frames):
        live = [tr for tr in live if t - tr.last_frame - 1 <= max_gap]
        boxes = faces.boxes.astype(np.float64)
        kps = faces.kps5.astype(np.float64)
        lms = faces.landmarks68.astype(np.float64)
        matched = set()
        if live and len(faces):
            preds = [tr.predict(t) for tr in live]
            pbox = np.stack([p[0] for p in preds])
            pkps = np.stack([p[1] for p in preds])
            iou = iou_matrix(pbox, boxes)
            size = np.sqrt(np.clip(pbox[:, 2] - pbox[:, 0], 1, None) * np.clip(pbox[:, 3] - pbox[:, 1], 1, None))
            dk = np.linalg.norm(pkps[:, None] - kps[None], axis=-1).mean(-1) / size[:, None]
            cost = 0.5 * (1 - iou) + 0.5 * np.minimum(dk, 1.0)
            valid = iou >= iou_threshold
            cost = np.where(valid, cost, _NO_MATCH)
            for r, c in zip(*linear_sum_assignment(cost)):
                if valid[r, c]:
                    tr = live[r]
                    n_fill = tr.add(t, boxes[c], float(faces.scores[c]), kps[c], lms[c], bool(faces.interpolated[c]))
                    filled[id(tr)] = filled.get(id(tr), 0) + n_fill
                    matched.add(int(c))
        for c in range(len(faces)):
            if c not in matched:
                tr = _Track(len(tracks), t, boxes[c], float(faces.scores[c]), kps[c], lms[c],
                            bool(faces.interpolated[c]))
                tracks.append(tr)
                live.append(tr)
        if progress is not None:
            progress()
    return tracks, filled


def _finish(faceset: FaceSet, tracks, filled, smoothing, iou_threshold, max_gap, kept_ids) -> Tuple[FaceSet, str]:
    """Smooth each track, write the per-frame records (ordered by track id) and the report."""
    per_frame = [[] for _ in faceset.frames]
    for tr in tracks:
        frames = sorted(tr.entries)
        ent = [tr.entries[f] for f in frames]
        box = zero_lag_ema(np.stack([e[0] for e in ent]), smoothing)
        kp = zero_lag_ema(np.stack([e[2] for e in ent]), smoothing)
        lm = zero_lag_ema(np.stack([e[3] for e in ent]), smoothing)
        for i, f in enumerate(frames):
            per_frame[f].append((tr.id, box[i], ent[i][1], kp[i], lm[i], ent[i][4]))

    out = []
    for items in per_frame:
        if not items:
            out.append(FrameFaces.empty())
            continue
        items.sort(key=lambda it: it[0])
        out.append(FrameFaces(np.stack([it[1] for it in items]), np.array([it[2] for it in items]),
                              np.stack([it[3] for it in items]), np.stack([it[4] for it in items]),
                              np.array([it[0] for it in items]), np.array([it[5] for it in items])))

    empty = [i for i, items in enumerate(per_frame) if not items]
    how = "ids kept from the detector's tracker" if kept_ids else f"iou_threshold {iou_threshold}"
    lines = [f"tracks: {len(tracks)} over {len(faceset.frames)} frame(s) ({how}, "
             f"max_gap {max_gap}, smoothing {smoothing})"]
    for tr in tracks:
        first, last = min(tr.entries), max(tr.entries)
        lines.append(f"track {tr.id}: frames {first}-{last} ({last - first + 1} frames, "
                     f"{filled.get(id(tr), 0)} interpolated)")
    shown = ", ".join(str(i) for i in empty[:20]) + (", ..." if len(empty) > 20 else "")
    lines.append(f"frames with no face: {len(empty)}" + (f" ({shown})" if empty else ""))
    return faceset.with_frames(out), "\n".join(lines)
