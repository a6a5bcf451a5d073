"""Training of the style-blending face swapper (arXiv 2312.10843, Sec. 3.3-4), built on accelerate.

    python -m models.styleswap.train --data FOLDER --out DIR [--size 256] [--steps N] [--stage 1|2]
        [--batch 8] [--lr 4e-5] [--resume] [--tiny] [--align] [--arcface model_ir_se50.pth]
        [--landmarks lm.safetensors | --no-landmark-loss] [--distill-steps 2000] [--init swapper.safetensors]
        [--ckpt-every 1000]
    accelerate launch -m models.styleswap.train ...      (several GPUs; CPU works without launch)

Reading of the paper's schedule. The paper writes "first train E and SBM with D frozen, then unfreeze
D (E and SBM frozen) with a small lr". Here D is the *style decoder* (the StyleGAN2 synthesis network,
initialised from FFHQ), not the discriminator: the discriminator of the hinge adversarial loss trains in
both stages. So:

* stage 1: trainable = encoder E + SBM + the target-feature shortcut convs; decoder frozen.
* stage 2: trainable = decoder synthesis layers + shortcut convs; E and SBM frozen (eval mode, so their
  BatchNorm statistics stay fixed). The decoder's mapping network (``decoder.style``) is never used
  (the swapper feeds W+ codes) and stays frozen.
* both stages: the multi-scale discriminator trains with the hinge loss; Adam(lr, betas (0, 0.99)) for
  both optimisers, lr 4e-5 (the paper's; pass a smaller --lr for stage 2 as the paper suggests).

Each step (per process): draw B targets; with the curriculum probability P (``losses.
same_identity_probability``, linear 1 -> 0 over ``--curriculum-steps``, default --steps) the source is
the target image itself, else another image drawn uniformly; random horizontal flips. Then
out = G(Is, It); discriminator step on (It real, out fake); generator step on
adv + 10 L_id + 5 L_con + 1 L_rec + 100 L_lm + 1 L_swap (``losses.generator_loss``), where the
InfoNCE negatives of item i are the batch's sources and targets of another identity than Is_i.

Multi-GPU: the swap-consistency term calls G three times before one backward, which DDP's reducer does
not allow, so the models are not DDP-wrapped; gradients are averaged over processes by hand
(``accelerator.reduce``) before each optimiser step. Every process samples its own batches (seed +
process index). Mixed precision: ``--mixed-precision fp16|bf16`` (accelerate autocast + scaler).

Outputs in --out: ``ckpt_XXXXXX.pt`` every --ckpt-every steps and at the end (swapper, discriminator,
both optimisers, step, RNG states, config: --resume continues from the newest one bit-identically),
``swapper.safetensors`` (``checkpoints.save_swapper``: what the node loader reads), ``log.jsonl``
(one JSON line per step with every loss term), ``config.json`` and, unless --landmarks or
--no-landmark-loss is given, ``landmarks_distilled.safetensors``: the landmark loss's F_lm, a small heatmap
network distilled from the embedded dlib 68-point predictor on the training faces before step 1 (19 AFLW
points; ``build_landmarks``), reused when the run is resumed.

Data: a folder of aligned face images, one sub-folder per person; or a flat folder where the identity
is the file-name prefix (the part before the first "_" or "-", trailing digits removed: "obama2.jpg"
-> "obama"). With --align the images are FFHQ-aligned once at --size with the pack's dlib tools
(models/face/detect.py HOG detector + 68 landmarks, align.py "ffhq"; the highest-scoring face of each
image) into DIR/aligned, keeping the identity layout. No ComfyUI import here.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..safe_load import load_torch_file
from . import losses
from .discriminator import MultiScaleDiscriminator

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CKPT_PATTERN = "ckpt_*.pt"


# ---------------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    data: str
    out: str
    size: int = 256
    steps: int = 100_000
    stage: int = 1
    batch: int = 8
    lr: float = 4e-5
    resume: bool = False
    tiny: bool = False
    align: bool = False
    ckpt_every: int = 1000
    seed: int = 0
    p_start: float = 1.0
    p_end: float = 0.0
    curriculum_steps: Optional[int] = None  # None: --steps
    flip: bool = True
    randomize_noise: bool = True
    arcface: Optional[str] = None
    landmarks: Optional[str] = None
    init: Optional[str] = None
    no_landmark_loss: bool = False
    distill_steps: int = 2000  # steps of the landmark model's distillation (default F_lm, see build_landmarks)
    weights: Dict[str, float] = field(default_factory=dict)  # overrides of losses.LOSS_WEIGHTS
    mixed_precision: str = "no"
    disc_channels: int = 64
    disc_layers: int = 4
    disc_scales: int = 3
    quiet: bool = False
    threads: Optional[int] = None  # torch intra-op threads (1 is fastest for tiny models on busy CPUs)


TINY_SWAPPER = dict(style_dim=32, n_mlp=2, channel_multiplier=1, encoder_channels=16, sbm_layers=2, sbm_heads=2,
                    generator_channels={4: 32, 8: 32, 16: 32, 32: 16, 64: 16, 128: 8, 256: 8})


# ---------------------------------------------------------------------- data
def identity_of(path: str, root: str) -> str:
    """Identity label of an image: its top-level sub-folder under ``root``; for files directly in
    ``root`` the file-name prefix (before the first "_" or "-", trailing digits removed)."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if len(parts) > 1:
        return parts[0]
    stem = os.path.splitext(parts[0])[0]
    prefix = re.split(r"[_\-]", stem, maxsplit=1)[0]
    return prefix.rstrip("0123456789") or prefix


