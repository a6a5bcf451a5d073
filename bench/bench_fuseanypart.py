"""Cost of FuseAnyPart's addition injection in one SD1.5-size UNet step on CPU, against plain text
cross-attention and an IP-Adapter-style decoupled cross-attention, measured in the same run.

    .venv/bin/python bench/bench_fuseanypart.py [--latent 32|64] [--repeat 3] [--ip-tokens 4] [--threads N]

UNet: diffusers UNet2DConditionModel with SD1.5's layout (default block config, cross_attention_dim 768,
8 heads) and in_channels 9 (inpainting), random weights, fp32, eval, torch.no_grad, batch 2 (cond + uncond),
a --latent x --latent latent (32 = 256 px, the default, keeps CPU time sane; 64 = 512 px).

Variants (one UNet, processors swapped with set_attn_processor between variants):
  (a) text: diffusers' default processor everywhere; attn2 attends to 77 text tokens.
  (b) fap:  models/fuseanypart/injection.fap_attn_processors on the 16 attn2 (lambda 1.0) with features
            C [2, 256, 768]: attn2 = to_out(lambda * upsample(projector_l(C))); no text attention at all.
  (c) ip:   an IP-Adapter-style decoupled cross-attention written here (IPAdapterLikeProcessor): the text
            attention plus a second attention of the same queries over --ip-tokens image tokens with their own
            to_k_ip / to_v_ip, added with scale 1.0 before to_out. The image projection (run once per
            generation, like FuseAnyPart's MLP) is not part of a step and is not timed.

Reported per variant: median whole-UNet step time over --repeat runs after one untimed warm-up (runs go
round-robin over the variants so that load from other jobs spreads over all three) and its ratio to (a);
the time spent inside the 16 attn2 modules during those steps (forward pre/post hooks around each attn2; the
median over runs of the per-step sum); the same 16 modules called alone on the inputs captured during the
warm-up step of (a) (median of --attn-repeat calls, round-robin too; the least noisy attention-only number);
memory: the peak of the process RSS sampled every 2 ms by a thread during a step minus the RSS just before
it (psutil; max over the runs), and the process ru_maxrss after the variant's last run (monotonic over the
whole run: a variant only moves it when it sets a new peak). The machine may be shared: numbers are noisy,
say which machine gave them. Also printed, free of noise: FLOPs counted by torch.utils.flop_counter (matmuls,
linears, attention; not upsampling or elementwise ops) for the 16 attn2 of each variant and for the whole step.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import threading
import time

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from models.fuseanypart.injection import SD15_ATTN2_LAYERS, LayerProjectors, fap_attn_processors  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None


class IPAdapterLikeProcessor(nn.Module):
    """Decoupled cross-attention (IP-Adapter): softmax(q k_txt^T) v_txt + scale * softmax(q k_ip^T) v_ip, then
    to_out. Image tokens [B, n, 768] are held by the processor (stand-in for the projected image embedding)."""

    def __init__(self, hidden_size: int, image_tokens: torch.Tensor, cross_dim: int = 768, scale: float = 1.0):
        super().__init__()
        self.to_k_ip = nn.Linear(cross_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_dim, hidden_size, bias=False)
        self.image_tokens = image_tokens
        self.scale = float(scale)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        b, n, _ = hidden_states.shape
        heads = attn.heads
        q = attn.to_q(hidden_states)
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        k, v = attn.to_k(ctx), attn.to_v(ctx)
        img = self.image_tokens.to(hidden_states)
        if img.shape[0] != b:
            img = img.repeat(b // img.shape[0], 1, 1)
        k_ip, v_ip = self.to_k_ip(img), self.to_v_ip(img)
        d = q.shape[-1] // heads
        split = lambda x: x.view(b, -1, heads, d).transpose(1, 2)  # noqa: E731
        qh = split(q)
        out = F.scaled_dot_product_attention(qh, split(k), split(v))
        out = out + self.scale * F.scaled_dot_product_attention(qh, split(k_ip), split(v_ip))
        out = out.transpose(1, 2).reshape(b, n, heads * d)
        out = attn.to_out[1](attn.to_out[0](out))
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)


class PeakRSS:
    """Peak process RSS over a block (a thread samples every `interval` s), minus the RSS at entry."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self.start = 0

    def _run(self):
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        if psutil is None:
            return self
        self.start = psutil.Process().memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if psutil is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, psutil.Process().memory_info().rss)

    @property
    def delta_mib(self) -> float:
        return float("nan") if psutil is None else (self.peak - self.start) / 2 ** 20


