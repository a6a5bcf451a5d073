"""The GSwap nodes as ComfyUI calls them (under torch.inference_mode, like ComfyUI's executor), on a 6-frame clip
made from tests/data/obama.jpg scaled to 128 x 160 px with frame 2 faceless (tests/synthclip.py)."""
import dataclasses
import sys

import cv2
import numpy as np
import pytest
import torch

from synthclip import make_clip

NO_FACE = (2,)
H, W = 160, 128


@pytest.fixture(scope="module")
def services(N):
    return sys.modules["swapforge.nodes.services"]


@pytest.fixture(scope="module")
def clip():
    frames = make_clip("obama.jpg", 6, NO_FACE)
    return torch.from_numpy(np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA) for f in frames]))


@pytest.fixture(scope="module")
def faces(N, clip):
    fm = N["SwapForge_FaceModelLoader"]().load("dlib_mmod (embedded)", 1)[0]
    # every frame detected on its own (a synthetic clip: its faceless frame would read as a cut to the tracker)
    faces = N["SwapForge_DetectFaces"]().detect(fm, clip, 0.5, 16, 0, "largest_first", "detect every frame")[0]
    assert faces.counts() == [0 if i in NO_FACE else 1 for i in range(6)]
    return faces


@pytest.fixture(scope="module")
def body(N):
    return N["SwapForge_BodyModelLoader"]().load("template (embedded)")[0]


@pytest.fixture(scope="module")
def tracked(N, body, clip, faces):
    with torch.inference_mode():
        return N["SwapForge_BodyTracker"]().track(body, clip, faces, 150, 0.1)


@pytest.fixture(scope="module")
def fitted(N, body, clip, tracked):
    with torch.inference_mode():
        return N["SwapForge_GaussianFitter"]().fit(body, tracked[0], clip, torch.ones(1, H, W), 3, 0, 1, 24, 2)


def test_body_model_loader_lists_only_importable_kinds_and_smplx_without_npz_says_where_to_get_it(
        N, tmp_path, monkeypatch):
    import importlib.util
    kinds = N["SwapForge_BodyModelLoader"].INPUT_TYPES()["required"]["kind"][0]
    assert kinds[:2] == ["anny (embedded)", "template (embedded)"]  # Anny is the embedded default
    assert ("smplx" in kinds) == (importlib.util.find_spec("smplx") is not None)
    if "smplx" in kinds:
        monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
        with pytest.raises(FileNotFoundError, match="SMPLX_NEUTRAL.npz") as e:
            N["SwapForge_BodyModelLoader"]().load("smplx")
        assert str(tmp_path / "swapforge" / "smplx" / "smplx") in str(e.value) and "licence" in str(e.value)


def test_tracker_keeps_every_frame_and_flags_the_faceless_one(tracked, clip, faces):
    track, preview, report = tracked
    assert len(track) == 6 and preview.shape == clip.shape
    assert track.interpolated.tolist() == [i in NO_FACE for i in range(6)]
    assert track.valid.tolist() == [i not in NO_FACE for i in range(6)]
    # fitted landmarks land near the detected ones (independent: distance to the detector's points)
    for t in range(6):
        if t not in NO_FACE:
            d = np.linalg.norm(track.projected68[t].numpy() - faces.frames[t].landmarks68[0], axis=-1).mean()
            assert d < 4.0, (t, d)
    assert "flagged (no face, interpolated): [2]" in report and "frame 2: no face, interpolated" in report
    assert not torch.equal(preview[0], clip[0])  # landmarks drawn


def test_retrack_from_init_track_keeps_the_frames_and_rejects_another_clip_length(N, body, clip, faces, tracked):
    with torch.inference_mode():
        again = N["SwapForge_BodyTracker"]().track(body, clip, faces, 20, 0.1, init_track=tracked[0])[0]
        assert len(again) == 6 and again.iterations <= 20
        with pytest.raises(ValueError, match="track has 6 frame.*image has 5"):
            N["SwapForge_BodyTracker"]().track(body, clip[:5], dataclasses.replace(faces, frames=faces.frames[:5]), 5, 0.1,
                                               init_track=tracked[0])


def test_fitter_returns_an_avatar_for_every_training_frame(fitted, tracked):
    avatar, preview, report = fitted
    assert avatar.num_frames == 6 and avatar.field.temporal.shape[0] == 6
    assert avatar.surface_kind == "template"
    assert preview.shape == (1, H, W, 3) and 0.0 <= float(preview.min()) and float(preview.max()) <= 1.0
    assert "3 step(s) on 6 frame(s)" in report and "laplacian_pyramid_l1" in report


