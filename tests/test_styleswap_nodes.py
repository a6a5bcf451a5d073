"""StyleSwap nodes as ComfyUI calls them. Wiring tests: the swapper is tiny and random (32 px decoder), so the
swapped faces are noise; what is checked is frames, crops, masks, pass-through and reports."""
import sys

import cv2
import numpy as np
import pytest
import torch

from synthclip import make_clip, photo

NO_FACE = (4, 9)
NAME = "tiny_styleswap.safetensors"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from test_swapper import tiny_swapper
    from models.styleswap.checkpoints import save_swapper

    root = tmp_path_factory.mktemp("models")
    save_swapper(tiny_swapper(seed=7), str(root / "swapforge" / "styleswap" / NAME))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWAPFORGE_MODELS_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def swapper(N, models_dir):
    assert NAME in N["SwapForge_StyleSwapLoader"].INPUT_TYPES()["required"]["swapper_name"][0]
    return N["SwapForge_StyleSwapLoader"]().load(NAME)[0]


@pytest.fixture(scope="module")
def clip():
    return torch.from_numpy(make_clip("obama.jpg", 12, NO_FACE))


def t(name):
    return torch.from_numpy(photo(name))[None]


@pytest.fixture(scope="module")
def clip_faces(N, fm):
    """The clip's faces without running the detector 12 times: the photo's face moved by make_clip's own
    stated motion (frame t = warpAffine(photo, m_t)), none on the faceless frames."""
    img = photo("obama.jpg")
    base = N["SwapForge_DetectFaces"]().detect(fm, torch.from_numpy(img)[None], 0.5, 32, 1, "largest_first")[0]
    face = base.frames[0]
    h, w = img.shape[:2]
    frames = []
    for i in range(12):
        if i in NO_FACE:
            frames.append(face.take([]))
            continue
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 1.5 * np.sin(i / 2), 1 + 0.01 * i)
        m[:, 2] += (3 * i - 15, 2 * np.sin(i))
        move = lambda p: p @ m[:, :2].T + m[:, 2]  # noqa: E731
        x0, y0, x1, y1 = face.boxes[0]
        corners = move(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        box = np.concatenate([corners.min(0), corners.max(0)])[None]
        frames.append(type(face)(box, face.scores, move(face.kps5[0])[None], move(face.landmarks68[0])[None]))
    return type(base)(frames, (h, w), base.backend)


def test_loader_gives_a_managed_swapper_and_names_the_folder_when_the_file_is_missing(N, swapper):
    services = sys.modules["swapforge.nodes.services"]
    module = swapper.load()
    assert isinstance(swapper, services.ManagedModel) and type(module).__name__ == "Swapper"
    assert not module.training and next(module.parameters()).dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="python -m models.styleswap.train"):
        N["SwapForge_StyleSwapLoader"]().load("nothing.safetensors")


def test_face_swap_keeps_twelve_frames_and_passes_faceless_frames_through(N, fm, swapper, clip, clip_faces,
                                                                         monkeypatch):
    services, node_mod = sys.modules["swapforge.nodes.services"], sys.modules["swapforge.nodes.styleswap"]
    steps = []
    monkeypatch.setattr(node_mod, "progress", lambda total: services.Progress(
        total, on_step=lambda done, tot: steps.append((done, tot))))
    out, mask, crops, info, status = N["SwapForge_FaceSwap"]().swap(
        swapper, fm, t("biden.jpg"), clip, 0.0, 0, "256", 4, 8, "none", 5,  # chunks of 5, 5 and 2 frames
        target_faces=clip_faces)
    assert steps == [(i, 12) for i in range(1, 13)]  # one progress step (and interrupt check) per frame
    assert out.shape == clip.shape and out.dtype == torch.float32 and mask.shape == clip.shape[:3]
    assert crops.shape == (12, 32, 32, 3) and len(info) == 12 and info.num_frames == 12  # the swapper's size
    assert [c.frame_index for c in info.crops] == list(range(12))
    assert [c.valid for c in info.crops] == [i not in NO_FACE for i in range(12)]
    lines = status.splitlines()
    assert lines[0].startswith("source: 1 of 1 photo(s)") and len(lines) == 13
    for i in range(12):
        assert lines[i + 1].startswith(f"frame {i}: ")
        assert ("no face" in lines[i + 1]) == (i in NO_FACE) and ("swapped" in lines[i + 1]) != (i in NO_FACE)
    o, c, m = out.numpy(), clip.numpy(), mask.numpy()
    for i in range(12):
        if i in NO_FACE:
            assert np.array_equal(o[i], c[i]) and m[i].max() == 0.0
        else:
            outside = m[i] == 0
            assert 0.3 < outside.mean() < 0.99
            assert np.array_equal(o[i][outside], c[i][outside])  # bit-identical outside the paste mask
            inside = m[i] > 0.99
            assert np.abs(o[i][inside] - c[i][inside]).mean() > 0.01  # the (noise) swap was pasted
    assert np.isfinite(o).all() and o.min() >= 0.0 and o.max() <= 1.0
    # the crop record re-pastes with Paste Back: same frames outside its mask
    pasted, pmask = N["SwapForge_PasteBack"]().paste(clip, crops, info, 4, 8, "none")
    assert pasted.shape == clip.shape and torch.equal(pasted[4], clip[4])


