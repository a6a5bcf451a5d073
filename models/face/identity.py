"""Face identity: embeddings of detected faces, reference identities, similarity and face selection.

An Identity (records.py) is the re-normalised mean of the unit embeddings of the largest face of each
reference image. Similarities are cosines of unit vectors. Embeddings of the two dlib backends come from
the same recognition model, so an identity made with one dlib detector works with the other; other
backends must match exactly.
"""
from __future__ import annotations

import os
import re
from typing import Callable, List, Optional, Tuple

import numpy as np

from .detect import FaceAnalyzer, check_images, detect_faces, to_uint8
from .records import FaceSet, FrameFaces, Identity

IDENTITY_FORMAT = "swapforge_identity_v1"


def _embedding_space(backend: str) -> str:
    """Backends whose embeddings are comparable share a space: both dlib detectors use one model."""
    return "dlib_resnet_v1" if backend.startswith("dlib_") else backend


def check_identity_matches(analyzer: FaceAnalyzer, identity: Identity) -> None:
    """Raise a clear error when the identity's embeddings cannot be compared with the analyzer's."""
    dim = int(identity.embedding.shape[0])
    if dim != analyzer.embedding_dim or _embedding_space(identity.backend) != _embedding_space(analyzer.name):
        raise ValueError(
            f"SwapForge: the identity was made with backend {identity.backend!r} ({dim}-d embedding) but the "
            f"face backend here is {analyzer.name!r} ({analyzer.embedding_dim}-d). Embeddings of different "
            f"backends cannot be compared; rebuild the identity with {analyzer.name!r} or pick "
            f"{identity.backend!r} here.")


def embed_faceset(analyzer: FaceAnalyzer, images: np.ndarray, faceset: FaceSet,
                  progress: Optional[Callable[[], None]] = None) -> List[np.ndarray]:
    """Unit embeddings of every face of every frame: list (one per frame) of [N_i, D] float32.
    progress() is called once per frame."""
    arr = check_images(images)
    faceset.check_batch(arr.shape[0])
    out = []
    for i, faces in enumerate(faceset.frames):
        if len(faces):
            out.append(np.asarray(analyzer.embed(to_uint8(arr[i]), faces), np.float32))
        else:
            out.append(np.zeros((0, analyzer.embedding_dim), np.float32))
        if progress is not None:
            progress()
    return out


def _largest(faces: FrameFaces) -> int:
    area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    return int(np.argmax(area))


def build_identity(analyzer: FaceAnalyzer, images: np.ndarray, faceset: Optional[FaceSet] = None,
                   name: str = "", progress: Optional[Callable[[], None]] = None) -> Identity:
    """Identity from reference images [B, H, W, 3]: the largest face of each image (faces detected with
    detect_faces' defaults when faceset is None), the mean of their unit embeddings, re-normalised.
    Images without a face are skipped; num_images counts the images used. progress() once per image."""
    arr = check_images(images, "reference image")
    if faceset is not None:
        faceset.check_batch(arr.shape[0], "reference image")
    embs = []
    for i in range(arr.shape[0]):
        if faceset is None:
            faces = detect_faces(analyzer, arr[i:i + 1]).frames[0]
        else:
            faces = faceset.frames[i]
        if len(faces):
            e = analyzer.embed(to_uint8(arr[i]), faces.take([_largest(faces)]))
            embs.append(np.asarray(e, np.float32).reshape(-1))
        if progress is not None:
            progress()
    if not embs:
        raise ValueError(
            f"SwapForge: no face was found in any of the {arr.shape[0]} reference image(s), so no identity "
            f"can be built. Expected at least one image with a clearly visible face; use other images or "
            f"lower the detection threshold.")
    mean = np.mean(np.stack(embs), axis=0)
    mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return Identity(mean.astype(np.float32), analyzer.name, len(embs), name)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a [N, D] with b [D] -> [N] float32 (0 for a zero vector)."""
    a = np.asarray(a, np.float64).reshape(-1, np.asarray(b).size)
    b = np.asarray(b, np.float64).reshape(-1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b)
    return np.where(den > 0, a @ b / np.maximum(den, 1e-300), 0.0).astype(np.float32)


def similarity_per_frame(analyzer: FaceAnalyzer, images: np.ndarray, faceset: FaceSet, identity: Identity,
                         progress: Optional[Callable[[], None]] = None) -> Tuple[List[float], List[int]]:
    """Per frame, the best cosine similarity to the identity over its faces and that face's index.
    A frame with no face gives score 0.0 and index -1. progress() once per frame."""
    check_identity_matches(analyzer, identity)
    scores, best = [], []
    for e in embed_faceset(analyzer, images, faceset, progress):
        if len(e) == 0:
            scores.append(0.0)
            best.append(-1)
            continue
        s = cosine_similarity(e, identity.embedding)
        j = int(np.argmax(s))
        scores.append(float(s[j]))
        best.append(j)
    return scores, best


def similarity_summary(scores: List[float], best_index: List[int], identity: Identity,
                       analyzer: FaceAnalyzer) -> str:
    """Readable summary of similarity_per_frame's result."""
    n = len(scores)
    with_face = [s for s, b in zip(scores, best_index) if b >= 0]
    thr = analyzer.same_person_cosine
    matched = sum(1 for s in with_face if s > thr)
    label = f" '{identity.name}'" if identity.name else ""
    lines = [f"identity{label} ({identity.backend}, {identity.num_images} image(s)) vs {n} frame(s), "
             f"backend {analyzer.name}",
             f"frames matching (cosine > {thr:.2f}): {matched} of {n}",
             f"frames without a face: {n - len(with_face)}"]
    if with_face:
        lines.append(f"best cosine per frame with a face: mean {np.mean(with_face):.3f}, "
                     f"min {np.min(with_face):.3f}, max {np.max(with_face):.3f}")
    return "\n".join(lines)


