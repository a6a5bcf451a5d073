"""Encoder E (arXiv 2312.10843 Sec. 3.1) in pSp's GradualStyleEncoder layout: keys, head split, FPN,
e4e offsets, strict pSp/e4e checkpoint loading, latent_avg."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from models.styleswap.encoder import StyleEncoder, add_latent_avg, load_psp

SMALL = dict(channels=16, style_dim=32)  # same code paths as pSp's 64/512, ~3 M parameters


def _meta_encoder(**kw):
    with torch.device("meta"):
        return StyleEncoder(**kw)


def _randomised(enc: StyleEncoder, seed: int = 0) -> StyleEncoder:
    """Random non-default BatchNorm statistics / PReLU slopes so that every buffer matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    return enc.eval()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(11)
    return torch.rand(1, 3, 256, 256, generator=g) * 2 - 1


def test_full_width_state_dict_keys_and_shapes_match_psp_encoder():
    sd = {"encoder." + k: tuple(v.shape) for k, v in _meta_encoder().state_dict().items()}
    expected = {  # written from pSp's GradualStyleEncoder(50, "ir_se") / helpers.py
        "encoder.input_layer.0.weight": (64, 3, 3, 3),
        "encoder.input_layer.1.running_var": (64,),
        "encoder.input_layer.2.weight": (64,),
        "encoder.body.0.res_layer.0.weight": (64,),
        "encoder.body.0.res_layer.1.weight": (64, 64, 3, 3),
        "encoder.body.0.res_layer.2.weight": (64,),
        "encoder.body.0.res_layer.3.weight": (64, 64, 3, 3),
        "encoder.body.0.res_layer.4.running_mean": (64,),
        "encoder.body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),
        "encoder.body.0.res_layer.5.fc2.weight": (64, 4, 1, 1),
        "encoder.body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
        "encoder.body.3.shortcut_layer.1.running_mean": (128,),
        "encoder.body.7.shortcut_layer.0.weight": (256, 128, 1, 1),
        "encoder.body.20.res_layer.3.weight": (256, 256, 3, 3),
        "encoder.body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
        "encoder.body.23.res_layer.5.fc1.weight": (32, 512, 1, 1),
        "encoder.styles.0.convs.0.weight": (512, 512, 3, 3),
        "encoder.styles.0.convs.6.bias": (512,),
        "encoder.styles.3.convs.8.weight": (512, 512, 3, 3),
        "encoder.styles.17.convs.10.weight": (512, 512, 3, 3),
        "encoder.styles.17.linear.weight": (512, 512),
        "encoder.styles.17.linear.bias": (512,),
        "encoder.latlayer1.weight": (512, 256, 1, 1),
        "encoder.latlayer1.bias": (512,),
        "encoder.latlayer2.weight": (512, 128, 1, 1),
    }
    for key, shape in expected.items():
        assert sd.get(key) == shape, key
    absent = ["encoder.body.0.shortcut_layer.0.weight",  # depth unchanged: 1x1 max-pool shortcut
              "encoder.body.24.res_layer.1.weight", "encoder.styles.18.linear.weight",
              "encoder.styles.2.convs.8.weight", "encoder.styles.6.convs.10.weight"]
    for key in absent:
        assert key not in sd, key
    # count: input 7 (conv, BN 5, PReLU); 24 units x 15 (BN 5, conv, PReLU, conv, BN 5, fc1, fc2) plus
    # 3 conv shortcuts x 6; heads 2 per conv + 2 for linear with 4/5/6 convs; latlayers 4.
    n_heads = 3 * (2 * 4 + 2) + 4 * (2 * 5 + 2) + 11 * (2 * 6 + 2)
    assert len(sd) == 7 + 24 * 15 + 3 * 6 + n_heads + 4 == 621


