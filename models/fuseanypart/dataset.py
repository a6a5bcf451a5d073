"""FuseAnyPart training data: faces grouped by identity (fuseanypart.md, Training section).

The paper trains on CelebA-HQ grouped by identity: the target and its eyes / nose / mouth references are
different photos of the same person. ``FacePartsDataset`` reads a folder with one sub-folder per identity,
aligns every photo FFHQ-style with the pack's dlib tools (models/face/detect.py, models/face/align.py),
computes the FuseAnyPart part boxes from the aligned crop's 68 landmarks
(models/partswap/parts.part_boxes_from_landmarks) and caches crops, landmarks and boxes in memory.

An item is the target crop with its boxes and, for each part, a reference crop (a different photo of the
same identity when the identity has more than one usable photo, else the target photo itself) with that
reference's box for the part.

Images are float32 torch tensors [H, W, 3] in 0..1; boxes are float32 [4] = [y0, x0, y1, x1] normalised.
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

from ..face.align import ffhq_affine, warp_to_crop
from ..face.geometry import apply_affine
from ..partswap.parts import part_boxes_from_landmarks
from .clip_inputs import PARTS

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"SwapForge FuseAnyPart dataset: cannot read image {path}.")
    return np.ascontiguousarray(img[:, :, ::-1])


class FacePartsDataset(torch.utils.data.Dataset):
    """Identity-grouped aligned faces with FuseAnyPart part boxes.

    Args:
        folder: one sub-folder per identity, each holding that person's photos (one face per photo; when
            several faces are found the highest-scoring detection is used).
        size: side of the aligned square crops (512 in the paper; tests use 64).
        align: True: detect the face with dlib and warp it to an FFHQ-aligned crop (landmarks mapped by the
            same affine). False: the photos are already aligned squares; they are resized to ``size`` and
            the landmarks are detected on the resized crop.
        detector: dlib detector, "hog" (fast, default) or "mmod" (CNN, slower, more robust).
        upsample: dlib detector upsampling.
        seed: seeds the reference choice of ``__getitem__`` (the trainer passes its own generator to ``get``).

    Photos without a detectable face (or whose parts cannot be tiled) are skipped with a warning; the
    skipped paths are in ``self.skipped``.
    """

    def __init__(self, folder: str, size: int = 512, align: bool = True, detector: str = "hog",
                 upsample: int = 1, seed: int = 0, analyzer=None):
        self.folder = os.fspath(folder)
        self.size = int(size)
        self.align = bool(align)
        self.seed = int(seed)
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"SwapForge FuseAnyPart dataset: no folder {self.folder}. Expected one "
                                    f"sub-folder per identity holding that person's photos.")
        if analyzer is None:
            from ..face.detect import DlibAnalyzer
            analyzer = DlibAnalyzer(detector, upsample)
        self.identities: List[str] = []
        self.paths: List[str] = []
        self.identity_of: List[int] = []
        images, landmarks, boxes = [], [], []
        self.skipped: List[str] = []
        for name in sorted(os.listdir(self.folder)):
            sub = os.path.join(self.folder, name)
            if not os.path.isdir(sub):
                continue
            files = sorted(f for f in os.listdir(sub) if f.lower().endswith(IMAGE_EXTS))
            got = []
            for f in files:
                path = os.path.join(sub, f)
                try:
                    crop, lm, pb = self._prepare(analyzer, path)
                except ValueError as exc:
                    warnings.warn(f"SwapForge FuseAnyPart dataset: skipping {path}: {exc}")
                    self.skipped.append(path)
                    continue
                got.append((path, crop, lm, pb))
            if not got:
                continue
            ident = len(self.identities)
            self.identities.append(name)
            for path, crop, lm, pb in got:
                self.paths.append(path)
                self.identity_of.append(ident)
                images.append(crop)
                landmarks.append(lm)
                boxes.append(pb)
        if not images:
            raise ValueError(f"SwapForge FuseAnyPart dataset: no usable face photo under {self.folder} "
                             f"(one sub-folder per identity, photos with one visible face).")
        self.images = torch.from_numpy(np.stack(images)).contiguous()            # [N, S, S, 3] float32
        self.landmarks = np.stack(landmarks).astype(np.float32)                  # [N, 68, 2] crop pixels
        self.boxes: List[Dict[str, torch.Tensor]] = [
            {p: torch.from_numpy(np.asarray(getattr(pb, p), np.float32).copy()) for p in PARTS} for pb in boxes]
        self.members: List[List[int]] = [[] for _ in self.identities]
        for i, ident in enumerate(self.identity_of):
            self.members[ident].append(i)

    # ------------------------------------------------------------------ preparation
    def _prepare(self, analyzer, path: str):
        rgb = _read_rgb(path)
        s = self.size
        if not self.align:
            if rgb.shape[0] != rgb.shape[1]:
                raise ValueError(f"align=False needs square, already aligned photos; got {rgb.shape[1]}x{rgb.shape[0]}")
            interp = cv2.INTER_AREA if rgb.shape[0] > s else cv2.INTER_CUBIC
            rgb = cv2.resize(rgb, (s, s), interpolation=interp) if rgb.shape[0] != s else rgb
        faces = analyzer.detect(rgb)
        if len(faces) == 0:
            raise ValueError("no face detected")
        j = int(np.argmax(faces.scores))
        lm = np.asarray(faces.landmarks68[j], np.float64)
        if self.align:
            a = ffhq_affine(lm, s)
            crop = warp_to_crop(rgb.astype(np.float32) / 255.0, a, s)
            lm = apply_affine(a, lm)
        else:
            crop = rgb.astype(np.float32) / 255.0
        pb = part_boxes_from_landmarks(lm, (s, s))
        return crop, lm.astype(np.float32), pb

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def reference_candidates(self, idx: int) -> List[int]:
        """Photos a part reference of item ``idx`` may come from: the identity's other photos, else itself."""
        others = [i for i in self.members[self.identity_of[idx]] if i != idx]
        return others if others else [idx]

    def get(self, idx: int, generator: Optional[torch.Generator] = None) -> dict:
        """Item ``idx`` with references drawn with ``generator`` (one independent draw per part).

        Returns {"target": [S, S, 3], "target_boxes": {part: [4]}, "index": idx,
                 "refs": {part: ([S, S, 3], [4])}, "ref_index": {part: photo index}}.
        """
        idx = int(idx)
        cands = self.reference_candidates(idx)
        refs, ref_index = {}, {}
        for part in PARTS:
            k = int(torch.randint(len(cands), (1,), generator=generator)) if len(cands) > 1 else 0
            r = cands[k]
            refs[part] = (self.images[r], self.boxes[r][part])
            ref_index[part] = r
        return {"target": self.images[idx], "target_boxes": dict(self.boxes[idx]), "index": idx,
                "refs": refs, "ref_index": ref_index}

    def __getitem__(self, idx: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(idx))
        return self.get(idx, g)


def collate(items: Sequence[dict]) -> dict:
    """Stack items: {"target": [B, S, S, 3], "target_boxes": [{part: [4]}] * B,
    "refs": {part: ([B, S, S, 3], [B, 4])}, "index": [B], "ref_index": {part: [B]}}."""
    return {
        "target": torch.stack([it["target"] for it in items]),
        "target_boxes": [it["target_boxes"] for it in items],
        "refs": {p: (torch.stack([it["refs"][p][0] for it in items]),
                     torch.stack([it["refs"][p][1] for it in items])) for p in PARTS},
        "index": torch.tensor([it["index"] for it in items]),
        "ref_index": {p: torch.tensor([it["ref_index"][p] for it in items]) for p in PARTS},
    }
