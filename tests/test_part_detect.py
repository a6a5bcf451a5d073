"""Part detector post-processing (models/partswap/part_detect.py): detections -> FuseAnyPart boxes.

The detector and SAM are replaced by stand-ins that return hand-placed boxes/masks, so every expected box
below is computed by hand from those numbers (the real Grounding DINO and SAM loaders have their own tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from models.face.records import FaceSet, FrameFaces
from models.partswap import part_detect as pd
from models.partswap import parts
from synthclip import make_faces, smooth_frames, unit_face

H, W = 200, 240


@dataclass
class Det:
    box_xyxy: np.ndarray
    score: float
    label: int


class FakeDetector:
    """Returns fixed detections given in FRAME edge coordinates, shifted into the window it is shown.
    The window's origin is found from the crop's content (a unique colour ramp), so the test also checks
    that the detector was shown exactly the face's search window."""

    def __init__(self, frame, dets):
        self.frame, self.dets, self.calls = frame, dets, []

    def detect(self, image, phrases, box_threshold, text_threshold):
        self.calls.append((image.copy(), list(phrases), box_threshold, text_threshold))
        # locate the crop in the frame: the ramp encodes x in R and y in G
        x0 = int(round(image[0, 0, 0] * 1000))
        y0 = int(round(image[0, 0, 1] * 1000))
        return [Det(np.asarray(b, np.float32) - [x0, y0, x0, y0], s, l) for b, s, l in self.dets]


def ramp_frame():
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return np.stack([x / 1000, y / 1000, np.full_like(x, 0.5)], -1)[None]


def one_face(scale=60.0, centre=(120.0, 100.0)):
    lm = unit_face() * scale + centre
    return FaceSet([make_faces([lm])], (H, W)), lm


PHRASES = ["eyes", "eyebrows", "nose", "mouth"]  # caption order for DEFAULT_PROMPTS; owners below
OWNERS = ["eyes", "eyes", "nose", "mouth"]


def test_caption_phrases_follow_part_order_and_split_on_dots_and_commas():
    phrases, owners = pd.caption_phrases({"eyes": " Eyes . eyebrows,", "nose": "nose", "mouth": "lips . mouth"})
    assert phrases == ["eyes", "eyebrows", "nose", "lips", "mouth"]
    assert owners == ["eyes", "eyes", "nose", "mouth", "mouth"]
    with pytest.raises(ValueError, match="nose prompt is empty"):
        pd.caption_phrases({"eyes": "eyes", "nose": " . ", "mouth": "mouth"})
    with pytest.raises(ValueError, match="used for two parts"):
        pd.caption_phrases({"eyes": "face", "nose": "face", "mouth": "mouth"})