def test_full_width_forward_gives_18x512_codes_and_pyramid_maps():
    enc = _meta_encoder().eval()
    w, feats = enc(torch.empty(2, 3, 256, 256, device="meta"))
    assert tuple(w.shape) == (2, 18, 512)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        16: (2, 512, 16, 16), 32: (2, 512, 32, 32), 64: (2, 512, 64, 64)}
    paper = _meta_encoder(split=(6, 6, 6))
    assert sum(1 for k in paper.state_dict() if k.endswith("linear.weight")) == 18
    assert [sum(1 for k in paper.state_dict() if k.startswith(f"styles.{i}.convs.") and k.endswith("weight"))
            for i in (0, 5, 6, 11, 12, 17)] == [4, 4, 5, 5, 6, 6]


@pytest.mark.parametrize("split,levels", [
    ((3, 4, 11), [16] * 3 + [32] * 4 + [64] * 11),
    ((6, 6, 6), [16] * 6 + [32] * 6 + [64] * 6),
])
def test_each_style_head_reads_its_pyramid_level(split, levels, image):
    torch.manual_seed(1)
    enc = StyleEncoder(split=split, **SMALL).eval()
    seen = {}
    hooks = [head.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].shape[-1]))
             for i, head in enumerate(enc.styles)]
    with torch.no_grad():
        w, feats = enc(image)
    for h in hooks:
        h.remove()
    assert [seen[i] for i in range(18)] == levels
    for level in (16, 32, 64):  # perturbing one map moves exactly the heads that read it
        moved = dict(feats)
        moved[level] = feats[level] + torch.randn_like(feats[level])
        with torch.no_grad():
            w2 = enc.map_styles(moved)
        changed = (w2 - w).abs().amax(dim=(0, 2)) > 0
        assert changed.tolist() == [lv == level for lv in levels], level


def test_pyramid_taps_body_units_6_20_23_and_upsample_adds_bilinearly(image):
    torch.manual_seed(2)
    enc = _randomised(StyleEncoder(**SMALL))
    taps = {}
    hooks = [enc.body[i].register_forward_hook(lambda m, a, out, i=i: taps.__setitem__(i, out))
             for i in (6, 20, 23)]
    with torch.no_grad():
        _, feats = enc(image)
        for h in hooks:
            h.remove()
        c1, c2, c3 = taps[6], taps[20], taps[23]
        assert (c1.shape[1:], c2.shape[1:], c3.shape[1:]) == ((32, 64, 64), (64, 32, 32), (128, 16, 16))
        p2 = F.interpolate(c3, size=(32, 32), mode="bilinear", align_corners=True) + enc.latlayer1(c2)
        p1 = F.interpolate(p2, size=(64, 64), mode="bilinear", align_corners=True) + enc.latlayer2(c1)
    assert torch.equal(feats[16], c3)
    torch.testing.assert_close(feats[32], p2, rtol=0, atol=1e-6)
    torch.testing.assert_close(feats[64], p1, rtol=0, atol=1e-6)


def test_e4e_adds_w0_to_every_other_style(image):
    torch.manual_seed(3)
    psp = StyleEncoder(**SMALL).eval()
    e4e = StyleEncoder(kind="e4e", **SMALL).eval()
    e4e.load_state_dict(psp.state_dict())
    with torch.no_grad():
        heads, _ = psp(image)
        w, _ = e4e(image)
    torch.testing.assert_close(w[:, 0], heads[:, 0], rtol=0, atol=0)
    for i in range(1, 18):
        torch.testing.assert_close(w[:, i], heads[:, 0] + heads[:, i], rtol=0, atol=1e-6)


def test_style_head_is_strided_convs_leaky_relu_then_equalised_linear():
    torch.manual_seed(4)
    enc = StyleEncoder(**SMALL)
    head = enc.styles[0]  # coarse head: 16 px -> 4 stride-2 convs -> 1 px
    x = torch.randn(2, 128, 16, 16)
    y = x
    for i in range(4):
        conv = head.convs[2 * i]
        y = F.leaky_relu(F.conv2d(y, conv.weight, conv.bias, stride=2, padding=1), 0.01)
    y = y.flatten(1)
    ref = y @ (head.linear.weight / 32 ** 0.5).T + head.linear.bias  # scale 1/sqrt(in), lr_mul 1
    with torch.no_grad():
        torch.testing.assert_close(head(x), ref, rtol=0, atol=1e-5)


