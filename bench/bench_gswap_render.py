"""Speed of the GSwap torch tile rasteriser on CPU, as ratios against a baseline measured in the same run, plus
the whole render + rerender path, the fitting cost and the fitting memory against the number of frames.

    .venv/bin/python bench/bench_gswap_render.py [--repeat 3] [--threads N] [--only render,rerender,fit,memory]

Parts (--only takes one or a comma-separated list; default all four):

render: the rasteriser table described below.

Scene: N Gaussians on a head-sized sphere shell (see `scene`), D=32 features, square images. Forward is one
`rasterize` call; forward+backward adds `backward()` of a sum over image and alpha. Baseline: 64 px with
2k Gaussians. Fastest of --repeat runs after one warm-up (the machine is shared; the minimum is the least noisy). Nothing here is asserted: tests never time anything.

rerender: frames per second of models/gswap/rerenderer.render_frame (NeuralGaussianField forward, reduction
of the 40 features to 8, rasterisation, E_bg, compose and U) at 256 px, torch.no_grad, c_1, for fields of about
2k / 5k / 20k Gaussians: models/gswap/body.py's TemplateHeadSurface (neutral pose) with
NeuralGaussianField.from_surface at the UV resolution that gives the nearest count (its default random
features, opacity 0.1 and texel-sized scales: an unfitted avatar), camera 0.6 m in front, head about half the
image. The 2D part alone (GSwapRenderer forward on a [1, 8, 256, 256] input) is timed as well; the remainder
is field + rasteriser. Fastest of --repeat after one warm-up.

fit: models/gswap/fit.fit_avatar on a synthetic 4-frame 64 px clip of the same head turning (random-ish smooth
frames, disc masks; contents do not matter for the timing), ~2k Gaussians, batch_frames 1, --fit-steps
steps, PortraitGen rates, Laplacian-pyramid perceptual term, deterministic=True (fit_avatar's default: one
CPU thread during the fit). Time per step = per frame here; the first step (warm-up) is left out.

memory: the same fit with 2, 4, 8 and 16 frames (--mem-frames) at batch_frames 1 and a fixed number of steps
(--mem-steps, raised to the largest frame count so every frame is used), each in a fresh subprocess that
loads the clip built by the parent (building the procedural head peaks at ~500 MiB). Reported: the peak RSS of
the fit itself (VmHWM reset just before fit_avatar via /proc/self/clear_refs, minus the RSS then), the peak RSS
sampled every 5 ms by a thread (psutil), the RSS after the first and the last step, and ru_maxrss before and
after (printed, but on Linux a child inherits its parent's ru_maxrss through fork + exec, so it only shows the
fit when the parent's peak was lower). A fit that streams frames has a peak that does not grow with the number
of frames beyond the clip's own tensors ("clip MiB").
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
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


def render_table(repeat):
    print(f"rasteriser: D=32, best of {repeat}")
    base = measure(2000, 64, repeat)
    print(f"{'size':>5} {'N':>6} {'fwd s':>8} {'x base':>7} {'f+b s':>8} {'x base':>7} {'mean alpha':>10}")
    for size in (64, 128, 256):
        for n in (2000, 5000, 20000):
            r = base if (size, n) == (64, 2000) else measure(n, size, repeat)
            print(f"{size:>5} {n:>6} {r['fwd']:>8.3f} {r['fwd'] / base['fwd']:>7.2f} {r['fwd+bwd']:>8.3f} "
                  f"{r['fwd+bwd'] / base['fwd+bwd']:>7.2f} {r['coverage']:>10.3f}")


# --------------------------------------------------------------------------------------------- head scenes
def head_surface():
    from models.gswap.body import BodyParams, TemplateHeadSurface
    surf = TemplateHeadSurface()
    return surf, BodyParams


def head_camera(size, distance=0.6):
    """OpenCV world->camera looking down -z from z = +distance; focal so the 0.32 m head+neck spans ~half."""
    view = torch.tensor([[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, distance], [0, 0, 0, 1.0]])
    f = 0.94 * size * distance / 0.6
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2 - 0.02 * f], [0, 0, 1.0]])
    return K, view


def head_pose(surf, BodyParams, yaws):
    """rest_vertices [T, V, 3] and transforms [T, V, 3, 4] of the head turned by `yaws` (rad) about y."""
    T = len(yaws)
    orient = torch.zeros(T, 3)
    orient[:, 1] = torch.as_tensor(yaws, dtype=torch.float32)
    params = BodyParams(betas=torch.zeros(T, surf.num_betas), global_orient=orient,
                        body_pose=torch.zeros(T, 3), jaw_pose=torch.zeros(T, 3))
    with torch.no_grad():
        out = surf(params)
    return out.rest_vertices, out.transforms


def resolution_for(surf, n):
    """UV resolution whose Gaussian count is nearest to n (count ~ resolution^2)."""
    from models.gswap.gaussians import sample_uv_layout
    best = None
    r0 = (n / 0.93) ** 0.5
    for r in range(int(r0) - 3, int(r0) + 4):
        c = int(sample_uv_layout(surf.uv, surf.uv_faces, r)[0].shape[0])
        if best is None or abs(c - n) < abs(best[1] - n):
            best = (r, c)
    return best


def rerender_table(repeat, size=256):
    from models.gswap.gaussians import NeuralGaussianField
    from models.gswap.rerenderer import GSwapRenderer, render_frame
    surf, BodyParams = head_surface()
    rest, trans = head_pose(surf, BodyParams, [0.0])
    K, view = head_camera(size)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    bg = torch.stack([xx, yy, 0.5 * (xx + yy)], -1)
    head_mask = (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.3 ** 2).float()
    torch.manual_seed(0)
    renderer = GSwapRenderer().eval()
    print(f"render + rerender (render_frame) at {size} px, torch.no_grad, best of {repeat}")
    with torch.no_grad():
        phi = torch.randn(1, 8, size, size)
        a = torch.rand(1, 1, size, size)
        renderer(phi, a, head_mask[None, None], bg.permute(2, 0, 1)[None])
        t2d = []
        for _ in range(max(repeat, 5)):
            t0 = time.perf_counter()
            renderer(phi, a, head_mask[None, None], bg.permute(2, 0, 1)[None])
            t2d.append(time.perf_counter() - t0)
        t2d = min(t2d)
    print(f"{'N':>6} {'uv res':>6} {'frame s':>8} {'fps':>6} {'2D part s':>9} {'field+raster s':>14} "
          f"{'mean alpha':>10}")
    for target in (2000, 5000, 20000):
        res, n = resolution_for(surf, target)
        field = NeuralGaussianField.from_surface(surf.faces, surf.uv, surf.uv_faces, rest[0], 1, resolution=res,
                                                 seed=0).eval()
        with torch.no_grad():
            fn = lambda: render_frame(field, renderer, rest[0], trans[0], K, view, bg, head_mask, None)  # noqa: E731
            out = fn()
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        t = min(times)
        print(f"{n:>6} {res:>6} {t:>8.3f} {1 / t:>6.2f} {t2d:>9.4f} {t - t2d:>14.3f} "
              f"{out['alpha'].mean().item():>10.3f}")


# --------------------------------------------------------------------------------------------- fitting
def synthetic_clip(T, size=64):
    """A head turning from -0.3 to 0.3 rad over T frames, smooth random colours, disc masks."""
    surf, BodyParams = head_surface()
    yaws = torch.linspace(-0.3, 0.3, T).tolist() if T > 1 else [0.0]
    rest, trans = head_pose(surf, BodyParams, yaws)
    K, view = head_camera(size)
    g = torch.Generator().manual_seed(0)
    frames = torch.nn.functional.interpolate(torch.rand(T, 3, 8, 8, generator=g), size=(size, size),
                                             mode="bilinear", align_corners=False).permute(0, 2, 3, 1).contiguous()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = (((xx - 0.5) ** 2 + (yy - 0.45) ** 2) < 0.22 ** 2).float()
    masks = disc[None].expand(T, size, size).contiguous()
    bgs = torch.stack([xx, yy, 0.5 * (xx + yy)], -1)[None].expand(T, size, size, 3).contiguous()
    clip = dict(faces=surf.faces, uv=surf.uv, uv_faces=surf.uv_faces, rest_vertices=rest, transforms=trans,
                Ks=K, viewmats=view, frames=frames, fg_masks=masks, head_masks=masks, backgrounds=bgs)
    clip_bytes = sum(v.numel() * v.element_size() for k, v in clip.items()
                     if k in ("rest_vertices", "transforms", "frames", "fg_masks", "head_masks", "backgrounds"))
    return clip, clip_bytes


def fit_table(steps, frames=4, uv_res=46):
    from models.gswap.fit import fit_avatar
    clip, _ = synthetic_clip(frames)
    stamps = []

    def progress(step, total, preview):
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    avatar, hist = fit_avatar(**clip, steps=steps, uv_resolution=uv_res, batch_frames=1, progress=progress)
    total = time.perf_counter() - t0
    per = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    n = avatar.field.num_gaussians
    print(f"fit_avatar: {frames} frames at 64 px, {n} Gaussians (uv res {uv_res}), batch_frames 1, {steps} steps, "
          f"deterministic (1 thread)")
    print(f"  setup (field init, first step) {stamps[0] - t0:.3f} s; per step (= per frame) median "
          f"{statistics.median(per):.3f} s, min {min(per):.3f} s, max {max(per):.3f} s; total {total:.2f} s; "
          f"loss {hist[0]['total']:.4f} -> {hist[-1]['total']:.4f}")


def maxrss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024


def _hwm_mib():
    """VmHWM (peak RSS of this process image) from /proc/self/status, MiB; None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(path, steps, uv_res):
    """Runs in a subprocess: loads a clip saved by memory_table (so that building the procedural head, whose
    peak would mask the fit's in ru_maxrss, happens in the parent) and prints one JSON line of memory figures."""
    import json
    import threading
    import psutil
    from models.gswap.fit import fit_avatar
    clip, clip_bytes = torch.load(path, weights_only=True)
    frames = int(clip["frames"].shape[0])
    proc = psutil.Process()
    rss = []
    peak = {"v": proc.memory_info().rss}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["v"] = max(peak["v"], proc.memory_info().rss)
            time.sleep(0.005)

    def progress(step, total, preview):
        rss.append(proc.memory_info().rss)

    before_rss, before_max = proc.memory_info().rss, maxrss_mib()
    reset = _reset_hwm()
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    fit_avatar(**clip, steps=steps, uv_resolution=uv_res, batch_frames=1, progress=progress)
    stop.set()
    th.join()
    mib = 2 ** 20
    hwm = _hwm_mib()
    print(json.dumps(dict(frames=frames, clip_mib=clip_bytes / mib, maxrss_before=before_max,
                          maxrss_after=maxrss_mib(), rss_before=before_rss / mib,
                          hwm_fit=(hwm - before_rss / mib) if (reset and hwm is not None) else float("nan"),
                          peak_delta=(peak["v"] - before_rss) / mib,
                          rss_step1=(rss[0] - before_rss) / mib, rss_last=(rss[-1] - before_rss) / mib)))


