"""example_workflows/api/part_detector_grounding_dino.api.json inside a real ComfyUI, with random weights in the official layouts.

No Grounding DINO, BERT or SAM weights exist offline, so the `part_models` fixture writes into the server's
private models folder: a small SwinT-OGC-layout Grounding DINO checkpoint with seeded random weights (the
official Swin-T, 1 encoder / 2 decoder / 1 BERT layer; tests/test_grounding_dino.py) as
models/grounding-dino/groundingdino_swint_ogc.pth, its small BERT folder as models/bert-base-uncased, and a
vit_b checkpoint with the official keys and shapes but all-zero weights (tests/test_sam.py) as
models/sams/sam_vit_b_01ec64.pth. The workflow runs as shipped: ComfyUI lists the files under the shared
folder keys, both loaders go through ComfyUI's memory manager, and the Part Detector searches the face with
Grounding DINO and refines with SAM. Random weights mean nothing about which boxes are found (wiring, not
quality): the checks are that the graph executes, every mask has the photo's size and lies inside the
face, and the report names the frame's face.

Skipped without SWAPFORGE_COMFYUI_DIR (package conftest).
"""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from tools import workflow_dirs as wd

from .conftest import ROOT, queue_and_wait

WORKFLOW = wd.api_path("part_detector_grounding_dino")


@pytest.fixture(scope="module")
def part_models(comfy_server, tmp_path_factory):
    tests_dir = os.path.join(ROOT, "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import torch
    import test_grounding_dino as tg
    import test_sam as ts

    work = tmp_path_factory.mktemp("part_models")
    sd = tg._official_dict(tg._table("swint_ogc"), device="cpu", keep=tg._small_keep, vocab=tg.SMALL_VOCAB)
    models = os.path.join(comfy_server.base_dir, "models")
    for sub in ("grounding-dino", "sams"):
        os.makedirs(os.path.join(models, sub), exist_ok=True)
    torch.save({"model": sd}, os.path.join(models, "grounding-dino", "groundingdino_swint_ogc.pth"))
    bert = tg._write_bert(str(work / "bert-base-uncased"), words=tg.WORDS)
    target = os.path.join(models, "bert-base-uncased")
    if os.path.isdir(target):
        shutil.rmtree(target)
    shutil.copytree(bert, target)
    ts._stride0_checkpoint("vit_b", os.path.join(models, "sams", "sam_vit_b_01ec64.pth"))
    return models


def test_part_detector_workflow_runs_grounding_dino_and_sam_through_comfyui(comfy_server, input_photos,
                                                                            part_models):
    import json

    from PIL import Image

    with open(WORKFLOW, encoding="utf-8") as f:
        prompt = json.load(f)
    entry = queue_and_wait(comfy_server, prompt, timeout=600)
    outputs = entry["outputs"]
    photo = np.asarray(Image.open(os.path.join(comfy_server.input_dir, prompt["1"]["inputs"]["image"])))
    masks = {}
    for nid, part in (("9", "eyes"), ("11", "nose"), ("13", "mouth")):
        (im,) = outputs[nid]["images"]
        path = os.path.join(comfy_server.output_dir, im.get("subfolder", ""), im["filename"])
        masks[part] = np.asarray(Image.open(path).convert("L"))
        assert masks[part].shape == photo.shape[:2], (part, masks[part].shape, photo.shape)
    report = "\n".join(str(t) for t in outputs["14"].get("text", []))
    assert "part detector: grounding_dino, 1 face(s) in 1 frame(s)" in report, report
    assert "frame 0: face 0: " in report, report
    log = comfy_server.log_text()
    assert "SwapForge" not in "\n".join(l for l in log.splitlines() if "Traceback" in l)
    # whatever the random detector found, the masks stay inside the face's part boxes (SAM is cut to its box)
    for part, m in masks.items():
        ys, xs = np.nonzero(m)
        if len(ys):
            h, w = m.shape
            assert 0.1 * h < ys.mean() < 0.9 * h and 0.1 * w < xs.mean() < 0.9 * w, part
