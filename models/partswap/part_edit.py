"""Hand-edited part boxes (the Part Detector's `boxes` widget, written by the part-box editor in web/).

The widget holds JSON text: ``{"face": k, "eyes": [y0, x0, y1, x1], "nose": [...], "mouth": [...]}``, each box
in FuseAnyPart's convention (rows first, normalised to 0..1 of the frame; models/partswap/parts.py). A part left
out keeps the detector's box. Empty text means no edit. The edited boxes replace face k's boxes in every frame
that has a face k (the same boxes everywhere: meant for aligned crops and single photos, where the face sits at
the same place in every frame).

After the replacement the three boxes are tiled again (eyes y1 == nose y0, nose y1 == mouth y0), so edited
boxes keep the FuseAnyPart layout. The split row between an upper and a lower part:

* one of the two edited, the other not: the edited box's edge (the box drawn by hand stays where it was drawn;
  the detector's box is cut or extended to meet it);
* both edited, or neither: the detector's rule (models/partswap/part_detect.py, `tile_boxes`): the midpoint of
  the upper bottom and the lower top, unless the lower box starts above the upper box's centre (then the upper
  bottom).

Tiling boxes that are already tiled changes nothing, so the editor's own (tiled) boxes come back unchanged;
web/swapforge.js tiles with the same rule while a box is dragged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from ..face.records import PartBoxes, PartSet
from .part_detect import PARTS


WIDGET_TOOLTIP = ("Hand-edited part boxes (JSON; empty: the detector's). The box editor on this node writes it after a "
                  'run: {"face": k, "eyes"/"nose"/"mouth": [y0, x0, y1, x1] in 0..1}. A part left out keeps the '
                  "detector's box; the boxes replace face k's in every frame and are tiled like the detector's. "
                  "Masks in 'landmarks' mode follow the landmarks, not the boxes.")


@dataclass
class BoxEdits:
    """Parsed `boxes` widget: the face they apply to and the edited boxes ([y0, x0, y1, x1], 0..1)."""

    face: int = 0
    boxes: Dict[str, np.ndarray] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.boxes)


def parse_box_edits(text: str) -> BoxEdits:
    """The `boxes` widget's JSON (empty: no edit); ValueError saying what is wrong and the expected form."""
    if text is None or not str(text).strip():
        return BoxEdits()
    form = ('Expected JSON like {"face": 0, "eyes": [0.3, 0.2, 0.5, 0.8], "nose": [...], "mouth": [...]} with each '
            "box [y0, x0, y1, x1] in 0..1 (y0 < y1, x0 < x1); clear the widget to use the detector's boxes.")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"SwapForge Part Detector: the boxes widget is not valid JSON ({e}). {form}") from None
    if not isinstance(data, dict):
        raise ValueError(f"SwapForge Part Detector: the boxes widget holds a {type(data).__name__}, not an object. "
                         f"{form}")
    unknown = sorted(set(data) - set(PARTS) - {"face"})
    if unknown:
        raise ValueError(f"SwapForge Part Detector: unknown key(s) {unknown} in the boxes widget. {form}")
    face = data.get("face", 0)
    if isinstance(face, bool) or not isinstance(face, int) or face < 0:
        raise ValueError(f"SwapForge Part Detector: 'face' in the boxes widget must be a face number >= 0, got "
                         f"{face!r}. {form}")
    boxes = {}
    for part in PARTS:
        if data.get(part) is None:
            continue
        b = data[part]
        ok = (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          for v in b))
        arr = np.asarray(b, np.float64) if ok else None
        if not ok or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1 or not (
                arr[0] < arr[2] and arr[1] < arr[3]):
            raise ValueError(f"SwapForge Part Detector: the {part} box {b!r} in the boxes widget is not a box. {form}")
        boxes[part] = arr
    return BoxEdits(face, boxes)


def _split(upper: np.ndarray, lower: np.ndarray, upper_edited: bool, lower_edited: bool) -> float:
    """Split row between an upper and a lower [y0, x0, y1, x1] box (module docstring)."""
    if upper_edited != lower_edited:
        return float(upper[2] if upper_edited else lower[0])
    if lower[0] < 0.5 * (upper[0] + upper[2]):
        return float(upper[2])
    return float(0.5 * (upper[2] + lower[0]))


def tile_edited(parts: Dict[str, np.ndarray], edited) -> Dict[str, np.ndarray]:
    """The three [y0, x0, y1, x1] boxes tiled (module docstring), or None when they are not stacked top to
    bottom. `edited`: the parts drawn by hand."""
    e, n, m = (np.asarray(parts[p], np.float64).copy() for p in PARTS)
    s1 = _split(e, n, "eyes" in edited, "nose" in edited)
    s2 = _split(n, m, "nose" in edited, "mouth" in edited)
    if not (e[0] < s1 < s2 < m[2]):
        return None
    e[2], n[0], n[2], m[0] = s1, s1, s2, s2
    return {"eyes": e.astype(np.float32), "nose": n.astype(np.float32), "mouth": m.astype(np.float32)}


def apply_box_edits(partset: PartSet, edits: BoxEdits) -> Tuple[PartSet, List[str]]:
    """The PartSet with face `edits.face` of every frame given the edited boxes (then tiled); and report lines
    for frames without that face. The input PartSet is not modified."""
    if not edits:
        return partset, []
    frames, notes = [], []
    for fi, faces in enumerate(partset.frames):
        faces = list(faces)
        if edits.face < len(faces):
            merged = {p: edits.boxes.get(p, faces[edits.face].as_dict()[p]) for p in PARTS}
            tiled = tile_edited(merged, edits.boxes)
            if tiled is None:
                raise ValueError(
                    f"SwapForge Part Detector: the edited boxes of face {edits.face} ({', '.join(edits.boxes)}) are "
                    "not stacked top to bottom with the others, so they cannot be tiled as FuseAnyPart's boxes are "
                    "(eyes above nose above mouth). Move them back into that order in the box editor, or clear the boxes widget.")
            faces[edits.face] = PartBoxes(**tiled)
        else:
            notes.append(f"frame {fi}: no face {edits.face}, the edited boxes were not used")
        frames.append(faces)
    return PartSet(frames=frames, frame_size=partset.frame_size, source=partset.source + "+edited"), notes
