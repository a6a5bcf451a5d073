"""StyleGAN2 generator (models/styleswap/stylegan2.py): rosinality key layout, loading, shortcut."""
from __future__ import annotations

import math

import pytest
import torch

from models.styleswap.stylegan2 import Generator, load_rosinality

TINY = {4: 8, 8: 8, 16: 6, 32: 4}  # widths for a 32 px test generator
STYLE_DIM = 16


def rosinality_g_ema_shapes(size, style_dim, n_mlp, channels, blur_len=4):
    """Key -> shape of a rosinality ``g_ema`` state dict, written out from its naming scheme."""
    shapes = {}
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm (no parameters)
        shapes[f"style.{i}.weight"] = (style_dim, style_dim)
        shapes[f"style.{i}.bias"] = (style_dim,)
    c4 = channels[4]
    shapes["input.input"] = (1, c4, 4, 4)

    def styled(prefix, cin, cout, up):
        shapes[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)
        if up:
            shapes[f"{prefix}.conv.blur.kernel"] = (blur_len, blur_len)
        shapes[f"{prefix}.noise.weight"] = (1,)
        shapes[f"{prefix}.activate.bias"] = (cout,)

    def to_rgb(prefix, cin, up):
        if up:
            shapes[f"{prefix}.upsample.kernel"] = (blur_len, blur_len)
        shapes[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        shapes[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
        shapes[f"{prefix}.conv.modulation.bias"] = (cin,)
        shapes[f"{prefix}.bias"] = (1, 3, 1, 1)

    styled("conv1", c4, c4, False)
    to_rgb("to_rgb1", c4, False)
    n_blocks = int(math.log2(size)) - 2
    cin = c4
    for j in range(n_blocks):
        cout = channels[2 ** (j + 3)]
        styled(f"convs.{2 * j}", cin, cout, True)
        styled(f"convs.{2 * j + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{j}", cout, True)
        cin = cout
    shapes["noises.noise_0"] = (1, 1, 4, 4)
    for j in range(n_blocks):
        r = 2 ** (j + 3)
        shapes[f"noises.noise_{2 * j + 1}"] = (1, 1, r, r)
        shapes[f"noises.noise_{2 * j + 2}"] = (1, 1, r, r)
    return shapes


def _tiny(seed=0):
    torch.manual_seed(seed)
    g = Generator(32, STYLE_DIM, 2, channels=TINY)
    with torch.no_grad():  # non-trivial noise strengths and biases so every path matters
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("activate.bias"):
                p.normal_(0, 0.5)
    return g.eval()


def test_size_256_config_f_has_rosinality_keys_and_shapes():
    with torch.device("meta"):
        g = Generator(256, 512, 8, channel_multiplier=2)
    got = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    config_f = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    assert got == rosinality_g_ema_shapes(256, 512, 8, config_f)
    # representative keys, literally
    assert got["conv1.conv.weight"] == (1, 512, 512, 3, 3)
    assert got["convs.0.conv.modulation.weight"] == (512, 512)
    assert got["to_rgbs.0.conv.weight"] == (1, 3, 512, 1, 1)
    assert got["noises.noise_0"] == (1, 1, 4, 4)
    assert got["noises.noise_12"] == (1, 1, 256, 256)
    assert got["style.1.weight"] == (512, 512)
    assert got["to_rgbs.5.conv.weight"] == (1, 3, 128, 1, 1)
    assert "style.9.weight" not in got and "convs.12.conv.weight" not in got
    assert g.n_latent == 14 and g.num_layers == 13


def test_size_1024_has_18_latents_and_config_f_parameter_count():
    with torch.device("meta"):
        g = Generator(1024)
    assert g.n_latent == 18
    assert g.state_dict()["to_rgbs.7.conv.weight"].shape == (1, 3, 32, 1, 1)
    # StyleGAN2 config-f generator (mapping + synthesis) has 30,370,060 parameters
    assert sum(p.numel() for p in g.parameters()) == 30_370_060


def test_hand_built_rosinality_state_dict_loads_strictly_with_every_tensor(tmp_path):
    shapes = rosinality_g_ema_shapes(32, STYLE_DIM, 2, TINY)
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    latent_avg = torch.randn(STYLE_DIM, generator=g)
    path = tmp_path / "hand.pt"
    torch.save({"g_ema": sd, "g": sd, "d": {}, "latent_avg": latent_avg}, path)
    gen, avg = load_rosinality(str(path))
    assert gen.size == 32 and gen.style_dim == STYLE_DIM and gen.channels == TINY
    loaded = gen.state_dict()
    assert set(loaded) == set(sd)
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    assert torch.equal(avg, latent_avg)


def test_saved_tiny_generator_round_trips_with_identical_output(tmp_path):
    g = _tiny()
    path = tmp_path / "tiny.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.ones(STYLE_DIM)}, path)
    g2, avg = load_rosinality(path, size=32)
    assert torch.equal(avg, torch.ones(STYLE_DIM))
    w = torch.randn(2, g.n_latent, STYLE_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = g(w, randomize_noise=False)
        b = g2(w, randomize_noise=False)
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, b)


def test_load_infers_channel_multiplier_for_default_widths():
    with torch.device("meta"):
        ref = Generator(64, 8, 1, channel_multiplier=1)
    sd = {k: torch.zeros(v.shape) for k, v in ref.state_dict().items()}
    gen, avg = load_rosinality({"g_ema": sd})
    assert avg is None
    assert gen.channel_multiplier == 1 and gen.channels[64] == 256


def test_fixed_noise_is_deterministic_and_random_noise_is_not():
    g = _tiny()
    w = torch.randn(1, g.n_latent, STYLE_DIM)
    noise = g.make_noise(torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(g(w, noise=noise), g(w, noise=noise))
        assert torch.equal(g(w, randomize_noise=False), g(w, randomize_noise=False))
        assert not torch.equal(g(w), g(w))


def test_every_latent_of_w_plus_reaches_the_image():
    g = _tiny()
    w = torch.randn(1, g.n_latent, STYLE_DIM, requires_grad=True)
    g(w, randomize_noise=False).sum().backward()
    assert (w.grad.abs().sum(-1) > 0).all()
    assert g.n_latent == 8


def test_single_w_is_broadcast_to_all_layers():
    g = _tiny()
    w = torch.randn(2, STYLE_DIM)
    with torch.no_grad():
        a = g(w, randomize_noise=False)
        b = g(w[:, None].repeat(1, g.n_latent, 1), randomize_noise=False)
    assert torch.equal(a, b)


def test_mapping_matches_pixelnorm_then_equalised_lrelu_layers():
    g = _tiny()
    z = torch.randn(3, STYLE_DIM)
    x = z / torch.sqrt((z ** 2).mean(1, keepdim=True) + 1e-8)
    for i in (1, 2):
        lin = g.style[i]
        v = x @ (lin.weight * 0.01 / math.sqrt(STYLE_DIM)).T + lin.bias * 0.01
        x = torch.where(v >= 0, v, 0.2 * v) * math.sqrt(2)
    torch.testing.assert_close(g.mapping(z), x)
    gen = torch.Generator().manual_seed(4)
    m = g.mean_latent(64, generator=gen)
    z2 = torch.randn(64, STYLE_DIM, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(m, g.mapping(z2).mean(0, keepdim=True).detach())
    assert m.shape == (1, STYLE_DIM)


def _to_rgb_inputs(g, w, shortcut=None):
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, r=r: seen.__setitem__(r, args[0]))
             for r, m in [(4, g.to_rgb1)] + [(2 ** (j + 3), m) for j, m in enumerate(g.to_rgbs)]]
    try:
        with torch.no_grad():
            img = g(w, randomize_noise=False, shortcut=shortcut)
    finally:
        for h in hooks:
            h.remove()
    return img, seen


def test_zero_shortcut_changes_nothing_and_nonzero_shortcut_changes_output():
    g = _tiny()
    w = torch.randn(2, g.n_latent, STYLE_DIM)
    with torch.no_grad():
        base = g(w, randomize_noise=False)
        zero = g(w, randomize_noise=False, shortcut={16: torch.zeros(2, 6, 16, 16)})
        other = g(w, randomize_noise=False, shortcut={16: torch.randn(2, 6, 16, 16)})
    assert torch.equal(base, zero)
    assert (base - other).abs().max() > 1e-3


def test_shortcut_is_added_after_the_style_block_of_its_resolution():
    g = _tiny()
    w = torch.randn(2, g.n_latent, STYLE_DIM)
    feat = torch.randn(2, 6, 16, 16)
    _, plain = _to_rgb_inputs(g, w)
    _, with_sc = _to_rgb_inputs(g, w, {16: feat})
    # the 16 px block output (input of to_rgbs.1) is shifted by exactly the feature ...
    torch.testing.assert_close(with_sc[16], plain[16] + feat)
    # ... lower resolutions are untouched, higher ones see the change
    assert torch.equal(with_sc[4], plain[4]) and torch.equal(with_sc[8], plain[8])
    assert not torch.allclose(with_sc[32], plain[32])
    # 4 px: after conv1, before to_rgb1; a batch-1 feature is shared by the batch
    f4 = torch.randn(1, 8, 4, 4)
    _, sc4 = _to_rgb_inputs(g, w, {4: f4})
    torch.testing.assert_close(sc4[4], plain[4] + f4)


def test_shortcut_with_wrong_width_or_resolution_is_rejected():
    g = _tiny()
    w = torch.randn(1, g.n_latent, STYLE_DIM)
    with pytest.raises(ValueError, match=r"expected \[B, 6, 16, 16\]"):
        g(w, shortcut={16: torch.zeros(1, 8, 16, 16)})
    with pytest.raises(ValueError, match="does not have"):
        g(w, shortcut={64: torch.zeros(1, 4, 64, 64)})
    with pytest.raises(ValueError, match="W\\+ styles"):
        g(torch.zeros(1, 5, STYLE_DIM))


def test_missing_file_error_names_folder_source_and_licence(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_rosinality(tmp_path / "stylegan2-ffhq-config-f.pt")
    msg = str(err.value)
    for part in ("models/swapforge/stylegan2", "stylegan2-ffhq-config-f.pt", "rosinality",
                 "NVIDIA Source Code License-NC"):
        assert part in msg


def test_truncated_file_raises_readable_error(tmp_path):
    g = _tiny()
    path = tmp_path / "cut.pt"
    torch.save({"g_ema": g.state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="damaged, incomplete"):
        load_rosinality(path)


def test_wrong_keys_are_listed():
    sd = dict(_tiny().state_dict())
    del sd["convs.1.noise.weight"]
    sd["convs.1.extra"] = torch.zeros(1)
    with pytest.raises(KeyError) as err:
        load_rosinality({"g_ema": sd})
    assert "convs.1.noise.weight" in str(err.value) and "convs.1.extra" in str(err.value)
    with pytest.raises(KeyError, match="no 'g_ema'"):
        load_rosinality({"state_dict": {}})


def test_shape_mismatch_names_key_and_both_shapes():
    sd = dict(_tiny().state_dict())
    sd["convs.1.conv.weight"] = torch.zeros(1, 8, 5, 3, 3)
    with pytest.raises(ValueError) as err:
        load_rosinality({"g_ema": sd})
    msg = str(err.value)
    assert "convs.1.conv.weight" in msg and "(1, 8, 5, 3, 3)" in msg and "(1, 8, 8, 3, 3)" in msg


def test_size_argument_must_match_checkpoint():
    with pytest.raises(ValueError, match="32px"):
        load_rosinality({"g_ema": _tiny().state_dict()}, size=1024)