def test_eyes_box_is_union_of_eye_and_brow_detections_and_boxes_tile_at_hand_computed_rows():
    faces, lm = one_face()
    # face box (centre coords) = landmark bounds: x 60..180, y 67..160
    dets = [([80, 78, 160, 95], 0.6, 0),     # eyes
            ([70, 68, 110, 80], 0.5, 1),     # left brow (reaches higher and further left)
            ([130, 69, 172, 81], 0.45, 1),   # right brow (reaches further right)
            ([105, 88, 135, 115], 0.7, 2),   # nose
            ([100, 90, 140, 120], 0.4, 2),   # a weaker nose box: ignored (best score wins)
            ([90, 122, 150, 140], 0.8, 3),   # mouth
            ([85, 124, 155, 142], 0.3, 3)]   # below box_threshold 0.35: ignored
    det = FakeDetector(ramp_frame()[0], dets)
    ps, report = pd.detect_parts(ramp_frame(), faces, det, pd.DEFAULT_PROMPTS, 0.35, 0.25, face_margin=0.2)
    # eyes union: x 70..172, y 68..95. Eyes centre row (68+95)/2 = 81.5 < nose top 88 -> split = midpoint
    # of 95 and 88 = 91.5. Nose/mouth: mouth top 122 >= nose centre 101.5 -> split = (115 + 122) / 2 = 118.5.
    pb = ps.frames[0][0]
    np.testing.assert_allclose(pb.eyes, [68 / H, 70 / W, 91.5 / H, 172 / W], atol=1e-6)
    np.testing.assert_allclose(pb.nose, [91.5 / H, 105 / W, 118.5 / H, 135 / W], atol=1e-6)
    np.testing.assert_allclose(pb.mouth, [118.5 / H, 90 / W, 140 / H, 150 / W], atol=1e-6)
    assert pb.eyes[2] == pb.nose[0] and pb.nose[2] == pb.mouth[0]
    assert report[0].source == "grounding_dino" and report[0].scores == pytest.approx(
        {"eyes": 0.6, "nose": 0.7, "mouth": 0.8})
    # the detector saw exactly the search window: face edges widened by 0.2 x size, floor/ceil, clipped
    crop, phrases, bt, tt = det.calls[0]
    fx0, fy0, fx1, fy1 = faces.frames[0].boxes[0] + 0.5  # 60.5, 67.5, 180.5, 160.5 (chin at y = 1)
    assert (fx0, fy0, fx1, fy1) == (60.5, 67.5, 180.5, 160.5)
    x0, y0 = int(np.floor(60.5 - 0.2 * 120)), int(np.floor(67.5 - 0.2 * 93))
    x1, y1 = int(np.ceil(180.5 + 0.2 * 120)), int(np.ceil(160.5 + 0.2 * 93))
    assert crop.shape == (y1 - y0, x1 - x0, 3)
    assert (round(crop[0, 0, 0] * 1000), round(crop[0, 0, 1] * 1000)) == (x0, y0)
    assert phrases == PHRASES and (bt, tt) == (0.35, 0.25)


def test_a_nose_box_starting_between_the_eyes_gives_the_eyes_their_whole_box():
    # lower box starts above the upper box's centre row -> split = upper box's bottom (landmark convention)
    t = pd.tile_boxes([70, 60, 170, 100], [105, 75, 135, 120], [90, 118, 150, 140])
    assert t["eyes"][3] == 100 and t["nose"][1] == 100
    # mouth top 118 is below the nose's centre row 97.5 -> midpoint (120 + 118) / 2: an overlap split evenly
    assert t["nose"][3] == 119 and t["mouth"][1] == 119
    # parts out of order (mouth above nose) -> None
    assert pd.tile_boxes([70, 60, 170, 100], [105, 120, 135, 140], [90, 101, 150, 118]) is None


def test_missing_part_falls_back_to_landmark_boxes_and_says_why():
    faces, lm = one_face()
    dets = [([80, 78, 160, 95], 0.6, 0), ([90, 122, 150, 140], 0.8, 3)]  # no nose
    ps, report = pd.detect_parts(ramp_frame(), faces, FakeDetector(None, dets))
    ref = parts.part_boxes_from_landmarks(lm, (H, W), 0.1)
    for p in parts.PARTS:
        np.testing.assert_array_equal(getattr(ps.frames[0][0], p), getattr(ref, p))
    assert report[0].source == "landmarks" and "nose not found" in report[0].reason
    text = pd.format_report(report, 1, faces.counts(), "grounding_dino")
    assert "1 fell back to the landmark boxes" in text and "nose not found" in text


def test_detections_centred_outside_the_face_box_are_ignored():
    faces, lm = one_face()
    # a strong "nose" centred at x = 200 (outside the face box, inside the search window): ignored
    dets = [([80, 78, 160, 95], 0.6, 0), ([190, 90, 210, 110], 0.99, 2), ([105, 88, 135, 115], 0.5, 2),
            ([90, 122, 150, 140], 0.8, 3)]
    ps, report = pd.detect_parts(ramp_frame(), faces, FakeDetector(None, dets))
    assert ps.frames[0][0].nose[1] == pytest.approx(105 / W) and report[0].scores["nose"] == 0.5