def _psp_checkpoint(enc: StyleEncoder, encoder_type="GradualStyleEncoder", **opts):
    sd = {"encoder." + k: v.clone() for k, v in enc.state_dict().items()}
    sd["decoder.style.1.weight"] = torch.randn(8, 8)
    sd["decoder.input.input"] = torch.randn(1, 8, 4, 4)
    return {"state_dict": sd, "latent_avg": torch.randn(18, enc.style_dim),
            "opts": {"encoder_type": encoder_type, "start_from_latent_avg": True, "output_size": 1024,
                     "input_nc": 3, "checkpoint_path": None, "lr": 0.0001, **opts}}


def test_psp_checkpoint_loads_with_every_encoder_key_used(tmp_path, image):
    torch.manual_seed(5)
    enc = _randomised(StyleEncoder(**SMALL), seed=5)
    ckpt = _psp_checkpoint(enc)
    path = tmp_path / "psp_ffhq_encode.pt"
    torch.save(ckpt, path)
    torch.load(path, map_location="cpu", weights_only=True)  # the layout is weights_only-safe
    loaded, latent_avg = load_psp(str(path))
    assert loaded.kind == "psp" and not loaded.training
    got = loaded.state_dict()
    enc_keys = {k[len("encoder."):] for k in ckpt["state_dict"] if k.startswith("encoder.")}
    assert set(got) == enc_keys
    for k in enc_keys:
        assert torch.equal(got[k], ckpt["state_dict"]["encoder." + k]), k
    assert torch.equal(latent_avg, ckpt["latent_avg"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(image)[0], enc(image)[0], rtol=0, atol=0)


def test_e4e_checkpoint_is_detected_from_opts_and_runs_e4e_forward(tmp_path, image):
    torch.manual_seed(6)
    enc = _randomised(StyleEncoder(**SMALL), seed=6)
    ckpt = _psp_checkpoint(enc, encoder_type="Encoder4Editing")
    ckpt["latent_avg"] = torch.randn(enc.style_dim)
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save(ckpt, path)
    loaded, latent_avg = load_psp(path)
    assert loaded.kind == "e4e" and latent_avg.shape == (32,)
    with torch.no_grad():
        heads, _ = enc(image)
        w, _ = loaded(image)
    torch.testing.assert_close(w[:, 5], heads[:, 0] + heads[:, 5], rtol=0, atol=1e-6)
    no_opts = {"state_dict": ckpt["state_dict"], "latent_avg": ckpt["latent_avg"]}
    with pytest.raises(ValueError, match="kind='psp' or kind='e4e'"):
        load_psp(no_opts)
    assert load_psp(no_opts, kind="e4e")[0].kind == "e4e"
    assert load_psp(no_opts, kind="psp")[0].kind == "psp"


def test_missing_or_extra_encoder_keys_are_refused_with_their_names():
    torch.manual_seed(7)
    ckpt = _psp_checkpoint(StyleEncoder(**SMALL))
    sd = ckpt["state_dict"]
    del sd["encoder.body.5.res_layer.1.weight"]
    with pytest.raises(ValueError, match=r"missing encoder\.body\.5\.res_layer\.1\.weight"):
        load_psp(ckpt)
    sd["encoder.body.5.res_layer.1.weight"] = torch.zeros(32, 32, 3, 3)
    sd["encoder.styles.18.linear.weight"] = torch.zeros(32, 32)
    with pytest.raises(ValueError, match=r"unexpected encoder\.styles\.18\.linear\.weight"):
        load_psp(ckpt)
    del sd["encoder.styles.18.linear.weight"]
    sd["encoder.latlayer1.weight"] = torch.zeros(128, 32, 1, 1)
    with pytest.raises(ValueError, match=r"wrong shape encoder\.latlayer1\.weight"):
        load_psp(ckpt)
    sd["encoder.latlayer1.weight"] = torch.zeros(128, 64, 1, 1)
    assert load_psp(ckpt)[0].split == (3, 4, 11)
    with pytest.raises(ValueError, match=r"unexpected .*encoder\.styles\.3\.convs\.8\.weight"):  # pSp file, paper split
        load_psp(ckpt, split=(6, 6, 6))


def test_missing_checkpoint_error_names_file_folder_licence_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_psp(os.path.join(tmp_path, "psp_ffhq_encode.pt"))
    msg = str(info.value)
    for part in ("psp_ffhq_encode.pt", "e4e_ffhq_encode.pt", "models/swapforge/psp", "MIT", "FFHQ",
                 "pSp", "e4e"):
        assert part in msg, part


def test_latent_avg_is_dropped_when_the_model_did_not_start_from_it():
    torch.manual_seed(8)
    ckpt = _psp_checkpoint(StyleEncoder(**SMALL), start_from_latent_avg=False)
    assert load_psp(ckpt)[1] is None


def test_add_latent_avg_per_style_and_broadcast():
    w = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    per_style = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, -3.0]])
    out = add_latent_avg(w, per_style)
    assert out[1, 2, 3].item() == 23.0 - 3.0 and out[0, 1, 1].item() == 5.0 + 2.0
    assert out[1, 0, 0].item() == 12.0 + 1.0 and out[0, 0, 1].item() == 1.0
    single = torch.tensor([10.0, 20.0, 30.0, 40.0])
    out = add_latent_avg(w, single)
    assert out[1, 2].tolist() == [20.0 + 10, 21.0 + 20, 22.0 + 30, 23.0 + 40]
    assert add_latent_avg(w, None) is w
    with pytest.raises(ValueError, match="latent_avg"):
        add_latent_avg(w, torch.zeros(5, 4))


