"""The landmark term needs no external weights: the embedded dlib 68-point predictor labels the training faces
(19 AFLW points) and a small heatmap network is distilled from it, which the trainer uses by default."""
import os
import shutil

import numpy as np
import pytest
import torch

from models.styleswap import landmarks as L
from models.styleswap import train as T

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
NAMES = {"obama": ("obama", "obama2", "obama3"), "others": ("biden", "grace_hopper", "astronaut")}
SIZE = 64


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    for group, names in NAMES.items():
        (root / "raw" / group).mkdir(parents=True)
        for n in names:
            shutil.copy(os.path.join(DATA_DIR, f"{n}.jpg"), root / "raw" / group / f"{n}.jpg")
    assert T.align_folder(str(root / "raw"), str(root / "aligned"), SIZE) == []
    return T.FaceFolder(str(root / "aligned"), SIZE)


def test_aflw19_points_are_the_hand_picked_ibug68_points_and_their_mirror():
    lm = torch.arange(136, dtype=torch.float32).reshape(68, 2)
    p = L.aflw19_from_ibug68(lm)
    assert torch.equal(p[0], lm[17]) and torch.equal(p[5], lm[26]) and torch.equal(p[13], lm[30])
    assert torch.equal(p[7], lm[36:42].mean(0)) and torch.equal(p[16], (lm[62] + lm[66]) / 2)
    assert torch.equal(p[18], lm[8])
    flipped = L.flip_points(p, 100)
    assert torch.equal(flipped[0], torch.stack([99 - p[5, 0], p[5, 1]]))   # left brow <- mirrored right brow
    assert torch.equal(L.flip_points(flipped, 100), p)


def test_teacher_labels_match_the_predictor_run_on_the_original_photos(faces, photo, dlib_analyzer):
    from models.face import align
    from models.face.detect import to_uint8
    from models.face.records import FaceSet

    pts, found = L.teacher_landmarks(faces.images)
    assert bool(found.all())
    errs = []
    for i, path in enumerate(faces.files):
        img = photo(os.path.splitext(os.path.basename(path))[0])
        ff = dlib_analyzer.detect(to_uint8(img))
        best = ff.take([int(np.argmax(ff.scores))])
        _, info, _ = align.align_crop(img[None], FaceSet([best], img.shape[:2]), SIZE, "ffhq")
        ref = L.aflw19_from_ibug68(align.apply_affine(info.crops[0].affine, best.landmarks68[0]))
        errs.append(float(torch.linalg.norm(pts[i] - ref, dim=-1).mean()))
    assert max(errs) < 1.5, errs       # px at 64 px: the same predictor, seen through the 64 px crop


def test_distilled_network_reproduces_the_teacher_far_better_than_the_mean_shape(faces):
    pts, found = L.teacher_landmarks(faces.images)
    mean_err = float(torch.linalg.norm(pts - pts.mean(0, keepdim=True), dim=-1).mean())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, err = L.distill_landmarks(faces.images, pts, steps=600, batch=6, lr=3e-3, channels=16, depth=1)
    finally:
        torch.set_num_threads(threads)
    assert err < 0.5 * mean_err, (err, mean_err)
    img = faces.images[:2].clone().requires_grad_(True)
    model(img).sum().backward()                                   # differentiable in the image: usable as F_lm
    assert float(img.grad.abs().max()) > 0


def test_trainer_distills_its_landmark_model_by_default_and_reuses_the_file(faces, tmp_path):
    cfg = T.TrainConfig(data="unused", out=str(tmp_path), size=SIZE, distill_steps=20, quiet=True)
    lm = T.build_landmarks(cfg, faces)
    path = tmp_path / T.LANDMARKS_FILE
    assert isinstance(lm, L.HeatmapLandmarks) and path.is_file() and not lm.training
    again = T.build_landmarks(cfg)                                 # no dataset needed: the file is read back
    for k, v in lm.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    assert T.build_landmarks(T.TrainConfig(data="x", out=str(tmp_path), no_landmark_loss=True)) is None
