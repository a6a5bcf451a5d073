"""Part detector: FuseAnyPart part boxes from a text-prompted detector (Grounding DINO), with the landmark
boxes as the default and the fallback, and part masks (hard boxes, soft landmark hulls, or SAM).

FuseAnyPart (Yu et al., NeurIPS 2024, sec. 3) detects the parts with Grounding DINO prompted "eyes",
"nose", "mouth"; the released samples then hold one box for both eyes and both brows and tile the three
boxes vertically (models/partswap/parts.py). Here, per detected face:

1. Search region: the face box widened by `face_margin` x its size on every side, cut out of the frame
   (the detector only ever sees one face, so parts of a neighbouring face cannot be picked).
2. One detector pass with every part's phrases in one caption (e.g. "eyes . eyebrows . nose . mouth .");
   each detection is assigned to the part of its best phrase (`Detection.label`).
3. Part boxes: eyes = the union of every eyes detection (both eyes, both brows: the authors' one box);
   nose and mouth = their best-scoring detection. Only detections whose centre lies inside the face box
   itself count.
4. Tiling (`tile_boxes`): between an upper and a lower part (eyes/nose, then nose/mouth) the split row is
   the midpoint of the upper box's bottom and the lower box's top, unless the lower box starts above the
   upper box's centre (a nose box that starts between the eyes): then the upper box keeps its bottom,
   as the landmark convention does. Result: eyes y1 == nose y0, nose y1 == mouth y0 exactly.
5. A face where a part is not found, or whose parts are not stacked top to bottom, gets its landmark boxes
   (`parts.part_boxes_from_landmarks`) instead; the report says which faces and why.

Coordinates: detector boxes are [x0, y0, x1, y1] in pixel-edge coordinates (0 .. W, as a normalised box
times the width); a normalised FuseAnyPart box is edge / size. Face boxes and landmarks use pixel-centre
coordinates (models/face/records.py): centre c is edge c + 0.5.

The detector and the mask refiner are duck-typed: anything with `detect(image, phrases, box_threshold,
text_threshold) -> [Detection-like: box_xyxy, score, label]` (models/partswap/grounding_dino.py) and
`masks_for_boxes(image, boxes_xyxy) -> [N, H, W]` (models/partswap/sam.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..face.records import FaceSet, PartBoxes, PartSet
from . import parts as partlib

PARTS = partlib.PARTS
DEFAULT_PROMPTS = {"eyes": "eyes . eyebrows", "nose": "nose", "mouth": "mouth"}
MASK_MODES = ("box", "landmarks", "sam")


def split_phrases(prompt: str) -> List[str]:
    """Phrases of one part's prompt: separated by '.' or ',' (Grounding DINO's caption convention), trimmed,
    lower-cased, empties dropped."""
    out = []
    for chunk in str(prompt).replace(",", ".").split("."):
        p = " ".join(chunk.strip().lower().split())
        if p:
            out.append(p)
    return out


def caption_phrases(prompts: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """All phrases in caption order and the part each one belongs to. Every part needs at least one phrase."""
    phrases, owners = [], []
    for part in PARTS:
        ps = split_phrases(prompts.get(part, ""))
        if not ps:
            raise ValueError(f"SwapForge part detector: the {part} prompt is empty. Give at least one phrase, "
                             f"e.g. {DEFAULT_PROMPTS[part]!r}.")
        for p in ps:
            if p in phrases:
                raise ValueError(f"SwapForge part detector: the phrase {p!r} is used for two parts. Give each "
                                 "part its own phrases.")
            phrases.append(p)
            owners.append(part)
    return phrases, owners


def search_region(face_box_xyxy, frame_size, face_margin: float) -> Tuple[int, int, int, int]:
    """Integer pixel-edge window [x0, y0, x1, y1) around a face box (pixel-centre coordinates), widened by
    face_margin x the box's width/height on each side and clipped to the frame."""
    h, w = frame_size
    b = np.asarray(face_box_xyxy, np.float64).reshape(4) + 0.5  # centre -> edge coordinates
    bw, bh = b[2] - b[0], b[3] - b[1]
    x0 = int(np.floor(max(b[0] - face_margin * bw, 0)))
    y0 = int(np.floor(max(b[1] - face_margin * bh, 0)))
    x1 = int(np.ceil(min(b[2] + face_margin * bw, w)))
    y1 = int(np.ceil(min(b[3] + face_margin * bh, h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"SwapForge part detector: the face box {np.round(b - 0.5, 1).tolist()} lies outside "
                         f"the {h}x{w} frame.")
    return x0, y0, x1, y1


def _split_row(upper: np.ndarray, lower: np.ndarray) -> float:
    """Split row (edge px) between an upper and a lower box [x0, y0, x1, y1] (see module docstring, step 4)."""
    if lower[1] < 0.5 * (upper[1] + upper[3]):
        return float(upper[3])
    return float(0.5 * (upper[3] + lower[1]))


def tile_boxes(eyes, nose, mouth) -> Optional[Dict[str, np.ndarray]]:
    """The three part boxes [x0, y0, x1, y1] (edge px) tiled vertically, or None when the parts are not
    stacked top to bottom (module docstring, step 4)."""
    e, n, m = (np.asarray(b, np.float64).reshape(4).copy() for b in (eyes, nose, mouth))
    s1 = _split_row(e, n)
    s2 = _split_row(n, m)
    if not (e[1] < s1 < s2 < m[3]):
        return None
    e[3], n[1], n[3], m[1] = s1, s1, s2, s2
    return {"eyes": e, "nose": n, "mouth": m}


def normalise_box(box_xyxy_edge, frame_size) -> np.ndarray:
    """[x0, y0, x1, y1] edge px -> FuseAnyPart [y0, x0, y1, x1] in 0..1 (clipped), float32."""
    h, w = frame_size
    b = np.asarray(box_xyxy_edge, np.float64).reshape(4)
    out = np.array([b[1] / h, b[0] / w, b[3] / h, b[2] / w])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def boxes_edge_px(pb: PartBoxes, frame_size) -> Dict[str, np.ndarray]:
    """FuseAnyPart boxes of one face back to [x0, y0, x1, y1] edge px (for SAM prompts)."""
    h, w = frame_size
    return {p: np.array([b[1] * w, b[0] * h, b[3] * w, b[2] * h], np.float32) for p, b in pb.as_dict().items()}


@dataclass
class FaceResult:
    """How one face's parts were found: `source` is "grounding_dino" or "landmarks"; `reason` says why the
    landmarks were used when the detector was asked for."""

    frame: int
    face: int
    source: str
    reason: str = ""
    scores: Dict[str, float] = field(default_factory=dict)


def parts_from_detections(detections, owners: Sequence[str], face_box_xyxy, window, frame_size,
                          box_threshold: float) -> Tuple[Optional[PartBoxes], str, Dict[str, float]]:
    """One face's part boxes from the detections of its search window (steps 3-4 of the module docstring).

    detections: Detection-like objects with box_xyxy (edge px inside the window), score, label (index into
    the caption's phrases, whose parts are `owners`) and optionally phrase_scores (0 where a phrase is under
    text_threshold; a detection with no phrase above it is dropped, as the official predict() would give it
    no label). Returns (boxes or None, reason, best score per part).
    """
    wx0, wy0 = window[0], window[1]
    fb = np.asarray(face_box_xyxy, np.float64).reshape(4) + 0.5
    found: Dict[str, List[Tuple[float, np.ndarray]]] = {p: [] for p in PARTS}
    for d in detections:
        score = float(d.score)
        if not np.isfinite(score) or score <= box_threshold:
            continue
        box = np.asarray(d.box_xyxy, np.float64).reshape(4) + [wx0, wy0, wx0, wy0]
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            continue
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        if not (fb[0] <= cx <= fb[2] and fb[1] <= cy <= fb[3]):
            continue
        phrase_scores = getattr(d, "phrase_scores", None)
        if phrase_scores is not None and not float(np.max(phrase_scores, initial=0.0)) > 0.0:
            continue  # the box scored only on the caption's separators: no phrase passed text_threshold
        found[owners[int(d.label)]].append((score, box))
    missing = [p for p in PARTS if not found[p]]
    scores = {p: max(s for s, _ in found[p]) for p in PARTS if found[p]}
    if missing:
        return None, f"{', '.join(missing)} not found above box_threshold {box_threshold:g}", scores
    eyes = np.stack([b for _, b in found["eyes"]])
    eyes = np.array([eyes[:, 0].min(), eyes[:, 1].min(), eyes[:, 2].max(), eyes[:, 3].max()])
    nose = max(found["nose"], key=lambda sb: sb[0])[1]
    mouth = max(found["mouth"], key=lambda sb: sb[0])[1]
    tiled = tile_boxes(eyes, nose, mouth)
    if tiled is None:
        return None, "the detected eyes, nose and mouth are not stacked top to bottom", scores
    pb = PartBoxes(**{p: normalise_box(tiled[p], frame_size) for p in PARTS})
    for p, b in pb.as_dict().items():
        if not (b[0] < b[2] and b[1] < b[3]):
            return None, f"the detected {p} box is empty inside the frame", scores
    return pb, "", scores


def detect_parts(frames: np.ndarray, faceset: FaceSet, detector=None, prompts: Optional[Dict[str, str]] = None,
                 box_threshold: float = 0.35, text_threshold: float = 0.25, face_margin: float = 0.2,
                 landmark_margin: float = 0.1, on_frame: Optional[Callable[[], None]] = None
                 ) -> Tuple[PartSet, List[FaceResult]]:
    """SWAPFORGE_PARTS for every face of every frame: from `detector` (Grounding DINO) when given, else from
    the 68 landmarks. Frames without a face keep an empty entry. `on_frame` is called once per frame
    (progress and interrupts)."""
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"SwapForge part detector: frames must be [B, H, W, 3], got shape {frames.shape}.")
    faceset.check_batch(len(frames))
    size = tuple(int(v) for v in frames.shape[1:3])
    if tuple(faceset.frame_size) != size:
        raise ValueError(f"SwapForge part detector: the faces were detected on {tuple(faceset.frame_size)} frames "
                         f"but the image is {size}. Connect the faces detected on this same image.")
    for name, v in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
        if not (0.0 <= v < 1.0):
            raise ValueError(f"SwapForge part detector: {name} must be in [0, 1), got {v}.")
    if not (0.0 <= face_margin <= 2.0):
        raise ValueError(f"SwapForge part detector: face_margin must be in [0, 2], got {face_margin}.")
    phrases, owners = caption_phrases(prompts or DEFAULT_PROMPTS) if detector is not None else ([], [])
    out_frames: List[List[PartBoxes]] = []
    report: List[FaceResult] = []
    # one caption for the whole run: a detector that can keep its text encoding (GroundingDino.text_cache)
    # encodes it once instead of once per face
    cache = getattr(detector, "text_cache", None)
    with (cache() if cache is not None else contextlib.nullcontext()):
        _detect_all(frames, faceset, detector, phrases, owners, box_threshold, text_threshold, face_margin,
                    landmark_margin, size, out_frames, report, on_frame)
    source = "grounding_dino" if detector is not None else "landmarks"
    return PartSet(frames=out_frames, frame_size=size, source=source,
                   track_ids=[ff.track_ids.copy() for ff in faceset.frames]), report


def _detect_all(frames, faceset, detector, phrases, owners, box_threshold, text_threshold, face_margin,
                landmark_margin, size, out_frames, report, on_frame) -> None:
    """detect_parts' loop over frames and faces (appends to out_frames and report)."""
    for fi, ff in enumerate(faceset.frames):
        boxes = []
        for k in range(len(ff)):
            pb, reason, scores = None, "", {}
            if detector is not None:
                win = search_region(ff.boxes[k], size, face_margin)
                crop = np.ascontiguousarray(frames[fi, win[1]:win[3], win[0]:win[2]])
                dets = detector.detect(crop, phrases, box_threshold=box_threshold, text_threshold=text_threshold)
                pb, reason, scores = parts_from_detections(dets, owners, ff.boxes[k], win, size, box_threshold)
            if pb is None:
                try:
                    pb = partlib.part_boxes_from_landmarks(ff.landmarks68[k], size, landmark_margin)
                except ValueError as e:
                    raise ValueError(f"{e} (frame {fi}, face {k})") from None
                report.append(FaceResult(fi, k, "landmarks", reason, scores))
            else:
                report.append(FaceResult(fi, k, "grounding_dino", "", scores))
            boxes.append(pb)
        out_frames.append(boxes)
        if on_frame is not None:
            on_frame()


def check_mask_mode(mode: str, refiner) -> None:
    """A known mask mode, with the SAM model it needs (nodes call this before the detector runs)."""
    if mode not in MASK_MODES:
        raise ValueError(f"SwapForge part detector: unknown mask mode {mode!r}. Expected one of {MASK_MODES}.")
    if mode == "sam" and refiner is None:
        raise ValueError("SwapForge part detector: mask mode 'sam' needs a SAM model. Connect Load SAM, or "
                         "choose the 'box' or 'landmarks' mask mode.")


def part_masks(frames: np.ndarray, faceset: FaceSet, partset: PartSet, mode: str = "box", refiner=None,
               face_index: Optional[int] = None, dilate_frac: float = 0.15, feather_frac: float = 0.1,
               on_frame: Optional[Callable[[], None]] = None) -> Dict[str, np.ndarray]:
    """Per part, masks [B, H, W] float32 (union over the frame's faces, or face `face_index` only).

    mode "box": the hard part boxes (what FuseAnyPart inpaints, parts.box_mask); "landmarks": the soft
    landmark hulls of the classic swap (parts.part_masks); "sam": SAM's mask for each part box (`refiner`,
    models/partswap/sam.py), cut to the part's box so a mask never leaks into another part.
    """
    check_mask_mode(mode, refiner)
    if mode == "landmarks":
        return partlib.render_part_masks(faceset, PARTS, face_index, dilate_frac, feather_frac)
    frames = np.asarray(frames, np.float32)
    b, h, w = frames.shape[:3]
    if len(partset.frames) != b:
        raise ValueError(f"SwapForge part detector: the parts cover {len(partset.frames)} frame(s), the image {b}.")
    out = {p: np.zeros((b, h, w), np.float32) for p in PARTS}
    for fi, faces in enumerate(partset.frames):
        ks = range(len(faces)) if face_index is None else ([face_index] if 0 <= face_index < len(faces) else [])
        for k in ks:
            pb = faces[k]
            boxes = {p: partlib.box_mask(v, (h, w)) for p, v in pb.as_dict().items()}
            if mode == "sam":
                edge = boxes_edge_px(pb, (h, w))
                sam = np.asarray(refiner.masks_for_boxes(frames[fi], np.stack([edge[p] for p in PARTS])),
                                 np.float32)
                if sam.shape != (len(PARTS), h, w):
                    raise ValueError(f"SwapForge part detector: the SAM refiner returned masks of shape "
                                     f"{sam.shape}, expected {(len(PARTS), h, w)}.")
                for i, p in enumerate(PARTS):
                    boxes[p] = sam[i] * boxes[p]
            for p in PARTS:
                np.maximum(out[p][fi], boxes[p], out=out[p][fi])
        if on_frame is not None:
            on_frame()
    return out


def format_report(report: Sequence[FaceResult], num_frames: int, counts: Sequence[int], backend: str) -> str:
    """One line per frame: faceless frames (passed through), and per face where its boxes came from."""
    by_frame: Dict[int, List[FaceResult]] = {}
    for r in report:
        by_frame.setdefault(r.frame, []).append(r)
    lines = []
    for fi in range(num_frames):
        if counts[fi] == 0:
            lines.append(f"frame {fi}: no face (passed through, no parts)")
            continue
        items = []
        for r in by_frame.get(fi, []):
            s = f"face {r.face}: {r.source}"
            if r.scores:
                s += " (" + ", ".join(f"{p} {v:.2f}" for p, v in r.scores.items()) + ")"
            if r.reason:
                s += f" - {r.reason}"
            items.append(s)
        lines.append(f"frame {fi}: " + "; ".join(items))
    n_lm = sum(1 for r in report if r.source == "landmarks")
    head = f"part detector: {backend}, {len(report)} face(s) in {num_frames} frame(s)"
    if backend != "landmarks":
        head += f", {n_lm} fell back to the landmark boxes"
    return "\n".join([head] + lines)
