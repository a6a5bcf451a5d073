"""StyleSwap swapper (arXiv 2312.10843): shapes, the zero-initialised shortcut, the strength-1 target path,
save/load of swapforge_styleswap_v1 files and composition from pSp/e4e + rosinality parts.

A tiny random swapper (32 px decoder, 8 styles of 32, encoder width 16) stands in for a trained one: these
tests check the wiring and the file format, not image quality."""
import json

import pytest
import torch
import torch.nn.functional as F

from models.styleswap import checkpoints
from models.styleswap.encoder import StyleEncoder, add_latent_avg
from models.styleswap.stylegan2 import Generator
from models.styleswap.swapper import Swapper, paper_split

TINY = dict(size=32, style_dim=32, n_mlp=2, generator_channels={4: 16, 8: 16, 16: 16, 32: 8},
            encoder_channels=16, sbm_layers=2, sbm_heads=2)


def tiny_swapper(seed=0, **kw):
    torch.manual_seed(seed)
    return Swapper(**{**TINY, **kw}).eval()


@pytest.fixture(scope="module")
def swapper():
    return tiny_swapper()


@pytest.fixture(scope="module")
def faces():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def encoded(swapper, faces):
    with torch.no_grad():
        return swapper.encode(faces[0]), swapper.encode(faces[1])


@pytest.fixture(scope="module")
def swapped(swapper, faces):
    with torch.no_grad():
        return swapper(*faces)


def test_paper_split_is_equal_thirds_with_the_remainder_on_the_fine_level():
    assert paper_split(18) == (6, 6, 6)
    assert paper_split(14) == (4, 4, 6)
    assert paper_split(8) == (2, 2, 4)


def test_forward_shapes_config_and_shortcut_levels(swapper, swapped):
    out, a_t = swapped
    assert out.shape == (1, 3, 32, 32) and a_t.shape == (1, 8, 32)
    assert ((a_t > 0) & (a_t < 1)).all()
    assert swapper.config["split"] == [2, 2, 4] and swapper.encoder.split == (2, 2, 4)
    assert set(swapper.shortcut) == {"16", "32"}  # the 64 px level is above the 32 px decoder
    assert swapper.shortcut["16"].weight.shape == (16, 128, 1, 1)  # encoder width 8*16 -> decoder width 16
    json.dumps(swapper.config)
    rebuilt = Swapper(**json.loads(json.dumps(swapper.config)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in swapper.state_dict().items()}


def test_encode_resizes_any_square_input_to_the_encoders_256(swapper, faces):
    x = faces[0][:1]
    big = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        w, feats = swapper.encode(x)
        w_ref, _ = swapper.encoder(big)
    assert torch.equal(w, w_ref)
    assert w.shape == (1, 8, 32)
    assert {r: tuple(f.shape) for r, f in feats.items()} == {16: (1, 128, 16, 16), 32: (1, 128, 32, 32),
                                                            64: (1, 128, 64, 64)}
    with pytest.raises(ValueError, match="square"):
        swapper.encode(torch.zeros(1, 3, 64, 48))


def test_zero_initialised_shortcut_makes_the_output_the_plain_decoder_of_the_blend(swapper, swapped, encoded):
    (ws, _), (wt, feats_t) = encoded
    with torch.no_grad():
        w_blend, _ = swapper.sbm(ws, wt, 0.0)
        plain = swapper.decoder(w_blend, None, False)  # no shortcut at all
        assert torch.equal(swapped[0], plain)
        changed = tiny_swapper()  # same seed: same encoder, SBM and decoder
        for conv in changed.shortcut.values():
            torch.nn.init.normal_(conv.weight, std=0.5)
        assert not torch.allclose(changed.decode(w_blend, feats_t), plain, atol=1e-3)


def test_strength_one_decodes_the_targets_codes_with_its_features(faces, encoded):
    model = tiny_swapper()  # same seed as the `swapper` fixture, so `encoded` holds this encoder's codes
    for conv in model.shortcut.values():
        torch.nn.init.normal_(conv.weight, std=0.5)
        torch.nn.init.normal_(conv.bias, std=0.5)
    (ws, _), (wt, feats) = encoded
    with torch.no_grad():
        shortcut = {int(r): F.conv2d(feats[int(r)], c.weight, c.bias) for r, c in model.shortcut.items()}
        ref = model.decoder(wt, None, False, shortcut=shortcut)
        out, _ = model(faces[0], faces[1], strength=1.0)
        half = model.decode(model.sbm(ws, wt, 0.5)[0], feats)
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)
    assert not torch.allclose(half, ref, atol=1e-4)


