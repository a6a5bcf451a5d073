"""FuseAnyPart trainer for the released inference path (MLP ``image_proj2`` + 16 per-layer projectors).

Paper / code facts (fuseanypart.md, Training): identity-grouped faces (target and part references are
different photos of one person), 512 px, AdamW lr 1e-4 wd 1e-2, epsilon-prediction MSE (eq. 5), and
conditioning dropout on the CLIP inputs (replaced by zeros, i.e. all-zero pixel values after CLIP
normalisation, as the authors' unconditional input), each case with probability 0.04 and exclusive:
all four images; eyes+nose+mouth; nose+mouth; eyes+mouth; eyes+nose (a single part is never dropped alone).

The released ``train.py`` trains another variant; this trainer trains what ``fap.bin``'s inference path
uses: the PartMLP and the LayerProjectors, injected with FapAttnProcessor (eq. 4) at SD1.5's 16 attn2
layers of a 9-channel UNet (frozen unless ``--train-unet``, except ``conv_in``, which always trains: its
mask and masked-latent channels start at zero on an SD1.5 base). UNet input channel order is the AUTHORS':
[noisy latent (4), masked reference latent (4), mask (1)]; a 9-channel SD-inpainting base has its conv_in
columns moved into that order (``widen_conv_in``); only the ComfyUI loader reorders back.

Per step: skin-fill the target; CLIP-encode target + 3 references (with dropout; each resized to 256 px with
PIL bicubic first, as the authors' inference and the CLIP Part Encoder do, ``--clip-resize``); fuse (eq. 3); MLP -> C;
masked reference latent = VAE(skin-filled target) * scaling with N(0, 1) noise inside the latent mask;
noisy latent at a random timestep; UNet(cat[noisy, masked, mask]) with eq. 4 on every attn2; MSE to the
noise (eq. 5).

CLIP: real training uses CLIP ViT-H/14 (the IP-Adapter SD1.5 image encoder the authors hard-code) through
transformers' CLIPVisionModelWithProjection loaded from a LOCAL folder (``--clip DIR``; never downloads),
penultimate hidden states. ``--tiny`` uses a small frozen random patch embedder with the same interface
(257 tokens: CLS + 16 x 16 patches), for tests.

Outputs in ``--out``: ``ckpt_XXXXXX.pt`` (full state; ``--resume`` continues bit-identically),
``fap.bin`` (torch.save of {"unet": UNet state dict + ``<attn2>.processor.image_projector.*``,
"image_proj2": MLP state dict}, the layout checkpoints.load_fap_state/split_fap_state/build_adapter read)
and ``fap.safetensors`` (checkpoints.export_safetensors of the same state).
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import load_torch_file
from . import checkpoints, clip_inputs
from .dataset import FacePartsDataset, collate
from .fusion import PARTS, fuse_grids
from .injection import SD15_ATTN2_LAYERS, SD15_ATTN2_NAMES, LayerProjectors, PartMLP, fap_attn_processors

IMAGES = ("target",) + PARTS          # CLIP inputs, in encoding order
DROP_PROB = 0.04
#: The exclusive conditioning-dropout cases (each with probability DROP_PROB), as sets of dropped images.
DROP_CASES = (
    frozenset(IMAGES),
    frozenset(("eyes", "nose", "mouth")),
    frozenset(("nose", "mouth")),
    frozenset(("eyes", "mouth")),
    frozenset(("eyes", "nose")),
)
CKPT_RE = re.compile(r"ckpt_(\d{6,})\.pt$")


# ---------------------------------------------------------------------------------------------
# Conditioning dropout
# ---------------------------------------------------------------------------------------------
def sample_dropout(batch: int, generator: Optional[torch.Generator] = None, prob: float = DROP_PROB) -> torch.Tensor:
    """Bool [batch, 4] (columns IMAGES = target, eyes, nose, mouth): which CLIP inputs to zero.

    One uniform draw u per item: case k = floor(u / prob) when u < 5 * prob (each of DROP_CASES with
    probability ``prob``, exclusive), else nothing is dropped.
    """
    if not 0 <= prob * len(DROP_CASES) <= 1:
        raise ValueError(f"dropout probability {prob} too large for {len(DROP_CASES)} exclusive cases.")
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    out = torch.zeros(batch, len(IMAGES), dtype=torch.bool)
    for i in range(batch):
        k = int(float(u[i]) // prob) if prob > 0 else len(DROP_CASES)
        if k < len(DROP_CASES):
            for j, name in enumerate(IMAGES):
                out[i, j] = name in DROP_CASES[k]
    return out


# ---------------------------------------------------------------------------------------------
# CLIP vision encoders: encode(images [B,H,W,3] 0..1) -> [B, 257, D]; encode_pixels(normalised) likewise
# ---------------------------------------------------------------------------------------------
class TinyClipEncoder(nn.Module):
    """Frozen random stand-in for CLIP ViT-/14 penultimate states (tests, --tiny): 14 px patch conv on the
    224 px CLIP input -> 16 x 16 patch tokens + CLS (mean of patches), fixed positional embedding, tanh."""

    def __init__(self, width: int = 32, seed: int = 1234):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.width = int(width)
        self.patch = nn.Conv2d(3, width, 14, 14)
        with torch.no_grad():
            self.patch.weight.copy_(torch.randn(self.patch.weight.shape, generator=g) / math.sqrt(3 * 14 * 14))
            self.patch.bias.zero_()
        self.register_buffer("pos", torch.randn(1, 257, width, generator=g) * 0.1)
        self.requires_grad_(False)

    @torch.no_grad()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values.to(self.patch.weight.dtype))            # [B, D, 16, 16]
        tok = x.flatten(2).transpose(1, 2)                                  # [B, 256, D]
        tok = torch.cat([tok.mean(1, keepdim=True), tok], 1) + self.pos
        return torch.tanh(tok)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_pixels(clip_inputs.preprocess_for_clip(images))


class HFClipEncoder(nn.Module):
    """CLIP ViT-H/14 (real training) via transformers, from a local folder only; penultimate hidden states."""

    def __init__(self, local_dir: str):
        super().__init__()
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError as exc:  # transformers is optional for the pack
            raise RuntimeError("SwapForge FuseAnyPart training with a real CLIP encoder needs the transformers "
                               "package (pip install transformers); use --tiny for the stand-in.") from exc
        if not os.path.isdir(local_dir):
            raise FileNotFoundError(f"SwapForge FuseAnyPart: --clip {local_dir} is not a folder. Give a local "
                                    f"CLIP ViT-H/14 (IP-Adapter image_encoder) folder; nothing is downloaded.")
        self.model = CLIPVisionModelWithProjection.from_pretrained(local_dir, local_files_only=True)
        self.model.requires_grad_(False).eval()
        self.width = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        p = next(self.model.parameters())
        out = self.model(pixel_values.to(p.device, p.dtype), output_hidden_states=True)
        return out.hidden_states[-2].float()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_pixels(clip_inputs.preprocess_for_clip(images))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
SD15_UNET_CONFIG = dict(
    sample_size=64, in_channels=9, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
# SD1.5's block structure (so all 16 SD15_ATTN2_LAYERS names exist) with tiny widths.
TINY_UNET_CONFIG = dict(
    in_channels=9, out_channels=4, block_out_channels=(16, 32, 32, 32), layers_per_block=2,
    cross_attention_dim=768, norm_num_groups=8, attention_head_dim=2)
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32, 32), layers_per_block=1,
    norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def _seeded(seed: int, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def widen_conv_in(unet, channels: int = 9):
    """The base UNet's conv_in in the authors' 9-channel input order [noisy latent (4), masked reference
    latent (4), mask (1)], keeping what each input channel means in the base:

    * a 4-channel base (SD1.5): widened, the 5 new channels' weights zero (as the authors' inference does);
    * a 9-channel SD-inpainting base, whose order is diffusers' [noisy (4), mask (1), masked image latent (4)]
      (StableDiffusionInpaintPipeline; ComfyUI's too): its columns moved to the authors' order, so its trained
      mask and masked-latent weights meet the inputs they were trained on;
    * anything else: ValueError.
    conv_in trains in every configuration (FapTrainer), so the new channels learn."""
    conv = unet.conv_in
    if conv.in_channels == channels == 9:
        with torch.no_grad():
            w = conv.weight
            conv.weight.copy_(torch.cat([w[:, 0:4], w[:, 5:9], w[:, 4:5]], 1))
        return unet
    if conv.in_channels != 4:
        raise ValueError(f"SwapForge FuseAnyPart training: the base UNet's conv_in takes {conv.in_channels} input "
                         f"channels; expected 4 (SD1.5) or 9 (SD1.5 inpainting). Use an SD1.5 or SD1.5-inpainting "
                         f"UNet as --base-unet.")
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : conv.in_channels] = conv.weight
        new.bias.copy_(conv.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)
    return unet


def _has_base(cfg) -> bool:
    """Whether --base-unet names a UNet to start from ("none" or nothing: a random SD1.5-shaped UNet)."""
    return bool(cfg.base_unet) and cfg.base_unet.lower() != "none"


def attn2_widths(unet) -> List[int]:
    """Query widths of the UNet's 16 SD1.5-named attn2 layers (SD15_ATTN2_LAYERS order)."""
    return [int(unet.get_submodule(n).to_q.in_features) for n in SD15_ATTN2_NAMES]


class FapTrainModel(nn.Module):
    """UNet + PartMLP + LayerProjectors; forward(fused tokens, unet input, t) -> epsilon prediction.

    FapAttnProcessor (eq. 4) is installed on the UNet's 16 attn2 layers and shares the projector Linears.
    """

    def __init__(self, unet, mlp: PartMLP, projectors: LayerProjectors, lam: float = 1.0):
        super().__init__()
        self.unet, self.mlp, self.projectors = unet, mlp, projectors
        unet.set_attn_processor(fap_attn_processors(unet.attn_processors, projectors, lam))
        self._fap = [p for k, p in unet.attn_processors.items() if k.endswith("attn2.processor")]
        assert len(self._fap) == len(SD15_ATTN2_LAYERS)

    def forward(self, fused_tokens: torch.Tensor, unet_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.mlp(fused_tokens[:, 1:])                                        # C [B, 256, 768]
        for p in self._fap:
            p.features = c
        ctx = unet_in.new_zeros(unet_in.shape[0], 1, self.unet.config.cross_attention_dim)  # unused by eq. 4
        try:
            return self.unet(unet_in, t, encoder_hidden_states=ctx).sample
        finally:
            for p in self._fap:
                p.features = None


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    data: str = ""
    out: str = ""
    init: Optional[str] = None              # fap.bin / export to start from
    base_unet: Optional[str] = None         # diffusers SD1.5 folder (with unet/ [and vae/]) or UNet folder
    vae: Optional[str] = None               # diffusers VAE folder (default: <base_unet>/vae)
    clip: Optional[str] = None              # local CLIP ViT-H/14 folder (transformers)
    steps: int = 1000
    batch: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-2
    size: int = 512
    train_unet: bool = False
    resume: bool = False
    tiny: bool = False
    mixed_precision: str = "no"
    seed: int = 0
    lam: float = 1.0
    save_every: int = 500
    timesteps: Optional[List[int]] = None   # restrict the sampled timesteps (tests); None = 0..999
    detector: str = "hog"
    align: bool = True
    clip_resize: int = clip_inputs.AUTHORS_CLIP_RESIZE  # PIL resize before CLIP's 224 px step, as the nodes' default


class FapTrainer:
    """Builds every component from a TrainConfig; ``step()`` runs one optimisation step."""

    def __init__(self, cfg: TrainConfig, dataset: Optional[FacePartsDataset] = None):
        from accelerate import Accelerator
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        self.cfg = cfg
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
        dev = self.accelerator.device
        self.dataset = dataset if dataset is not None else FacePartsDataset(
            cfg.data, cfg.size, align=cfg.align, detector=cfg.detector, seed=cfg.seed)
        if self.dataset.size != cfg.size:
            raise ValueError(f"dataset crops are {self.dataset.size} px but --size is {cfg.size}.")
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear")
        # --- UNet, VAE, CLIP
        if cfg.tiny:  # tiny stand-ins (tests); a given --base-unet is still used, through the same conv_in rules
            unet = (self._load_unet(cfg, UNet2DConditionModel) if _has_base(cfg) else
                    _seeded(cfg.seed + 1, lambda: UNet2DConditionModel(sample_size=cfg.size // 8, **TINY_UNET_CONFIG)))
            vae = _seeded(cfg.seed + 2, lambda: AutoencoderKL(sample_size=cfg.size, **TINY_VAE_CONFIG))
            self.clip = TinyClipEncoder(32, seed=cfg.seed + 3)
        else:
            unet = self._load_unet(cfg, UNet2DConditionModel)
            vae_dir = cfg.vae or (os.path.join(cfg.base_unet, "vae") if cfg.base_unet else None)
            if not vae_dir or not os.path.isdir(vae_dir):
                raise ValueError("SwapForge FuseAnyPart training needs an SD1.5 VAE: pass --vae DIR or a --base-unet "
                                 "pipeline folder with a vae/ sub-folder (or --tiny).")
            vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True)
            if not cfg.clip:
                raise ValueError("SwapForge FuseAnyPart training needs --clip DIR (local CLIP ViT-H/14) or --tiny.")
            self.clip = HFClipEncoder(cfg.clip)
        self.vae = vae.requires_grad_(False).eval().to(dev)
        self.clip = self.clip.to(dev)
        width = self.clip.width
        mlp = _seeded(cfg.seed + 4, lambda: PartMLP(width))
        projectors = _seeded(cfg.seed + 5, lambda: LayerProjectors(attn2_widths(unet)))
        if cfg.init:
            self._load_init(cfg.init, unet, mlp, projectors)
        unet.requires_grad_(bool(cfg.train_unet))
        # conv_in always trains: with a frozen UNet its zero-initialised mask / masked-latent channels would never
        # learn and the model would ignore the inpainting inputs
        unet.conv_in.requires_grad_(True)
        self.model = FapTrainModel(unet, mlp, projectors, cfg.lam)
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(self.model, opt)
        self.generator = torch.Generator().manual_seed(cfg.seed)       # data, dropout, timesteps, noise
        self.global_step = 0
        self.losses: List[float] = []
        if cfg.resume:
            last = latest_checkpoint(cfg.out)
            if last:
                self.load(last)

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _load_unet(cfg, UNet2DConditionModel):
        if _has_base(cfg):
            sub = os.path.join(cfg.base_unet, "unet")
            unet = UNet2DConditionModel.from_pretrained(sub if os.path.isdir(sub) else cfg.base_unet,
                                                        local_files_only=True)
            return widen_conv_in(unet, 9)
        return _seeded(cfg.seed + 1, lambda: UNet2DConditionModel(**SD15_UNET_CONFIG))

    @staticmethod
    def _load_init(path, unet, mlp, projectors):
        state = checkpoints.load_fap_state(path)
        unet_sd, mlp_sd, proj_sd, _ = checkpoints.split_fap_state(state, conv_in_order="authors")
        m, p = checkpoints.build_adapter(mlp_sd, proj_sd)
        unet.load_state_dict(unet_sd, strict=True)
        mlp.load_state_dict(m.state_dict())
        projectors.load_state_dict(p.state_dict())

    @property
    def core(self) -> FapTrainModel:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ one step
    def next_batch(self) -> dict:
        g = self.generator
        idx = torch.randint(len(self.dataset), (self.cfg.batch,), generator=g).tolist()
        return collate([self.dataset.get(i, g) for i in idx])

    def _latent(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(self.accelerator.device) * 2 - 1
        with torch.no_grad():
            dist = self.vae.encode(x).latent_dist
            eps = torch.randn(dist.mean.shape, generator=self.generator).to(dist.mean.device)
            return (dist.mean + dist.std * eps) * self.vae.config.scaling_factor

    def prepare_inputs(self, batch: dict) -> dict:
        """Everything the step feeds the model: fused tokens, UNet input, timesteps, target noise."""
        g, dev = self.generator, self.accelerator.device
        target, tboxes = batch["target"], batch["target_boxes"]
        b, h, w, _ = target.shape
        filled = clip_inputs.skin_fill_target(target, tboxes)
        refs = [clip_inputs.reference_input(batch["refs"][p][0], batch["refs"][p][1]) for p in PARTS]
        images = torch.cat([filled] + refs)
        if self.cfg.clip_resize:  # the authors' inference: PIL bicubic to 256 px before CLIP's 224 px step
            images = clip_inputs.authors_resize(images, self.cfg.clip_resize)
        pix = clip_inputs.preprocess_for_clip(images).to(dev)                          # [4B, 3, 224, 224]
        drop = sample_dropout(b, g)                                                    # [B, 4]
        keep = (~drop).T.reshape(-1).to(dev, pix.dtype)                                # image-major like pix
        pix = pix * keep[:, None, None, None]
        tokens = self.clip.encode_pixels(pix).float().split(b)                        # 4 x [B, 257, D]
        tb = {p: torch.stack([torch.as_tensor(x[p]) for x in tboxes]) for p in PARTS}
        fused = fuse_grids(tokens[0], {p: (tokens[1 + i], batch["refs"][p][1]) for i, p in enumerate(PARTS)}, tb)
        latents = self._latent(target)
        masked = self._latent(filled)
        mask = clip_inputs.latent_mask(clip_inputs.boxes_mask(tboxes, (h, w)), latents.shape[-2:]).to(dev)
        inside = torch.randn(masked.shape, generator=g).to(dev)
        masked = masked * (1 - mask) + mask * inside
        noise = torch.randn(latents.shape, generator=g).to(dev)
        if self.cfg.timesteps:
            choices = torch.as_tensor(self.cfg.timesteps, dtype=torch.long)
            t = choices[torch.randint(len(choices), (b,), generator=g)]
        else:
            t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=g)
        t = t.to(dev)
        noisy = self.scheduler.add_noise(latents, noise, t)
        unet_in = torch.cat([noisy, masked, mask], 1)          # AUTHORS' order: noisy, masked ref, mask
        return {"fused": fused, "unet_in": unet_in, "t": t, "noise": noise, "drop": drop, "mask": mask,
                "latents": latents, "masked": masked}

    def step(self, return_inputs: bool = False):
        self.model.train()
        inputs = self.prepare_inputs(self.next_batch())
        with self.accelerator.autocast():
            pred = self.model(inputs["fused"], inputs["unet_in"], inputs["t"])
        loss = F.mse_loss(pred.float(), inputs["noise"].float(), reduction="mean")     # eq. 5
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.losses.append(float(loss.detach()))
        return (float(loss.detach()), inputs) if return_inputs else float(loss.detach())

    def train(self, steps: Optional[int] = None, log_every: int = 10) -> List[float]:
        total = self.cfg.steps if steps is None else self.global_step + int(steps)
        while self.global_step < total:
            loss = self.step()
            if log_every and self.global_step % log_every == 0 and self.accelerator.is_main_process:
                print(f"step {self.global_step} loss {loss:.5f}", flush=True)
            if self.cfg.out and self.cfg.save_every and self.global_step % self.cfg.save_every == 0:
                self.save()
        return self.losses

    # ------------------------------------------------------------------ state
    def _trainable_state(self) -> dict:
        core = self.core
        out = {"mlp": core.mlp.state_dict(), "projectors": core.projectors.state_dict()}
        if self.cfg.train_unet or not _has_base(self.cfg):
            out["unet"] = core.unet.state_dict()
        else:
            out["conv_in"] = core.unet.conv_in.state_dict()   # trains even when the rest of the UNet is frozen
        return out

    def state_dict(self) -> dict:
        return {"step": self.global_step, "model": self._trainable_state(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "losses": list(self.losses), "config": asdict(self.cfg)}

    def load(self, path: str) -> None:
        st = load_torch_file(path)  # tensors and plain values only: a checkpoint cannot run code
        core = self.core
        core.mlp.load_state_dict(st["model"]["mlp"])
        core.projectors.load_state_dict(st["model"]["projectors"])
        if "unet" in st["model"]:
            core.unet.load_state_dict(st["model"]["unet"])
        if "conv_in" in st["model"]:
            core.unet.conv_in.load_state_dict(st["model"]["conv_in"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.generator.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        self.global_step = int(st["step"])
        self.losses = list(st["losses"])

    def fap_state(self) -> dict:
        """{"unet": UNet sd + <attn2>.processor.image_projector.*, "image_proj2": MLP sd} (fap.bin layout)."""
        core = self.core
        unet = {k: v.detach().cpu().clone() for k, v in core.unet.state_dict().items()}
        for name, lin in zip(SD15_ATTN2_NAMES, core.projectors.layers):
            unet[f"{name}{checkpoints.PROJECTOR_INFIX}weight"] = lin.weight.detach().cpu().clone()
            unet[f"{name}{checkpoints.PROJECTOR_INFIX}bias"] = lin.bias.detach().cpu().clone()
        return {"unet": unet, "image_proj2": {k: v.detach().cpu().clone() for k, v in core.mlp.state_dict().items()}}

    def save(self, out: Optional[str] = None, export: bool = True) -> str:
        out = out or self.cfg.out
        os.makedirs(out, exist_ok=True)
        self.accelerator.wait_for_everyone()
        path = os.path.join(out, f"ckpt_{self.global_step:06d}.pt")
        if self.accelerator.is_main_process:
            torch.save(self.state_dict(), path)
            if export:
                state = self.fap_state()
                torch.save(state, os.path.join(out, "fap.bin"))
                checkpoints.export_safetensors(state, os.path.join(out, "fap.safetensors"))
        return path


def latest_checkpoint(folder: Optional[str]) -> Optional[str]:
    if not folder or not os.path.isdir(folder):
        return None
    found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(folder, "ckpt_*.pt"))
             if (m := CKPT_RE.search(os.path.basename(p)))]
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    ap = argparse.ArgumentParser(prog="python -m models.fuseanypart.train",
                                 description="Train FuseAnyPart's MLP + per-layer projectors (fap.bin layout).")
    ap.add_argument("--data", required=True, help="folder with one sub-folder of photos per identity")
    ap.add_argument("--out", required=True, help="output folder (ckpt_XXXXXX.pt, fap.bin, fap.safetensors)")
    ap.add_argument("--init", default=None, help="fap.bin or export to start from")
    ap.add_argument("--base-unet", default=None, help="diffusers SD1.5 folder (unet/, vae/) or UNet folder; 'none' = random")
    ap.add_argument("--vae", default=None, help="diffusers VAE folder (default <base-unet>/vae)")
    ap.add_argument("--clip", default=None, help="local CLIP ViT-H/14 folder (transformers); never downloaded")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--train-unet", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="tiny random UNet/VAE/CLIP stand-ins (tests)")
    ap.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--detector", default="hog", choices=("hog", "mmod"))
    ap.add_argument("--no-align", action="store_true", help="photos are already FFHQ-aligned squares")
    ap.add_argument("--clip-resize", type=int, default=clip_inputs.AUTHORS_CLIP_RESIZE,
                    help="resize CLIP inputs to this size (PIL bicubic) before the 224 px preprocessing, as the "
                         "authors' inference and the CLIP Part Encoder's default do; 0: straight to 224")
    a = ap.parse_args(argv)
    return TrainConfig(data=a.data, out=a.out, init=a.init, base_unet=a.base_unet, vae=a.vae, clip=a.clip,
                       steps=a.steps, batch=a.batch, lr=a.lr, weight_decay=a.weight_decay, size=a.size,
                       train_unet=a.train_unet, resume=a.resume, tiny=a.tiny, mixed_precision=a.mixed_precision,
                       seed=a.seed, lam=a.lam, save_every=a.save_every, detector=a.detector, align=not a.no_align,
                       clip_resize=a.clip_resize)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cfg = parse_args(argv)
    trainer = FapTrainer(cfg)
    trainer.train()
    trainer.save()


if __name__ == "__main__":
    main()
