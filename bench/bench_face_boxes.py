"""How far the 68 landmarks move when dlib's predictor gets its box from another source than dlib's MMOD.

    python bench/bench_face_boxes.py [--json FILE] IMG_OR_VIDEO [...]

Images are read whole; for a video (.mp4, .avi, .mov, .mkv) six evenly spaced frames. Every frame is scaled
to at most 640 px. For each face dlib's MMOD detector (upsample 0) finds, the reference is the predictor's
68 points on the MMOD box; compared with it, in inter-ocular distances (mean distance of the 68 points over
the reference's eye-centre distance):

- yunet: the default analyzer's landmarks (YuNet's 5 keypoints -> landmarks.RECT_FROM_KPS5 -> predictor,
  then landmarks.RECT_FROM_LANDMARKS -> predictor; the YuNet face with the largest IoU with the MMOD box);
- hog: the predictor on dlib's HOG box (upsample 1) with the largest IoU, for scale: two of dlib's own boxes.

Used to choose the constants of models/face/landmarks.py (98 faces of tests/data and the LivePortrait
examples: yunet 0.031 mean, hog 0.033).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.face.detect import DlibAnalyzer  # noqa: E402
from models.face.geometry import box_overlaps  # noqa: E402

VIDEO = (".mp4", ".avi", ".mov", ".mkv")


def frames_of(path):
    import cv2

    if path.lower().endswith(VIDEO):
        cap = cv2.VideoCapture(path)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in np.linspace(0, max(n - 1, 0), 6).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
            ok, bgr = cap.read()
            if ok:
                yield f"{path}#{k}", np.ascontiguousarray(bgr[..., ::-1])
    else:
        bgr = cv2.imread(path)
        if bgr is None:
            raise SystemExit(f"bench_face_boxes: cannot read {path}")
        yield path, np.ascontiguousarray(bgr[..., ::-1])


def scaled(img):
    import cv2

    s = min(1.0, 640 / max(img.shape[:2]))
    return img if s >= 1 else np.ascontiguousarray(cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))


def deviation(lm, ref):
    iod = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
    return float(np.linalg.norm(lm - ref, axis=1).mean() / max(iod, 1e-6))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    mmod, hog, yun = DlibAnalyzer("mmod", 0), DlibAnalyzer("hog", 1), DlibAnalyzer("yunet")
    rows = []
    for path in args.inputs:
        for name, img in frames_of(path):
            img = scaled(img)
            ref = mmod.detect(img)
            others = {"yunet": yun.detect(img), "hog": hog.detect(img)}
            for i in range(len(ref)):
                row = {"frame": name, "face": i}
                for key, found in others.items():
                    if len(found):
                        iou = box_overlaps(ref.boxes[i:i + 1], found.boxes)[0][0]
                        j = int(np.argmax(iou))
                        if iou[j] >= 0.3:
                            row[key] = deviation(found.landmarks68[j], ref.landmarks68[i])
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {"faces": len(rows)}
    for key in ("yunet", "hog"):
        v = np.array([r[key] for r in rows if key in r])
        if len(v):
            summary[key] = {"matched": len(v), "mean": float(v.mean()), "p95": float(np.percentile(v, 95))}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"faces": rows, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