def test_fitter_mismatched_batches_name_both_sizes(N, body, clip, tracked):
    fit = N["SwapForge_GaussianFitter"]().fit
    with pytest.raises(ValueError, match="fg_mask has 2 frame.*frames has 6"):
        fit(body, tracked[0], clip, torch.ones(2, H, W), 1, 0, 1, 16, 0)
    with pytest.raises(ValueError, match="backgrounds has 4 frame.*frames has 6"):
        fit(body, tracked[0], clip, torch.ones(1, H, W), 1, 0, 1, 16, 0, backgrounds=clip[:4])
    with pytest.raises(ValueError, match="track has 6 frame.*frames has 5"):
        fit(body, tracked[0], clip[:5], torch.ones(1, H, W), 1, 0, 1, 16, 0)
    with pytest.raises(ValueError, match="fg_mask is 64x64 px"):
        fit(body, tracked[0], clip, torch.ones(1, 64, 64), 1, 0, 1, 16, 0)


def test_rerenderer_gives_one_frame_per_tracked_frame_and_m_fore_stays_in_the_head_mask(N, body, clip, tracked,
                                                                                     fitted):
    head = torch.zeros(1, H, W)
    head[:, :, W // 2:] = 1.0
    with torch.inference_mode():
        image, m_fore = N["SwapForge_NeuralRerenderer"]().render(fitted[0], body, tracked[0], clip, head)
    assert image.shape == (6, H, W, 3) and m_fore.shape == (6, H, W)
    assert float(m_fore[:, :, : W // 2].abs().max()) == 0.0 and float(m_fore[:, :, W // 2:].max()) > 0.0
    with pytest.raises(ValueError, match="backgrounds has 3 frame.*track has 6"):
        N["SwapForge_NeuralRerenderer"]().render(fitted[0], body, tracked[0], clip[:3], head)


def test_save_and_load_avatar_round_trip_through_the_nodes(N, fitted, tmp_path, monkeypatch):
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    avatar = fitted[0]
    ui = N["SwapForge_SaveAvatar"]().save(avatar, "me", False)
    path = tmp_path / "swapforge" / "avatars" / "me.safetensors"
    assert path.is_file() and str(path) in ui["ui"]["text"][0]
    with pytest.raises(FileExistsError, match="overwrite"):
        N["SwapForge_SaveAvatar"]().save(avatar, "me", False)
    N["SwapForge_SaveAvatar"]().save(avatar, "me", True)
    assert N["SwapForge_LoadAvatar"].INPUT_TYPES()["required"]["name"][0] == ["me.safetensors"]
    with torch.inference_mode():
        back = N["SwapForge_LoadAvatar"]().load("me.safetensors")[0]
    for k, v in avatar.field.state_dict().items():
        assert torch.equal(back.field.state_dict()[k], v), k
    for k, v in avatar.renderer.state_dict().items():
        assert torch.equal(back.renderer.state_dict()[k], v), k
    assert back.num_frames == 6 and back.surface_kind == "template"
    with pytest.raises(FileNotFoundError, match="Save Avatar"):
        N["SwapForge_LoadAvatar"]().load("missing.safetensors")


def test_interrupt_during_fitting_raises_and_is_cleared(N, services, body, clip, tracked):
    steps = []
    real_update = services.Progress.update

    def update(self, n=1, preview=None):
        steps.append(self.done)
        if self.done == 1:
            services.request_interrupt()
        return real_update(self, n, preview)

    services.Progress.update = update
    try:
        with torch.inference_mode(), pytest.raises(services.Interrupted):
            N["SwapForge_GaussianFitter"]().fit(body, tracked[0], clip, torch.ones(1, H, W), 50, 0, 1, 16, 0)
    finally:
        services.Progress.update = real_update
    assert steps == [0, 1]  # stopped at the second step, not after all 50
    services.check_interrupt()  # the flag was cleared when it raised


def test_an_empty_clip_is_refused_with_a_clear_error_by_every_gswap_node(N, body, clip, tracked, fitted):
    empty = torch.zeros(0, H, W, 3)
    no_mask = torch.zeros(0, H, W)
    calls = {
        "tracker": lambda: N["SwapForge_BodyTracker"]().track(body, empty, None, 10, 0.1),
        "fitter frames": lambda: N["SwapForge_GaussianFitter"]().fit(body, tracked[0], empty, torch.ones(1, H, W),
                                                                   3, 0, 1, 24, 2),
        "fitter mask": lambda: N["SwapForge_GaussianFitter"]().fit(body, tracked[0], clip, no_mask, 3, 0, 1, 24, 2),
        "rerenderer": lambda: N["SwapForge_NeuralRerenderer"]().render(fitted[0], body, tracked[0], empty,
                                                                      torch.ones(1, H, W)),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"batch is empty \(0 (frames|masks)\)"), torch.inference_mode():
            call()
