"""One FuseAnyPart reference photo, ready for the CLIP Part Encoder: the steps the stage-by-stage template wires
as four nodes per reference (Detect Faces -> Align & Crop -> Detect Faces on the crop -> Part Detector), as one
function for the compact Reference Parts node.

1. The largest face of the first image (models/face/detect.py, ``largest_first``).
2. Its aligned crop (models/face/align.py; FFHQ at 512 px is what FuseAnyPart was trained on).
3. The face found again on the crop (its landmarks in crop pixels).
4. Its part boxes (models/partswap/part_detect.py: the 68 landmarks, or a text-prompted detector with the
   landmarks as the per-face fallback).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ..face import align, detect
from ..face.records import PartSet
from ..partswap import part_detect


def reference_parts(analyzer, images: np.ndarray, size: int = 512, template: str = "ffhq", detector=None,
                    prompts=None, box_threshold: float = 0.35, text_threshold: float = 0.25,
                    face_margin: float = 0.2, what: str = "reference",
                    progress: Optional[Callable[[], None]] = None) -> Tuple[np.ndarray, PartSet, str]:
    """(crop [1, size, size, 3] float32, its PartSet, a report line) for the first image of `images`
    [B, H, W, 3] float 0..1. ValueError naming `what` when no face is found, in the photo or on its crop."""
    first = np.ascontiguousarray(np.asarray(images, np.float32)[:1])
    faces = detect.detect_faces(analyzer, first, max_faces=1, order="largest_first")
    if len(faces.frames[0]) == 0:
        raise ValueError(f"SwapForge Reference Parts: no face found in the {what} photo. Use a photo with a clearly "
                         "visible face (about 80 px or larger), or lower the detector's threshold.")
    crops, _, _ = align.align_crop(first, faces, size, template)
    crop = np.ascontiguousarray(crops[:1])
    on_crop = detect.detect_faces(analyzer, crop, max_faces=1, order="largest_first")
    if len(on_crop.frames[0]) == 0:
        raise ValueError(f"SwapForge Reference Parts: the face of the {what} photo was not found again on its "
                         f"{size} px aligned crop. Try another photo of the person, or the other alignment.")
    partset, report = part_detect.detect_parts(crop, on_crop, detector, prompts, box_threshold, text_threshold,
                                               face_margin)
    if progress is not None:
        progress()
    r = report[0]
    line = f"{what}: face {faces.frames[0].boxes[0].round(1).tolist()} -> {size} px {template} crop, parts from " \
           f"{r.source}" + (f" ({r.reason})" if r.reason else "")
    return crop, partset, line
