"""Style Blending Module (arXiv 2312.10843, Sec. 3.2, eq. 2): attention maths, blend weights, strength."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.styleswap.sbm import (SOURCE_RGB, TARGET_RGB, StyleBlendingModule, attention, blend_weights,
                                  weights_image)


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _set_linear(lin, w, b):
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w, dtype=torch.float32))
        lin.bias.copy_(torch.tensor(b, dtype=torch.float32))


def _np_params(lin):
    return lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy()


def _np_attention(q, k, v, heads):
    n, dim = q.shape
    d = dim // heads
    out = np.zeros_like(q)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        out[:, sl] = _np_softmax(q[:, sl] @ k[:, sl].T / np.sqrt(d)) @ v[:, sl]
    return out


def test_eq2_on_hand_built_single_layer_projections():
    torch.manual_seed(0)
    sbm = StyleBlendingModule(dim=4, n_styles=2, n_layers=1, n_heads=1)
    layer = sbm.layers[0]
    eye = np.eye(4)
    proj = {  # (weight [out, in], bias): y = x W^T + b
        "q_s": (eye, [0.0, 0.0, 0.0, 0.0]),
        "k_s": (0.5 * eye, [0.1, 0.0, 0.0, 0.0]),
        "v_s": (np.diag([1.0, -1.0, 2.0, 0.5]), [0.0, 0.2, 0.0, 0.0]),
        "q_t": (np.fliplr(eye).copy(), [0.0, 0.0, 0.3, 0.0]),
        "k_t": (2.0 * eye, [0.0, 0.0, 0.0, -0.4]),
        "v_t": (np.ones((4, 4)) * 0.25, [0.5, 0.0, -0.5, 1.0]),
    }
    for name, (w, b) in proj.items():
        lin_list = getattr(layer, "to_" + name[0])
        _set_linear(lin_list[0 if name.endswith("_s") else 1], w, b)

    ws_np = np.array([[1.0, 0.0, 2.0, -1.0], [0.0, 1.0, -1.0, 0.5]])
    wt_np = np.array([[0.5, 0.5, 0.0, 1.0], [-1.0, 2.0, 1.0, 0.0]])

    def lin(name, x):
        w, b = proj[name]
        return x @ np.asarray(w).T + np.asarray(b)

    d = 4
    a_t_ref = _np_softmax(lin("q_s", ws_np) @ lin("k_t", wt_np).T / np.sqrt(d)) @ lin("v_t", wt_np)
    a_s_ref = _np_softmax(lin("q_t", wt_np) @ lin("k_s", ws_np).T / np.sqrt(d)) @ lin("v_s", ws_np)
    aw_ref = np.exp(a_t_ref) / (np.exp(a_s_ref) + np.exp(a_t_ref))  # eq. 2 as printed
    w_ref = aw_ref * wt_np + (1.0 - aw_ref) * ws_np

    ws = torch.tensor(ws_np[None], dtype=torch.float32)
    wt = torch.tensor(wt_np[None], dtype=torch.float32)
    a_t, a_s = sbm.attend(ws, wt)
    np.testing.assert_allclose(a_t[0].detach().numpy(), a_t_ref, atol=1e-6)
    np.testing.assert_allclose(a_s[0].detach().numpy(), a_s_ref, atol=1e-6)
    w, aw = sbm(ws, wt)
    np.testing.assert_allclose(aw[0].detach().numpy(), aw_ref, atol=1e-6)
    np.testing.assert_allclose(w[0].detach().numpy(), w_ref, atol=1e-6)
    assert not np.allclose(aw_ref, 0.5, atol=0.05)  # the hand numbers really exercise the weights


def test_multi_head_attention_splits_dim_into_heads_with_per_head_scale():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = attention(q, k, v, n_heads=2)[0].numpy()
    ref = _np_attention(q[0].numpy(), k[0].numpy(), v[0].numpy(), heads=2)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    one_head = _np_attention(q[0].numpy(), k[0].numpy(), v[0].numpy(), heads=1)
    assert not np.allclose(out, one_head, atol=1e-3)


def test_layers_stack_with_residual_layernorm_and_last_layer_feeds_eq2():
    torch.manual_seed(3)
    sbm = StyleBlendingModule(dim=8, n_styles=3, n_layers=2, n_heads=2)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for pair in sbm.norms:
            for ln in pair:
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.3, 0.3)
    g = torch.Generator().manual_seed(4)
    ws = torch.randn(1, 3, 8, generator=g)
    wt = torch.randn(1, 3, 8, generator=g)

    def np_ln(x, ln):
        mu = x.mean(-1, keepdims=True)
        var = x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + ln.eps) * ln.weight.detach().double().numpy() \
            + ln.bias.detach().double().numpy()

    def np_layer(layer, s, t):
        def p(lst, i, x):
            w, b = _np_params(lst[i])
            return x @ w.T + b
        a_t = _np_attention(p(layer.to_q, 0, s), p(layer.to_k, 1, t), p(layer.to_v, 1, t), 2)
        a_s = _np_attention(p(layer.to_q, 1, t), p(layer.to_k, 0, s), p(layer.to_v, 0, s), 2)
        return a_t, a_s

    s, t = ws[0].double().numpy(), wt[0].double().numpy()
    a_t, a_s = np_layer(sbm.layers[0], s, t)
    s, t = np_ln(s + a_t, sbm.norms[0][0]), np_ln(t + a_s, sbm.norms[0][1])
    a_t, a_s = np_layer(sbm.layers[1], s, t)
    aw_ref = 1.0 / (1.0 + np.exp(a_s - a_t))
    w, aw = sbm(ws, wt)
    np.testing.assert_allclose(aw[0].detach().numpy(), aw_ref, atol=1e-5)
    np.testing.assert_allclose(w[0].detach().numpy(),
                               aw_ref * wt[0].numpy() + (1 - aw_ref) * ws[0].numpy(), atol=1e-5)


def test_sigmoid_form_equals_exponential_form_and_stays_finite_for_large_values():
    g = torch.Generator().manual_seed(5)
    a_t = torch.rand(4, 18, 64, generator=g, dtype=torch.float64) * 10 - 5
    a_s = torch.rand(4, 18, 64, generator=g, dtype=torch.float64) * 10 - 5
    ref = np.exp(a_t.numpy()) / (np.exp(a_s.numpy()) + np.exp(a_t.numpy()))
    np.testing.assert_allclose(blend_weights(a_t, a_s).numpy(), ref, rtol=1e-12)

    big_t = torch.tensor([1e4, -1e4, 1e4, 3e4], dtype=torch.float32)
    big_s = torch.tensor([-1e4, 1e4, 1e4, 3e4 - 2.0], dtype=torch.float32)
    naive = torch.exp(big_t) / (torch.exp(big_s) + torch.exp(big_t))
    assert not torch.isfinite(naive).all()  # the printed form overflows in float32
    out = blend_weights(big_t, big_s)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), [1.0, 0.0, 0.5, 1.0 / (1.0 + np.exp(-2.0))], rtol=1e-6)


def test_module_stays_finite_when_attention_values_are_huge():
    torch.manual_seed(6)
    sbm = StyleBlendingModule(dim=16, n_styles=18, n_layers=1, n_heads=2)
    with torch.no_grad():
        for lin in sbm.layers[0].to_v:
            lin.weight.mul_(3e4)
    ws, wt = torch.randn(2, 18, 16), torch.randn(2, 18, 16)
    a_t, a_s = sbm.attend(ws, wt)
    assert (a_t - a_s).abs().max() > 1e3
    w, aw = sbm(ws, wt)
    assert torch.isfinite(w).all() and torch.isfinite(aw).all()
    assert ((aw >= 0) & (aw <= 1)).all()
    lo, hi = torch.minimum(ws, wt), torch.maximum(ws, wt)
    assert ((w >= lo - 1e-6) & (w <= hi + 1e-6)).all()  # eq. 2 is a convex combination per element


def test_strength_one_gives_target_codes_exactly_and_zero_gives_the_blend():
    torch.manual_seed(7)
    sbm = StyleBlendingModule(dim=32, n_styles=18, n_layers=4, n_heads=4)
    ws, wt = torch.randn(2, 18, 32) * 3, torch.randn(2, 18, 32) * 3
    w0, aw = sbm(ws, wt, strength=0.0)
    w_prime = aw * wt + (1 - aw) * ws
    assert torch.equal(w0, w_prime)
    w1, aw1 = sbm(ws, wt, strength=1.0)
    assert torch.equal(w1, wt)
    assert torch.equal(aw1, aw)  # strength does not change eq. 2's weights
    wq, _ = sbm(ws, wt, strength=0.25)
    torch.testing.assert_close(wq, w_prime + 0.25 * (wt - w_prime), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="strength"):
        sbm(ws, wt, strength=1.5)


def test_shared_projections_make_the_blend_symmetric_and_default_does_not():
    torch.manual_seed(8)
    ws, wt = torch.randn(1, 18, 16), torch.randn(1, 18, 16)
    shared = StyleBlendingModule(dim=16, n_styles=18, n_layers=4, n_heads=2, shared_qkv=True)
    w_st, aw_st = shared(ws, wt)
    w_ts, aw_ts = shared(wt, ws)
    torch.testing.assert_close(aw_ts, 1 - aw_st, rtol=0, atol=1e-6)
    torch.testing.assert_close(w_ts, w_st, rtol=0, atol=1e-5)
    own = StyleBlendingModule(dim=16, n_styles=18, n_layers=4, n_heads=2)
    w_st, _ = own(ws, wt)
    w_ts, _ = own(wt, ws)
    assert (w_st - w_ts).abs().max() > 1e-3


def test_default_module_shapes_and_rejects_mismatched_codes():
    torch.manual_seed(9)
    sbm = StyleBlendingModule()
    ws, wt = torch.randn(2, 18, 512), torch.randn(2, 18, 512)
    w, aw = sbm(ws, wt)
    assert w.shape == (2, 18, 512) and aw.shape == (2, 18, 512)
    assert ((aw > 0) & (aw < 1)).all()
    assert len(sbm.layers) == 4 and sbm.layers[0].n_heads == 8
    with pytest.raises(ValueError, match=r"\[B, 18, 512\]"):
        sbm(ws, wt[:, :17])


def test_weights_image_rows_are_styles_and_colour_runs_source_blue_to_target_orange():
    a = torch.full((2, 18, 512), 0.5)
    a[0, 0] = 1.0
    a[0, 1] = 0.0
    a[1, 17] = torch.linspace(0, 1, 512)
    img = weights_image(a, row_px=4)
    assert img.shape == (2, 72, 512, 3) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1
    src, tgt = torch.tensor(SOURCE_RGB), torch.tensor(TARGET_RGB)
    assert torch.allclose(img[0, 0:4], tgt.expand(4, 512, 3))
    assert torch.allclose(img[0, 4:8], src.expand(4, 512, 3))
    assert tgt[0] > tgt[2] and src[2] > src[0]  # target reads warm (red), source cold (blue)
    assert torch.allclose(img[0, 8], (0.5 * src + 0.5 * tgt).expand(512, 3))
    col = 128
    v = float(a[1, 17, col])
    assert torch.allclose(img[1, 68:72, col], ((1 - v) * src + v * tgt).expand(4, 3), atol=1e-6)
    assert torch.allclose(img[1, 60:64], (0.5 * src + 0.5 * tgt).expand(4, 512, 3))
