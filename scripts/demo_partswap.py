"""The main job on the embedded defaults: classic part swaps of the bundled photos, through the same node
classes ComfyUI runs. Writes PNGs (and a side-by-side sheet) to --out.

    python scripts/demo_partswap.py --out output/demo
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from packloader import load_pack  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")
# target, eyes from, nose from, mouth from
SWAPS = [
    ("obama.jpg", "biden.jpg", "grace_hopper.jpg", "astronaut.jpg"),
    ("grace_hopper.jpg", "obama2.jpg", None, "biden.jpg"),
    ("astronaut.jpg", None, "obama.jpg", "grace_hopper.jpg"),
]


def load(name):
    import torch
    return torch.from_numpy(np.asarray(Image.open(os.path.join(DATA, name)).convert("RGB"), np.float32) / 255)[None]


def save(t, path):
    Image.fromarray((t[0].cpu().numpy().clip(0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "output", "demo"))
    ap.add_argument("--blend", default="poisson", choices=["poisson", "multiband", "alpha"])
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    pack = load_pack()
    N = pack.NODE_CLASS_MAPPINGS
    (face_model,) = N["SwapForge_FaceModelLoader"]().load("yunet (embedded)", 0)
    for target, eyes, nose, mouth in SWAPS:
        t0 = time.time()
        kw = {f"{p}_source": load(s) for p, s in (("eyes", eyes), ("nose", nose), ("mouth", mouth)) if s}
        img, mask, status = N["SwapForge_ClassicPartSwap"]().swap(
            face_model, load(target), args.blend, "rgb", 0, 0.15, 0.1, **kw)
        stem = os.path.splitext(target)[0]
        out = os.path.join(args.out, f"{stem}_swapped.png")
        save(img, out)
        save(mask[..., None].repeat(1, 1, 1, 3), os.path.join(args.out, f"{stem}_mask.png"))
        donors = ", ".join(f"{p} from {s}" for p, s in (("eyes", eyes), ("nose", nose), ("mouth", mouth)) if s)
        print(f"{target}: {donors} -> {out} ({status.strip()}; {time.time() - t0:.1f} s)")
    print(f"done: results in {args.out}")


if __name__ == "__main__":
    main()
