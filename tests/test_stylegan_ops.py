"""Pure-PyTorch StyleGAN2 ops (models/styleswap/ops.py) against direct, independent computations."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from models.styleswap import ops


def naive_upfirdn2d(x, kernel, up, down, pad0, pad1):
    """Reference: explicit loops over output pixels and kernel taps.

    The upsampled signal u has x[i] at u[i*up] and zeros elsewhere; the padded signal is
    u shifted by pad0; output pixel o sums padded[o*down + t] * kernel[k-1-t] over taps t.
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    out_h = (h * up + pad0 + pad1 - kh) // down + 1
    out_w = (w * up + pad0 + pad1 - kw) // down + 1
    out = torch.zeros(b, c, out_h, out_w, dtype=x.dtype)
    for oy in range(out_h):
        for ox in range(out_w):
            acc = torch.zeros(b, c, dtype=x.dtype)
            for ty in range(kh):
                uy = oy * down + ty - pad0  # index in the upsampled, unpadded signal
                if uy < 0 or uy >= h * up or uy % up:
                    continue
                for tx in range(kw):
                    ux = ox * down + tx - pad0
                    if ux < 0 or ux >= w * up or ux % up:
                        continue
                    acc += x[:, :, uy // up, ux // up] * kernel[kh - 1 - ty, kw - 1 - tx]
            out[:, :, oy, ox] = acc
    return out


@pytest.mark.parametrize(
    "up,down,pad,kshape",
    [
        (2, 1, (2, 1), (4, 4)),    # rosinality Upsample pads
        (1, 2, (1, 1), (4, 4)),    # rosinality Downsample pads
        (2, 1, (-1, 2), (4, 4)),   # negative pad crops
        (1, 2, (-1, 0), (3, 3)),
        (1, 1, (1, 2), (3, 2)),    # non-square kernel, blur only
        (3, 2, (1, -1), (2, 3)),   # up and down together
    ],
)
def test_upfirdn2d_matches_pixel_loop_reference(up, down, pad, kshape):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    kernel = torch.randn(*kshape, generator=g, dtype=torch.float64)  # asymmetric: flips matter
    got = ops.upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    ref = naive_upfirdn2d(x, kernel, up, down, *pad)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_upfirdn2d_float32_matches_reference_and_keeps_dtype():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 4, 4, generator=g)
    kernel = torch.randn(4, 4, generator=g)
    got = ops.upfirdn2d(x, kernel, up=2, pad=(2, 1))
    assert got.dtype == torch.float32
    ref = naive_upfirdn2d(x.double(), kernel.double(), 2, 1, 2, 1)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (2, 1, (-1, 1))])
def test_upfirdn2d_gradients_pass_gradcheck_and_gradgradcheck(up, down, pad):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(4, 3, generator=g, dtype=torch.float64)
    fn = lambda t: ops.upfirdn2d(t, kernel, up=up, down=down, pad=pad)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_rejects_bad_arguments():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="2-D kernel"):
        ops.upfirdn2d(x, torch.ones(4))
    with pytest.raises(ValueError, match="no output pixels"):
        ops.upfirdn2d(x, torch.ones(4, 4), pad=(-1, -1))


def test_make_kernel_is_normalised_outer_product():
    k = ops.make_kernel([1, 3, 3, 1])
    expected = torch.tensor([[1, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]]) / 64.0
    torch.testing.assert_close(k, expected)


def test_upsample_and_downsample_double_and_halve_size_and_keep_constants():
    x = torch.full((1, 2, 8, 8), 3.0)
    up = ops.Upsample([1, 3, 3, 1])(x)
    down = ops.Downsample([1, 3, 3, 1])(x)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # a normalised low-pass filter leaves a constant unchanged away from the zero-padded border
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full((1, 2, 12, 12), 3.0))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full((1, 2, 2, 2), 3.0))


def test_fused_leaky_relu_matches_formula():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 3, 3, generator=g)
    bias = torch.randn(4, generator=g)
    v = x + bias.view(1, 4, 1, 1)
    expected = torch.where(v >= 0, v, 0.2 * v) * math.sqrt(2)
    torch.testing.assert_close(ops.fused_leaky_relu(x, bias), expected)
    x2 = torch.randn(5, 4, generator=g)  # 2-D input (mapping network)
    v2 = x2 + bias
    torch.testing.assert_close(ops.fused_leaky_relu(x2, bias, 0.1, 3.0),
                               torch.where(v2 >= 0, v2, 0.1 * v2) * 3.0)
    m = ops.FusedLeakyReLU(4)
    assert m.bias.shape == (4,)
    with torch.no_grad():
        m.bias.copy_(bias)
    torch.testing.assert_close(m(x), expected)


def test_equal_linear_matches_formula_with_lr_mul_and_activation():
    torch.manual_seed(0)
    lin = ops.EqualLinear(6, 5, bias_init=0.5, lr_mul=0.01)
    with torch.no_grad():
        lin.bias.normal_()
    x = torch.randn(3, 6)
    scale = 0.01 / math.sqrt(6)
    expected = x @ (lin.weight * scale).T + lin.bias * 0.01
    torch.testing.assert_close(lin(x), expected)
    act = ops.EqualLinear(6, 5, lr_mul=0.01, activation="fused_lrelu")
    with torch.no_grad():
        act.weight.copy_(lin.weight)
        act.bias.copy_(lin.bias)
    torch.testing.assert_close(act(x), torch.where(expected >= 0, expected, 0.2 * expected) * math.sqrt(2))
    with pytest.raises(ValueError, match="activation"):
        ops.EqualLinear(2, 2, activation="relu")


