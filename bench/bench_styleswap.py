"""Speed of the StyleSwap swapper on CPU, and of the pure-PyTorch upfirdn2d against a naive version of it.

    .venv/bin/python bench/bench_styleswap.py [--repeat 2] [--threads N] [--skip-swapper]

1. Swapper (models/styleswap/swapper.py) at full widths with random weights: encoder (IR-SE50 + FPN,
   channels 64, 256 px input), SBM (4 layers, 8 heads, 18 x 512 codes) and the 1024 px StyleGAN2 decoder
   (channel_multiplier 2) with the target-feature shortcut. Batch 1, torch.no_grad, eval mode. One swap =
   E(source) + E(target) + SBM + D, each stage timed after one untimed warm-up swap; images per second =
   1 / (median total).
2. upfirdn2d (models/styleswap/ops.py: one depthwise transposed conv + window shift) against a naive
   implementation of the same maths written here (zero insertion by reshape, F.pad, conv2d of the flipped
   kernel on [B*C, 1, H, W], stride for down), at [4, 128, 64, 64], up=2, StyleGAN2's [1, 3, 3, 1] blur
   kernel and pads (2, 1): forward, and forward+backward (gradient w.r.t. the input). The outputs and the
   gradients are checked equal first.

Median of --repeat runs (the machine may be shared; say which machine gave the numbers). Nothing here is
asserted against a time: tests never time anything.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.styleswap.ops import make_kernel, upfirdn2d  # noqa: E402
from models.styleswap.swapper import Swapper  # noqa: E402


def naive_upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """upfirdn2d the textbook way: every channel as its own [B*C, 1, H, W] image, zeros inserted after each
    sample, padded (negative pads crop), convolved with the flipped kernel (a true convolution), subsampled."""
    b, c, h, w = x.shape
    x0, x1, y0, y1 = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else tuple(pad)
    t = x.reshape(b * c, 1, h, 1, w, 1)
    t = F.pad(t, (0, up - 1, 0, 0, 0, up - 1))
    t = t.reshape(b * c, 1, h * up, w * up)
    t = F.pad(t, (max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)))
    t = t[:, :, max(-y0, 0):t.shape[2] - max(-y1, 0), max(-x0, 0):t.shape[3] - max(-x1, 0)]
    k = torch.flip(kernel, [0, 1]).to(t.dtype).reshape(1, 1, *kernel.shape)
    t = F.conv2d(t, k, stride=down)
    return t.reshape(b, c, t.shape[2], t.shape[3])


def timed(fn, repeat: int):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def bench_swapper(repeat: int) -> None:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    sw = Swapper(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2, encoder_channels=64).eval()
    n_params = sum(p.numel() for p in sw.parameters())
    print(f"swapper: 1024 px decoder, encoder channels 64 at {sw.encoder.input_size} px, {sw.n_styles} x "
          f"{sw.style_dim} codes, {n_params / 1e6:.1f} M parameters (built in {time.perf_counter() - t0:.1f} s)")
    g = torch.Generator().manual_seed(1)
    src = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
    tgt = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
    stages = {"E(source)": [], "E(target)": [], "SBM": [], "D (+shortcut)": [], "total": []}
    with torch.no_grad():
        t0 = time.perf_counter()
        sw(src, tgt)  # warm-up (first-call allocations and kernel selection), not counted
        print(f"  warm-up swap {time.perf_counter() - t0:.1f} s (not counted)")
        for _ in range(repeat):
            t_start = time.perf_counter()
            ws, _ = sw.encode(src)
            t1 = time.perf_counter()
            wt, feats = sw.encode(tgt)
            t2 = time.perf_counter()
            w, _ = sw.sbm(ws, wt, 0.0)
            t3 = time.perf_counter()
            out = sw.decode(w, feats)
            t4 = time.perf_counter()
            assert out.shape == (1, 3, 1024, 1024)
            for name, dt in zip(stages, (t1 - t_start, t2 - t1, t3 - t2, t4 - t3, t4 - t_start)):
                stages[name].append(dt)
    for name, ts in stages.items():
        print(f"  {name:14s} median {statistics.median(ts) * 1000:9.1f} ms  (runs: "
              f"{', '.join(f'{t * 1000:.0f}' for t in ts)} ms)")
    total = statistics.median(stages["total"])
    print(f"  swap 256 px in -> 1024 px out, batch 1: {1.0 / total:.3f} images/s")


def bench_upfirdn(repeat: int) -> None:
    kernel = make_kernel([1, 3, 3, 1]) * 4  # StyleGAN2 Upsample(factor 2): kernel * factor**2, pads (2, 1)
    up, pad = 2, (2, 1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 128, 64, 64, generator=g)
    ours = upfirdn2d(x, kernel, up=up, pad=pad)
    ref = naive_upfirdn2d(x, kernel, up=up, pad=pad)
    assert ours.shape == ref.shape == (4, 128, 128, 128), (ours.shape, ref.shape)
    fwd_err = (ours - ref).abs().max().item()
    gy = torch.randn(ours.shape, generator=g)

    def fwd_bwd(fn):
        xi = x.detach().requires_grad_(True)
        (fn(xi, kernel, up=up, pad=pad) * gy).sum().backward()
        return xi.grad

    bwd_err = (fwd_bwd(upfirdn2d) - fwd_bwd(naive_upfirdn2d)).abs().max().item()
    print(f"upfirdn2d [4, 128, 64, 64] up=2 kernel [1,3,3,1] pad (2, 1): max |ours - naive| forward "
          f"{fwd_err:.2e}, input gradient {bwd_err:.2e}")
    rows = []
    with torch.no_grad():
        upfirdn2d(x, kernel, up=up, pad=pad), naive_upfirdn2d(x, kernel, up=up, pad=pad)  # warm-up
        f_ours, _ = timed(lambda: upfirdn2d(x, kernel, up=up, pad=pad), repeat)
        f_naive, _ = timed(lambda: naive_upfirdn2d(x, kernel, up=up, pad=pad), repeat)
    rows.append(("forward", f_ours, f_naive))
    b_ours, _ = timed(lambda: fwd_bwd(upfirdn2d), repeat)
    b_naive, _ = timed(lambda: fwd_bwd(naive_upfirdn2d), repeat)
    rows.append(("forward+backward", b_ours, b_naive))
    for name, a, b in rows:
        print(f"  {name:17s} ours {a * 1000:8.1f} ms   naive {b * 1000:8.1f} ms   naive/ours {b / a:5.2f}x")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-swapper", action="store_true", help="only the upfirdn2d comparison")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    bench_upfirdn(max(a.repeat, 1))
    if not a.skip_swapper:
        bench_swapper(max(a.repeat, 1))
    print(f"bench time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