def test_encoder_rejects_images_that_are_not_256_px():
    enc = _meta_encoder()
    with pytest.raises(ValueError, match="256"):
        enc(torch.empty(1, 3, 128, 128, device="meta"))
    with pytest.raises(ValueError, match="split"):
        StyleEncoder(split=(3, 4, 10), **SMALL)


def test_encoder_rejects_other_sizes_with_a_message_naming_its_input_size():
    enc = _meta_encoder(input_size=64, **SMALL)
    with pytest.raises(ValueError, match="input_size=64") as e:
        enc(torch.empty(1, 3, 256, 256, device="meta"))
    assert "64, 64]" in str(e.value)
    for bad in (16, 48, 100, 0):
        with pytest.raises(ValueError, match="input_size must be a power of two >= 32"):
            StyleEncoder(input_size=bad, **SMALL)


def test_default_input_size_is_psp_layout_and_smaller_inputs_scale_the_pyramid_and_heads():
    full = _meta_encoder()
    assert full.input_size == 256 and full.levels == (16, 32, 64)
    assert [len(h.convs) // 2 for h in full.styles] == [4] * 3 + [5] * 4 + [6] * 11
    keys256 = set(full.state_dict())
    small = _meta_encoder(input_size=64)
    assert small.levels == (4, 8, 16) and small.head_levels() == (4,) * 3 + (8,) * 4 + (16,) * 11
    assert [len(h.convs) // 2 for h in small.styles] == [2] * 3 + [3] * 4 + [4] * 11
    # same backbone / FPN keys; the heads only lose their last convs
    assert {k for k in keys256 if not k.startswith("styles.")} == {k for k in small.state_dict()
                                                                  if not k.startswith("styles.")}
    assert set(small.state_dict()) < keys256


@pytest.mark.parametrize("size", [32, 64])
def test_small_input_forward_gives_codes_and_maps_keyed_by_their_resolutions(size):
    torch.manual_seed(0)
    enc = _randomised(StyleEncoder(split=(2, 2, 4), n_styles=8, input_size=size, **SMALL))
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        w, feats = enc(x)
    assert w.shape == (2, 8, 32) and torch.isfinite(w).all()
    assert {r: tuple(f.shape) for r, f in feats.items()} == {
        size // 16: (2, 128, size // 16, size // 16), size // 8: (2, 128, size // 8, size // 8),
        size // 4: (2, 128, size // 4, size // 4)}
