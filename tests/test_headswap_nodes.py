"""Head swap nodes (nodes/headswap.py) and the GSwap node changes they need, on the bundled real clip and photos:
batch rules, pass-through of faceless frames, reports, errors a user can act on, the inpainting-model loader
with a LaMa state dict written by the test (spandrel's own architecture, random weights)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from packloader import load_pack


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def hog(pack):
    return pack.NODE_CLASS_MAPPINGS["SwapForge_FaceModelLoader"]().load("dlib_hog (embedded)", 1)[0]


def detect_faces(hog, frames):
    return sys.modules["swapforge.models.face.detect"].detect_faces(hog, frames)


class _Node:
    """A node instance whose calls run under torch.inference_mode, as ComfyUI's executor runs them."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, name):
        fn = getattr(self.obj, name)

        def call(*a, **k):
            with torch.inference_mode():
                return fn(*a, **k)
        return call


def _node(pack, name):
    return _Node(pack.NODE_CLASS_MAPPINGS[name]())


def _clip_with_gap(talking_clip, n=5, size=112):
    frames = talking_clip(n, size)
    frames[2] = 0.0
    return frames


def test_head_mask_node_keeps_the_batch_and_reports_the_faceless_frame(pack, talking_clip, hog):
    frames = _clip_with_gap(talking_clip)
    faces = detect_faces(hog, frames)
    mask, preview, report = _node(pack, "SwapForge_HeadMask").mask(torch.from_numpy(frames), faces, 0.2, 1.0, 1, True)
    assert mask.shape == frames.shape[:3] and preview.shape == frames.shape
    assert float(mask[2].max()) == 0.0 and float(mask[0].max()) > 0.9
    assert "no face (empty mask): 2" in report


def test_head_background_node_fills_only_the_hole_and_obeys_the_camera_choice(pack, talking_clip, hog):
    frames = talking_clip(4, 96)
    faces = detect_faces(hog, frames)
    mask, _, _ = _node(pack, "SwapForge_HeadMask").mask(torch.from_numpy(frames), faces, 0.0, 1.0, 0, True)
    bg, hole, report = _node(pack, "SwapForge_HeadBackground").fill(torch.from_numpy(frames), mask, 2, "moving")
    assert "per-frame" in report
    outside = hole.numpy() == 0
    np.testing.assert_array_equal(bg.numpy()[outside], frames[outside])
    assert np.abs(bg.numpy()[~outside] - frames[~outside]).mean() > 0.01
    with pytest.raises(ValueError, match="head_mask is 3 frame"):
        _node(pack, "SwapForge_HeadBackground").fill(torch.from_numpy(frames), mask[:3], 0, "auto")


def test_source_heads_node_refuses_photos_without_faces_and_places_heads_on_the_target(pack, photo, hog,
                                                                                        talking_clip):
    node = _node(pack, "SwapForge_SourceHeads")
    with pytest.raises(ValueError, match="no source photo shows a face"):
        node.prepare(hog, torch.zeros(1, 64, 64, 3), 0.2, 1.0)
    frames = talking_clip(2, 128)
    faces = detect_faces(hog, frames)
    src = torch.from_numpy(photo("biden"))[None]
    sources, placed, report = node.prepare(hog, src, 0.2, 1.0, source_2=torch.zeros(1, 50, 70, 3),
                                           target_background=torch.from_numpy(frames), target_faces=faces)
    assert len(sources.heads) == 1 and placed.shape == (1, 128, 128, 3)
    assert "source 1: no face, not used" in report and "primary (most frontal): source 0" in report


def test_generate_head_frames_node_gives_one_frame_per_target_frame_and_the_driven_landmarks(pack, talking_clip,
                                                                                            photo, hog):
    frames = _clip_with_gap(talking_clip)
    faces = detect_faces(hog, frames)
    sources, _, _ = _node(pack, "SwapForge_SourceHeads").prepare(hog, torch.from_numpy(photo("biden"))[None], 0.2,
                                                                1.0)
    gen, a_gen, m_head, gen_faces, report = _node(pack, "SwapForge_GenerateHeadFrames").generate(
        torch.from_numpy(frames), faces, torch.from_numpy(frames), sources, 0.6)
    assert gen.shape == frames.shape and a_gen.shape == frames.shape[:3] and m_head.shape == frames.shape[:3]
    np.testing.assert_array_equal(gen[2].numpy(), frames[2])
    assert "flagged (no target face, passed through): 2" in report
    assert len(gen_faces.frames) == 5 and len(gen_faces.frames[2]) == 0 and len(gen_faces.frames[0]) == 1
    assert (m_head.numpy() >= a_gen.numpy() - 1e-6).all()  # M_head holds the source head (Fig. 4 union)


