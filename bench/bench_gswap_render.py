"""Speed of the GSwap torch tile rasteriser on CPU, as ratios against a baseline measured in the same run.

    .venv/bin/python bench/bench_gswap_render.py [--repeat 3] [--threads N]

Scene: N Gaussians on a head-sized sphere shell (see `scene`), D=32 features, square images. Forward is one
`rasterize` call; forward+backward adds `backward()` of a sum over image and alpha. Baseline: 64 px with
2k Gaussians. Fastest of --repeat runs after one warm-up (the machine is shared; the minimum is the least noisy). Nothing here is asserted: tests never time anything.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.gswap.rasterize import rasterize  # noqa: E402


def scene(n, size, d=32, seed=0):
    """A head-sized shell: n Gaussians on a sphere of radius 0.5 at 2.5 units, filling about half the image.

    Scales follow the spacing of the points (about 1.5 layers of overlap at any N), like a fitted avatar.
    """
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = 0.5 * dirs * (1 + 0.05 * torch.randn(n, 1, generator=g))
    quats = torch.randn(n, 4, generator=g)
    spacing = (4 * 3.1416 * 0.25 / n) ** 0.5
    scales = spacing * (0.3 + 0.7 * torch.rand(n, 3, generator=g))
    opacities = 0.3 + 0.69 * torch.rand(n, generator=g)
    features = torch.randn(n, d, generator=g)
    viewmat = torch.eye(4)
    viewmat[2, 3] = 2.5
    f = 2.0 * size
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return [means, quats, scales, opacities, features, viewmat, K, size, size]


def measure(n, size, repeat):
    args = scene(n, size)
    for t in args[:5]:
        t.requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return rasterize(*args, backend="torch")

    def fwd_bwd():
        img, alpha = rasterize(*args, backend="torch")
        (img.sum() + alpha.sum()).backward()
        return alpha

    out = {}
    for name, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
    with torch.no_grad():
        out["coverage"] = rasterize(*args, backend="torch")[1].mean().item()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, D=32, best of {args.repeat}")
    base = measure(2000, 64, args.repeat)
    print(f"{'size':>5} {'N':>6} {'fwd s':>8} {'x base':>7} {'f+b s':>8} {'x base':>7} {'mean alpha':>10}")
    for size in (64, 128, 256):
        for n in (2000, 5000, 20000):
            r = base if (size, n) == (64, 2000) else measure(n, size, args.repeat)
            print(f"{size:>5} {n:>6} {r['fwd']:>8.3f} {r['fwd'] / base['fwd']:>7.2f} {r['fwd+bwd']:>8.3f} "
                  f"{r['fwd+bwd'] / base['fwd+bwd']:>7.2f} {r['coverage']:>10.3f}")


if __name__ == "__main__":
    main()
