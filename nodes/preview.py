"""What a node shows in the editor after a run: its `ui` output, read by web/swapforge.js.

* Face picker (``swapforge_faces``): nodes that take a face index show the detected faces of one frame, in the
  order the node indexes them (the FaceSet's own order), so clicking face k sets the index to k.
* Part boxes (``swapforge_parts``): the Part Detector shows one frame with every face's part boxes, before and
  after the edits of its ``boxes`` widget, for the part-box editor.

Boxes of faces are sent as [x0, y0, x1, y1] in 0..1 of the frame (pixel edges: a pixel-centre coordinate c is
(c + 0.5) / size); part boxes keep FuseAnyPart's [y0, x0, y1, x1] normalised convention.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import services

PREVIEW_MAX_SIDE = 512  # the preview JPEG's longer side at most (the boxes are normalised, so any size works)


class NodeOutput(dict):
    """A node's return value with a `ui` part. ComfyUI reads it as the dict {"ui": ..., "result": (...)};
    Python callers (tests, scripts) keep using it as the result tuple: unpacking, len and [i] see the result."""

    def __init__(self, result: tuple, ui: dict):
        super().__init__(ui=ui, result=tuple(result))

    def __iter__(self):
        return iter(dict.__getitem__(self, "result"))

    def __len__(self):
        return len(dict.__getitem__(self, "result"))

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return dict.__getitem__(self, "result")[key]
        return dict.__getitem__(self, key)


def _preview_image(frame: Optional[np.ndarray], prefix: str) -> Optional[dict]:
    if frame is None:
        return None
    h, w = frame.shape[:2]
    scale = min(1.0, PREVIEW_MAX_SIDE / max(h, w))
    img = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if scale < 1.0:
        import cv2
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return services.save_temp_image(np.ascontiguousarray(img), prefix)


def preview_frame(faceset) -> int:
    """The frame the previews show: the first with a face (0 when none has one)."""
    return next((i for i, ff in enumerate(faceset.frames) if len(ff)), 0)


def face_boxes(faceset, frame: int) -> list:
    """The faces of one frame as [x0, y0, x1, y1] in 0..1 of the frame, in the FaceSet's order."""
    h, w = faceset.frame_size
    ff = faceset.frames[frame]
    out = []
    for b in np.asarray(ff.boxes, np.float64).reshape(-1, 4):
        out.append([round(float((b[0] + 0.5) / w), 5), round(float((b[1] + 0.5) / h), 5),
                    round(float((b[2] + 0.5) / w), 5), round(float((b[3] + 0.5) / h), 5)])
    return out


def face_picker_ui(faceset, frames: Optional[np.ndarray], widget: str, image: Optional[dict] = None) -> dict:
    """The `ui` output of a node that indexes the faces of `faceset` with its widget `widget`; `frames` are the
    images the faces were found on (None: the editor draws the boxes on a blank frame); `image`: a preview of
    that frame already saved (part_boxes_ui's)."""
    k = preview_frame(faceset) if len(faceset.frames) else 0
    h, w = faceset.frame_size
    if image is None and frames is not None and len(frames) > k:
        image = _preview_image(frames[k], "faces")
    return {"swapforge_faces": [{"image": image, "frame": k, "width": int(w), "height": int(h), "widget": widget,
                                 "boxes": face_boxes(faceset, k) if len(faceset.frames) else []}]}


def _yxyx(pb) -> dict:
    return {p: [round(float(v), 6) for v in b] for p, b in pb.as_dict().items()}


def part_boxes_ui(faceset, frames: np.ndarray, detected, final) -> dict:
    """The `ui` output of the Part Detector: one frame, each face's box with its detected and final part boxes
    (after the boxes widget's edits)."""
    k = preview_frame(faceset)
    h, w = faceset.frame_size
    faces = []
    for j, box in enumerate(face_boxes(faceset, k)):
        faces.append({"box": box, "detected": _yxyx(detected.frames[k][j]), "parts": _yxyx(final.frames[k][j])})
    return {"swapforge_parts": [{"image": _preview_image(frames[k], "parts"), "frame": k, "width": int(w),
                                 "height": int(h), "faces": faces}]}
