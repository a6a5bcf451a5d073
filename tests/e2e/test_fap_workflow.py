"""example_workflows/api/fuseanypart*.api.json (multi- and single-reference) end to end inside a real ComfyUI, with random full-size weights.

No real FuseAnyPart weights exist offline, so the `fap_models` fixture (conftest.py) writes random ones of
the released architectures and key layouts (tests/e2e/fap_weights.py: fap.bin with the 9-channel SD1.5
UNet, the 16 image projectors and image_proj2; CLIP ViT-H/14 vision; the SD1.5 VAE) and links them into the
server's models folder. The workflow runs as shipped except: the model file names point at those files and
the KSampler runs 2 steps instead of 50 (CPU time). The output pixels are noise, but every stage runs at
full size: ComfyUI detects the UNet as a 9-channel SD1.5 (EPS) inpaint model (otherwise conv_in would
refuse the concatenated [latent, mask, masked latent] input), the CLIP encoder as ViT-H, the injection
patches all 16 cross-attention layers, and Paste Back writes the 512 crop back into the original frame.

test_pack_in_comfyui.py leaves workflows named fuseanypart* to this file. Skipped without
SWAPFORGE_COMFYUI_DIR (package conftest) and without an interpreter that has diffusers to write the
weights (the repo's .venv has it; see SWAPFORGE_E2E_GEN_PYTHON / SWAPFORGE_E2E_WEIGHTS_DIR in conftest.py).
Run: SWAPFORGE_COMFYUI_DIR=/work/comfyui SWAPFORGE_COMFYUI_PYTHON=/work/comfyui-venv/bin/python \
     .venv/bin/python -m pytest -q -s tests/e2e/test_fap_workflow.py
"""
from __future__ import annotations

import json
import os
import re
import time

import numpy as np
import pytest

from tools import workflow_dirs as wd

from .conftest import queue_and_wait

WORKFLOWS = [p for p in wd.api_workflows() if os.path.basename(p).startswith("fuseanypart")]
E2E_STEPS = 2
RUN_TIMEOUT_S = 600  # about 160 s on the idle 2-core machine, 330 s when it is shared
BORDER_PX = 16    # a frame border far from the face: must come back bit-identical
MASK_GUARD_PX = 2  # pixels this close to the paste mask may differ by the 8-bit rounding of a tiny weight


def _class_nodes(prompt, class_type):
    return [nid for nid, n in prompt.items() if n["class_type"] == class_type]


def _proc_status_kib(pid: int, field: str):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _load_rgb(path):
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            src = mask[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            out[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)] |= src
    return out


@pytest.fixture(scope="module", params=WORKFLOWS, ids=lambda p: os.path.basename(p)[:-len(".api.json")])
def fap_prompt(request, fap_models):
    with open(request.param, encoding="utf-8") as f:
        prompt = json.load(f)
    names = {"SwapForge_FuseAnyPartLoader": ("fap_name", fap_models["fap"]),
             "CLIPVisionLoader": ("clip_name", fap_models["clip_vision"]),
             "VAELoader": ("vae_name", fap_models["vae"])}
    for class_type, (inp, value) in names.items():
        nodes = _class_nodes(prompt, class_type)
        assert len(nodes) == 1, f"{class_type}: expected one node in the workflow, found {nodes}"
        prompt[nodes[0]]["inputs"][inp] = value
    (ks,) = _class_nodes(prompt, "KSampler")
    # the shipped settings are the authors' (DDIM, 50 steps, cfg 7.5, denoise 1); only the step count changes here
    assert prompt[ks]["inputs"]["steps"] == 50 and prompt[ks]["inputs"]["sampler_name"] == "ddim"
    prompt[ks]["inputs"]["steps"] = E2E_STEPS
    return prompt