def save_identity(identity: Identity, path: str) -> None:
    """Write the identity as a safetensors file: tensor "embedding" [D] float32 and metadata backend,
    num_images, name and format "swapforge_identity_v1"."""
    from safetensors.numpy import save_file

    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    meta = {"format": IDENTITY_FORMAT, "backend": identity.backend, "num_images": str(int(identity.num_images)),
            "name": identity.name}
    save_file({"embedding": np.ascontiguousarray(identity.embedding, np.float32)}, path, metadata=meta)


def load_identity(path: str) -> Identity:
    """Read a file written by save_identity; anything else raises an error naming the path."""
    from safetensors import safe_open

    what = (f"Expected a SwapForge identity file ({IDENTITY_FORMAT}, written by the Save Identity node); "
            f"pick another file or save the identity again.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SwapForge: the identity file {path} does not exist. {what}")
    try:
        with safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            emb = f.get_tensor("embedding") if "embedding" in keys else None
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ValueError(f"SwapForge: {path} is not a readable safetensors file ({e}). {what}") from e
    if meta.get("format") != IDENTITY_FORMAT or emb is None:
        raise ValueError(f"SwapForge: {path} is a safetensors file but not a SwapForge identity (format "
                         f"{meta.get('format')!r}, tensors {keys}). {what}")
    try:
        num = int(meta.get("num_images", "1"))
    except ValueError as e:
        raise ValueError(f"SwapForge: {path} has a bad num_images entry {meta.get('num_images')!r}. {what}") from e
    return Identity(np.asarray(emb, np.float32).reshape(-1), meta.get("backend", ""), num, meta.get("name", ""))


_SPEC_EXAMPLE = 'Write "all", or face indices such as "0", "0,2" or "0-2, 5" (counting from 0).'