def test_equal_conv2d_matches_formula():
    torch.manual_seed(1)
    conv = ops.EqualConv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 5, 5)
    expected = F.conv2d(x, conv.weight / math.sqrt(3 * 9), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)


def test_pixel_norm_and_noise_injection_match_formulas():
    torch.manual_seed(2)
    x = torch.randn(3, 7)
    torch.testing.assert_close(ops.PixelNorm()(x), x / torch.sqrt((x ** 2).mean(1, keepdim=True) + 1e-8))
    inj = ops.NoiseInjection()
    with torch.no_grad():
        inj.weight.fill_(0.7)
    img, noise = torch.randn(2, 3, 4, 4), torch.randn(1, 1, 4, 4)
    torch.testing.assert_close(inj(img, noise), img + 0.7 * noise)


def _modulated_weights(conv, style):
    """Per-sample weights w'_b = scale * W * s_b, demodulated by rsqrt(sum w'^2 + 1e-8)."""
    s = style @ (conv.modulation.weight * conv.modulation.scale).T + conv.modulation.bias
    out = []
    for b in range(style.shape[0]):
        w = conv.weight[0] / math.sqrt(conv.in_channel * conv.kernel_size ** 2) * s[b].view(1, -1, 1, 1)
        if conv.demodulate:
            w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        out.append(w)
    return out


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_matches_per_sample_loop(demodulate):
    torch.manual_seed(7)
    conv = ops.ModulatedConv2d(4, 5, 3, style_dim=6, demodulate=demodulate)
    x, style = torch.randn(3, 4, 6, 6), torch.randn(3, 6)
    ref = torch.cat([F.conv2d(x[b:b + 1], w, padding=1)
                     for b, w in enumerate(_modulated_weights(conv, style))])
    torch.testing.assert_close(conv(x, style), ref, rtol=1e-5, atol=1e-5)


def test_modulated_conv2d_upsample_is_transposed_conv_then_blur():
    torch.manual_seed(8)
    conv = ops.ModulatedConv2d(3, 2, 3, style_dim=4, upsample=True)
    x, style = torch.randn(2, 3, 4, 4), torch.randn(2, 4)
    blur = ops.make_kernel([1, 3, 3, 1]) * 4
    refs = []
    for b, w in enumerate(_modulated_weights(conv, style)):
        t = F.conv_transpose2d(x[b:b + 1], w.transpose(0, 1), stride=2)  # 9x9
        refs.append(naive_upfirdn2d(t.double(), blur.double(), 1, 1, 1, 1).float())
    out = conv(x, style)
    assert out.shape == (2, 2, 8, 8)
    torch.testing.assert_close(out, torch.cat(refs), rtol=1e-5, atol=1e-5)


def test_modulated_conv2d_downsample_is_blur_then_strided_conv():
    torch.manual_seed(9)
    conv = ops.ModulatedConv2d(3, 2, 3, style_dim=4, downsample=True)
    x, style = torch.randn(2, 3, 8, 8), torch.randn(2, 4)
    blur = ops.make_kernel([1, 3, 3, 1])
    refs = []
    for b, w in enumerate(_modulated_weights(conv, style)):
        t = naive_upfirdn2d(x[b:b + 1].double(), blur.double(), 1, 1, 2, 2).float()  # 9x9
        refs.append(F.conv2d(t, w, stride=2))
    out = conv(x, style)
    assert out.shape == (2, 2, 4, 4)
    torch.testing.assert_close(out, torch.cat(refs), rtol=1e-5, atol=1e-5)


def test_styled_conv_and_to_rgb_have_rosinality_parameter_names():
    sc = ops.StyledConv(4, 6, 3, 8, upsample=True)
    assert {k: tuple(v.shape) for k, v in sc.state_dict().items()} == {
        "conv.weight": (1, 6, 4, 3, 3), "conv.modulation.weight": (4, 8),
        "conv.modulation.bias": (4,), "conv.blur.kernel": (4, 4),
        "noise.weight": (1,), "activate.bias": (6,),
    }
    rgb = ops.ToRGB(6, 8)
    assert {k: tuple(v.shape) for k, v in rgb.state_dict().items()} == {
        "upsample.kernel": (4, 4), "conv.weight": (1, 3, 6, 1, 1),
        "conv.modulation.weight": (6, 8), "conv.modulation.bias": (6,), "bias": (1, 3, 1, 1),
    }
    assert set(ops.ConstantInput(5).state_dict()) == {"input"}


def test_styled_conv_equals_conv_noise_bias_lrelu_composition():
    torch.manual_seed(10)
    sc = ops.StyledConv(3, 4, 3, 5)
    with torch.no_grad():
        sc.noise.weight.fill_(0.3)
        sc.activate.bias.normal_()
    x, style, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 5), torch.randn(1, 1, 4, 4)
    v = sc.conv(x, style) + 0.3 * noise + sc.activate.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(sc(x, style, noise), torch.where(v >= 0, v, 0.2 * v) * math.sqrt(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_upfirdn2d_cuda_matches_cpu():
    g = torch.Generator().manual_seed(11)
    x, k = torch.randn(2, 3, 8, 8, generator=g), torch.randn(4, 4, generator=g)
    for up, down, pad in [(2, 1, (2, 1)), (1, 2, (1, 1))]:
        torch.testing.assert_close(ops.upfirdn2d(x.cuda(), k.cuda(), up, down, pad).cpu(),
                                   ops.upfirdn2d(x, k, up, down, pad), rtol=1e-4, atol=1e-4)
