"""FuseAnyPart eq. 4 injection: MLP, nearest-upsampled addition, ComfyUI patch and diffusers processor."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.fuseanypart.injection import (
    SD15_ATTN2_LAYERS,
    FapAttnProcessor,
    LayerProjectors,
    PartMLP,
    addition_injection,
    make_attn2_replace,
    token_grid,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_part_mlp_matches_layernorm_of_two_linears_around_gelu():
    torch.manual_seed(0)
    mlp = PartMLP(clip_width=6, out_dim=10).double()
    _randomise(mlp, 1)
    x = torch.randn(2, 256, 6, dtype=torch.float64)
    sd = mlp.state_dict()
    assert sorted(sd) == ["proj.0.bias", "proj.0.weight", "proj.2.bias", "proj.2.weight",
                          "proj.3.bias", "proj.3.weight"]
    h = x @ sd["proj.0.weight"].T + sd["proj.0.bias"]
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))             # exact GELU
    y = h @ sd["proj.2.weight"].T + sd["proj.2.bias"]
    mean = y.mean(-1, keepdim=True)
    var = ((y - mean) ** 2).mean(-1, keepdim=True)                  # biased variance, eps 1e-5
    ref = (y - mean) / torch.sqrt(var + 1e-5) * sd["proj.3.weight"] + sd["proj.3.bias"]
    torch.testing.assert_close(mlp(x), ref, rtol=1e-10, atol=1e-10)


def _coded_projector():
    """Linear(768 -> 2) passing channels 0 and 1 of C through, with bias (0.5, -1)."""
    proj = nn.Linear(768, 2).double()
    with torch.no_grad():
        proj.weight.zero_()
        proj.weight[0, 0] = 1.0
        proj.weight[1, 1] = 1.0
        proj.bias.copy_(torch.tensor([0.5, -1.0]))
    return proj


def _coded_cond(batch=1, offset=0.0):
    """C whose token r*16+c carries value r*16+c (+offset) in channel 0 and -2*(r*16+c) in channel 1."""
    cond = torch.zeros(batch, 256, 768, dtype=torch.float64)
    idx = torch.arange(256, dtype=torch.float64)
    cond[:, :, 0] = idx + offset
    cond[:, :, 1] = -2.0 * idx
    return cond


def test_addition_injection_places_grid_cell_on_its_2x2_block_times_lambda():
    proj, cond, lam = _coded_projector(), _coded_cond(), 0.75
    out = addition_injection(cond, proj, tokens=32 * 32, lam=lam)
    assert out.shape == (1, 32 * 32, 2)
    for i in range(32):
        for j in range(32):
            cell = (i // 2) * 16 + (j // 2)                       # grid cell (r, c) covers rows 2r..2r+1
            assert out[0, i * 32 + j, 0].item() == pytest.approx(lam * (cell + 0.5))
            assert out[0, i * 32 + j, 1].item() == pytest.approx(lam * (-2.0 * cell - 1.0))
    assert torch.count_nonzero(addition_injection(cond, proj, 32 * 32, lam=0.0)) == 0


def test_addition_injection_keeps_latent_aspect_for_non_square_latents():
    proj, cond = _coded_projector(), _coded_cond()
    # latent 64 x 32 (a 512 x 256 image) at the second level: 32 x 16 tokens
    assert token_grid(32 * 16, 64, 32) == (32, 16)
    assert token_grid(1024) == (32, 32)
    out = addition_injection(cond, proj, tokens=32 * 16, lam=1.0, height=64, width=32)
    for i in range(32):
        for j in range(16):
            assert out[0, i * 16 + j, 0].item() == pytest.approx((i // 2) * 16 + j + 0.5)
    # odd sizes follow the UNet's ceil(n / 2) downsampling: 9 x 7 latent -> 3 x 2 at the third level
    assert token_grid(6, 9, 7) == (3, 2)
    with pytest.raises(ValueError, match="not a square grid"):
        addition_injection(cond, proj, tokens=512, lam=1.0)


def _projectors(seed=0):
    projectors = LayerProjectors([8] * 16).double()
    _randomise(projectors, seed)
    return projectors


def _hand_injection_16(cond, lin, lam):
    """At a 16 x 16 latent the upsample is the identity: lam * (C W^T + b), token for token."""
    return lam * (cond @ lin.weight.T + lin.bias)


def test_attn2_patch_routes_uncond_then_cond_chunks_by_cond_or_uncond():
    projectors = _projectors()
    key = ("output", 7, 0)
    lin = projectors[key]
    assert lin is projectors["up_blocks.2.attentions.1.transformer_blocks.0.attn2"]
    assert lin is projectors[("output", 7)]
    cond = torch.randn(1, 256, 768, dtype=torch.float64)
    uncond = torch.randn(2, 256, 768, dtype=torch.float64)
    patch = make_attn2_replace(cond, uncond, projectors, key, lam=0.6)
    q = torch.randn(4, 256, 8, dtype=torch.float64)
    k = v = torch.randn(4, 77, 8, dtype=torch.float64)
    opts = {"cond_or_uncond": [1, 0], "n_heads": 2, "dim_head": 4, "block": ("output", 7), "block_index": 0}
    out = patch(q, k, v, opts)
    assert out.shape == (4, 256, 8) and out.dtype == torch.float64
    torch.testing.assert_close(out[0], _hand_injection_16(uncond[0], lin, 0.6))
    torch.testing.assert_close(out[1], _hand_injection_16(uncond[1], lin, 0.6))
    torch.testing.assert_close(out[2], _hand_injection_16(cond[0], lin, 0.6))
    torch.testing.assert_close(out[3], _hand_injection_16(cond[0], lin, 0.6))


def test_attn2_patch_computes_each_branch_once_while_sampling_and_every_time_while_training(monkeypatch):
    import models.fuseanypart.injection as inj
    projectors = _projectors()
    lin = projectors[0]
    cond = torch.randn(1, 256, 768, dtype=torch.float64)
    uncond = torch.randn(1, 256, 768, dtype=torch.float64)
    calls = []
    real = inj.addition_injection
    monkeypatch.setattr(inj, "addition_injection", lambda *a, **k: calls.append(1) or real(*a, **k))
    patch = make_attn2_replace(cond, uncond, projectors, 0, lam=0.7)
    q = torch.randn(2, 256, 8, dtype=torch.float64)
    opts = {"cond_or_uncond": [1, 0], "n_heads": 2}
    with torch.inference_mode():  # how ComfyUI samples
        first = patch(q, q, q, opts)
        for _ in range(3):
            again = patch(q, q, q, opts)
    assert len(calls) == 2 and torch.equal(first, again)   # one per branch, then reused
    torch.testing.assert_close(again[0], _hand_injection_16(uncond[0], lin, 0.7))
    torch.testing.assert_close(again[1], _hand_injection_16(cond[0], lin, 0.7))
    with torch.inference_mode():  # another latent size is another entry
        patch(torch.randn(2, 1024, 8, dtype=torch.float64), q, q, opts)
    assert len(calls) == 4
    # with autograd recording (training), nothing is cached and the projector gets gradients
    calls.clear()
    lin.weight.grad = None
    patch(q, q, q, opts).sum().backward()
    patch(q, q, q, opts)
    assert len(calls) == 4 and lin.weight.grad is not None and float(lin.weight.grad.abs().sum()) > 0


def test_attn2_patch_follows_q_dtype():
    projectors = _projectors().float()
    cond = torch.randn(1, 256, 768)
    patch = make_attn2_replace(cond, cond, projectors, 0, lam=1.0)
    q = torch.randn(2, 256, 8, dtype=torch.bfloat16)
    out = patch(q, q, q, {"cond_or_uncond": [0, 1], "n_heads": 2})
    assert out.dtype == torch.bfloat16


def test_attn2_patch_outside_sigma_range_is_plain_attention():
    projectors = _projectors()
    cond = torch.randn(1, 256, 768, dtype=torch.float64)
    patch = make_attn2_replace(cond, cond, projectors, ("input", 4, 0), lam=1.0, sigma_start=10.0, sigma_end=1.0)
    torch.manual_seed(3)
    q = torch.randn(2, 256, 8, dtype=torch.float64)
    k = torch.randn(2, 77, 8, dtype=torch.float64)
    v = torch.randn(2, 77, 8, dtype=torch.float64)
    opts = {"cond_or_uncond": [0, 1], "n_heads": 2, "dim_head": 4}
    split = lambda t: t.reshape(2, t.shape[1], 2, 4).transpose(1, 2)  # noqa: E731
    ref = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(2, 256, 8)
    for sigma in (14.6, 0.5):
        out = patch(q, k, v, dict(opts, sigmas=torch.tensor([sigma])))
        torch.testing.assert_close(out, ref)
    inside = patch(q, k, v, dict(opts, sigmas=torch.tensor([5.0])))
    torch.testing.assert_close(inside[0], _hand_injection_16(cond[0], projectors[("input", 4)], 1.0))


def test_sd15_layer_table_matches_comfyui_block_keys_and_widths():
    expected = (
        [(f"down_blocks.{x}.attentions.{i}.transformer_blocks.0.attn2", w, ("input", n, 0))
         for (x, i, w, n) in [(0, 0, 320, 1), (0, 1, 320, 2), (1, 0, 640, 4), (1, 1, 640, 5),
                              (2, 0, 1280, 7), (2, 1, 1280, 8)]]
        + [("mid_block.attentions.0.transformer_blocks.0.attn2", 1280, ("middle", 0, 0))]
        + [(f"up_blocks.{x}.attentions.{i}.transformer_blocks.0.attn2", w, ("output", n, 0))
           for (x, w, base) in [(1, 1280, 3), (2, 640, 6), (3, 320, 9)] for i, n in enumerate(range(base, base + 3))]
    )
    assert [tuple(layer) for layer in SD15_ATTN2_LAYERS] == expected
    assert LayerProjectors().widths == tuple(w for _, w, _ in expected)


def _tiny_diffusers_attention():
    attention_processor = pytest.importorskip("diffusers.models.attention_processor")
    attn = attention_processor.Attention(query_dim=8, cross_attention_dim=768, heads=2, dim_head=4).double()
    _randomise(attn, 5)
    return attn


def test_diffusers_processor_and_comfy_patch_share_eq4_and_agree():
    attn = _tiny_diffusers_attention()
    projectors = _projectors(seed=7)
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    lin = projectors[layer]
    cond = torch.randn(1, 256, 768, dtype=torch.float64)
    uncond = torch.randn(1, 256, 768, dtype=torch.float64)
    lam = 0.8
    hidden = torch.randn(2, 32 * 32, 8, dtype=torch.float64)
    text = torch.randn(2, 77, 768, dtype=torch.float64)

    # hand reference: to_out(lam * nearest 2x upsample of (C W^T + b)), the bias of to_out not scaled
    def hand(c):
        grid = (c @ lin.weight.T + lin.bias).reshape(16, 16, 8)
        up = grid.repeat_interleave(2, 0).repeat_interleave(2, 1).reshape(1024, 8)
        return (lam * up) @ attn.to_out[0].weight.T + attn.to_out[0].bias
    ref = torch.stack([hand(uncond[0]), hand(cond[0])])

    proc = FapAttnProcessor(lin, lam, features=torch.cat([uncond, cond]))
    attn.set_processor(proc)
    with torch.no_grad():
        via_diffusers = attn(hidden, encoder_hidden_states=text)       # text is ignored by eq. 4
    torch.testing.assert_close(via_diffusers, ref)

    patch = make_attn2_replace(cond, uncond, projectors, layer, lam)
    q, k = attn.to_q(hidden), attn.to_k(text)
    with torch.no_grad():
        via_comfy = attn.to_out[0](patch(q, k, attn.to_v(text), {"cond_or_uncond": [1, 0], "n_heads": 2}))
    torch.testing.assert_close(via_comfy, via_diffusers)


COMFY_DIR = os.environ.get("SWAPFORGE_COMFYUI_DIR", "")


@pytest.mark.skipif(not COMFY_DIR, reason="set SWAPFORGE_COMFYUI_DIR to check the keys inside a real ComfyUI UNet")
def test_patch_keys_reach_every_attn2_of_comfyui_sd15_unet():
    """A tiny SD1.5-shaped ComfyUI UNetModel calls a patch under each of the 16 keys exactly once."""
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.abspath(COMFY_DIR)!r}); sys.path.insert(0, {ROOT!r})
        from comfy.cli_args import args; args.cpu = True
        import comfy.ops
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
        from models.fuseanypart.injection import SD15_ATTN2_LAYERS
        net = UNetModel(image_size=32, in_channels=9, out_channels=4, model_channels=32, num_res_blocks=[2] * 4,
                        use_spatial_transformer=True, channel_mult=(1, 2, 4, 4), num_heads=8, num_head_channels=-1,
                        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                        transformer_depth_middle=1, context_dim=768, use_linear_in_transformer=False,
                        operations=comfy.ops.disable_weight_init)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.02)
        seen = {{}}
        def make(key):
            def patch(q, k, v, extra):
                seen.setdefault(key, []).append((q.shape[1], q.shape[2]))
                return torch.zeros_like(q)
            return patch
        replace = {{layer.comfy_key: make(layer.comfy_key) for layer in SD15_ATTN2_LAYERS}}
        x = torch.randn(1, 9, 32, 32)
        net(x, torch.tensor([10.0]), context=torch.randn(1, 77, 768),
            transformer_options={{"patches_replace": {{"attn2": replace}}, "cond_or_uncond": [0]}})
        for layer in SD15_ATTN2_LAYERS:
            calls = seen.get(layer.comfy_key)
            assert calls is not None and len(calls) == 1, (layer, calls)
            tokens, width = calls[0]
            assert width == layer.width // 10, (layer, width)   # model_channels 32 = 320 / 10
            side = 32 // {{320: 1, 640: 2, 1280: 4}}[layer.width] if layer.comfy_key[0] != "middle" else 32 // 8
            assert tokens == side * side, (layer, tokens)
        print("OK", len(seen))
    """)
    python = os.environ.get("SWAPFORGE_COMFYUI_PYTHON") or sys.executable
    res = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=os.path.abspath(COMFY_DIR))
    assert res.returncode == 0 and "OK 16" in res.stdout, res.stdout + res.stderr


