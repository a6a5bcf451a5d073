"""Face detection + 68 landmarks on a real video: the default video path against per-frame detection.

    python bench/bench_video_faces.py --video FILE [--frames N] [--json FILE]

Decodes the clip (PyAV when it imports, else OpenCV), scales frames so the long side is --size px (512 by
default; 0 keeps the clip's size), and converts them to float 0..1 RGB as ComfyUI hands IMAGE batches to
nodes. Then, with the default analyzer (yunet (embedded): YuNet + dlib's 68-point predictor):

- default: models.face.video.track_video (Detect Faces' video mode): detection on keyframes, landmarks
  followed in between;
- reference: models.face.detect.detect_faces, the detector and the landmarks on every frame.

Speeds are frames per wall-clock second of each call (decoding excluded), and also per second of this
process's CPU time (all threads) so that runs on a machine shared with other work can be compared; the
load average is recorded. Landmark deviation: for each reference face, the default face with the highest
box IoU (at least 0.3) in the same frame; the mean distance of their 68 points in units of the reference's
inter-ocular distance (eye centres), averaged over all matched faces (mean) and its 95th percentile.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.face.detect import DlibAnalyzer, detect_faces  # noqa: E402
from models.face.video import track_video  # noqa: E402
from models.face.geometry import box_overlaps  # noqa: E402


def decode(path: str, frames: int, size: int):
    """[T, H, W, 3] float32 0..1 RGB and the decoder's name."""
    import cv2

    out = []

    def add(rgb):
        h, w = rgb.shape[:2]
        if size and max(h, w) != size:
            s = size / max(h, w)
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        out.append(rgb.astype(np.float32) / 255.0)
        return frames and len(out) >= frames

    try:
        import av

        with av.open(path) as container:
            for fr in container.decode(video=0):
                if add(fr.to_ndarray(format="rgb24")):
                    break
        decoder = f"PyAV {av.__version__}"
    except Exception:  # PyAV missing or broken: OpenCV's FFmpeg backend
        out.clear()
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise SystemExit(f"bench_video_faces: cannot open {path}")
        while True:
            ok, bgr = cap.read()
            if not ok or add(np.ascontiguousarray(bgr[..., ::-1])):
                break
        decoder = f"OpenCV {cv2.__version__}"
    if not out:
        raise SystemExit(f"bench_video_faces: no frames decoded from {path}")
    return np.stack(out), decoder


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    return res, time.perf_counter() - w0, time.process_time() - c0


def iod(lm):
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=0, help="decode at most this many frames (0: all)")
    ap.add_argument("--json", default="")
    ap.add_argument("--size", type=int, default=512, help="long side in px (0: as decoded)")
    args = ap.parse_args(argv)

    frames, decoder = decode(args.video, args.frames, args.size)
    analyzer = DlibAnalyzer("yunet")
    detect_faces(analyzer, frames[:1])  # load and warm up outside the timings
    load0 = os.getloadavg()
    stats = {}
    default, t_def, c_def = timed(lambda: track_video(analyzer, frames, stats=stats))
    reference, t_ref, c_ref = timed(lambda: detect_faces(analyzer, frames, threshold=0.5, min_size=0))
    load1 = os.getloadavg()

    devs = []
    for a, b in zip(default.frames, reference.frames):
        if len(a) == 0 or len(b) == 0:
            continue
        iou, _ = box_overlaps(b.boxes, a.boxes)
        for i in range(len(b)):
            j = int(np.argmax(iou[i]))
            if iou[i, j] >= 0.3:
                d = np.linalg.norm(a.landmarks68[j] - b.landmarks68[i], axis=1).mean() / max(iod(b.landmarks68[i]), 1e-6)
                devs.append(float(d))
    n = len(frames)
    res = {
        "video": os.path.abspath(args.video),
        "frames": n,
        "frame_size": list(frames.shape[1:3]),
        "decoder": decoder,
        "fps_default": n / t_def,
        "fps_per_frame_reference": n / t_ref,
        "fps_default_cpu": n / max(c_def, 1e-9),
        "fps_per_frame_reference_cpu": n / max(c_ref, 1e-9),
        "landmark_deviation_iod_mean": float(np.mean(devs)) if devs else None,
        "landmark_deviation_iod_p95": float(np.percentile(devs, 95)) if devs else None,
        "faces_compared": len(devs),
        "frames_with_face_default": int(sum(len(f) > 0 for f in default.frames)),
        "frames_with_face_reference": int(sum(len(f) > 0 for f in reference.frames)),
        "keyframes": len(stats["keyframes"]),
        "keyframe_reasons": {r: list(stats["reasons"].values()).count(r) for r in sorted(set(stats["reasons"].values()))},
        "tracks": stats["tracks"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)",
        "load_average_before_after": [round(load0[0], 2), round(load1[0], 2)],
    }
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
