"""The head swap templates in a real ComfyUI (skipped unless SWAPFORGE_COMFYUI_DIR is set): the target video
through ComfyUI's core LoadVideo -> GetVideoComponents -> ... -> CreateVideo -> SaveVideo, on the bundled real
clip (tests/data/lp_d6_talking.mp4, 40 frames, 25 fps) given an audio track here (a 440 Hz tone muxed in with
PyAV, so the audio path is checked), the source tests/data/astronaut.jpg. The avatar fit runs 40 steps instead
of 400 (time; the quality bars are the bench's). Checks: success, the written video has the target's frame
count, fps and an audio stream as long as the video, and the head region changed while the frame border did not."""
from __future__ import annotations

import glob
import json
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest

from tools import workflow_dirs as wd

from .conftest import ROOT, queue_and_wait

av = pytest.importorskip("av")
CLIP = os.path.join(ROOT, "tests", "data", "lp_d6_talking.mp4")
STEPS = 40


def _with_tone(src: str, dst: str) -> None:
    """A copy of `src` with a mono 440 Hz AAC track as long as the video (the video stream is re-encoded)."""
    with av.open(src) as inp, av.open(dst, "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        aus = out.add_stream("aac", rate=44100)
        n = 0
        for fr in inp.decode(vin):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(fr.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(pkt)
            n += 1
        for pkt in vs.encode():
            out.mux(pkt)
        samples = int(44100 * n / float(rate))
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)[None]
        for i in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, i:i + 1024], format="fltp", layout="mono")
            frame.sample_rate = 44100
            for pkt in aus.encode(frame):
                out.mux(pkt)
        for pkt in aus.encode():
            out.mux(pkt)


def _read(path: str):
    with av.open(path) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
        fps = float(v.average_rate)
    with av.open(path) as c:
        audio = [s for s in c.streams.audio]
        dur = None
        if audio:
            ts = [f.time + f.samples / f.sample_rate for f in c.decode(audio[0]) if f.time is not None]
            dur = max(ts) if ts else 0.0
    return np.stack(frames), fps, dur


@pytest.fixture(scope="module")
def video_inputs(comfy_server, input_photos):
    _with_tone(CLIP, os.path.join(comfy_server.input_dir, "lp_d6_talking.mp4"))
    shutil.copy2(os.path.join(ROOT, "tests", "data", "astronaut.jpg"), comfy_server.input_dir)
    return _read(os.path.join(comfy_server.input_dir, "lp_d6_talking.mp4"))


@pytest.mark.parametrize("name,saver", [("gswap_head_swap", "8"), ("gswap_head_swap_stages", "18")])
def test_head_swap_template_writes_the_swapped_video_with_the_targets_frames_fps_and_audio(
        comfy_server, video_inputs, name, saver):
    target, fps, audio_s = video_inputs
    with open(wd.api_path(name), encoding="utf-8") as f:
        prompt = json.load(f)
    for node in prompt.values():  # fewer fitting steps: this checks the wiring and the video, not the quality
        if node["class_type"] in ("SwapForge_HeadSwap", "SwapForge_GaussianFitter"):
            node["inputs"]["steps"] = STEPS
    entry = queue_and_wait(comfy_server, prompt, timeout=900)
    prefix = prompt[saver]["inputs"]["filename_prefix"]
    files = sorted(glob.glob(os.path.join(comfy_server.output_dir, prefix + "_[0-9]*.mp4")))
    assert files, f"no video written under {prefix}; outputs: {entry.get('outputs')}"
    out, out_fps, out_audio_s = _read(files[-1])
    assert out.shape == target.shape, (out.shape, target.shape)
    assert out_fps == pytest.approx(fps)
    assert out_audio_s is not None and out_audio_s == pytest.approx(audio_s, abs=0.1)
    diff = np.abs(out.astype(np.float32) - target.astype(np.float32)).mean(-1)  # both lossy-coded: compare loosely
    H, W = diff.shape[1:]
    centre = diff[:, H // 4: 3 * H // 4, W // 4: 3 * W // 4].mean()
    border = np.concatenate([diff[:, :8].ravel(), diff[:, :, :8].ravel(), diff[:, :, -8:].ravel()]).mean()
    assert centre > 8.0 and border < 4.0, (centre, border)