def memory_table(steps, uv_res=46, frame_counts=(2, 4, 8, 16)):
    steps = max(steps, max(frame_counts))
    import json
    import subprocess
    print(f"fit memory vs frames: 64 px, uv res {uv_res} (~2k Gaussians), batch_frames 1, {steps} steps, each fit in "
          "a fresh subprocess (MiB; deltas against the RSS just before fit_avatar)")
    print("  ru_maxrss is inherited through fork + exec on Linux (the children start with this process's peak), so "
          "the fit's own peak is VmHWM reset just before fit_avatar (/proc/self/clear_refs)")
    print(f"{'frames':>6} {'clip MiB':>8} {'RSS before':>10} {'ru_maxrss before/after':>22} {'VmHWM fit +':>11} "
          f"{'sampled peak +':>14} {'RSS+ step 1':>11} {'RSS+ last':>9}")
    import tempfile
    rows = []
    for T in frame_counts:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "clip.pt")
            torch.save(synthetic_clip(T), path)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_memory-child", path,
                                  "--mem-steps", str(steps), "--threads", str(torch.get_num_threads())],
                                 capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        mr = f"{r['maxrss_before']:.0f} / {r['maxrss_after']:.0f}"
        print(f"{T:>6} {r['clip_mib']:>8.2f} {r['rss_before']:>10.1f} {mr:>22} {r['hwm_fit']:>11.1f} "
              f"{r['peak_delta']:>14.1f} {r['rss_step1']:>11.1f} {r['rss_last']:>9.1f}")
    g0, g1 = rows[0], rows[-1]
    print(f"  fit peak growth {frame_counts[-1]} vs {frame_counts[0]} frames: "
          f"VmHWM {g1['hwm_fit'] - g0['hwm_fit']:+.1f} MiB, "
          f"sampled {g1['peak_delta'] - g0['peak_delta']:+.1f} MiB (clip tensors differ by "
          f"{g1['clip_mib'] - g0['clip_mib']:.2f} MiB)")


PARTS = ("render", "rerender", "fit", "memory")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    ap.add_argument("--fit-steps", type=int, default=6)
    ap.add_argument("--mem-steps", type=int, default=16)
    ap.add_argument("--mem-frames", default="2,4,8,16", help="comma-separated frame counts of the memory part")
    ap.add_argument("--_memory-child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_child:
        memory_child(args._memory_child, max(1, args.mem_steps), 46)
        return
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"--only: unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU (the machine may be shared: noisy)")
    t_all = time.perf_counter()
    for part in parts:
        t0 = time.perf_counter()
        if part == "render":
            render_table(args.repeat)
        elif part == "rerender":
            rerender_table(args.repeat)
        elif part == "fit":
            fit_table(args.fit_steps)
        else:
            memory_table(args.mem_steps, frame_counts=tuple(int(x) for x in args.mem_frames.split(",")))
        print(f"  ({part}: {time.perf_counter() - t0:.0f} s)\n")
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