def list_images(root: str) -> List[str]:
    files = [p for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
             if p.lower().endswith(IMAGE_EXTS) and os.path.isfile(p)]
    return sorted(files)


def read_image(path: str, size: int) -> np.ndarray:
    """Image file -> float32 [size, size, 3] RGB 0..1 (resized with INTER_AREA / INTER_CUBIC when needed)."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"SwapForge train: cannot read image {path}. Remove it or convert it to PNG/JPEG.")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[0] != size or img.shape[1] != size:
        interp = cv2.INTER_AREA if max(img.shape[:2]) > size else cv2.INTER_CUBIC
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img.astype(np.float32) / 255.0


def align_folder(src: str, dst: str, size: int, analyzer=None) -> List[str]:
    """FFHQ-align every image of ``src`` at ``size`` px into ``dst`` (same relative paths, PNG), with the
    pack's dlib tools (HOG detector unless ``analyzer`` is given); the highest-scoring face per image.
    Images without a face are skipped and listed in the return value. Existing outputs are reused."""
    import cv2

    from ..face.align import align_crop
    from ..face.detect import DlibAnalyzer, to_uint8
    from ..face.records import FaceSet

    skipped = []
    for path in list_images(src):
        rel = os.path.splitext(os.path.relpath(path, src))[0] + ".png"  # same name: same identity
        out_path = os.path.join(dst, rel)
        if os.path.isfile(out_path):
            continue
        img = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        if analyzer is None:
            analyzer = DlibAnalyzer("hog", upsample=1)
        faces = analyzer.detect(to_uint8(img))
        if len(faces) == 0:
            skipped.append(path)
            continue
        best = faces.take([int(np.argmax(faces.scores))])
        crops, _, _ = align_crop(img[None], FaceSet([best], img.shape[:2]), size, "ffhq")
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        u8 = np.clip(np.rint(crops[0] * 255.0), 0, 255).astype(np.uint8)
        cv2.imwrite(out_path, cv2.cvtColor(u8, cv2.COLOR_RGB2BGR))
    return skipped


class FaceFolder:
    """Aligned faces grouped by identity, all loaded into memory as float32 [N, 3, size, size] in -1..1.

    ``labels`` [N] int identity index, ``names`` identity names. Needs at least two images (a swap
    needs a source and a different target) and at least two identities (InfoNCE needs negatives)."""

    def __init__(self, root: str, size: int):
        files = list_images(root)
        if len(files) < 2:
            raise ValueError(f"SwapForge train: found {len(files)} image(s) in {root}; expected a folder of "
                             f"aligned faces ({', '.join(IMAGE_EXTS)}), one sub-folder per person. Point --data "
                             f"at it (add --align for unaligned photos).")
        ids = [identity_of(p, root) for p in files]
        self.names = sorted(set(ids))
        if len(self.names) < 2:
            raise ValueError(f"SwapForge train: all {len(files)} images in {root} belong to one identity "
                             f"({self.names[0]!r}); the identity contrast needs at least two people. Put each "
                             f"person's images in their own sub-folder.")
        self.files = files
        self.labels = torch.tensor([self.names.index(i) for i in ids], dtype=torch.long)
        imgs = np.stack([read_image(p, size) for p in files])
        self.images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous() * 2.0 - 1.0

    def __len__(self) -> int:
        return len(self.files)


def sample_pairs(n_images: int, batch: int, p_same: float, gen: torch.Generator,
                 flip: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source index [B], target index [B], same [B] bool, flip [B, 2] bool) drawn with ``gen``:
    targets uniform; with probability p_same the source is the target, else a uniformly drawn other
    image; independent horizontal flips of source and target (same image -> same flip)."""
    tgt = torch.randint(0, n_images, (batch,), generator=gen)
    same = torch.rand(batch, generator=gen) < p_same
    other = (tgt + torch.randint(1, n_images, (batch,), generator=gen)) % n_images
    src = torch.where(same, tgt, other)
    flips = torch.rand(batch, 2, generator=gen) < 0.5 if flip else torch.zeros(batch, 2, dtype=torch.bool)
    flips[:, 0] = torch.where(same, flips[:, 1], flips[:, 0])
    return src, tgt, same, flips


