"""Pure-PyTorch StyleGAN2 building blocks with rosinality/stylegan2-pytorch parameter names.

The paper's style decoder D ("High-Fidelity Face Swapping with Style Blending", arXiv 2312.10843,
Sec. 3) is a StyleGAN2 synthesis network initialised from FFHQ weights. Users have those weights in
rosinality's layout, whose ``upfirdn2d`` and ``fused_leaky_relu`` ops are JIT-compiled CUDA
extensions. This module re-implements the same maths with ordinary differentiable PyTorch ops (CPU
and CUDA, double backward included) and keeps every parameter and buffer name and shape, so a
rosinality ``g_ema`` state dict loads with ``strict=True``. Nothing here compiles.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "upfirdn2d", "fused_leaky_relu", "FusedLeakyReLU", "make_kernel", "Blur", "Upsample",
    "Downsample", "EqualConv2d", "EqualLinear", "ModulatedConv2d", "NoiseInjection",
    "ConstantInput", "StyledConv", "ToRGB", "PixelNorm",
]


def _shift_window(x: torch.Tensor, dim: int, start: int, length: int) -> torch.Tensor:
    """Return ``length`` samples of ``x`` along ``dim`` from index ``start``, zeros outside ``x``."""
    size = x.shape[dim]
    lo, hi = max(start, 0), min(start + length, size)
    if hi <= lo:
        shape = list(x.shape)
        shape[dim] = length
        return x.new_zeros(shape)
    x = x.narrow(dim, lo, hi - lo)
    before, after = lo - start, start + length - hi
    if before or after:
        pad = [0, 0] * (x.ndim - 1 - dim) + [before, after]
        x = F.pad(x, pad)
    return x


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: Sequence[int] = (0, 0),
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images (rosinality ``upfirdn2d``).

    Same maths as ``upfirdn2d_native``: insert ``up - 1`` zeros after every sample, pad each side
    (negative pads crop), convolve with ``kernel`` (a true convolution, i.e. cross-correlation with
    the flipped kernel), keep every ``down``-th sample.

    Args:
        x: ``[B, C, H, W]`` images.
        kernel: ``[kh, kw]`` FIR filter (any values; not renormalised here).
        up: integer upsampling factor (both axes).
        down: integer downsampling factor (both axes).
        pad: ``(p0, p1)`` applied to both axes, or ``(x0, x1, y0, y1)`` as in rosinality's
            autograd function; ``p0`` before the first and ``p1`` after the last sample.

    Returns:
        ``[B, C, (H*up + y0 + y1 - kh) // down + 1, (W*up + x0 + x1 - kw) // down + 1]``.

    Implemented as one depthwise (``groups=C``) convolution on ``[B, C, H, W]``: for ``up > 1`` a
    strided transposed convolution does the zero insertion and the filtering together, followed by a
    window shift that realises the pads; for ``up == 1`` pad/crop then a strided depthwise conv.
    Differentiable to any order.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x as [B, C, H, W]; got shape {tuple(x.shape)}.")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel [kh, kw]; got shape {tuple(kernel.shape)}.")
    up, down = int(up), int(down)
    if up < 1 or down < 1:
        raise ValueError(f"upfirdn2d needs up >= 1 and down >= 1; got up={up}, down={down}.")
    if len(pad) == 2:
        px0, px1, py0, py1 = pad[0], pad[1], pad[0], pad[1]
    elif len(pad) == 4:
        px0, px1, py0, py1 = pad
    else:
        raise ValueError(f"upfirdn2d pad must have 2 or 4 entries; got {tuple(pad)}.")
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    out_h = h * up + py0 + py1 - kh + 1  # before downsampling
    out_w = w * up + px0 + px1 - kw + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"upfirdn2d: input {h}x{w} with up={up}, pad={tuple(pad)} and kernel {kh}x{kw} "
            "leaves no output pixels."
        )
    k = kernel.to(device=x.device, dtype=x.dtype)
    if up > 1:
        # conv_transpose computes y[t] = sum_i x[i] k[t - up*i], the zero-inserted signal convolved
        # with k; the padded output is out[n] = y[n + k - 1 - p0].
        weight = k.view(1, 1, kh, kw).expand(c, 1, kh, kw)
        y = F.conv_transpose2d(x, weight, stride=up, groups=c)
        y = _shift_window(y, 2, kh - 1 - py0, out_h)
        y = _shift_window(y, 3, kw - 1 - px0, out_w)
        if down > 1:
            y = y[:, :, ::down, ::down]
        return y
    x = _shift_window(x, 2, -py0, h + py0 + py1)
    x = _shift_window(x, 3, -px0, w + px0 + px1)
    weight = torch.flip(k, [0, 1]).view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    scale: float = 2 ** 0.5,
) -> torch.Tensor:
    """``scale * leaky_relu(x + bias, negative_slope)`` with ``bias`` ``[C]`` on channel dim 1."""
    if bias is not None:
        shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
        x = x + bias.view(shape).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias add + leaky ReLU + gain, with rosinality's parameter ``bias`` ``[channel]``."""

    def __init__(self, channel: int, bias: bool = True, negative_slope: float = 0.2,
                 scale: float = 2 ** 0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply :func:`fused_leaky_relu` with this module's bias."""
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


def make_kernel(k) -> torch.Tensor:
    """Normalised 2-D FIR kernel: a 1-D list becomes its outer product; the result sums to one."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def _kernel_len(kernel) -> int:
    return len(kernel) if not torch.is_tensor(kernel) else int(kernel.shape[0])


class Upsample(nn.Module):
    """2x (``factor``) upsampling with a blur filter; buffer ``kernel`` = make_kernel * factor**2."""

    def __init__(self, kernel, factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor ** 2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H*factor, W*factor]``."""
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class Downsample(nn.Module):
    """Blur then keep every ``factor``-th pixel; buffer ``kernel`` = make_kernel."""

    def __init__(self, kernel, factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H/factor, W/factor]``."""
        return upfirdn2d(x, self.kernel, up=1, down=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR blur with explicit pads (buffer ``kernel``; scaled by ``upsample_factor**2`` if > 1)."""

    def __init__(self, kernel, pad: Sequence[int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter ``x`` with the kernel and this module's pads."""
        return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: weight ``[out, in, k, k]`` used as ``weight / sqrt(in*k*k)``."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.conv2d(x, weight * scale, bias)``."""
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride,
                        padding=self.padding)

    def extra_repr(self) -> str:
        """Channels, kernel, stride and padding."""
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and a learning-rate multiplier.

    ``y = x @ (weight * scale).T + bias * lr_mul`` with ``scale = lr_mul / sqrt(in_dim)``; the
    stored weight is initialised as ``randn / lr_mul``. With ``activation='fused_lrelu'`` the
    biased output goes through :func:`fused_leaky_relu`.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0,
                 lr_mul: float = 1, activation: str | None = None):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear activation must be None or 'fused_lrelu'; got {activation!r}.")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the scaled linear map (and the activation when configured)."""
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        """Input and output sizes."""
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}"


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (weight ``[1, out, in, k, k]``, ``modulation`` EqualLinear).

    Per sample ``b``: ``w'_b = scale * weight * s_b`` (``s_b = modulation(style_b)`` scales input
    channels); with ``demodulate`` each output filter is divided by ``sqrt(sum w'^2 + 1e-8)``. All
    samples run as one grouped convolution. ``upsample`` = stride-2 transposed conv then blur;
    ``downsample`` = blur then stride-2 conv (rosinality's pads).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, downsample: bool = False,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        if upsample and downsample:
            raise ValueError("ModulatedConv2d cannot both upsample and downsample.")
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        self.downsample = downsample
        n = _kernel_len(blur_kernel)
        if upsample:
            factor = 2
            p = (n - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        if downsample:
            factor = 2
            p = (n - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def extra_repr(self) -> str:
        """Channels, kernel and resampling mode."""
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
                f"upsample={self.upsample}, downsample={self.downsample}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, in, H, W]``, ``style`` ``[B, style_dim]`` -> ``[B, out, H', W']``."""
        batch, in_channel, height, width = x.shape
        k = self.kernel_size
        s = self.modulation(style).view(batch, 1, in_channel, 1, 1)
        weight = self.scale * self.weight * s  # [B, out, in, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        x = x.reshape(1, batch * in_channel, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        weight = weight.reshape(batch * self.out_channel, in_channel, k, k)
        if self.downsample:
            x = self.blur(x.view(batch, in_channel, height, width))
            x = x.reshape(1, batch * in_channel, x.shape[2], x.shape[3])
            out = F.conv2d(x, weight, padding=0, stride=2, groups=batch)
        else:
            out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_channel, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """Adds ``weight * noise`` (``weight`` ``[1]``); fresh N(0, 1) noise ``[B, 1, H, W]`` if none given."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``image + weight * noise``; ``noise`` broadcasts over channels (and batch if 1)."""
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    """Learned constant ``input`` ``[1, channel, size, size]`` repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        """Return the constant repeated ``ref.shape[0]`` times."""
        return self.input.repeat(ref.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv (``conv``) + noise (``noise``) + fused bias/leaky ReLU (``activate``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel=(1, 3, 3, 1), demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    upsample=upsample, blur_kernel=blur_kernel,
                                    demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``activate(noise(conv(x, style), noise))``."""
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + ``bias`` ``[1, 3, 1, 1]`` + upsampled skip."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        """RGB of ``x`` plus the 2x-upsampled previous RGB ``skip`` when given."""
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class PixelNorm(nn.Module):
    """Normalise each sample to unit mean square over dim 1: ``x * rsqrt(mean(x**2) + 1e-8)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised tensor."""
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)
