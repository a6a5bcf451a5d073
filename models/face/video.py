"""Real-time face tracking on video: detect on keyframes, follow the 68 landmarks in between.

`track_video(analyzer, frames)` returns a FaceSet with a track id on every face. Per frame t:

1. Keyframe test. The detector runs on frame t when t is the first frame, when `keyframe_interval`
   frames have passed since the last detection, when no face is being followed, after a cut, after fast
   motion, and when any followed face lost confidence in step 2. A cut: the Bhattacharyya distances between
   the hue-saturation histograms (16 x 8 bins) of frames t-1 and t exceed CUT_HIST both for the whole
   frame and for the median of its 4 x 4 cells (a 128 x 128 thumbnail). On the 17 LivePortrait example
   clips, consecutive frames reach at most 0.17 (whole frame) and 0.27 (cell median, a hand-held clip),
   the last and first frames of two different clips at least 0.40 and 0.40; a hand over the face of a
   close-up changes the whole-frame histogram as much as a cut (0.41) but few cells. Fast motion: the mean absolute difference of 32 x 32 grey thumbnails
   exceeds MOTION_MAD grey levels (most clips stay under 10 between frames; a hand-held clip reaches 20).
   After a cut no earlier track continues: every face gets a new id.
2. Following (frames that are not keyframes). Each face's 68 landmarks of frame t-1 are moved to frame t
   by pyramidal Lucas-Kanade optical flow (Bouguet's implementation, cv2.calcOpticalFlowPyrLK) on a grey
   copy at most TRACK_SIDE px long: the points whose flow came back within FB_MAX px in a
   forward-backward check (Kalal et al. 2010) give a least-squares similarity (Umeyama 1991). The same
   similarity moves the face's predictor box (centre mapped, side scaled; the box stays axis-aligned as
   dlib's boxes are), and dlib's shape predictor runs once on it. The box is carried from frame to frame
   and renewed only at keyframes (as landmarks.RECT_FROM_LANDMARKS of the detection's landmarks): boxes
   recomputed from each frame's own predicted landmarks drift towards a shrunken face within a few dozen
   frames (seen on a clip with glasses), a box moved by the flow does not. A face loses confidence when
   fewer than MIN_GOOD of its points pass the check, or when the predictor's landmarks differ from the
   moved ones by more than MAX_DRIFT inter-ocular distances (occlusion, a turn the flow cannot follow).
3. Keyframes. The analyzer detects (and landmarks) every face; detections below `threshold` or smaller
   than `min_size` are dropped. They are matched to the followed faces, and to faces lost at most `max_gap`
   frames ago, by the Hungarian algorithm on 1 - IoU of the boxes (pairs with IoU < IOU_MATCH never match);
   a matched detection continues its track id, an unmatched one starts a new track, and a followed face
   no detection matched ends (it may come back under its id within `max_gap` frames).

A followed face keeps the score of its last detection; its box is the last detection's box carried in the
face's own frame (landmarks.face_frame), so boxes keep the detector's convention. Each frame's faces are
then filtered like detect_faces (min_size, order, max_faces). Every frame gets an entry (possibly empty).

Measured on the LivePortrait talking-head clips at 512 px on 2 CPU cores (bench/bench_video_faces.py):
see README, Speed. An analyzer without dlib's predictor (insightface) is run on every frame instead and
its faces are given ids by track.track_faces (no smoothing, no gap filling).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from .detect import ORDERS, check_images, detect_faces, filter_faces, to_uint8
from .geometry import apply_affine, umeyama
from .landmarks import RECT_FROM_LANDMARKS, face_frame, kps5_from_landmarks68, predictor_rect
from .records import FaceSet, FrameFaces
from .track import iou_matrix, track_faces

TRACK_SIDE = 640
CUT_HIST = 0.33
MOTION_MAD = 12.0
FB_MAX = 1.0
MIN_GOOD = 0.5
MAX_DRIFT = 0.25
IOU_MATCH = 0.3
VIDEO_MODES = ("track (keyframes)", "detect every frame")


def _u8(frame) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise ValueError(f"SwapForge: a video frame must be [H, W, 3], got shape {a.shape}.")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = np.asarray(a, np.float32)
    if not np.isfinite(a.sum(dtype=np.float64)):
        raise ValueError("SwapForge: a video frame contains NaN or infinite values. Expected 0..1; fix or drop that "
                         "frame upstream.")
    return to_uint8(a)


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def _box_in_face(box: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The box's corners in the face frame (e, u, v, S) of these landmarks: [2, 2] in units of S."""
    e, u, v, s = face_frame(kps5_from_landmarks68(lm))
    c = np.asarray(box, np.float64).reshape(2, 2) - e
    return np.stack([c @ u, c @ v], -1) / s