def _take(images: torch.Tensor, idx: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    x = images[idx]
    return torch.where(flips[:, None, None, None], x.flip(-1), x)


# ---------------------------------------------------------------------- models
def build_swapper(cfg: TrainConfig):
    from .swapper import Swapper

    if cfg.init:
        from .checkpoints import load_swapper

        swapper = load_swapper(cfg.init)
        if swapper.size != cfg.size:
            raise ValueError(f"SwapForge train: --init swapper makes {swapper.size} px faces but --size is "
                             f"{cfg.size}. Use --size {swapper.size}.")
        return swapper
    if cfg.tiny:
        return Swapper(size=cfg.size, **TINY_SWAPPER)
    return Swapper(size=cfg.size)


def build_discriminator(cfg: TrainConfig) -> MultiScaleDiscriminator:
    if cfg.tiny:
        return MultiScaleDiscriminator(num_scales=2, base_channels=8, n_layers=3, size=cfg.size)
    return MultiScaleDiscriminator(cfg.disc_scales, cfg.disc_channels, cfg.disc_layers, cfg.size)


def build_identity(cfg: TrainConfig):
    from .arcface import TinyIdentityNet, load_arcface

    if cfg.arcface:
        return load_arcface(cfg.arcface)
    if cfg.tiny:
        torch.manual_seed(cfg.seed + 1)
        return TinyIdentityNet().eval().requires_grad_(False)
    from .arcface import missing_checkpoint_message

    raise FileNotFoundError(missing_checkpoint_message("(no --arcface given)") +
                            " Pass its path with --arcface (or --tiny for a smoke run with random nets).")


LANDMARKS_FILE = "landmarks_distilled.safetensors"


def build_landmarks(cfg: TrainConfig, dataset: Optional["FaceFolder"] = None, accelerator=None):
    """F_lm of the landmark loss: --landmarks (a HeatmapLandmarks file); --tiny: a random tiny net (smoke
    runs); else (the default) a HeatmapLandmarks distilled from the embedded dlib 68-point predictor on the
    training faces (landmarks.teacher_landmarks + distill_landmarks, --distill-steps), written to
    ``<out>/landmarks_distilled.safetensors`` once and read back on later runs and resumes. None with
    --no-landmark-loss."""
    from .landmarks import HeatmapLandmarks, load_landmarks

    if cfg.no_landmark_loss:
        return None
    if cfg.landmarks:
        return load_landmarks(cfg.landmarks)
    if cfg.tiny:
        torch.manual_seed(cfg.seed + 2)
        return HeatmapLandmarks(channels=8, depth=1).eval().requires_grad_(False)
    path = os.path.join(cfg.out, LANDMARKS_FILE)
    is_main = accelerator is None or accelerator.is_main_process
    if is_main and not os.path.isfile(path):
        if dataset is None:
            raise ValueError("SwapForge train: distilling the landmark model needs the training faces.")
        distill_landmark_model(cfg, dataset, path, accelerator.device if accelerator is not None else "cpu")
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return load_landmarks(path)


def distill_landmark_model(cfg: TrainConfig, dataset: "FaceFolder", path: str, device="cpu") -> str:
    """Label the training faces with the embedded dlib predictor and distill them into a HeatmapLandmarks
    (19 AFLW points, the paper's F_lm), saved as safetensors at ``path``; prints how well it fits."""
    from safetensors.torch import save_file

    from .landmarks import distill_landmarks, teacher_landmarks

    points, found = teacher_landmarks(dataset.images)
    n = int(found.sum())
    if n == 0:
        raise ValueError("SwapForge train: the embedded dlib predictor found no face in any training image, so no "
                         "landmark model can be distilled. Check that --data holds aligned faces (or add "
                         "--align), pass a landmark model with --landmarks, or drop the term with "
                         "--no-landmark-loss.")
    model, err = distill_landmarks(dataset.images[found].to(device), points[found], steps=cfg.distill_steps,
                                   seed=cfg.seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path,
              metadata={"config": json.dumps(model.config), "teacher": "dlib 68-point predictor -> AFLW-19",
                        "images": str(n), "train_error_px": f"{err:.4f}"})
    if not cfg.quiet:
        print(f"SwapForge train: landmark model distilled from dlib on {n} of {len(found)} training faces "
              f"({cfg.distill_steps} steps, mean error {err:.2f} px at {cfg.size} px) -> {path}", flush=True)
    return path


def stage_parameters(swapper: nn.Module, stage: int) -> List[nn.Parameter]:
    """Set requires_grad for the stage and return the trainable parameters (see the module docstring)."""
    if stage not in (1, 2):
        raise ValueError(f"SwapForge train: --stage must be 1 (encoder + SBM) or 2 (decoder), got {stage}.")
    swapper.requires_grad_(False)
    if stage == 1:
        groups = [swapper.encoder, swapper.sbm, swapper.shortcut]
    else:
        groups = [m for name, m in swapper.decoder.named_children() if name != "style"] + [swapper.shortcut]
    for m in groups:
        m.requires_grad_(True)
    return [p for p in swapper.parameters() if p.requires_grad]


def set_train_modes(swapper: nn.Module, stage: int) -> None:
    swapper.train()
    if stage == 2:
        swapper.encoder.eval()
        swapper.sbm.eval()
    else:
        swapper.decoder.eval()


# ---------------------------------------------------------------------- checkpoints
def _rng_state(gen: torch.Generator) -> dict:
    """Every RNG state, in types torch.load(weights_only=True) reads back (numpy's key array as a tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (str(name), torch.from_numpy(np.array(keys, np.int64)), int(pos), int(has_gauss),
                       float(cached)),
             "sampler": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.int64).astype(np.uint32), pos, has_gauss, cached))
    gen.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(out_dir: str) -> Optional[str]:
    files = sorted(glob.glob(os.path.join(out_dir, CKPT_PATTERN)))
    return files[-1] if files else None


def _unwrap(model):
    return getattr(model, "module", model)


def save_training_state(path: str, step: int, swapper, disc, opt_g, opt_d, gen, cfg: TrainConfig) -> None:
    state = {"step": step, "swapper": _unwrap(swapper).state_dict(), "swapper_config": _unwrap(swapper).config,
             "discriminator": _unwrap(disc).state_dict(), "discriminator_config": _unwrap(disc).config,
             "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": _rng_state(gen),
             "config": asdict(cfg)}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- training
def _average_gradients(accelerator, params) -> None:
    if accelerator.num_processes <= 1:
        return
    for p in params:
        if p.grad is not None:
            p.grad = accelerator.reduce(p.grad, reduction="mean")


def _negatives(id_model, source, target, labels_s, labels_t):
    """InfoNCE negatives: embeddings of all batch sources and targets [2B, D] (constants) and the mask
    [B, 2B] of those whose identity differs from item i's source."""
    with torch.no_grad():
        e = losses._embed(id_model, torch.cat([source, target]))
    labels = torch.cat([labels_s, labels_t])
    return e, labels[None, :] != labels_s[:, None]


def train(cfg: TrainConfig, swapper=None, discriminator=None, id_model=None, lm_model=None,
          dataset: Optional[FaceFolder] = None) -> dict:
    """Run (or resume) training as configured; models may be passed in (tests, custom setups), else they
    are built from ``cfg``. Returns {"step", "log" (path), "checkpoint" (last path), "swapper"}."""
    from accelerate import Accelerator

    from .checkpoints import save_swapper

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    device = accelerator.device
    is_main = accelerator.is_main_process
    os.makedirs(cfg.out, exist_ok=True)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if dataset is None:
        data_dir = cfg.data
        if cfg.align:
            data_dir = os.path.join(cfg.out, "aligned")
            if is_main:
                skipped = align_folder(cfg.data, data_dir, cfg.size)
                for s in skipped:
                    print(f"SwapForge train: no face found in {s}; skipped.", file=sys.stderr)
            accelerator.wait_for_everyone()
        dataset = FaceFolder(data_dir, cfg.size)
    if tuple(dataset.images.shape[-2:]) != (cfg.size, cfg.size):
        raise ValueError(f"SwapForge train: the dataset images are {tuple(dataset.images.shape[-2:])} but "
                         f"--size is {cfg.size}.")

    swapper = swapper if swapper is not None else build_swapper(cfg)
    disc = discriminator if discriminator is not None else build_discriminator(cfg)
    id_model = id_model if id_model is not None else build_identity(cfg)
    if lm_model is None and not cfg.no_landmark_loss:
        lm_model = build_landmarks(cfg, dataset, accelerator)
    for m in (id_model, lm_model):
        if m is not None:
            m.eval().requires_grad_(False).to(device)
    swapper.to(device)
    disc.to(device)
    params_g = stage_parameters(swapper, cfg.stage)
    params_d = list(disc.parameters())
    opt_g = torch.optim.Adam(params_g, lr=cfg.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(params_d, lr=cfg.lr, betas=(0.0, 0.99))
    opt_g, opt_d = accelerator.prepare(opt_g, opt_d)

    gen = torch.Generator().manual_seed(cfg.seed * 1000 + accelerator.process_index)
    step = 0
    if cfg.resume:
        path = latest_checkpoint(cfg.out)
        if path is None:
            raise FileNotFoundError(f"SwapForge train: --resume but no {CKPT_PATTERN} in {cfg.out}. Start without "
                                    f"--resume, or point --out at the run to continue.")
        state = load_torch_file(path)  # tensors and plain values only: a checkpoint cannot run code
        if state.get("swapper_config") != swapper.config:
            raise ValueError(f"SwapForge train: {path} holds a swapper with config {state.get('swapper_config')} "
                             f"but this run builds {swapper.config}. Resume with the same --size/--tiny/--init "
                             f"options as the original run.")
        swapper.load_state_dict(state["swapper"])
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        _set_rng_state(state["rng"], gen)
        step = int(state["step"])
    if is_main:
        with open(os.path.join(cfg.out, "config.json"), "w") as fh:
            json.dump({"train": asdict(cfg), "swapper": swapper.config, "discriminator": disc.config,
                       "weights": {**losses.LOSS_WEIGHTS, **cfg.weights}}, fh, indent=1)

    weights = {**losses.LOSS_WEIGHTS, **cfg.weights}
    if lm_model is None:
        weights["lm"] = 0.0
    curriculum = cfg.curriculum_steps or cfg.steps
    images = dataset.images
    labels = dataset.labels

    def G(s, t):
        return swapper(s, t, randomize_noise=cfg.randomize_noise)[0]

    log_path = os.path.join(cfg.out, "log.jsonl")
    last_ckpt = None
    t0 = time.time()
    while step < cfg.steps:
        p_same = losses.same_identity_probability(step, curriculum, cfg.p_start, cfg.p_end)
        si, ti, same, flips = sample_pairs(len(dataset), cfg.batch, p_same, gen, cfg.flip)
        source = _take(images, si, flips[:, 0]).to(device)
        target = _take(images, ti, flips[:, 1]).to(device)
        same_d = same.to(device)
        set_train_modes(swapper, cfg.stage)
        disc.train()

        with accelerator.autocast():
            out = G(source, target)

        # discriminator step: It real, out fake
        disc.requires_grad_(True)
        with accelerator.autocast():
            d_loss = losses.hinge_d(disc(target), disc(out.detach()))
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss)
        _average_gradients(accelerator, params_d)
        opt_d.step()

        # generator step
        disc.requires_grad_(False)
        with accelerator.autocast():
            e_neg = mask = None
            if weights["con"]:
                e_neg, mask = _negatives(id_model, source, target, labels[si].to(device), labels[ti].to(device))
            g_total, terms = losses.generator_loss(
                out=out, source=source, target=target, same_mask=same_d, fake_logits=disc(out),
                id_model=id_model, lm_model=lm_model, G=G, e_neg=e_neg, negative_mask=mask, weights=weights)
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(g_total)
        _average_gradients(accelerator, params_g)
        opt_g.step()
        step += 1

        if is_main:
            rec = {"step": step, "p_same": round(p_same, 6), "n_same": int(same.sum()),
                   "d": float(d_loss.detach()), "g": float(g_total.detach()),
                   **{k: float(v.detach()) for k, v in terms.items()},
                   "time": round(time.time() - t0, 3)}
            if rec["n_same"] == 0:
                rec["rec"] = None  # no Is = It item: the term is not defined this step
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if not cfg.quiet and (step % 50 == 0 or step == 1):
                print(json.dumps(rec), flush=True)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            if is_main:
                last_ckpt = os.path.join(cfg.out, f"ckpt_{step:06d}.pt")
                save_training_state(last_ckpt, step, swapper, disc, opt_g, opt_d, gen, cfg)
                save_swapper(_unwrap(swapper), os.path.join(cfg.out, "swapper.safetensors"),
                             extra_metadata={"train_step": str(step), "train_stage": str(cfg.stage)})
            accelerator.wait_for_everyone()
    return {"step": step, "log": log_path, "checkpoint": last_ckpt, "swapper": swapper}


# ---------------------------------------------------------------------- command line
def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m models.styleswap.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of aligned faces, one sub-folder per person")
    p.add_argument("--out", required=True, help="run folder: checkpoints, swapper.safetensors, log.jsonl")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--stage", type=int, default=1, choices=(1, 2))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-5)
    p.add_argument("--resume", action="store_true", help="continue from the newest ckpt_*.pt in --out")
    p.add_argument("--tiny", action="store_true", help="tiny swapper/discriminator and random F_id, F_lm (smoke)")
    p.add_argument("--align", action="store_true", help="FFHQ-align the images first (dlib)")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p-start", type=float, default=1.0, help="curriculum P(source = target) at step 0")
    p.add_argument("--p-end", type=float, default=0.0, help="curriculum P at --curriculum-steps")
    p.add_argument("--curriculum-steps", type=int, default=None)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--arcface", default=None, help="model_ir_se50.pth (pSp's ArcFace)")
    p.add_argument("--landmarks", default=None, help="HeatmapLandmarks state dict for the landmark loss (default: "
                   "one distilled from the embedded dlib predictor on --data before training)")
    p.add_argument("--distill-steps", type=int, default=2000, help="steps of that distillation")
    p.add_argument("--no-landmark-loss", action="store_true")
    p.add_argument("--init", default=None, help="swapper.safetensors to start from (checkpoints.load_swapper)")
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    for k, v in losses.LOSS_WEIGHTS.items():
        p.add_argument(f"--lambda-{k}", type=float, default=None, help=f"weight of the {k} term ({v})")
    a = p.parse_args(argv)
    weights = {k: getattr(a, f"lambda_{k}") for k in losses.LOSS_WEIGHTS if getattr(a, f"lambda_{k}") is not None}
    return TrainConfig(data=a.data, out=a.out, size=a.size, steps=a.steps, stage=a.stage, batch=a.batch, lr=a.lr,
                       resume=a.resume, tiny=a.tiny, align=a.align, ckpt_every=a.ckpt_every, seed=a.seed,
                       p_start=a.p_start, p_end=a.p_end, curriculum_steps=a.curriculum_steps, flip=not a.no_flip,
                       arcface=a.arcface, landmarks=a.landmarks, init=a.init,
                       no_landmark_loss=a.no_landmark_loss, distill_steps=a.distill_steps, weights=weights, mixed_precision=a.mixed_precision,
                       threads=a.threads)


def main(argv: Optional[Sequence[str]] = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