def test_fuseanypart_workflow_runs_with_random_full_size_weights(comfy_server, input_photos, fap_models,
                                                                 fap_prompt):
    prompt = fap_prompt
    pid = comfy_server.process.pid
    log_before = len(comfy_server.log_text())
    hwm_before = _proc_status_kib(pid, "VmHWM")
    t0 = time.monotonic()
    entry = queue_and_wait(comfy_server, prompt, timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - t0
    hwm_after = _proc_status_kib(pid, "VmHWM")
    log = comfy_server.log_text()[log_before:]

    detected = [l for l in log.splitlines()
                if re.search(r"model weight dtype|model_type|Requested to load|VAE load device|Prompt executed", l)]
    print(f"\n[fap e2e] {E2E_STEPS} steps: {seconds:.1f} s wall; server peak RSS (VmHWM) "
          f"{(hwm_after or 0) / 2**20:.2f} GiB (before this prompt {(hwm_before or 0) / 2**20:.2f} GiB)\n"
          + "\n".join("  " + l for l in detected), flush=True)

    # ComfyUI's model detection: an SD1.5-family eps UNet (9 channels: the run itself proves ComfyUI concatenated
    # [noisy latent, mask, masked latent], as it does only for inpaint models), every key used.
    # (the whole server log: a second workflow in the same server reuses the already loaded models)
    full_log = comfy_server.log_text()
    assert "model_type EPS" in full_log, "ComfyUI did not log the FuseAnyPart UNet as an EPS model:\n" + log[-3000:]
    for bad in ("left over keys in diffusion model", "unet missing", "Missing VAE keys", "missing clip vision"):
        assert bad not in log, f"ComfyUI logged {bad!r} while loading the random weights:\n" + log[-3000:]

    outputs = entry["outputs"]
    folders = {"output": comfy_server.output_dir, "temp": comfy_server.temp_dir}

    def only_image(nid):
        images = (outputs.get(nid) or {}).get("images") or []
        assert len(images) == 1, f"node {nid} ({prompt[nid]['class_type']}) listed {images}"
        im = images[0]
        path = os.path.join(folders[im.get("type", "output")], im.get("subfolder", ""), im["filename"])
        assert os.path.isfile(path), path
        return _load_rgb(path)

    saves = {prompt[n]["inputs"]["filename_prefix"]: n for n in _class_nodes(prompt, "SaveImage")}
    (result_prefix,) = [p for p in saves if not p.endswith("_crop")]
    (crop_prefix,) = [p for p in saves if p.endswith("_crop")]
    result = only_image(saves[result_prefix])
    crop = only_image(saves[crop_prefix])
    (preview,) = _class_nodes(prompt, "PreviewImage")
    mask = only_image(preview)[..., 0]

    (target_node,) = [n for n in _class_nodes(prompt, "LoadImage") if prompt[n]["_meta"]["title"] == "Target"]
    original = _load_rgb(os.path.join(comfy_server.input_dir, prompt[target_node]["inputs"]["image"]))

    assert crop.shape == (512, 512, 3), f"the generated crop is {crop.shape}, expected 512x512 (Align & Crop 512)"
    assert result.shape == original.shape, f"result {result.shape} vs original frame {original.shape}"
    assert mask.shape == original.shape[:2], f"paste mask {mask.shape} vs frame {original.shape[:2]}"

    pasted = mask > 0
    assert pasted.mean() > 0.01, f"Paste Back's mask covers only {pasted.mean():.4%} of the frame"
    border = np.zeros(mask.shape, bool)
    border[:BORDER_PX], border[-BORDER_PX:], border[:, :BORDER_PX], border[:, -BORDER_PX:] = True, True, True, True
    assert not pasted[border].any(), "the paste mask reaches the frame border"
    assert np.array_equal(result[border], original[border]), "the frame border changed"
    outside = ~_dilate(pasted, MASK_GUARD_PX)
    diff = np.abs(result.astype(int) - original.astype(int)).max(-1)
    assert (diff[outside] == 0).all(), (
        f"{int((diff[outside] > 0).sum())} pixels outside the paste mask differ from the input photo "
        f"(max {int(diff[outside].max())})")
    inside = mask > 250
    assert inside.any() and diff[inside].mean() > 1.0, "nothing visible was pasted inside the mask"
