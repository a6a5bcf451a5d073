"""Part Detector node on a 12-frame clip of a real photo (frames 4 and 9 faceless) and its loaders' errors.

The Grounding DINO backend is exercised with a stand-in detector here (no real weights offline); the
checkpoint conversion is proven in tests/test_grounding_dino.py and the post-processing in
tests/test_part_detect.py.
"""

import numpy as np
import pytest
import torch

from models.face.records import FaceSet
from models.partswap import parts
from packloader import load_pack
from synthclip import make_clip
from test_grounding_dino import small_checkpoint as small_checkpoint  # noqa: F401,F811  (a fixture)

NO_FACE = (4, 9)


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def N(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def clip_and_faces(N):
    clip = torch.from_numpy(make_clip("obama.jpg", 12, NO_FACE))
    fm = N["SwapForge_FaceModelLoader"]().load("dlib_mmod (embedded)", 0)[0]
    faces = N["SwapForge_DetectFaces"]().detect(fm, clip, 0.5, 32, 0, "largest_first")[0]
    return clip, faces


ARGS = dict(eyes_prompt="eyes . eyebrows", nose_prompt="nose", mouth_prompt="mouth", box_threshold=0.35,
            text_threshold=0.25, face_margin=0.2, face_index=-1)


def test_landmark_backend_gives_the_face_parts_boxes_on_every_frame_and_reports_faceless_ones(N, clip_and_faces):
    clip, faces = clip_and_faces
    ps, eyes, nose, mouth, preview, report = N["SwapForge_PartDetector"]().detect(
        clip, faces, "landmarks", "box", **ARGS)
    ref = parts.compute_parts(faces)
    assert len(ps.frames) == 12 and eyes.shape == clip.shape[:3] and preview.shape == clip.shape
    for fi in range(12):
        assert len(ps.frames[fi]) == (0 if fi in NO_FACE else 1)
        for a, b in zip(ps.frames[fi], ref.frames[fi]):
            np.testing.assert_array_equal(a.nose, b.nose)
    for fi in NO_FACE:
        assert float(eyes[fi].max()) == 0 and torch.equal(preview[fi], clip[fi])
    # box masks: exactly the pixels whose centre lies in the box
    np.testing.assert_array_equal(mouth[0].numpy(), parts.box_mask(ps.frames[0][0].mouth, clip.shape[1:3]))
    lines = report.splitlines()
    assert len(lines) == 13 and "frame 4: no face" in report and "frame 0: face 0: landmarks" in report


class _Handle:
    def __init__(self, runner):
        self.runner = runner

    def ready(self):
        return self.runner


class NoParts:
    """Stand-in detector that finds nothing: every face must fall back to its landmark boxes."""

    def __init__(self):
        self.calls = 0

    def detect(self, image, phrases, box_threshold, text_threshold):
        self.calls += 1
        return []


def test_detector_backend_searches_each_face_and_falls_back_per_face(N, clip_and_faces):
    clip, faces = clip_and_faces
    det = NoParts()
    ps, *_, report = N["SwapForge_PartDetector"]().detect(clip, faces, "grounding_dino", "landmarks", **ARGS,
                                                          grounding_dino=_Handle(det))
    assert det.calls == 10  # one search per face, none on the faceless frames
    assert "10 fell back to the landmark boxes" in report and "eyes, nose, mouth not found" in report


def test_missing_models_and_mismatched_batches_give_clear_errors(N, clip_and_faces):
    clip, faces = clip_and_faces
    node = N["SwapForge_PartDetector"]()
    with pytest.raises(ValueError, match="Connect Load Grounding DINO"):
        node.detect(clip, faces, "grounding_dino", "box", **ARGS)
    with pytest.raises(ValueError, match="Connect Load SAM"):
        node.detect(clip, faces, "landmarks", "sam", **ARGS)
    with pytest.raises(ValueError, match="detected on 12 frame"):
        node.detect(clip[:5], faces, "landmarks", "box", **ARGS)


def test_loaders_name_the_missing_file_its_folder_and_where_to_get_it(N, tmp_path, monkeypatch):
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        N["SwapForge_GroundingDinoLoader"]().load("groundingdino_swint_ogc.pth", "bert-base-uncased")
    assert "groundingdino_swint_ogc.pth" in str(e.value) and "grounding-dino" in str(e.value)
    assert "IDEA-Research" in str(e.value) and "Apache-2.0" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        N["SwapForge_SAMLoader"]().load("sam_vit_b_01ec64.pth")
    assert "sams" in str(e.value) and "segment-anything" in str(e.value)


def test_bert_folders_are_listed_by_their_config(pack, tmp_path, monkeypatch):
    services = pack.nodes.services
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    root = tmp_path / "bert-base-uncased"
    (root / "other").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "other" / "config.json").write_text("{}")
    (root / "empty").mkdir()
    assert services.list_dirs("bert-base-uncased") == ["bert-base-uncased", "bert-base-uncased/other"]
    assert services.dir_path("bert-base-uncased", "bert-base-uncased/other") == str(root / "other")
    assert services.dir_path("bert-base-uncased", "bert-base-uncased/empty") is None