def test_swap_metrics_node_finds_the_target_closer_to_itself_than_to_another_source(pack, talking_clip, photo, hog):
    frames = torch.from_numpy(talking_clip(3, 128))
    report, csim, closer = _node(pack, "SwapForge_SwapMetrics").measure(hog, frames, frames,
                                                                        torch.from_numpy(photo("biden"))[None])
    res = json.loads(report)
    assert closer == 0.0 and res["frames_closer_to_source"] == 0.0
    assert res["csim_target_mean"] > res["csim_source_mean"] == pytest.approx(csim)
    assert res["pose_error_deg"] == pytest.approx(0.0, abs=1e-6) and res["expression_error"] == pytest.approx(0.0)


def test_head_swap_node_runs_the_chain_on_real_frames_and_passes_the_faceless_frame(pack, talking_clip, photo, hog):
    frames = _clip_with_gap(talking_clip, 4, 96)
    body_model = pack.NODE_CLASS_MAPPINGS["SwapForge_BodyModelLoader"]().load("template (embedded)")[0]
    image, generated, avatar, report = _node(pack, "SwapForge_HeadSwap").swap(
        hog, torch.from_numpy(frames), torch.from_numpy(photo("biden"))[None], 3, 0, 0.6, 1.0,
        body_model=body_model, uv_resolution=48)
    assert image.shape == frames.shape and generated.shape == frames.shape
    np.testing.assert_array_equal(image[2].numpy(), frames[2])
    assert "flagged (no target face, passed through): 2" in report and "seconds:" in report
    assert avatar.surface_kind == "template"


def test_load_inpaint_model_reads_a_lama_state_dict_and_refuses_other_models(pack, tmp_path):
    services = sys.modules["swapforge.nodes.services"]
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    folder = tmp_path / "inpaint"
    folder.mkdir()
    torch.save(LaMa(in_nc=4, out_nc=3).state_dict(), folder / "lama_random.pth")
    torch.save(Compact().state_dict(), folder / "upscaler.pth")
    services.add_folder("inpaint", str(folder))
    node = _node(pack, "SwapForge_LoadInpaintModel")
    model = node.load("lama_random.pth")[0]
    img = np.random.default_rng(0).random((40, 52, 3)).astype(np.float32)  # not a multiple of 8: padded inside
    hole = np.zeros((40, 52), np.uint8)
    hole[10:25, 15:30] = 1
    out = model(img, hole)
    np.testing.assert_array_equal(out[hole == 0], img[hole == 0])
    assert np.abs(out[hole > 0] - img[hole > 0]).mean() > 1e-3
    with pytest.raises(ValueError, match="not an inpainting model"):
        node.load("upscaler.pth")


def test_head_swap_node_refuses_an_empty_video_and_stops_mid_fit_on_an_interrupt(pack, talking_clip, photo, hog):
    services = sys.modules["swapforge.nodes.services"]
    body_model = pack.NODE_CLASS_MAPPINGS["SwapForge_BodyModelLoader"]().load("template (embedded)")[0]
    src = torch.from_numpy(photo("biden"))[None]
    with pytest.raises(ValueError, match="frame"):
        _node(pack, "SwapForge_HeadSwap").swap(hog, torch.zeros(0, 96, 96, 3), src, 3, 0, 0.6, 1.0,
                                               body_model=body_model, uv_resolution=48)
    frames = talking_clip(3, 96)
    seen = []
    real_update = services.Progress.update

    def update(self, n=1, preview=None):  # Cancel pressed once the fit has started (after masks ... tracking)
        seen.append(self.done)
        if len(seen) == 2 * len(frames) + 2 * len(frames) + 400:
            services.request_interrupt()
        return real_update(self, n, preview)

    services.Progress.update = update
    try:
        with pytest.raises(services.Interrupted):
            _node(pack, "SwapForge_HeadSwap").swap(hog, torch.from_numpy(frames), src, 500, 0, 0.6, 1.0,
                                                   body_model=body_model, uv_resolution=48)
    finally:
        services.Progress.update = real_update
    assert len(seen) < 2 * len(frames) + 2 * len(frames) + 400 + 500  # stopped before the fit's 500 steps ended
    services.check_interrupt()  # the flag was cleared when it raised
