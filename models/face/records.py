"""Data records shared between the face tools (one owner module: this one).

Conventions, everywhere in SwapForge:
- Images handed to models/ are numpy float32 [H, W, 3] in 0..1 (one frame) unless a function says otherwise.
- Points are (x, y) in pixels of the frame they belong to, x to the right, y down, pixel centres at
  integer coordinates.
- Boxes of detected faces are [x0, y0, x1, y1] in pixels. FuseAnyPart part boxes are the exception
  and say so: [y0, x0, y1, x1] normalised to 0..1 (see models/partswap/parts.py).
- The 5 keypoints are in insightface/ArcFace order: left eye, right eye, nose tip, left mouth corner,
  right mouth corner, where "left" means the side with the smaller x in the image.
- The 68 landmarks follow the iBUG 300-W order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
  mouth 48-67).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import numpy as np

KPS5_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def _f32(a, shape_tail: Tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.size == 0:
        return np.zeros((0,) + shape_tail, np.float32)
    return a.reshape((-1,) + shape_tail)


@dataclass
class FrameFaces:
    """The faces found in one frame. N faces, arrays aligned on the first axis.

    boxes [N,4] x0,y0,x1,y1 px; scores [N]; kps5 [N,5,2]; landmarks68 [N,68,2] (NaN for a face whose
    analyzer gives no 68 landmarks, see has_landmarks68);
    track_ids [N] int64 (-1 when not tracked); interpolated [N] bool (True for an entry that a tracker
    filled in for a frame where the detector lost the face: usable geometry, but not a detection).
    """

    boxes: np.ndarray
    scores: np.ndarray
    kps5: np.ndarray
    landmarks68: np.ndarray
    track_ids: Optional[np.ndarray] = None
    interpolated: Optional[np.ndarray] = None

    def __post_init__(self):
        self.boxes = _f32(self.boxes, (4,))
        n = len(self.boxes)
        self.scores = _f32(self.scores, ()).reshape(n)
        self.kps5 = _f32(self.kps5, (5, 2))
        self.landmarks68 = _f32(self.landmarks68, (68, 2))
        if self.track_ids is None:
            self.track_ids = np.full(n, -1, np.int64)
        self.track_ids = np.asarray(self.track_ids, np.int64).reshape(n)
        if self.interpolated is None:
            self.interpolated = np.zeros(n, bool)
        self.interpolated = np.asarray(self.interpolated, bool).reshape(n)
        for name in ("scores", "kps5", "landmarks68"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FrameFaces: {name} has {len(getattr(self, name))} entries, boxes has {n}.")

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty() -> "FrameFaces":
        return FrameFaces(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), np.zeros((0, 68, 2)))

    def take(self, idx) -> "FrameFaces":
        """The faces at the given indices (a list/array of ints), in that order."""
        idx = np.asarray(idx, np.int64).reshape(-1)
        return FrameFaces(self.boxes[idx], self.scores[idx], self.kps5[idx], self.landmarks68[idx],
                          self.track_ids[idx], self.interpolated[idx])


def has_landmarks68(landmarks68) -> bool:
    """True when one face's 68 landmarks are usable. An analyzer that cannot give them (an insightface pack
    without its 68-point model) marks them NaN instead of zeros that a consumer would take for points."""
    a = np.asarray(landmarks68, np.float64)
    return bool(a.size and np.all(np.isfinite(a)))


def no_landmarks68_message(what: str) -> str:
    """The error a consumer of the 68 landmarks gives for a face without them (see has_landmarks68)."""
    return (f"SwapForge: {what} needs each face's 68 landmarks, but the face analyzer gave none (an insightface "
            f"pack without its 68-point model, 1k3d68.onnx in buffalo_l, marks them missing). Put the 68-point "
            f"model in the pack's folder, or pick an embedded dlib backend in Face Model Loader.")


@dataclass
class FaceSet:
    """SWAPFORGE_FACES: the faces of every frame of an IMAGE batch, one FrameFaces per frame.

    frame_size is (H, W) of the frames. len(frames) always equals the batch size of the image it was
    made from: a frame with no face has an empty FrameFaces, never a missing entry.
    """

    frames: List[FrameFaces]
    frame_size: Tuple[int, int]
    backend: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    def counts(self) -> List[int]:
        return [len(f) for f in self.frames]

    def with_frames(self, frames: List[FrameFaces]) -> "FaceSet":
        if len(frames) != len(self.frames):
            raise ValueError(f"FaceSet: {len(frames)} frames given for a set of {len(self.frames)}.")
        return replace(self, frames=list(frames))

    def check_batch(self, batch: int, what: str = "image") -> None:
        """Raise a clear error when this set was made from a batch of another length."""
        if batch != len(self.frames):
            raise ValueError(
                f"SwapForge: the faces were detected on {len(self.frames)} frame(s) but the {what} has "
                f"{batch}. Connect the faces that were detected on this same {what}.")


@dataclass
class Crop:
    """One aligned crop: `affine` maps frame pixels to crop pixels (2x3, x' = A @ [x, y, 1])."""

    frame_index: int
    face_index: int
    affine: np.ndarray
    size: int
    track_id: int = -1
    valid: bool = True  # False: a placeholder crop for a frame with no face (kept so batches stay aligned)

    def __post_init__(self):
        self.affine = np.asarray(self.affine, np.float64).reshape(2, 3)

    def inverse(self) -> np.ndarray:
        """2x3 affine mapping crop pixels back to frame pixels."""
        m = np.vstack([self.affine, [0.0, 0.0, 1.0]])
        return np.linalg.inv(m)[:2]


@dataclass
class CropSet:
    """SWAPFORGE_CROPS: the record of an Align & Crop run. crops[i] describes row i of the crop IMAGE."""

    crops: List[Crop]
    frame_size: Tuple[int, int]
    num_frames: int
    template: str = "ffhq"

    def __len__(self) -> int:
        return len(self.crops)


@dataclass
class Identity:
    """SWAPFORGE_IDENTITY: a mean face embedding (L2-normalised) and where it came from."""

    embedding: np.ndarray
    backend: str
    num_images: int = 1
    name: str = ""

    def __post_init__(self):
        self.embedding = np.asarray(self.embedding, np.float32).reshape(-1)


@dataclass
class PartBoxes:
    """FuseAnyPart part boxes of one face: [y0, x0, y1, x1] normalised by the frame (H, W)."""

    eyes: np.ndarray
    nose: np.ndarray
    mouth: np.ndarray

    def __post_init__(self):
        for k in ("eyes", "nose", "mouth"):
            setattr(self, k, np.asarray(getattr(self, k), np.float32).reshape(4))

    def as_dict(self):
        return {"eyes": self.eyes, "nose": self.nose, "mouth": self.mouth}


@dataclass
class PartSet:
    """SWAPFORGE_PARTS: per frame, per face (same order as the FaceSet), the part boxes. Empty list for a
    frame with no face. track_ids: per frame, the faces' track ids (int64 [N_i], -1 untracked), copied from
    the FaceSet (None: untracked), so a consumer can follow one tracked person (identity.person_per_frame)."""

    frames: List[List[PartBoxes]]
    frame_size: Tuple[int, int]
    source: str = "landmarks"
    track_ids: Optional[List[np.ndarray]] = None
