"""Speed of the embedded face tools on CPU, as ratios against a baseline measured in the same run.

    .venv/bin/python bench/bench_face_tools.py [--repeat 3]

Baselines: HOG detection for the YuNet and MMOD detectors; alpha blending for Poisson and multi-band; the clip
detection for the tracker. Numbers are per 512 px frame (the bundled photos) on this machine, median of
--repeat runs. Nothing here is asserted: tests never time anything.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from models.face import align, detect, identity, paste, track  # noqa: E402
from models.partswap import classic  # noqa: E402
from synthclip import make_clip, photo  # noqa: E402


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    r = args.repeat
    img = photo("obama.jpg")[None]
    rows = []

    hog = detect.DlibAnalyzer("hog", upsample=0)
    t_hog, _ = timed(lambda: detect.detect_faces(hog, img), r)
    rows.append(("detect: dlib HOG, upsample 0 (baseline)", t_hog, 1.0))
    yun = detect.DlibAnalyzer("yunet")
    t, _ = timed(lambda: detect.detect_faces(yun, img), r)
    rows.append(("detect: yunet + 68 landmarks (default)", t, t / t_hog))
    big = np.ascontiguousarray(np.repeat(np.repeat(img, 8, axis=1), 8, axis=2)[:, :3000, :4000])
    t, _ = timed(lambda: detect.detect_faces(yun, big), r)
    rows.append((f"detect: yunet, {big.shape[2]}x{big.shape[1]} frame", t, t / t_hog))
    for up in (0, 1):
        mmod = detect.DlibAnalyzer("mmod", upsample=up)
        t, faces = timed(lambda: detect.detect_faces(mmod, img), r)
        rows.append((f"detect: dlib MMOD, upsample {up}", t, t / t_hog))
    mmod = detect.DlibAnalyzer("mmod", upsample=0)
    faces = detect.detect_faces(mmod, img)
    t_emb, _ = timed(lambda: identity.embed_faceset(mmod, img, faces), r)
    rows.append(("identity embedding, 1 face", t_emb, t_emb / t_hog))

    t_al, (crops, info, masks) = timed(lambda: align.align_crop(img, faces, 512, "ffhq"), r)
    rows.append(("align & crop 512", t_al, t_al / t_hog))
    t_pb, _ = timed(lambda: paste.paste_back(img, crops, info, masks, 8, 16, "none"), r)
    rows.append(("paste back 512, feather 16", t_pb, t_pb / t_hog))

    src = photo("biden.jpg")
    src_faces = detect.detect_faces(mmod, src[None])
    sources = {p: (src, src_faces.frames[0].landmarks68[0]) for p in ("eyes", "nose", "mouth")}
    base = None
    for mode in ("alpha", "poisson", "multiband"):
        t, _ = timed(lambda: classic.swap_parts_batch(img, faces, sources, 0, mode, "rgb"), r)
        base = base or t
        rows.append((f"classic swap, 3 parts, {mode}" + (" (baseline)" if mode == "alpha" else ""), t, t / base))

    clip = make_clip("obama.jpg", 12)
    t_det, clip_faces = timed(lambda: detect.detect_faces(mmod, clip), 1)
    t_tr, _ = timed(lambda: track.track_faces(clip_faces, smoothing=0.5), r)
    rows.append(("12-frame clip: MMOD detection (baseline)", t_det, 1.0))
    rows.append(("12-frame clip: tracking + smoothing", t_tr, t_tr / t_det))

    print(f"{'stage':48s} {'seconds':>9s} {'ratio':>8s}")
    for name, t, ratio in rows:
        print(f"{name:48s} {t:9.4f} {ratio:8.2f}")


if __name__ == "__main__":
    main()
