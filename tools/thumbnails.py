"""Thumbnails for the template browser: example_workflows/<name>.jpg (ComfyUI shows it beside <name>.json).

    python -m tools.thumbnails --server http://127.0.0.1:8188 [NAME ...]

A template that runs on what the pack ships (REAL_OUTPUT below) gets a real output: its API twin is queued on the
server (the photos and videos it names must be in the server's input folder: copy tests/data/*.jpg and *.mp4
there), the first image of the named output node is downloaded and downscaled; a video template (REAL_VIDEO) gets
the middle frame of its input video beside the same frame of the video it wrote. A template whose weights cannot be had offline gets its
inputs side by side, captioned "inputs" (its Note says so), or, for the Part Detector with Grounding DINO, the
landmark part boxes of its photo computed by the pack (captioned so). Nothing pretends to be a result it is not.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from io import BytesIO
from typing import List

import numpy as np
from PIL import Image, ImageDraw

from . import workflow_dirs as wd

THUMB_WIDTH = 320
JPEG_QUALITY = 80
# template -> the output node whose first image is the thumbnail (real outputs, run in ComfyUI)
REAL_OUTPUT = {
    "classic_part_swap": "7",
    "detect_align_paste": "7",
    "pick_face_edit_part_boxes": "10",
    "video_track_part_swap": "10",
    "gswap_fit_render": "13",
}
# video templates -> (the LoadVideo node, the SaveVideo node): the thumbnail is the middle frame of the input next
# to the same frame of the written video (real outputs, run in ComfyUI)
REAL_VIDEO = {
    "gswap_head_swap": ("1", "8"),
    "gswap_head_swap_stages": ("1", "18"),
}
PHOTOS_DIR = os.path.join(wd.REPO_ROOT, "tests", "data")


def _save(img: Image.Image, name: str) -> str:
    img = img.convert("RGB")
    h = round(img.height * THUMB_WIDTH / img.width)
    img = img.resize((THUMB_WIDTH, h), Image.LANCZOS)
    path = wd.thumbnail_path(name)
    img.save(path, quality=JPEG_QUALITY, optimize=True)
    return path


def _caption(img: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(img)
    w = draw.textlength(text) + 12
    draw.rectangle([0, img.height - 18, w, img.height], fill=(0, 0, 0))
    draw.text((6, img.height - 16), text, fill=(255, 255, 255))
    return img


def inputs_montage(name: str) -> Image.Image:
    """The template's LoadImage photos side by side (same height), in node order, captioned 'inputs'."""
    with open(wd.api_path(name), encoding="utf-8") as f:
        prompt = json.load(f)
    files = []
    for key in sorted(prompt, key=int):
        node = prompt[key]
        if node["class_type"] == "LoadImage" and node["inputs"]["image"] not in files:
            files.append(node["inputs"]["image"])
    tiles = [Image.open(os.path.join(PHOTOS_DIR, f)).convert("RGB") for f in files]
    h = 256
    tiles = [t.resize((round(t.width * h / t.height), h), Image.LANCZOS) for t in tiles]
    out = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), h), (40, 40, 40))
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + 4
    return _caption(out, "inputs (" + " | ".join(os.path.splitext(f)[0] for f in files) + "), not a result")


def landmark_boxes(name: str) -> Image.Image:
    """The photo of a Part Detector template with its landmark part boxes (the pack's own code)."""
    from .pack import load_pack
    pack = load_pack()
    import sys as _sys
    detect = _sys.modules[pack.__name__ + ".models.face.detect"]
    parts = _sys.modules[pack.__name__ + ".models.partswap.parts"]
    with open(wd.api_path(name), encoding="utf-8") as f:
        prompt = json.load(f)
    photo = next(n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage")
    img = np.asarray(Image.open(os.path.join(PHOTOS_DIR, photo)).convert("RGB"), np.float32)[None] / 255.0
    analyzer = detect.load_analyzer("dlib_mmod (embedded)", [], 0)
    drawn = parts.draw_parts(img, parts.compute_parts(detect.detect_faces(analyzer, img)))[0]
    return _caption(Image.fromarray((drawn * 255).round().astype(np.uint8)), "landmark boxes, not Grounding DINO")


def _run(name: str, server: str, timeout: float):
    """Queue the template's API twin on `server`; (prompt, history entry, client) once it finished."""
    from .batch_queue import ComfyClient, _history_error
    with open(wd.api_path(name), encoding="utf-8") as f:
        prompt = json.load(f)
    client = ComfyClient(server)
    pid = client.queue_prompt(prompt)
    deadline = time.monotonic() + timeout
    while True:
        entry = client.history(pid)
        if entry and (entry.get("status") or {}).get("completed") is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no result after {timeout} s")
        time.sleep(1.0)
    err = _history_error(entry)
    if err:
        raise RuntimeError(f"{name}: {err}")
    return prompt, entry, client


def real_output(name: str, server: str, timeout: float = 900) -> Image.Image:
    prompt, entry, client = _run(name, server, timeout)
    ref = entry["outputs"][REAL_OUTPUT[name]]["images"][0]
    data = client.view(ref["filename"], ref.get("subfolder", ""), ref.get("type", "output"))
    return Image.open(BytesIO(data))


def _middle_frame(data: bytes) -> Image.Image:
    import av
    with av.open(BytesIO(data)) as c:
        frames = [f.to_image() for f in c.decode(video=0)]
    return frames[len(frames) // 2]


def real_video(name: str, server: str, timeout: float = 1800) -> Image.Image:
    """The middle frame of the template's input video beside the same frame of the video it writes."""
    load, save = REAL_VIDEO[name]
    prompt, entry, client = _run(name, server, timeout)
    ref = entry["outputs"][save]["images"][0]
    out = _middle_frame(client.view(ref["filename"], ref.get("subfolder", ""), ref.get("type", "output")))
    src = _middle_frame(client.view(prompt[load]["inputs"]["file"], "", "input"))
    pair = Image.new("RGB", (src.width + out.width + 4, max(src.height, out.height)), (40, 40, 40))
    pair.paste(src, (0, 0))
    pair.paste(out, (src.width + 4, 0))
    return _caption(pair, "target | swapped (middle frame)")


def make(name: str, server: str) -> str:
    if name in REAL_OUTPUT:
        img = real_output(name, server)
    elif name in REAL_VIDEO:
        img = real_video(name, server)
    elif name.startswith("part_detector"):
        img = landmark_boxes(name)
    else:
        img = inputs_montage(name)
    return _save(img, name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.thumbnails", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="templates (default: all)")
    ap.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI server for the real outputs")
    args = ap.parse_args(argv)
    names: List[str] = args.names or wd.names()
    status = 0
    for name in names:
        try:
            path = make(name, args.server)
            print(f"{name}: {path} ({os.path.getsize(path)} bytes)")
        except Exception as e:  # report and go on with the others
            print(f"{name}: FAILED {type(e).__name__}: {e}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
