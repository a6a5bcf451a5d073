"""Cost of one Body Tracker iteration (landmarks forward + backward) per body surface, as ratios against a
baseline measured in the same run.

    .venv/bin/python bench/bench_gswap_track.py [--frames 5] [--repeat 5]

Rows: the procedural template head; Anny with the whole mesh skinned (BodySurface.forward, the baseline);
Anny with only the landmark triangles skinned (AnnySurface.landmark_forward, what the tracker uses). A random
small pose for `--frames` frames, gradients w.r.t. pose, shape, rotation and translation, like
models/gswap/track.fit_track's inner loop. Fastest of --repeat after one warm-up. Nothing is asserted.
Anny's first use on a machine builds its cache (about 70 s) before anything is timed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.gswap import body  # noqa: E402


def params(surface, frames):
    g = torch.Generator().manual_seed(0)
    p = surface.zero_params(frames)
    p.global_orient = 0.1 * torch.randn(frames, 3, generator=g)
    if p.body_pose is not None:
        p.body_pose = 0.05 * torch.randn(p.body_pose.shape, generator=g)
    p.betas = 0.1 * torch.randn(p.betas.shape, generator=g)
    p.transl = torch.zeros(frames, 3)
    for name in ("global_orient", "body_pose", "betas", "transl"):
        t = getattr(p, name)
        if t is not None:
            t.requires_grad_(True)
    return p


def timed(fn, repeat):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = []
    tmpl = body.TemplateHeadSurface()
    pt = params(tmpl, args.frames)
    rows.append(("template head, landmark_forward", timed(lambda: sum(t.sum() for t in tmpl.landmark_forward(pt)).backward(), args.repeat)))
    try:
        anny = body.AnnySurface()
    except ImportError as e:
        print(f"anny not installed ({e}); template only")
        anny = None
    if anny is not None:
        pa = params(anny, args.frames)
        full = timed(lambda: (anny(pa).landmarks68.sum() + anny(pa).joints.sum() * 0).backward(), args.repeat)
        rows.insert(0, ("anny, whole mesh skinned (baseline)", full))
        rows.append(("anny, landmark triangles only", timed(lambda: sum(t.sum() for t in anny.landmark_forward(pa)).backward(), args.repeat)))
    base = rows[0][1]
    print(f"one tracker iteration, {args.frames} frames, {torch.get_num_threads()} threads (fastest of {args.repeat})")
    for name, sec in rows:
        print(f"  {name:40s} {sec * 1000:8.1f} ms   x{base / sec:5.2f} vs baseline")


if __name__ == "__main__":
    main()