def test_fap_processors_on_tiny_sd15_layout_unet_make_text_irrelevant():
    """All 16 attn2 of a diffusers SD1.5-layout UNet take eq. 4; the text context no longer matters."""
    diffusers = pytest.importorskip("diffusers")
    from models.fuseanypart.injection import fap_attn_processors

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, block_out_channels=(32, 64, 128, 128),
        layers_per_block=2, cross_attention_dim=768, norm_num_groups=8, attention_head_dim=4).eval()
    attn2 = sorted(k[: -len(".processor")] for k in unet.attn_processors if k.endswith("attn2.processor"))
    assert attn2 == sorted(layer.diffusers_name for layer in SD15_ATTN2_LAYERS)
    projectors = LayerProjectors([layer.width // 10 for layer in SD15_ATTN2_LAYERS])
    _randomise(projectors, 2)
    feats = torch.randn(1, 256, 768)
    unet.set_attn_processor(fap_attn_processors(unet.attn_processors, projectors, 0.5, feats))
    x = torch.randn(1, 9, 16, 16)
    with torch.no_grad():
        a = unet(x, 10, encoder_hidden_states=torch.randn(1, 77, 768)).sample
        b = unet(x, 10, encoder_hidden_states=torch.randn(1, 77, 768)).sample
        unet.set_attn_processor(fap_attn_processors(unet.attn_processors, projectors, 0.5, -feats))
        c = unet(x, 10, encoder_hidden_states=torch.randn(1, 77, 768)).sample
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
