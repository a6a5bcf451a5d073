"""An insightface pack without its 68-point model gives no 68 landmarks: the analyzer marks them missing (NaN, not
zeros that look like points) and every consumer that needs them says so: part boxes and masks, the Part
Detector's landmark boxes, the classic swap, the GSwap Body Tracker; drawing and aligning still work."""
import sys

import numpy as np
import pytest
import torch

from models.face import align, detect
from models.face.records import FaceSet, FrameFaces, has_landmarks68
from packloader import load_pack

HINT = "1k3d68.onnx"


class FakeSCRFD:
    """insightface's detection model interface: detect(bgr, max_num, metric) -> (bboxes [N, 5], kpss [N, 5, 2])."""

    def detect(self, bgr, max_num=0, metric="default"):
        kps = np.array([[[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]]], np.float32)
        return np.array([[20, 20, 100, 120, 0.9]], np.float32), kps


def insightface_without_68():
    a = object.__new__(detect.InsightFaceAnalyzer)   # the pack's folder scan and onnxruntime are not needed here
    a._det, a._lmk, a.name = FakeSCRFD(), None, "insightface/test"
    return a


@pytest.fixture(scope="module")
def faces():
    ff = insightface_without_68().detect(np.zeros((140, 120, 3), np.uint8))
    return FaceSet([ff], (140, 120), "insightface/test")


def test_insightface_without_its_68_point_model_marks_the_landmarks_missing(faces):
    ff = faces.frames[0]
    assert len(ff) == 1 and np.isnan(ff.landmarks68).all() and not has_landmarks68(ff.landmarks68[0])
    assert has_landmarks68(np.zeros((68, 2))) and np.isfinite(ff.kps5).all()


def test_part_boxes_masks_and_the_part_detector_say_the_landmarks_are_missing(faces):
    from models.partswap import part_detect, parts

    with pytest.raises(ValueError, match=HINT):
        parts.compute_parts(faces)
    with pytest.raises(ValueError, match=HINT):
        parts.render_part_masks(faces)
    with pytest.raises(ValueError, match=HINT):
        part_detect.detect_parts(np.zeros((1, 140, 120, 3), np.float32), faces)


def test_classic_swap_says_the_landmarks_are_missing(faces):
    from models.partswap import classic

    src = (np.zeros((140, 120, 3), np.float32), np.random.default_rng(0).random((68, 2)) * 100)
    with pytest.raises(ValueError, match=f"{HINT}.*frame 0, face 0"):
        classic.swap_parts_batch(np.zeros((1, 140, 120, 3), np.float32), faces, {"nose": src})


def test_body_tracker_says_the_landmarks_are_missing(faces):
    load_pack()
    gnodes = sys.modules["swapforge.nodes.gswap"]
    with pytest.raises(ValueError, match=f"Body Tracker.*{HINT}"):
        gnodes.SwapForgeBodyTracker().track(None, torch.zeros(1, 140, 120, 3), faces, 1, 0.1)


def test_preview_and_alignment_still_work_from_the_5_keypoints(faces):
    img = np.full((1, 140, 120, 3), 0.5, np.float32)
    drawn = detect.draw_faces(img, faces)
    assert drawn.shape == img.shape and not np.array_equal(drawn, img)
    crops, info, masks = align.align_crop(img, faces, 64, "ffhq")
    assert info.crops[0].valid and np.isfinite(crops).all() and masks.max() > 0
