"""Seams of the classic part swap on real photos: before (alpha blend) and after (the default), per face.

    python bench/bench_part_swap_seams.py --target IMG [--target IMG ...] --eyes IMG --nose IMG --mouth IMG \\
        [--json FILE]

Every face the default detector (yunet (embedded), threshold 0.5) finds in each target gets the eyes, nose and
mouth of the largest face of the three source photos, three ways:

- before: alpha blending on the earlier masks (each part's own landmark hull grown by 0.15 and feathered by
  0.1 x sqrt(width x height) of the part: masks="landmark hulls");
- previous_default: Poisson blending on those same masks (the node's default before the seam-aware masks);
- after: the node's default now (Poisson blending, masks="seam-aware").

For each part the seam metric of models/partswap/seams.py is measured on that part's own blend (the frame
before it, the warped colour-matched donor, its mask, the frame after it): gradient_ratio (edge energy in
the boundary band against a seamless mix of the two images; 1 = no added edges) and out_of_range (the share
of band pixels with a colour outside both images' local 3 x 3 range, 2/255 tolerance), plus out_of_range_10
(the same with a 10/255 tolerance: clearly visible). A face's values: gradient_ratio averaged over its parts,
the out-of-range shares pooled over the parts' band pixels. Faces turned more than the default max_yaw are
skipped with status "skipped: pose" (as in the node) and have no metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.face.detect import DlibAnalyzer, detect_faces  # noqa: E402
from models.face.pose import yaw_degrees  # noqa: E402
from models.partswap import classic, seams  # noqa: E402

WAYS = {"before": ("alpha", "landmark hulls"), "previous_default": ("poisson", "landmark hulls"),
        "after": ("poisson", "seam-aware")}


def load(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255.0


def face_metrics(img, lm, sources, blend_mode, masks):
    rec = []
    classic.swap_parts_frame(img, lm, sources, blend_mode, "rgb", masks=masks, record=rec)
    parts, n_band, n_out, n_out10 = {}, 0, 0.0, 0.0
    for r in rec:
        m = seams.seam_metrics(r["after"], r["before"], r["donor"], r["mask"])
        tol = seams.RANGE_TOL
        try:
            seams.RANGE_TOL = 10.0 / 255.0
            m["out_of_range_10"] = seams.seam_metrics(r["after"], r["before"], r["donor"], r["mask"])["out_of_range"]
        finally:
            seams.RANGE_TOL = tol
        parts[r["part"]] = m
        n_band += m["band_pixels"]
        n_out += m["out_of_range"] * m["band_pixels"]
        n_out10 += m["out_of_range_10"] * m["band_pixels"]
    return {"blend": blend_mode, "masks": masks,
            "gradient_ratio": float(np.mean([p["gradient_ratio"] for p in parts.values()])),
            "out_of_range": n_out / max(n_band, 1), "out_of_range_10": n_out10 / max(n_band, 1), "parts": parts}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--eyes", required=True)
    ap.add_argument("--nose", required=True)
    ap.add_argument("--mouth", required=True)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    analyzer = DlibAnalyzer("yunet")
    sources = {}
    for part in ("eyes", "nose", "mouth"):
        img = load(getattr(args, part))
        fs = detect_faces(analyzer, img[None], 0.5, 0, 1, "largest_first")
        if not len(fs.frames[0]):
            raise SystemExit(f"bench_part_swap_seams: no face in the {part} source {getattr(args, part)}")
        sources[part] = (img, fs.frames[0].landmarks68[0])

    faces = []
    for path in args.target:
        img = load(path)
        fs = detect_faces(analyzer, img[None], 0.5, 0, 0, "left_to_right")
        for k in range(len(fs.frames[0])):
            lm = fs.frames[0].landmarks68[k]
            yaw = yaw_degrees(lm)
            row = {"image": os.path.abspath(path), "face": k, "box": [round(float(v), 1) for v in fs.frames[0].boxes[k]],
                   "yaw": round(yaw, 1)}
            if abs(yaw) > classic.DEFAULT_MAX_YAW:
                row["status"] = f"skipped: pose (yaw {yaw:+.0f} deg, max_yaw {classic.DEFAULT_MAX_YAW:g})"
            else:
                row["status"] = "swapped"
                for way, (mode, masks) in WAYS.items():
                    row[way] = face_metrics(img, lm, sources, mode, masks)
            faces.append(row)
            line = f"{os.path.basename(path)} face {k} (yaw {yaw:+.0f}): {row['status']}"
            for way in WAYS:
                if way in row:
                    line += (f" | {way}: gradient_ratio {row[way]['gradient_ratio']:.3f}, out_of_range "
                             f"{row[way]['out_of_range']:.4f} ({row[way]['out_of_range_10']:.4f} at 10/255)")
            print(line, flush=True)

    done = [f for f in faces if f["status"] == "swapped"]
    summary = {"faces": len(faces), "swapped": len(done), "skipped_pose": len(faces) - len(done)}
    for way in WAYS:
        if done:
            g = np.array([f[way]["gradient_ratio"] for f in done])
            summary[way] = {"gradient_ratio_median": float(np.median(g)), "gradient_ratio_max": float(g.max()),
                            "gradient_ratio_mean_abs_log": float(np.mean(np.abs(np.log(g)))),
                            "out_of_range_mean": float(np.mean([f[way]["out_of_range"] for f in done])),
                            "out_of_range_10_mean": float(np.mean([f[way]["out_of_range_10"] for f in done]))}
    res = {"sources": {p: os.path.abspath(getattr(args, p)) for p in ("eyes", "nose", "mouth")},
           "faces": faces, "summary": summary}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