def test_swap_images_is_the_forward_pass_on_0_1_images_resized_to_the_target(swapper, swapped, faces):
    src, tgt = ((f.permute(0, 2, 3, 1) + 1) / 2 for f in faces)
    out, a_t = swapper.swap_images(src, tgt)
    ref = F.interpolate(swapped[0], size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    assert out.shape == (1, 64, 64, 3) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.allclose(out, ((ref + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1), atol=1e-4)
    assert torch.allclose(a_t, swapped[1], atol=1e-4)


def test_save_load_round_trip_is_exact_and_uses_every_key(swapper, swapped, faces, tmp_path):
    path = str(tmp_path / "tiny.safetensors")
    checkpoints.save_swapper(swapper, path, extra_metadata={"step": "123"})
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["format"] == "swapforge_styleswap_v1" and meta["step"] == "123"
    assert json.loads(meta["config"]) == swapper.config
    assert all(k.startswith(checkpoints.PREFIXES) for k in keys)
    assert {k.split(".")[0] for k in keys} == {"encoder", "sbm", "decoder", "shortcut"}
    loaded = checkpoints.load_swapper(path)
    ref_sd, got_sd = swapper.state_dict(), loaded.state_dict()
    assert keys == set(ref_sd) == set(got_sd)
    assert all(torch.equal(ref_sd[k], got_sd[k]) for k in ref_sd)
    assert not loaded.training
    with torch.no_grad():
        b = loaded(*faces)
    assert torch.equal(swapped[0], b[0]) and torch.equal(swapped[1], b[1])


def test_bad_swapper_files_give_clear_errors(swapper, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError) as e:
        checkpoints.load_swapper(str(tmp_path / "none.safetensors"))
    assert "models/swapforge/styleswap" in str(e.value) and "python -m models.styleswap.train" in str(e.value)
    assert "No public weights" in str(e.value)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        checkpoints.load_swapper(str(junk))
    good = tmp_path / "good.safetensors"
    checkpoints.save_swapper(swapper, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="safetensors"):
        checkpoints.load_swapper(str(cut))
    sd = {k: v.contiguous() for k, v in swapper.state_dict().items()}
    other = tmp_path / "other.safetensors"
    save_file(sd, str(other), metadata={"format": "something_else"})
    with pytest.raises(ValueError, match="not a StyleSwap swapper"):
        checkpoints.load_swapper(str(other))
    meta = {"format": checkpoints.FORMAT, "config": json.dumps(swapper.config)}
    dropped = dict(sd)
    del dropped["sbm.layers.0.to_q.0.weight"]
    dropped["extra.tensor"] = torch.zeros(2)
    bad = tmp_path / "bad.safetensors"
    save_file(dropped, str(bad), metadata=meta)
    with pytest.raises(ValueError) as e:
        checkpoints.load_swapper(str(bad))
    assert "Missing keys: sbm.layers.0.to_q.0.weight" in str(e.value)
    assert "Unexpected keys: extra.tensor" in str(e.value)
    save_file(sd, str(bad), metadata={**meta, "config": json.dumps({**swapper.config, "wings": 2})})
    with pytest.raises(ValueError, match="config"):
        checkpoints.load_swapper(str(bad))


def _rosinality_file(tmp_path, seed=3):
    torch.manual_seed(seed)
    gen = Generator(32, 32, 2, channels=TINY["generator_channels"]).eval()
    avg = torch.randn(32)
    path = tmp_path / "stylegan2-tiny.pt"
    torch.save({"g_ema": gen.state_dict(), "latent_avg": avg}, str(path))
    return str(path), gen, avg


def _psp_file(tmp_path, gen, kind="psp", seed=4):
    torch.manual_seed(seed)
    enc = StyleEncoder((3, 4, 1), 8, 32, 16, kind=kind).eval()  # pSp's 3/4/rest split for 8 styles
    avg = torch.randn(8, 32) if kind == "psp" else torch.randn(32)
    state = {"encoder." + k: v for k, v in enc.state_dict().items()}
    state.update({"decoder." + k: v for k, v in gen.state_dict().items()})  # ignored by the encoder loader
    opts = {"encoder_type": "GradualStyleEncoder" if kind == "psp" else "Encoder4Editing",
            "start_from_latent_avg": True}
    path = tmp_path / f"{kind}-tiny.pt"
    torch.save({"state_dict": state, "latent_avg": avg, "opts": opts}, str(path))
    return str(path), enc, avg


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_swapper_from_parts_loads_the_encoder_with_latent_avg_and_the_generator(tmp_path, kind):
    gan_path, gen, _ = _rosinality_file(tmp_path)
    psp_path, enc, avg = _psp_file(tmp_path, gen, kind)
    model, warning = checkpoints.swapper_from_parts(psp_path, gan_path, sbm_layers=1, sbm_heads=2)
    assert "starts as the layer-wise blend" in warning and "Style Blending Module" in warning
    assert model.config["split"] == [3, 4, 1] and model.config["encoder_kind"] == kind
    assert all(float(c.weight.detach().abs().max()) == 0.0 for c in model.shortcut.values())
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(5)) * 2 - 1
    w = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(model.decoder(w, None, False), gen(w, None, False))
        got, _ = model.encode(x)
        ref = add_latent_avg(enc(x)[0], avg)  # pSp: W = E(x) + latent_avg
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-5)
    checkpoints.save_swapper(model, str(tmp_path / "composed.safetensors"))
    again = checkpoints.load_swapper(str(tmp_path / "composed.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_swapper_from_parts_without_an_encoder_starts_its_codes_at_the_generators_latent_avg(tmp_path):
    gan_path, gen, avg = _rosinality_file(tmp_path)
    model, warning = checkpoints.swapper_from_parts(None, gan_path, sbm_layers=1, sbm_heads=2)
    assert "Encoder: randomly initialised" in warning and model.config["split"] == [2, 2, 4]
    biases = torch.stack([h.linear.bias for h in model.encoder.styles])
    assert torch.allclose(biases, avg.expand(8, 32))  # heads start with zero bias, plus latent_avg
    with pytest.raises(FileNotFoundError, match="stylegan2"):
        checkpoints.swapper_from_parts(None, str(tmp_path / "missing.pt"))


def test_encoder_input_size_sets_the_resize_the_pyramid_and_the_default_shortcut_levels(faces):
    sw = tiny_swapper(encoder_input_size=64)
    assert sw.config["encoder_input_size"] == 64 and sw.encoder.input_size == 64
    assert sw.config["shortcut_resolutions"] == [4, 8, 16] and set(sw.shortcut) == {"4", "8", "16"}
    x = faces[0]
    small = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        w, feats = sw.encode(small)
        w_ref, _ = sw.encoder(F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False,
                                            antialias=True))
        out, _ = sw(x, x)
    assert torch.equal(w, w_ref) and sorted(feats) == [4, 8, 16] and out.shape == (1, 3, 32, 32)
    rebuilt = Swapper(**json.loads(json.dumps(sw.config)))
    assert rebuilt.encoder.input_size == 64 and set(rebuilt.shortcut) == set(sw.shortcut)
    # decoder smaller than the finest level: that level gets no shortcut conv
    assert set(tiny_swapper(encoder_input_size=256, size=32).shortcut) == {"16", "32"}
    with pytest.raises(ValueError, match="input size 64"):
        tiny_swapper(encoder_input_size=64, shortcut_resolutions=(16, 32))
    with pytest.raises(ValueError, match="shortcut needs"):
        sw.decode(w, {16: feats[16]})


def test_configs_saved_before_encoder_input_size_existed_load_at_256(swapper, swapped, faces, tmp_path):
    from safetensors.torch import load_file, save_file

    path = str(tmp_path / "old.safetensors")
    checkpoints.save_swapper(swapper, path)
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    config = json.loads(meta["config"])
    del config["encoder_input_size"]
    save_file(load_file(path), path, metadata={**meta, "config": json.dumps(config)})
    loaded = checkpoints.load_swapper(path)
    assert loaded.encoder.input_size == 256 and loaded.config["encoder_input_size"] == 256
    with torch.no_grad():
        out, a_t = loaded(*faces)
    assert torch.equal(out, swapped[0]) and torch.equal(a_t, swapped[1])


def _layerwise_check(sbm, n_styles, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    ws, wt = torch.randn(3, n_styles, dim, generator=g), torch.randn(3, n_styles, dim, generator=g) * 2
    w, a = sbm(ws, wt)
    rows = torch.tensor([r < 4 or r >= 8 for r in range(n_styles)])   # target coarse + fine, source middle
    expected = torch.where(rows[None, :, None], wt, ws)
    assert float((a.detach() - rows[None, :, None].float()).abs().max()) <= 1e-6
    assert float((w.detach() - expected).abs().max()) <= 1e-6 * float((wt - ws).abs().max())
    return ws, wt


def test_a_fresh_or_composed_swapper_starts_as_the_layerwise_blend_and_can_still_learn(tmp_path):
    sw = tiny_swapper(size=64, generator_channels={4: 16, 8: 16, 16: 16, 32: 8, 64: 8})
    assert sw.n_styles == 10 and sw.config["sbm_blend_prior"] is True   # rows 0-3 target, 4-7 source, 8-9 target
    ws, wt = _layerwise_check(sw.sbm, 10, sw.style_dim)
    w, _ = sw.sbm(ws, wt)
    (w * torch.randn_like(w)).sum().backward()
    assert float(sw.sbm.blend_prior.grad.abs().max()) > 0
    assert float(sw.sbm.layers[-1].to_v[1].weight.grad.abs().max()) > 0
    gan_path, gen, _ = _rosinality_file(tmp_path)
    model, _ = checkpoints.swapper_from_parts(None, gan_path, sbm_layers=2, sbm_heads=2)
    with torch.no_grad():
        _layerwise_check(model.sbm, model.n_styles, model.style_dim, seed=1)


def test_swapper_files_from_before_the_blend_prior_still_load(tmp_path):
    from safetensors.torch import load_file, save_file

    old = Swapper(sbm_blend_prior=False, **TINY)
    path = str(tmp_path / "old.safetensors")
    config = dict(old.config)
    del config["sbm_blend_prior"]
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, path,
              metadata={"format": checkpoints.FORMAT, "config": json.dumps(config)})
    again = checkpoints.load_swapper(path)
    assert again.sbm.blend_prior is None
    assert all(torch.equal(v, load_file(path)[k]) for k, v in again.state_dict().items())