def _box_from_face(rel: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Inverse of _box_in_face for the landmarks of another frame: corners -> axis-aligned box [4]."""
    e, u, v, s = face_frame(kps5_from_landmarks68(lm))
    corners = np.array([[rel[0, 0], rel[0, 1]], [rel[1, 0], rel[0, 1]], [rel[0, 0], rel[1, 1]], [rel[1, 0], rel[1, 1]]])
    pts = e + s * (corners[:, :1] * u + corners[:, 1:] * v)
    return np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)


class _Face:
    """One track while following: id, landmarks, score, box relative to the face, last frame seen."""

    def __init__(self, tid: int, lm: np.ndarray, box: np.ndarray, score: float, frame: int):
        self.id = tid
        self.set(lm, box, score, frame)

    def set(self, lm, box, score, frame):
        self.lm = np.asarray(lm, np.float32)
        self.rel = _box_in_face(box, self.lm)
        self.box = np.asarray(box, np.float32)
        self.rect = predictor_rect(kps5_from_landmarks68(self.lm), RECT_FROM_LANDMARKS)
        self.score = float(score)
        self.frame = frame

    def follow(self, moved, frame):
        lm, rect = moved
        self.lm = np.asarray(lm, np.float32)
        self.rect = rect
        self.box = _box_from_face(self.rel, self.lm)
        self.frame = frame


class _Follower:
    """Lucas-Kanade flow between consecutive grey frames plus the shape predictor (step 2)."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.prev_grey = None
        self.scale = 1.0

    def grey(self, img: np.ndarray):
        import cv2

        h, w = img.shape[:2]
        s = min(1.0, TRACK_SIDE / max(h, w))
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if s < 1.0:
            g = cv2.resize(g, (max(1, int(round(w * s))), max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)
        return g, s

    def follow(self, img: np.ndarray, grey, faces: List["_Face"]) -> List[Optional[tuple]]:
        """(landmarks, predictor box) of each face in the new frame, or None where it lost confidence."""
        import cv2

        g, s = grey
        if self.prev_grey is None or not faces:
            return [None] * len(faces)
        pts = np.concatenate([f.lm for f in faces]).astype(np.float32)
        p0 = ((pts + 0.5) * s - 0.5).reshape(-1, 1, 2).astype(np.float32)
        lk = dict(winSize=(21, 21), maxLevel=3,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(self.prev_grey, g, p0, None, **lk)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(g, self.prev_grey, p1, None, **lk)
        fb = np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1)
        good = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < FB_MAX)
        moved = ((p1.reshape(-1, 2) + 0.5) / s - 0.5)
        out = []
        for i, f in enumerate(faces):
            sl = slice(68 * i, 68 * (i + 1))
            ok = good[sl]
            if ok.sum() < MIN_GOOD * 68:
                out.append(None)
                continue
            m = umeyama(f.lm[ok], moved[sl][ok])
            guess = apply_affine(m, f.lm).astype(np.float32)
            rect = _move_rect(f.rect, m)
            lm = self.predictor.on_rect(img, rect)
            if np.linalg.norm(lm - guess, axis=1).mean() > MAX_DRIFT * max(_iod(guess), 1e-6):
                out.append(None)
                continue
            out.append((lm, rect))
        return out


def _move_rect(rect: np.ndarray, m: np.ndarray) -> np.ndarray:
    """An axis-aligned square box moved by a similarity m (2x3): centre mapped, side scaled, no rotation."""
    r = np.asarray(rect, np.float64)
    c = apply_affine(m, 0.5 * (r[:2] + r[2:]))
    half = 0.5 * (r[2] - r[0]) * float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


def _hue_sat_hists(img: np.ndarray) -> List[np.ndarray]:
    """Normalised 16 x 8 hue-saturation histograms of the 16 cells of a 128 x 128 thumbnail, then of the
    whole thumbnail (the cut test)."""
    import cv2

    hsv = cv2.cvtColor(cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
    cells = [cv2.calcHist([hsv[i:i + 32, j:j + 32]], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
             for i in range(0, 128, 32) for j in range(0, 128, 32)]
    cells.append(np.sum(cells, axis=0))
    return [(h / max(float(h.sum()), 1.0)).astype(np.float32) for h in cells]


def _is_cut(a: List[np.ndarray], b: List[np.ndarray]) -> bool:
    import cv2

    d = [cv2.compareHist(x, y, cv2.HISTCMP_BHATTACHARYYA) for x, y in zip(a, b)]
    return d[-1] > CUT_HIST and float(np.median(d[:-1])) > CUT_HIST


def _filter(faces: List[_Face], min_size: int, max_faces: int, order: str) -> FrameFaces:
    if not faces:
        return FrameFaces.empty()
    lms = np.stack([f.lm for f in faces])
    ff = FrameFaces(np.stack([f.box for f in faces]), np.array([f.score for f in faces]), kps5_from_landmarks68(lms),
                    lms, np.array([f.id for f in faces]))
    return filter_faces(ff, -np.inf, min_size, max_faces, order)


def track_video(analyzer, frames: Union[np.ndarray, Iterable[np.ndarray]], threshold: float = 0.5,
                min_size: int = 0, max_faces: int = 0, order: str = "largest_first", keyframe_interval: int = 5,
                max_gap: int = 5, progress: Optional[Callable[[], None]] = None,
                stats: Optional[Dict] = None) -> FaceSet:
    """Faces of every frame of a video with stable track ids (module docstring).

    Args:
        analyzer: a models.face.detect.FaceAnalyzer; the fast path needs its `landmarks` predictor (the
            embedded analyzers: yunet, dlib_mmod, dlib_hog).
        frames: [T, H, W, 3] float 0..1 or uint8, or any iterable of such frames (streamed: one frame is
            held at a time besides the output).
        threshold, min_size, max_faces, order: as detect_faces (threshold applies to detections).
        keyframe_interval: detect at least every this many frames (1 = detect on every frame).
        max_gap: frames a lost face may be missing and still get its id back at a later detection.
        progress: called once per frame (may raise to interrupt).
        stats: if a dict, filled with "keyframes" (frame indices where the detector ran) and "reasons"
            (frame index -> why: start, interval, cut, motion, lost, no face).

    Returns a FaceSet: one FrameFaces per frame, track_ids >= 0 on every face.
    """
    if order not in ORDERS:
        raise ValueError(f"SwapForge: unknown face order {order!r}. Expected one of: {', '.join(ORDERS)}.")
    if not np.isfinite(threshold):
        raise ValueError(f"SwapForge: the detection threshold must be a finite number, got {threshold}.")
    if int(keyframe_interval) < 1:
        raise ValueError(f"SwapForge: keyframe_interval must be 1 or more frames, got {keyframe_interval}.")
    if int(max_gap) < 0:
        raise ValueError(f"SwapForge: max_gap must be 0 or more frames, got {max_gap}.")
    predictor = getattr(analyzer, "landmarks", None)
    if predictor is None:
        return _per_frame(analyzer, frames, threshold, min_size, max_faces, order, max_gap, progress, stats)

    import cv2

    follower = _Follower(predictor)
    live: List[_Face] = []
    lost: List[_Face] = []
    next_id = 0
    out: List[FrameFaces] = []
    keyframes: List[int] = []
    reasons: Dict[int, str] = {}
    prev_thumb = prev_hist = None
    last_key = -10 ** 9
    size = None
    for t, frame in enumerate(frames):
        img = _u8(frame)
        if size is None:
            size = img.shape[:2]
        elif img.shape[:2] != size:
            raise ValueError(f"SwapForge: frame {t} is {img.shape[1]}x{img.shape[0]} but the first frame is "
                             f"{size[1]}x{size[0]}. A video's frames must all have one size.")
        grey = follower.grey(img)
        thumb = cv2.resize(grey[0], (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        hist = _hue_sat_hists(img)
        reason = None
        if t == 0:
            reason = "start"
        elif _is_cut(prev_hist, hist):
            reason = "cut"
            live, lost = [], []
        elif float(np.abs(thumb - prev_thumb).mean()) > MOTION_MAD:
            reason = "motion"
        elif not live:
            reason = "no face"
        elif t - last_key >= keyframe_interval:
            reason = "interval"
        moved = [None] * len(live)
        if reason is None:
            moved = follower.follow(img, grey, live)
            if any(m is None for m in moved):
                reason = "lost"
            else:
                for f, m in zip(live, moved):
                    f.follow(m, t)
        if reason is not None:
            keyframes.append(t)
            reasons[t] = reason
            last_key = t
            found = filter_faces(analyzer.detect(img), threshold, min_size, 0, "highest_score")
            # where each candidate track is expected now: moved by the flow when it was followed
            cands = live + [f for f in lost if t - f.frame - 1 <= max_gap]
            for f, m in zip(live, moved):
                if m is not None:
                    f.follow(m, t)
            matched = set()
            new_live = []
            if cands and len(found):
                iou = iou_matrix(np.stack([c.box for c in cands]), found.boxes)
                cost = np.where(iou >= IOU_MATCH, 1.0 - iou, 1e6)
                for r, c in zip(*linear_sum_assignment(cost)):
                    if iou[r, c] >= IOU_MATCH:
                        cands[r].set(found.landmarks68[c], found.boxes[c], found.scores[c], t)
                        new_live.append(cands[r])
                        matched.add(int(c))
            for c in range(len(found)):
                if c not in matched:
                    new_live.append(_Face(next_id, found.landmarks68[c], found.boxes[c], found.scores[c], t))
                    next_id += 1
            kept = {id(f) for f in new_live}
            pool = {id(f): f for f in live + lost}
            lost = [f for k, f in pool.items() if k not in kept and t - f.frame - 1 <= max_gap]
            live = new_live
        out.append(_filter(live, min_size, max_faces, order))
        follower.prev_grey = grey[0]
        prev_thumb, prev_hist = thumb, hist
        if progress is not None:
            progress()
    if size is None:
        raise ValueError("SwapForge: the video has no frames. Expected at least one frame; check the node that "
                         "produced it.")
    if stats is not None:
        stats["keyframes"] = keyframes
        stats["reasons"] = reasons
        stats["tracks"] = next_id
    return FaceSet(out, (int(size[0]), int(size[1])), analyzer.name)


def _per_frame(analyzer, frames, threshold, min_size, max_faces, order, max_gap, progress, stats) -> FaceSet:
    """Detection on every frame, ids from track.track_faces (analyzers without dlib's predictor)."""

    out = []
    size = None
    for t, frame in enumerate(frames):
        img = _u8(frame)
        size = size or img.shape[:2]
        out.append(filter_faces(analyzer.detect(img), threshold, min_size, 0, order))
        if progress is not None:
            progress()
    if size is None:
        raise ValueError("SwapForge: the video has no frames. Expected at least one frame.")
    fs, _ = track_faces(FaceSet(out, (int(size[0]), int(size[1])), analyzer.name), max_gap=0, smoothing=0.0)
    frames_out = []
    for ff in fs.frames:
        frames_out.append(filter_faces(ff, -np.inf, min_size, max_faces, order))
    if stats is not None:
        stats["keyframes"] = list(range(len(out)))
        stats["reasons"] = {t: "every frame" for t in range(len(out))}
        stats["tracks"] = len({int(i) for ff in fs.frames for i in ff.track_ids})
    return fs.with_frames(frames_out)


def detect_or_track(analyzer, frames: np.ndarray, threshold: float = 0.5, min_size: int = 0, max_faces: int = 0,
                    order: str = "largest_first", track: bool = True, keyframe_interval: int = 5,
                    progress: Optional[Callable[[], None]] = None, stats: Optional[Dict] = None) -> FaceSet:
    """Faces of an IMAGE batch [B, H, W, 3]: a single frame through detect.detect_faces, a batch of several
    (a video) through track_video unless `track` is False (then detect_faces on every frame, no ids)."""
    if not np.isfinite(threshold):
        raise ValueError(f"SwapForge: the detection threshold must be a finite number, got {threshold}.")
    if track and len(frames) > 1:
        return track_video(analyzer, check_images(frames), threshold, min_size, max_faces, order, keyframe_interval,
                           progress=progress, stats=stats)
    return detect_faces(analyzer, frames, threshold, min_size, max_faces, order, progress=progress)
