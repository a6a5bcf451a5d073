"""Random, full-size stand-ins for the FuseAnyPart weights, for the end-to-end workflow test.

No real weights exist offline, so `test_fap_workflow.py` runs the FuseAnyPart workflow inside a real
ComfyUI with files of the released architectures and key layouts, filled with seeded random numbers:

* ``swapforge/fuseanypart/fap.bin``: the authors' layout (torch pickle dict, see
  /work/shared/notes/fuseanypart.md): ``"unet"`` = a diffusers SD1.5 ``UNet2DConditionModel`` state dict
  (default SD1.5 config, ``in_channels=9``, ``cross_attention_dim=768``) plus, for each of its 16
  ``attn2`` layers, ``<layer>.processor.image_projector.weight/bias`` (Linear 768 -> layer width);
  ``"image_proj2"`` = ``proj.0`` Linear(1280, 1280), ``proj.2`` Linear(1280, 768), ``proj.3``
  LayerNorm(768); ``"image_proj"`` = a few dummy Resampler tensors (the loader ignores them).
* ``clip_vision/random_CLIP-ViT-H-14.safetensors``: a transformers
  ``CLIPVisionModelWithProjection`` state dict of ViT-H/14 (hidden 1280, 32 layers, 16 heads, MLP 5120,
  patch 14, 224 px, projection 1024), which ComfyUI's ``clip_vision.load`` detects as ViT-H by
  ``vision_model.encoder.layers.30.layer_norm1.weight`` (and not ViT-bigG: no layer 47).
  The keys are written by hand (transformers is not needed).
* ``vae/random_sd15_vae.safetensors``: a diffusers ``AutoencoderKL`` state dict of the SD1.5 VAE config,
  which ComfyUI's VAELoader converts (``decoder.up_blocks.0.resnets.0.norm1.weight`` marks diffusers).

Shapes of the UNet and VAE come from diffusers (modules built on the meta device, so nothing is
initialised twice); values are drawn here: norm weights 1, biases 0, embeddings N(0, 0.02), other
weights N(0, (0.5 / sqrt(fan_in))^2), so activations shrink rather than blow up through the random
networks (ComfyUI uses the stored values as they are). Everything is stored as fp16 (ComfyUI upcasts on
CPU), about 3 GB in all. Deterministic: one seeded generator per file, keys in sorted order.

Generation needs torch, diffusers and safetensors (the repo's .venv has them; the ComfyUI venv may not),
so the test runs this module as a script in a subprocess:

    .venv/bin/python tests/e2e/fap_weights.py --out /some/cache/dir

It writes ``<out>/models/...`` and last ``<out>/manifest.json``; a complete manifest of the current
``VERSION`` means the cache is good and nothing is regenerated.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

VERSION = 1
FAP_REL = os.path.join("swapforge", "fuseanypart", "fap.bin")
CLIP_NAME = "random_CLIP-ViT-H-14.safetensors"
CLIP_REL = os.path.join("clip_vision", CLIP_NAME)
VAE_NAME = "random_sd15_vae.safetensors"
VAE_REL = os.path.join("vae", VAE_NAME)
FILES = {"fap": FAP_REL, "clip_vision": CLIP_REL, "vae": VAE_REL}

SD15_UNET_CONFIG = dict(in_channels=9, out_channels=4, cross_attention_dim=768, attention_head_dim=8,
                        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64)
SD15_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4,
                       block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
                       down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
CLIP_H = dict(hidden=1280, intermediate=5120, layers=32, heads=16, patch=14, image=224, projection=1024)
PART_COND_DIM = 768
PROJECTOR_INFIX = ".processor.image_projector."


def manifest_path(cache_dir: str) -> str:
    return os.path.join(cache_dir, "manifest.json")


def cached(cache_dir: str):
    """The manifest (dict) if ``cache_dir`` holds a complete generation of this VERSION, else None."""
    try:
        with open(manifest_path(cache_dir), encoding="utf-8") as f:
            man = json.load(f)
    except (OSError, ValueError):
        return None
    if man.get("version") != VERSION:
        return None
    for rel in FILES.values():
        p = os.path.join(cache_dir, "models", rel)
        if not os.path.isfile(p) or os.path.getsize(p) != man.get("sizes", {}).get(rel):
            return None
    return man


# ----------------------------------------------------------------------------------------------- values
def _fill(shapes: dict, seed: int, dtype):
    """{key: shape} -> {key: tensor} with the init described in the module docstring."""
    import torch

    g = torch.Generator("cpu").manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        leaf = key.rsplit(".", 1)[-1]
        name = key.lower()
        if "position_ids" in name:
            out[key] = torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
            continue
        if leaf == "bias":
            t = torch.zeros(shape)
        elif "norm" in name and len(shape) == 1:  # GroupNorm / LayerNorm weight
            t = torch.ones(shape)
        elif "embedding" in name or len(shape) == 1:
            t = torch.randn(shape, generator=g) * 0.02
        else:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g) * (0.5 / math.sqrt(fan_in))
        out[key] = t.to(dtype)
    return out


def _meta_shapes(module_cls, config: dict) -> dict:
    import torch

    with torch.device("meta"):
        model = module_cls(**config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def unet_shapes() -> dict:
    from diffusers import UNet2DConditionModel

    return _meta_shapes(UNet2DConditionModel, SD15_UNET_CONFIG)


def vae_shapes() -> dict:
    from diffusers import AutoencoderKL

    return _meta_shapes(AutoencoderKL, SD15_VAE_CONFIG)


def clip_vision_shapes(c: dict = CLIP_H) -> dict:
    """transformers CLIPVisionModelWithProjection keys and shapes (no position_ids: newer transformers and
    ComfyUI's own CLIP vision model have none)."""
    d, m = c["hidden"], c["intermediate"]
    tokens = (c["image"] // c["patch"]) ** 2 + 1
    s = {
        "vision_model.embeddings.class_embedding": (d,),
        "vision_model.embeddings.patch_embedding.weight": (d, 3, c["patch"], c["patch"]),
        "vision_model.embeddings.position_embedding.weight": (tokens, d),
        "vision_model.pre_layrnorm.weight": (d,), "vision_model.pre_layrnorm.bias": (d,),
        "vision_model.post_layernorm.weight": (d,), "vision_model.post_layernorm.bias": (d,),
        "visual_projection.weight": (c["projection"], d),
    }
    for i in range(c["layers"]):
        p = f"vision_model.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[p + f"self_attn.{proj}.weight"] = (d, d)
            s[p + f"self_attn.{proj}.bias"] = (d,)
        for ln in ("layer_norm1", "layer_norm2"):
            s[p + f"{ln}.weight"] = (d,)
            s[p + f"{ln}.bias"] = (d,)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = (m, d), (m,)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = (d, m), (d,)
    return s


def fap_state(dtype, clip_width: int = CLIP_H["hidden"]) -> dict:
    """The fap.bin dict: {"unet": ..., "image_proj2": ..., "image_proj": ...}."""
    shapes = unet_shapes()
    assert shapes["conv_in.weight"] == (320, 9, 3, 3), shapes["conv_in.weight"]
    attn2 = sorted(k[: -len(".to_q.weight")] for k in shapes if k.endswith(".attn2.to_q.weight"))
    assert len(attn2) == 16, attn2
    for layer in attn2:
        width = shapes[layer + ".to_q.weight"][0]
        shapes[layer + PROJECTOR_INFIX + "weight"] = (width, PART_COND_DIM)
        shapes[layer + PROJECTOR_INFIX + "bias"] = (width,)
    unet = _fill(shapes, seed=1234, dtype=dtype)
    proj2 = _fill({"proj.0.weight": (clip_width, clip_width), "proj.0.bias": (clip_width,),
                   "proj.2.weight": (PART_COND_DIM, clip_width), "proj.2.bias": (PART_COND_DIM,),
                   "proj.3.weight": (PART_COND_DIM,), "proj.3.bias": (PART_COND_DIM,)}, seed=1235, dtype=dtype)
    # proj.3 is a LayerNorm: weight 1, bias 0 (the "norm" rule does not see its name)
    import torch
    proj2["proj.3.weight"] = torch.ones(PART_COND_DIM, dtype=dtype)
    proj2["proj.3.bias"] = torch.zeros(PART_COND_DIM, dtype=dtype)
    image_proj = _fill({"latents": (1, 16, PART_COND_DIM), "proj_in.weight": (PART_COND_DIM, clip_width),
                        "proj_in.bias": (PART_COND_DIM,), "norm_out.weight": (PART_COND_DIM,),
                        "norm_out.bias": (PART_COND_DIM,)}, seed=1236, dtype=dtype)
    return {"unet": unet, "image_proj2": proj2, "image_proj": image_proj}


# ------------------------------------------------------------------------------------------------ write
def _atomic(path: str, write) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".partial"
    write(tmp)
    os.replace(tmp, path)
    return os.path.getsize(path)


def generate(cache_dir: str, log=print) -> dict:
    import torch
    from safetensors.torch import save_file

    dtype = torch.float16
    models = os.path.join(cache_dir, "models")
    sizes, times = {}, {}

    def write(key, rel, label, make, save):
        t = time.monotonic()
        tensors = make()
        sizes[rel] = _atomic(os.path.join(models, rel), lambda p: save(tensors, p))
        times[key] = round(time.monotonic() - t, 1)
        log(f"{label}: {sizes[rel] / 2**20:.0f} MiB in {times[key]} s")

    write("fap", FAP_REL, "fap.bin", lambda: fap_state(dtype), torch.save)
    write("clip_vision", CLIP_REL, CLIP_NAME, lambda: _fill(clip_vision_shapes(), seed=2345, dtype=dtype), save_file)
    write("vae", VAE_REL, VAE_NAME, lambda: _fill(vae_shapes(), seed=3456, dtype=dtype), save_file)

    import diffusers
    man = {"version": VERSION, "sizes": sizes, "seconds": times, "dtype": "float16",
           "torch": torch.__version__, "diffusers": diffusers.__version__,
           "files": {k: os.path.join("models", v) for k, v in FILES.items()}}
    with open(manifest_path(cache_dir), "w", encoding="utf-8") as f:
        json.dump(man, f, indent=1)
    return man


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="cache folder (gets models/... and manifest.json)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the cache is complete")
    args = ap.parse_args(argv)
    if not args.force and cached(args.out):
        print(f"cached: {args.out}")
        return 0
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