def test_unordered_detections_fall_back_to_landmarks():
    faces, lm = one_face()
    dets = [([80, 78, 160, 95], 0.6, 0), ([105, 125, 135, 140], 0.7, 2), ([90, 96, 150, 118], 0.8, 3)]
    ps, report = pd.detect_parts(ramp_frame(), faces, FakeDetector(None, dets))
    assert report[0].source == "landmarks" and "not stacked" in report[0].reason


def test_without_a_detector_the_boxes_are_the_landmark_boxes_and_faceless_frames_stay_empty():
    lm = unit_face() * 60 + (120, 100)
    faces = FaceSet([make_faces([lm]), FrameFaces.empty(), make_faces([lm + 3])], (H, W))
    frames = smooth_frames(3, H, W)
    ps, report = pd.detect_parts(frames, faces)
    ref = parts.compute_parts(faces)
    assert len(ps.frames) == 3 and ps.frames[1] == [] and ps.source == "landmarks"
    for fi in (0, 2):
        np.testing.assert_array_equal(ps.frames[fi][0].mouth, ref.frames[fi][0].mouth)
    text = pd.format_report(report, 3, faces.counts(), "landmarks")
    assert "frame 1: no face (passed through, no parts)" in text


class HalfSam:
    """Stand-in SAM: ones on the left half of the frame, so a part mask must be its box AND the left half."""

    def __init__(self):
        self.boxes = None

    def masks_for_boxes(self, image, boxes_xyxy):
        self.boxes = np.asarray(boxes_xyxy)
        m = np.zeros((len(boxes_xyxy), H, W), np.float32)
        m[:, :, : W // 2] = 1
        return m


def test_box_masks_are_the_hard_part_boxes_and_sam_masks_are_cut_to_their_box():
    faces, lm = one_face()
    frames = smooth_frames(1, H, W)
    ps, _ = pd.detect_parts(frames, faces)
    boxes = pd.part_masks(frames, faces, ps, "box")
    for p in parts.PARTS:
        np.testing.assert_array_equal(boxes[p][0], parts.box_mask(getattr(ps.frames[0][0], p), (H, W)))
    sam = HalfSam()
    masks = pd.part_masks(frames, faces, ps, "sam", refiner=sam)
    for i, p in enumerate(parts.PARTS):
        b = getattr(ps.frames[0][0], p)
        np.testing.assert_allclose(sam.boxes[i], [b[1] * W, b[0] * H, b[3] * W, b[2] * H], rtol=1e-6)
        expect = boxes[p][0].copy()
        expect[:, W // 2:] = 0
        np.testing.assert_array_equal(masks[p][0], expect)
    with pytest.raises(ValueError, match="needs a SAM model"):
        pd.part_masks(frames, faces, ps, "sam")
    with pytest.raises(ValueError, match="unknown mask mode"):
        pd.part_masks(frames, faces, ps, "hull")


def test_bad_inputs_give_clear_errors():
    faces, _ = one_face()
    with pytest.raises(ValueError, match="detected on 1 frame"):
        pd.detect_parts(smooth_frames(2, H, W), faces)
    with pytest.raises(ValueError, match="image is"):
        pd.detect_parts(smooth_frames(1, H + 2, W), faces)
    with pytest.raises(ValueError, match="box_threshold"):
        pd.detect_parts(smooth_frames(1, H, W), faces, FakeDetector(None, []), box_threshold=1.5)


@dataclass
class PhraseDet(Det):
    phrase_scores: np.ndarray = None


def test_a_box_whose_phrases_all_miss_text_threshold_is_not_given_to_the_first_part():
    faces, lm = one_face()
    # strong box, but no phrase passed text_threshold (phrase_scores all 0: label argmax would say "eyes")
    dets = [PhraseDet(np.array([20, 20, 230, 190], np.float32), 0.9, 0, np.zeros(4, np.float32))]
    det = FakeDetector(None, [])
    det.detect = lambda *a, **k: dets
    ps, report = pd.detect_parts(ramp_frame(), faces, det)
    assert report[0].source == "landmarks" and "eyes, nose, mouth not found" in report[0].reason