def test_face_swap_with_no_face_in_any_source_photo_says_so(N, fm, swapper):
    grey = torch.full((2, 96, 96, 3), 0.5)
    with pytest.raises(ValueError, match="no face found in any of the 2 source image"):
        N["SwapForge_FaceSwap"]().swap(swapper, fm, grey, grey, 0.0, 0, "256", 4, 8, "none", 4)


def test_stage_nodes_encode_blend_and_decode(N, swapper):
    crops = torch.from_numpy(np.stack([photo("biden.jpg")[:200, :200], photo("obama.jpg")[:200, :200]]))
    style = N["SwapForge_StyleEncoder"]().encode(swapper, crops, 1)[0]
    assert style.w.shape == (2, 8, 32) and set(style.feats) == {16, 32, 64}
    src = type(style)(style.w[:1], None)
    tgt = type(style)(style.w[1:], {r: f[1:] for r, f in style.feats.items()})
    blended, weights = N["SwapForge_StyleBlend"]().blend(swapper, src, tgt, 1.0, True)
    assert torch.equal(blended.w, tgt.w)  # strength 1: the target's own codes
    assert weights.shape == (1, 8 * 8, 32, 3) and 0.0 <= float(weights.min()) <= float(weights.max()) <= 1.0
    dec = N["SwapForge_StyleDecoder"]()
    img = dec.decode(swapper, blended, True, 4)[0]
    ref = dec.decode(swapper, tgt, True, 4)[0]
    assert img.shape == (1, 32, 32, 3) and torch.equal(img, ref)
    with pytest.raises(ValueError, match="use_target_features off"):
        dec.decode(swapper, src, True, 4)  # codes without features
    plain = dec.decode(swapper, src, False, 4)[0]
    assert plain.shape == (1, 32, 32, 3)


def test_union_inputs_take_a_bare_encoder_or_generator_and_reject_other_models(N, swapper):
    StyleEncoder = sys.modules["swapforge.models.styleswap.encoder"].StyleEncoder  # the pack's own classes
    StyleCode = sys.modules["swapforge.models.styleswap.swapper"].StyleCode

    module = swapper.load()
    torch.manual_seed(0)
    enc = StyleEncoder((2, 2, 4), 8, 32, 16).eval()
    style = N["SwapForge_StyleEncoder"]().encode(enc, torch.full((1, 64, 64, 3), 0.5), 1)[0]
    assert style.w.shape == (1, 8, 32)
    code = StyleCode(torch.zeros(1, 8, 32))
    img = N["SwapForge_StyleDecoder"]().decode(module.decoder, code, False, 1)[0]
    assert img.shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="plain StyleGAN2"):
        N["SwapForge_StyleDecoder"]().decode(module.decoder, code, True, 1)
    with pytest.raises(TypeError, match="expected a Swapper"):
        N["SwapForge_StyleBlend"]().blend(enc, code, code, 0.0, True)


def test_empty_swapper_folder_offers_a_placeholder_whose_load_says_how_to_train_or_compose(N, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))     # no swapper anywhere
    node_mod = sys.modules["swapforge.nodes.styleswap"]
    choices, opts = N["SwapForge_StyleSwapLoader"].INPUT_TYPES()["required"]["swapper_name"]
    assert choices == [node_mod.NO_SWAPPER]                       # ComfyUI validates it: the node runs
    with pytest.raises(FileNotFoundError) as e:
        N["SwapForge_StyleSwapLoader"]().load(choices[0])
    msg = str(e.value)
    assert "swapforge/styleswap" in msg and "python -m models.styleswap.train" in msg
    assert "python -m models.styleswap.checkpoints --stylegan2" in msg


def test_compose_command_writes_a_swapper_the_loader_reads(tmp_path, capsys):
    from test_swapper import tiny_swapper
    from models.styleswap import checkpoints

    gen = tiny_swapper(seed=3).decoder
    g_path = tmp_path / "g.pt"
    torch.save({"g_ema": gen.state_dict()}, g_path)
    out = tmp_path / "composed.safetensors"
    checkpoints.main(["--stylegan2", str(g_path), "--out", str(out)])
    sw = checkpoints.load_swapper(str(out))
    assert "wrote" in capsys.readouterr().out
    for k, v in gen.state_dict().items():
        assert torch.equal(sw.decoder.state_dict()[k], v), k


def test_face_swap_streams_its_crops_instead_of_keeping_every_crop_size_crop(swapper, clip, clip_faces):
    """The crop_size crops live one chunk at a time; what is kept is one swapper-size crop per frame. Measured
    with tracemalloc (numpy and OpenCV arrays; torch's own buffers are not traced): 12 crops at 1024 px would
    be 151 MB (twice that while concatenated)."""
    import tracemalloc

    from models.styleswap import swapper as sw

    module = swapper.load()
    frames = clip.numpy()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        res = sw.swap_faces(module, torch.zeros(1, module.n_styles, module.style_dim), frames, clip_faces,
                            crop_size=1024, frames_per_chunk=1)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    crop_mb = 1024 * 1024 * 3 * 4 / 2 ** 20
    assert res.crops.shape == (12, 32, 32, 3) and res.cropset.crops[0].size == 1024
    # measured: 91 MB here (342 MB when every 1024 px crop was kept and concatenated)
    assert peak < 2 * frames.nbytes + 8 * crop_mb * 2 ** 20, peak / 2 ** 20