def parse_index_spec(spec: str) -> Optional[List[int]]:
    """Face indices from text: "all" (or empty) -> None (every face); "0,2" -> [0, 2]; "0-2" -> [0, 1, 2];
    spaces are ignored, duplicates are dropped (first occurrence kept). Bad text raises ValueError."""
    text = (spec or "").strip().lower()
    if text in ("", "all", "*"):
        return None
    out: List[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"SwapForge: cannot read the face index list {spec!r} (at {part!r}). {_SPEC_EXAMPLE}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"SwapForge: the range {part!r} in {spec!r} goes backwards. {_SPEC_EXAMPLE}")
        for k in range(lo, hi + 1):
            if k not in out:
                out.append(k)
    return out


def select_by_index(faceset: FaceSet, spec) -> FaceSet:
    """Per frame, the faces at the given indices (a spec string for parse_index_spec, or a list of ints),
    in that order; indices a frame does not have are skipped. Frames are never dropped."""
    idx = parse_index_spec(spec) if isinstance(spec, str) or spec is None else [int(i) for i in spec]
    if idx is None:
        return faceset.with_frames(list(faceset.frames))
    return faceset.with_frames([f.take([i for i in idx if i < len(f)]) for f in faceset.frames])


def select_by_identity(analyzer: FaceAnalyzer, images: np.ndarray, faceset: FaceSet, identity: Identity,
                       min_similarity: float, best_only: bool = True,
                       progress: Optional[Callable[[], None]] = None) -> FaceSet:
    """Per frame, the faces whose cosine similarity to the identity is >= min_similarity: only the best
    one when best_only, else all of them ordered by similarity (highest first). Frames are never dropped
    (a frame without a match gets an empty FrameFaces). progress() once per frame."""
    check_identity_matches(analyzer, identity)
    frames = []
    for faces, e in zip(faceset.frames, embed_faceset(analyzer, images, faceset, progress)):
        if len(faces) == 0:
            frames.append(faces)
            continue
        s = cosine_similarity(e, identity.embedding)
        order = np.argsort(-s, kind="stable")
        order = order[s[order] >= min_similarity]
        if best_only:
            order = order[:1]
        frames.append(faces.take(order))
    return faceset.with_frames(frames)


# ---------------------------------------------------------------- one person across the frames of a video

def frame_track_ids(faces) -> List[np.ndarray]:
    """Per frame, the track ids of its faces (int64 [N_i], -1 = untracked), of a FaceSet or a PartSet (whose
    faces are those of the FaceSet it was made from, in the same order)."""
    ids = getattr(faces, "track_ids", None)          # a PartSet's (read by attribute: the pack and the tests
    if ids is not None:                               # may hold two copies of the record classes)
        return [np.asarray(t, np.int64).reshape(len(f)) for t, f in zip(ids, faces.frames)]
    return [np.asarray(f.track_ids, np.int64) if hasattr(f, "track_ids") else np.full(len(f), -1, np.int64)
            for f in faces.frames]


def is_tracked(faces) -> bool:
    """True when any face of the set carries a track id (Track Faces gives every face one)."""
    return any(bool(np.any(t >= 0)) for t in frame_track_ids(faces))


def _track_of_person(ids: List[np.ndarray], k: int) -> Optional[int]:
    """The track id of person k of a tracked set: the k-th smallest track id present (None if fewer)."""
    present = sorted({int(t) for frame in ids for t in frame if t >= 0})
    return present[k] if k < len(present) else None


def person_per_frame(faces, face_index: int) -> List[Optional[int]]:
    """The same person in every frame: per frame, the index (into that frame's faces) of the face to use, or
    None where that person has no face. `faces` is a FaceSet or a PartSet.

    The rule, shared by Face Swap, FuseAnyPart and the GSwap Body Tracker:
    - tracked set (after Track Faces: `is_tracked`): `face_index` k names a PERSON, the k-th track of the set
      in track-id order. Straight after Track Faces that is track #k (ids count people in order of first
      appearance, so 0 is face 0 of the first frame with faces); after Select Faces kept some tracks, 0 is the
      lowest id left. Each frame gives the face with that track id, wherever it sorts in the frame, or None
      where the person is absent: a frame never switches to somebody else.
    - untracked set (Detect or Select Faces): face k of each frame in the frame's own order (Detect Faces'
      `order`), or None where the frame has fewer faces. On a video this may be a different person from frame
      to frame: track the faces first.
    """
    k = int(face_index)
    if k < 0:
        raise ValueError(f"SwapForge: face index {face_index} names no face; expected 0 or more.")
    ids = frame_track_ids(faces)
    if is_tracked(faces):
        tid = _track_of_person(ids, k)
        out: List[Optional[int]] = []
        for t in ids:
            hit = np.flatnonzero(t == tid) if tid is not None else []
            out.append(int(hit[0]) if len(hit) else None)
        return out
    return [k if k < len(t) else None for t in ids]


def person_label(faces, face_index: int) -> str:
    """How reports name the person person_per_frame picks: "track #id" (or "person k" when the set has fewer
    tracks) on a tracked set, "face k" on an untracked one."""
    k = int(face_index)
    if not is_tracked(faces):
        return f"face {k}"
    tid = _track_of_person(frame_track_ids(faces), k)
    return f"track #{tid}" if tid is not None else f"person {k} (the faces have fewer tracks)"
