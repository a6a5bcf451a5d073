"""GSwap head swap end to end on the embedded route, with the swap metrics.

    python bench/bench_headswap.py --target VIDEO --source IMG [IMG ...] [--frames N] [--size PX] [--out DIR]
                                   [--json FILE]

--frames N takes the first N frames (default 48), --size PX scales the frames so the longer side is PX (default
256). The target's largest tracked face is swapped for the person in the source photos (largest face of each).
Writes into --out (default bench_out/headswap): side_by_side.mp4 (target | I_gen | final), swapped.mp4 (the
final frames with the target's fps and audio) and a PNG strip of five frames. The JSON object (stdout, and
--json FILE) has:

  frames_in, frames_out          frame counts (equal: nothing dropped)
  csim_source_mean               mean cosine of each output face's embedding to the source identity
  csim_target_mean               ... to the target's own identity (mean over the original target frames)
  frames_closer_to_source        fraction of frames whose face is closer to the source (no face: not closer)
  pose_error_deg                 mean |yaw, pitch, roll| difference output vs target (68-landmark PnP)
  expression_error               mean |mouth opening, mouth width, eye openings| difference, per inter-ocular
  flicker_2d, flicker_3d         mean frame-to-frame change inside M_head minus the target's: I_gen alone, and
                                 the final (the fitted avatar's render composited)
  seconds_total, seconds_by_stage
and more: the same identity/pose/expression numbers for I_gen (generated_*), render_fps, peak_rss_mb, the
machine (CPU count, torch threads), the configuration.

The recogniser is the embedded dlib ResNet (not the paper's ArcFace); pose and expression are 68-landmark
stand-ins for the paper's SMIRK-based APD/AED (models/gswap/metrics.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.face import detect as detlib  # noqa: E402
from models.face import video  # noqa: E402
from models.gswap import body as bodylib  # noqa: E402
from models.gswap import headswap as hslib  # noqa: E402
from models.gswap import metrics as mlib  # noqa: E402
from models.gswap import source as srclib  # noqa: E402


def read_video(path: str, frames: int, size: int):
    """(frames [T, H, W, 3] float32 0..1, fps) of the first `frames` frames, longer side scaled to `size`."""
    import cv2

    out, fps = [], 25.0
    try:
        import av
        with av.open(path) as c:
            st = c.streams.video[0]
            fps = float(st.average_rate or 25)
            for fr in c.decode(st):
                out.append(fr.to_ndarray(format="rgb24"))
                if len(out) >= frames:
                    break
    except ImportError:
        cap = cv2.VideoCapture(path)
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        while len(out) < frames:
            ok, fr = cap.read()
            if not ok:
                break
            out.append(fr[..., ::-1])
    if not out:
        raise SystemExit(f"bench_headswap: no frames could be read from {path}.")
    h, w = out[0].shape[:2]
    s = size / max(h, w)
    W, H = int(round(w * s / 2) * 2), int(round(h * s / 2) * 2)
    arr = np.stack([cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR) for f in out])
    return arr.astype(np.float32) / 255.0, fps


def read_photo(path: str, max_side: int = 1024):
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"bench_headswap: cannot read the source photo {path}.")
    img = img[..., ::-1]
    s = max_side / max(img.shape[:2])
    if s < 1:
        img = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img).astype(np.float32) / 255.0


def write_video(path: str, frames, fps: float, audio_from: str = None, frame_count: int = None):
    """H.264 mp4 of the frames at fps; with audio_from, the audio of that file up to the video's length. frames: an
    array [T, H, W, 3] or a sequence of [H, W, 3] frames (converted one at a time: no uint8 copy of the clip)."""
    import av
    from fractions import Fraction

    n = len(frames)
    h, w = frames[0].shape[:2]
    u8 = ((np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8) for f in frames)
    with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        a_in = None
        if audio_from:
            src = av.open(audio_from)
            if src.streams.audio:
                a_in = src
                a_st = src.streams.audio[0]
                as_ = out.add_stream("aac", rate=a_st.rate)
        for f in u8:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if a_in is not None:
            end = n / fps
            for fr in a_in.decode(a_st):
                if fr.time is not None and fr.time > end:
                    break
                fr.pts = None
                for pkt in as_.encode(fr):
                    out.mux(pkt)
            for pkt in as_.encode():
                out.mux(pkt)
            a_in.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="the target video")
    ap.add_argument("--source", required=True, nargs="+", help="photos of the source person")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", default=os.path.join("bench_out", "headswap"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--steps", type=int, default=hslib.HeadSwapConfig.fit_steps, help="avatar fitting steps")
    ap.add_argument("--uv-resolution", type=int, default=hslib.HeadSwapConfig.uv_resolution)
    ap.add_argument("--detector", default="yunet (embedded)", help="face analyzer (Face Model Loader names)")
    ap.add_argument("--body", default="anny", choices=("anny", "template"))
    ap.add_argument("--render-on", default=hslib.HeadSwapConfig.render_track, choices=hslib.RENDER_TRACKS,
                    help="track the avatar is rendered on: the re-track of I_gen (default) or the target's own")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    secs = {}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    frames, fps = read_video(a.target, a.frames, a.size)
    photos = [read_photo(p) for p in a.source]
    secs["decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    analyzer = detlib.load_analyzer(a.detector, [], 1)
    faces = video.detect_or_track(analyzer, frames)  # as the Head Swap node: tracked, ids stable
    lm, k5, valid, interp, note = hslib.face_arrays(faces)
    valid = valid & ~interp  # faces the tracker only filled in pass through (as in the Head Swap node)
    secs["detect_track_faces"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    src_lm, src_k5, src_emb = [], [], []
    for ph in photos:
        u8 = detlib.to_uint8(ph)
        f = detlib.filter_faces(analyzer.detect(u8), 0.5, 32, 1, "largest_first")
        src_lm.append(f.landmarks68[0] if len(f) else None)
        src_k5.append(f.kps5[0] if len(f) else None)
        if len(f):
            src_emb.append(analyzer.embed(u8, f)[0])
    cfg = hslib.HeadSwapConfig(fit_steps=a.steps, uv_resolution=a.uv_resolution, render_track=a.render_on)
    sources = srclib.prepare_sources(photos, src_lm, src_k5, neck_line=cfg.neck_line, hair=cfg.hair)
    surface = bodylib.load_surface(a.body)
    secs["sources_and_body"] = time.perf_counter() - t0

    last = {}

    def progress(stage, done, total):
        if last.get("stage") != stage:
            print(f"[{time.perf_counter() - t_all:7.1f} s] {stage}", file=sys.stderr, flush=True)
            last["stage"] = stage

    result = hslib.run(frames, lm, k5, valid, sources, surface, cfg, progress=progress)
    secs.update(result.seconds_by_stage)

    t0 = time.perf_counter()
    sid = mlib.identity(np.stack(src_emb))
    tgt_d = mlib.clip_faces(analyzer, frames)
    out_d = mlib.clip_faces(analyzer, result.frames)
    gen_d = mlib.clip_faces(analyzer, result.generated)
    m_out = mlib.swap_metrics(out_d, tgt_d, sid, frames.shape[1:3], result.frames, frames, result.m_head)
    m_gen = mlib.swap_metrics(gen_d, tgt_d, sid, frames.shape[1:3], result.generated, frames, result.m_head,
                              prefix="generated_")
    secs["metrics"] = time.perf_counter() - t0
    seconds_total = time.perf_counter() - t_all - secs["metrics"]

    import cv2
    class SideBySide:  # target | I_gen | final, one frame at a time (no copy of the clip three frames wide)
        def __len__(self):
            return len(frames)

        def __getitem__(self, t):
            return np.concatenate([frames[t], result.generated[t], result.frames[t]], 1)

    side = SideBySide()
    try:
        write_video(os.path.join(a.out, "side_by_side.mp4"), side, fps)
        write_video(os.path.join(a.out, "swapped.mp4"), result.frames, fps, audio_from=a.target)
    except ImportError:
        print("bench_headswap: PyAV is not installed; no videos written (pip install av)", file=sys.stderr)
    idx = np.linspace(0, len(frames) - 1, 5).round().astype(int)
    strip = np.concatenate([side[i] for i in idx], 0)
    cv2.imwrite(os.path.join(a.out, "strip.png"), (np.clip(strip[..., ::-1], 0, 1) * 255 + 0.5).astype(np.uint8))

    res = {
        "frames_in": int(len(frames)),
        "frames_out": int(len(result.frames)),
        "csim_source_mean": m_out["csim_source_mean"],
        "csim_target_mean": m_out["csim_target_mean"],
        "frames_closer_to_source": m_out["frames_closer_to_source"],
        "pose_error_deg": m_out["pose_error_deg"],
        "expression_error": m_out["expression_error"],
        "flicker_2d": m_gen["generated_flicker"],
        "flicker_3d": m_out["flicker"],
        "seconds_total": seconds_total,
        "seconds_by_stage": {k: round(v, 2) for k, v in secs.items()},
        "frames_with_face_out": m_out["frames_with_face"],
        "generated_csim_source_mean": m_gen["generated_csim_source_mean"],
        "generated_csim_target_mean": m_gen["generated_csim_target_mean"],
        "generated_frames_closer_to_source": m_gen["generated_frames_closer_to_source"],
        "generated_pose_error_deg": m_gen["generated_pose_error_deg"],
        "generated_expression_error": m_gen["generated_expression_error"],
        "render_fps": len(frames) / max(secs.get("render", 1e-9), 1e-9),
        "flagged_frames": result.flagged,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "target": os.path.basename(a.target), "sources": [os.path.basename(p) for p in a.source],
        "size": list(frames.shape[1:3]), "fps": fps, "target_faces": note,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "report": result.report,
        "machine": {"cpus": os.cpu_count(), "torch_threads": __import__("torch").get_num_threads(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "per_frame": {"output": m_out["per_frame"], "generated": m_gen["generated_per_frame"]},
    }
    text = json.dumps(res, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    print(json.dumps({k: v for k, v in res.items() if k != "per_frame"}, indent=1))
    return res


if __name__ == "__main__":
    main()
