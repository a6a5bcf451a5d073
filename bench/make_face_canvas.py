"""A multi-face test image from single portraits (when no real group photo is at hand).

    python bench/make_face_canvas.py --out canvas.png [--height 320] [--per-row 4] IMG [IMG ...]

Each portrait is scaled to --height px and the portraits are laid out in rows of --per-row on a grey
background, 8 px apart. The result is a collage, not a group photo: every face keeps its own lighting.
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--per-row", type=int, default=4)
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    tiles = []
    for p in args.images:
        with Image.open(p) as im:
            im = im.convert("RGB")
            w = max(1, round(im.width * args.height / im.height))
            tiles.append(np.asarray(im.resize((w, args.height), Image.LANCZOS)))
    rows = [tiles[i:i + args.per_row] for i in range(0, len(tiles), args.per_row)]
    gap = 8
    width = max(sum(t.shape[1] for t in r) + gap * (len(r) + 1) for r in rows)
    canvas = np.full((len(rows) * (args.height + gap) + gap, width, 3), 128, np.uint8)
    for i, r in enumerate(rows):
        x = gap
        for t in r:
            y = gap + i * (args.height + gap)
            canvas[y:y + args.height, x:x + t.shape[1]] = t
            x += t.shape[1] + gap
    Image.fromarray(canvas).save(args.out)
    print(f"{args.out}: {canvas.shape[1]}x{canvas.shape[0]}, {len(tiles)} portraits")


if __name__ == "__main__":
    main()