def test_sam_mask_mode_runs_an_official_layout_vit_b_through_the_loader_node(N, clip_and_faces, tmp_path,
                                                                             monkeypatch):
    """Wiring only: a vit_b checkpoint with the official keys and shapes but all-zero weights (a few KB on
    disk, tests/test_sam.py) loads through Load SAM and runs inside the Part Detector; its masks must lie
    inside the part boxes. Segmentation quality needs the real weights (none offline)."""
    from test_sam import _stride0_checkpoint
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    (tmp_path / "sams").mkdir()
    _stride0_checkpoint("vit_b", tmp_path / "sams" / "sam_vit_b_01ec64.pth")
    sam = N["SwapForge_SAMLoader"]().load("sam_vit_b_01ec64.pth")[0]
    assert sam.runner.variant == "vit_b"
    clip, faces = clip_and_faces
    one = FaceSet(faces.frames[:1], faces.frame_size)
    ps, eyes, nose, mouth, _, report = N["SwapForge_PartDetector"]().detect(
        clip[:1], one, "landmarks", "sam", **ARGS, sam=sam)
    box = parts.box_mask(ps.frames[0][0].eyes, clip.shape[1:3])
    assert eyes.shape == (1,) + clip.shape[1:3]
    assert float((eyes[0].numpy() * (1 - box)).max()) == 0.0


def test_grounding_dino_backend_runs_an_official_layout_checkpoint_through_the_loader_node(
        N, clip_and_faces, small_checkpoint, tmp_path, monkeypatch):
    """Wiring only: the small official-layout SwinT-OGC model with random weights (tests/test_grounding_dino.py)
    loads through Load Grounding DINO from models/grounding-dino + models/bert-base-uncased and runs inside the
    Part Detector on one real frame. Which boxes random weights give means nothing; with both thresholds at 0
    every query is a candidate, so the face gets detector boxes or a stated reason to fall back."""
    import shutil
    path, bert, _ = small_checkpoint
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    (tmp_path / "grounding-dino").mkdir()
    shutil.copy(path, tmp_path / "grounding-dino" / "groundingdino_swint_ogc.pth")
    shutil.copytree(bert, tmp_path / "bert-base-uncased")
    loader = N["SwapForge_GroundingDinoLoader"]
    choices = loader.INPUT_TYPES()["required"]
    assert choices["model_name"][0] == ["groundingdino_swint_ogc.pth"] and choices["bert"][0] == ["bert-base-uncased"]
    gdino = loader().load("groundingdino_swint_ogc.pth", "bert-base-uncased")[0]
    clip, faces = clip_and_faces
    one = FaceSet(faces.frames[:1], faces.frame_size)
    args = dict(ARGS, box_threshold=0.0, text_threshold=0.0, eyes_prompt="eyes", face_index=0)
    ps, eyes, nose, mouth, preview, report = N["SwapForge_PartDetector"]().detect(
        clip[:1], one, "grounding_dino", "box", **args, grounding_dino=gdino)
    assert len(ps.frames[0]) == 1 and ps.source == "grounding_dino"
    line = report.splitlines()[1]
    assert line.startswith("frame 0: face 0: ")
    pb = ps.frames[0][0]
    assert pb.eyes[2] == pb.nose[0] and pb.nose[2] == pb.mouth[0]  # tiled, whichever source won
    np.testing.assert_array_equal(nose[0].numpy(), parts.box_mask(pb.nose, clip.shape[1:3]))
