"""SwapForge inside a real ComfyUI server (skipped unless SWAPFORGE_COMFYUI_DIR is set)."""
from __future__ import annotations

import json
import os
import re
import sys

import pytest

from tools import workflow_dirs as wd

from .conftest import PACK_LINK_NAME, ROOT, queue_and_wait

# Workflows that need model weights the bare server lacks run in their own files with generated random weights
# of the right architecture: fuseanypart* (fap.bin, CLIP ViT-H, an SD1.5 VAE) in test_fap_workflow.py,
# part_detector* (Grounding DINO, BERT, SAM) in test_part_detector_workflow.py.
NEEDS_WEIGHTS = ("fuseanypart", "part_detector")
# the head swap workflows fit an avatar on a video for minutes: test_headswap_workflow.py runs them with fewer
# steps and checks the video they write (frames, fps, audio)
OWN_FILE = NEEDS_WEIGHTS + ("gswap_head_swap",)
WORKFLOWS = [p for p in wd.api_workflows() if not os.path.basename(p).startswith(OWN_FILE)]
WORKFLOW_TIMEOUT_S = 300


def _offline_pack():
    """The repository imported as a package, as ComfyUI does, but outside any server."""
    from tools.pack import load_pack
    return load_pack()


def _tracebacks(log: str):
    """Each Python traceback block in the log, up to and including its exception line."""
    blocks, current = [], None
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            current = [line]
        elif current is not None:
            current.append(line)
            if line and not line[0].isspace():  # the "SomeError: message" line ends the block
                blocks.append("\n".join(current))
                current = None
    if current:
        blocks.append("\n".join(current))
    return blocks


def test_server_log_shows_the_pack_imported_without_errors(comfy_server):
    # Only the start-up part: later workflow errors are the workflow tests' business.
    log = comfy_server.log_text().split("Starting server", 1)[0]
    failed = [l for l in log.splitlines() if "IMPORT FAILED" in l and PACK_LINK_NAME in l]
    assert not failed, "ComfyUI could not import SwapForge:\n" + "\n".join(failed) + "\n" + comfy_server.log_tail()
    pack_tbs = [tb for tb in _tracebacks(log) if PACK_LINK_NAME in tb or ROOT in tb]
    assert not pack_tbs, "tracebacks from SwapForge in the server log:\n\n" + "\n\n".join(pack_tbs)
    # ComfyUI lists every custom node it imported with its import time.
    loaded = re.compile(r"^\s*[\d.]+ seconds: .*" + re.escape(os.sep + PACK_LINK_NAME) + r"\s*$", re.M)
    assert loaded.search(log), "SwapForge is missing from ComfyUI's 'Import times for custom nodes'"


def test_every_pack_node_is_served_with_its_inputs_and_outputs(object_info):
    pack = _offline_pack()
    mappings = pack.NODE_CLASS_MAPPINGS
    assert mappings, "the pack's NODE_CLASS_MAPPINGS is empty when imported offline"
    missing = sorted(set(mappings) - set(object_info))
    assert not missing, f"nodes in NODE_CLASS_MAPPINGS that ComfyUI does not serve: {missing}"
    for name, cls in sorted(mappings.items()):
        served = object_info[name]
        declared = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            want = list((declared.get(section) or {}).keys())
            got = list((served["input"].get(section) or {}).keys())
            assert got == want, f"{name} {section} inputs: served {got}, declared {want}"
        assert list(served["output"]) == list(cls.RETURN_TYPES), (
            f"{name} outputs: served {served['output']}, declared {list(cls.RETURN_TYPES)}")


@pytest.mark.parametrize("workflow_path", WORKFLOWS, ids=[os.path.basename(p) for p in WORKFLOWS])
def test_shipped_api_workflow_runs_and_writes_its_outputs(comfy_server, object_info, input_photos,
                                                          workflow_path):
    with open(workflow_path, encoding="utf-8") as f:
        prompt = json.load(f)
    entry = queue_and_wait(comfy_server, prompt, timeout=WORKFLOW_TIMEOUT_S)

    outputs = entry.get("outputs") or {}
    output_nodes = {nid for nid, node in prompt.items()
                    if object_info.get(node["class_type"], {}).get("output_node")}
    assert output_nodes, f"{os.path.basename(workflow_path)} has no output node"
    silent = sorted(output_nodes - set(outputs))
    assert not silent, "output nodes that produced nothing: " + ", ".join(
        f"{nid} ({prompt[nid]['class_type']})" for nid in silent)

    folders = {"output": comfy_server.output_dir, "temp": comfy_server.temp_dir,
               "input": comfy_server.input_dir}
    for nid, ui in outputs.items():
        for image in ui.get("images") or []:
            path = os.path.join(folders[image.get("type", "output")], image.get("subfolder", ""),
                                image["filename"])
            assert os.path.isfile(path) and os.path.getsize(path) > 0, (
                f"node {nid} ({prompt[nid]['class_type']}) reported {image} but {path} is missing or empty")
        if prompt[nid]["class_type"] == "SaveImage":
            assert ui.get("images"), f"SaveImage node {nid} saved no image"