def maxrss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def build_unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, in_channels=9, out_channels=4, cross_attention_dim=768,
                                attention_head_dim=8)
    return unet.eval()


def attn2_modules(unet):
    mods = dict(unet.named_modules())
    return [mods[layer.diffusers_name] for layer in SD15_ATTN2_LAYERS]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", type=int, default=32, help="latent side (32 = 256 px, 64 = 512 px)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--attn-repeat", type=int, default=9, help="calls of the 16 attn2 alone per variant")
    ap.add_argument("--ip-tokens", type=int, default=4, help="image tokens of the IP-Adapter-style variant (4 or 16)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    unet = build_unet()
    nparams = sum(p.numel() for p in unet.parameters())
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, "
          f"CPU fp32; UNet {nparams / 1e6:.0f} M params built in {time.perf_counter() - t0:.1f} s; batch 2, latent "
          f"{args.latent} ({8 * args.latent} px); median of {args.repeat} (attn alone: {args.attn_repeat})")

    g = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 9, args.latent, args.latent, generator=g)
    text = torch.randn(2, 77, 768, generator=g)
    timestep = torch.tensor(500)
    fap_features = torch.randn(2, 256, 768, generator=g)
    ip_tokens = torch.randn(2, args.ip_tokens, 768, generator=g)

    default_procs = dict(unet.attn_processors)
    projectors = LayerProjectors()
    ip_procs = dict(default_procs)
    torch.manual_seed(2)
    for layer in SD15_ATTN2_LAYERS:
        ip_procs[layer.diffusers_name + ".processor"] = IPAdapterLikeProcessor(layer.width, ip_tokens)
    variants = [
        ("a text", default_procs),
        ("b fap", fap_attn_processors(default_procs, projectors, 1.0, fap_features)),
        (f"c ip{args.ip_tokens}", ip_procs),
    ]

    attns = attn2_modules(unet)
    acc = {"t": 0.0, "start": {}}
    captured = {}

    def pre(mod, a, kw):
        acc["start"][id(mod)] = time.perf_counter()
        if capture["on"]:
            hs = a[0] if a else kw["hidden_states"]
            ehs = kw.get("encoder_hidden_states", a[1] if len(a) > 1 else None)
            captured[id(mod)] = (hs.clone(), ehs.clone() if ehs is not None else None)

    def post(mod, a, kw, out):
        acc["t"] += time.perf_counter() - acc["start"].pop(id(mod))

    capture = {"on": True}
    handles = []
    for m in attns:
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))

    def step():
        return unet(sample, timestep, encoder_hidden_states=text).sample

    # Warm-up (and capture of the attn2 inputs, which are the same for every variant: attn2 is the first
    # cross-attention of the UNet only at down_blocks.0, but each attn2 sees the hidden states of its own
    # variant; the inputs captured under (a) are used for all three "alone" timings).
    outputs = {}
    for name, procs in variants:
        unet.set_attn_processor(dict(procs))  # it pops from the dict it is given
        capture["on"] = name == variants[0][0]
        outputs[name] = step()
    capture["on"] = False
    # Timed runs round-robin over the variants, so that load from other jobs spreads over all of them.
    totals = {name: [] for name, _ in variants}
    attn_in_step = {name: [] for name, _ in variants}
    alone = {name: [] for name, _ in variants}
    mem = {}
    for r in range(args.repeat):
        for name, procs in variants:
            unet.set_attn_processor(dict(procs))  # it pops from the dict it is given
            acc["t"] = 0.0
            with PeakRSS() as m:
                t1 = time.perf_counter()
                step()
                totals[name].append(time.perf_counter() - t1)
            attn_in_step[name].append(acc["t"])
            mem[name] = max(mem.get(name, 0.0), m.delta_mib)
            mem[name + " maxrss"] = maxrss_mib()
    for _ in range(args.attn_repeat):
        for name, procs in variants:
            unet.set_attn_processor(dict(procs))  # it pops from the dict it is given
            t1 = time.perf_counter()
            for mod in attns:
                hs, ehs = captured[id(mod)]
                mod(hs, encoder_hidden_states=ehs)
            alone[name].append(time.perf_counter() - t1)
    # FLOPs (noise-free): torch.utils.flop_counter counts matmuls, linears and attention (not the nearest
    # upsampling or elementwise ops). The whole step is counted once under (a); other variants differ only in
    # their 16 attn2, so their step FLOPs = step(a) - attn2(a) + attn2(variant).
    from torch.utils.flop_counter import FlopCounterMode
    flops = {}
    for name, procs in variants:
        unet.set_attn_processor(dict(procs))  # it pops from the dict it is given
        with FlopCounterMode(display=False) as fc:
            for mod in attns:
                hs, ehs = captured[id(mod)]
                mod(hs, encoder_hidden_states=ehs)
        flops[name] = fc.get_total_flops()
    unet.set_attn_processor(dict(variants[0][1]))
    with FlopCounterMode(display=False) as fc:
        step()
    step_flops_a = fc.get_total_flops()
    results = {name: dict(step=statistics.median(totals[name]), attn=statistics.median(attn_in_step[name]),
                          alone=statistics.median(alone[name]), alone_min=min(alone[name]),
                          mem=mem[name], maxrss=mem[name + " maxrss"],
                          spread=(min(totals[name]), max(totals[name])))
               for name, _ in variants}
    for h in handles:
        h.remove()

    base = results[variants[0][0]]
    print(f"{'variant':<8} {'step s':>7} {'x text':>7} {'attn2 in step s':>16} {'x text':>7} {'attn2 alone s':>14} "
          f"{'x text':>7} {'step peak RSS +MiB':>18} {'ru_maxrss MiB':>13}")
    for name, r in results.items():
        print(f"{name:<8} {r['step']:>7.3f} {r['step'] / base['step']:>7.2f} {r['attn']:>16.4f} "
              f"{r['attn'] / base['attn']:>7.2f} {r['alone']:>14.4f} {r['alone'] / base['alone']:>7.2f} "
              f"{r['mem']:>18.1f} {r['maxrss']:>13.0f}")
    print("step min..max s: " + ", ".join(f"{n} {r['spread'][0]:.2f}..{r['spread'][1]:.2f}"
                                         for n, r in results.items()))
    print("attn2 alone, fastest s: " + ", ".join(
        f"{n} {r['alone_min']:.4f} (x {r['alone_min'] / base['alone_min']:.2f})" for n, r in results.items()))
    print("GFLOP (flop_counter): " + ", ".join(
        f"{n}: attn2 {flops[n] / 1e9:.2f} (x {flops[n] / flops[variants[0][0]]:.2f}), step "
        f"{(step_flops_a - flops[variants[0][0]] + flops[n]) / 1e9:.1f} "
        f"(x {(step_flops_a - flops[variants[0][0]] + flops[n]) / step_flops_a:.3f})" for n in results))
    print("attn2 share of the step: " + ", ".join(f"{n} {r['attn'] / r['step']:.1%}" for n, r in results.items()))
    ref = outputs[variants[0][0]]
    print("output differs from (a) (max |diff|, sanity check that the processors ran): " + ", ".join(
        f"{n} {(o - ref).abs().max().item():.3g}" for n, o in outputs.items() if n != variants[0][0]))
    print(f"total bench time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
