"""Swapper files: save / load a trained :class:`~models.styleswap.swapper.Swapper`, and compose one from
public parts (a pSp/e4e encoder + a rosinality StyleGAN2 generator).

Format ``swapforge_styleswap_v1``: one ``.safetensors`` file holding ``swapper.state_dict()`` (keys
``encoder.*``, ``sbm.*``, ``decoder.*``, ``shortcut.*``, float tensors plus BatchNorm counters) and the
metadata ``{"format": "swapforge_styleswap_v1", "config": json.dumps(swapper.config)}`` plus any
caller metadata (strings). Loading is strict: the config rebuilds the architecture, and every tensor of
the file must be used and every tensor of the swapper present.

The paper (arXiv 2312.10843) released no weights: a swapper file comes from the pack's trainer
(``python -m models.styleswap.train``). :func:`swapper_from_parts` makes an untrained starting point
from released parts. No ComfyUI import here.
"""
from __future__ import annotations

import json
import os
import re
from typing import Mapping, Optional, Sequence, Tuple

import torch

from .encoder import PSP_SPLIT, StyleEncoder, load_psp
from .stylegan2 import Generator, load_rosinality
from .swapper import Swapper

FORMAT = "swapforge_styleswap_v1"
WEIGHTS_FOLDER = "models/swapforge/styleswap"
PREFIXES = ("encoder.", "sbm.", "decoder.", "shortcut.")

__all__ = ["FORMAT", "WEIGHTS_FOLDER", "save_swapper", "load_swapper", "swapper_from_parts",
           "fold_latent_avg", "load_psp_encoder", "load_stylegan2"]


def _short(names: Sequence[str], n: int = 12) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" ... (+{len(names) - n} more)" if len(names) > n else "")


def missing_swapper_message(path: str) -> str:
    return (f"SwapForge: no StyleSwap swapper file at {path}. Expected a .safetensors swapper checkpoint in "
            f"{WEIGHTS_FOLDER}. No public weights exist for this paper (High-Fidelity Face Swapping with Style "
            f"Blending, arXiv 2312.10843): train one with the pack's trainer `python -m models.styleswap.train`, "
            f"or compose a starting point from a rosinality StyleGAN2 generator and a pSp/e4e encoder with "
            f"`python -m models.styleswap.checkpoints --stylegan2 stylegan2-ffhq-config-f.pt --psp "
            f"psp_ffhq_encode.pt --out {WEIGHTS_FOLDER}/composed.safetensors`; put the file there, then refresh "
            f"the node.")


def save_swapper(swapper: Swapper, path: str, extra_metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``swapper`` to ``path`` (safetensors, format ``swapforge_styleswap_v1``). Tensors are saved as
    they are (dtype kept), contiguous, on the CPU. ``extra_metadata``: more string entries (e.g. the
    training step); "format" and "config" are reserved."""
    from safetensors.torch import save_file

    extra = dict(extra_metadata or {})
    clash = sorted(set(extra) & {"format", "config"})
    if clash:
        raise ValueError(f"SwapForge: extra_metadata may not set {clash}; those entries describe the file format.")
    meta = {str(k): str(v) for k, v in extra.items()}
    meta.update(format=FORMAT, config=json.dumps(swapper.config, sort_keys=True))
    state = {k: v.detach().to("cpu").contiguous() for k, v in swapper.state_dict().items()}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    save_file(state, path, metadata=meta)


def read_metadata(path: str) -> dict:
    """The file's metadata (format, config, extras) without loading tensors."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(missing_swapper_message(path))
    try:
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise ValueError(f"SwapForge: {path} is not a readable safetensors file ({type(exc).__name__}: {exc}). "
                         f"Expected a StyleSwap swapper saved by the pack's trainer; the file may be truncated, "
                         f"so copy it again.") from exc


def load_swapper(path: str) -> Swapper:
    """Read a ``swapforge_styleswap_v1`` file -> Swapper in eval mode on the CPU (tensors as stored)."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"SwapForge: {path} is not a StyleSwap swapper (metadata format "
                         f"{meta.get('format')!r}, expected {FORMAT!r}). Use a file written by the pack's trainer "
                         f"(python -m models.styleswap.train); pSp/e4e encoders and StyleGAN2 generators load "
                         f"with their own loaders.")
    try:
        config = json.loads(meta.get("config", ""))
        config.setdefault("sbm_blend_prior", False)   # files from before the prior existed: eq. 2 as trained
        swapper = Swapper(**config)
    except Exception as exc:
        raise ValueError(f"SwapForge: the config stored in {path} does not describe a swapper this pack can build "
                         f"({type(exc).__name__}: {exc}). The file may come from a newer SwapForge: update the "
                         f"pack.") from exc
    state = load_file(path, device="cpu")
    expected = swapper.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"SwapForge: {path} does not match the swapper its config describes. Missing keys: "
                         f"{_short(missing) or 'none'}. Unexpected keys: {_short(unexpected) or 'none'}. Wrong "
                         f"shapes: {_short(wrong) or 'none'}. The file is damaged or was edited: export it "
                         f"again from the trainer.")
    swapper.load_state_dict(state, strict=True)
    return swapper.eval()


# ---------------------------------------------------------------------- public parts
def fold_latent_avg(encoder: StyleEncoder, latent_avg: Optional[torch.Tensor]) -> StyleEncoder:
    """Add pSp's latent_avg (W = E(x) + w_avg) into the style heads' output biases, so the encoder's codes
    already include it. latent_avg [n_styles, d] or [d]. kind "psp": head i's bias += avg_i. kind "e4e"
    (w_i = h_i + h_0 for i >= 1): head 0 += avg_0 and head i += avg_i - avg_0, which gives the same
    w_i + avg_i. The heads' EqualLinear has lr_mul 1, so the stored bias is the added one."""
    if latent_avg is None:
        return encoder
    n, d = encoder.n_styles, encoder.style_dim
    avg = torch.as_tensor(latent_avg).detach().float().cpu()
    if avg.ndim == 2 and avg.shape[0] == 1:
        avg = avg[0]
    if avg.shape == (d,):
        avg = avg.expand(n, d)
    if tuple(avg.shape) != (n, d):
        raise ValueError(f"SwapForge: latent_avg of shape {tuple(latent_avg.shape)} does not fit an encoder of "
                         f"{n} styles x {d}. Use the latent_avg stored with the same checkpoint.")
    with torch.no_grad():
        for i, head in enumerate(encoder.styles):
            if head.linear.lr_mul != 1:
                raise ValueError("SwapForge: cannot fold latent_avg into a style head whose lr_mul is not 1.")
            add = avg[i] if (encoder.kind == "psp" or i == 0) else avg[i] - avg[0]
            head.linear.bias.add_(add.to(head.linear.bias.dtype))
    return encoder


def _psp_layout(ckpt: Mapping) -> Tuple[Tuple[int, int, int], int]:
    """(split, n_styles) of a pSp/e4e file from its head count: pSp puts heads 0-2 on the coarse map and
    3-6 on the middle one (coarse_ind 3, middle_ind 7), the rest fine."""
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else {}
    idx = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.styles\.(\d+)\.", str(k)))}
    n = max(idx) + 1 if idx else 18
    if n <= 7:
        return PSP_SPLIT, 18  # let load_psp report the mismatch
    return (3, 4, n - 7), n


def load_psp_encoder(path: str, kind: Optional[str] = None) -> StyleEncoder:
    """A pSp / e4e checkpoint -> StyleEncoder (eval, CPU) with its latent_avg folded in (see
    :func:`fold_latent_avg`); head count and split follow the file."""
    from .encoder import _read_checkpoint

    ckpt = _read_checkpoint(path)
    split, n = _psp_layout(ckpt)
    encoder, latent_avg = load_psp(ckpt, kind=kind, split=split, n_styles=n)
    return fold_latent_avg(encoder, latent_avg).eval()


def load_stylegan2(path: str) -> Tuple[Generator, Optional[torch.Tensor]]:
    """A rosinality StyleGAN2 checkpoint (.pt/.pth: {"g_ema", "latent_avg", ...}) or a .safetensors holding
    the g_ema state dict (bare keys or prefixed ``g_ema.``, optional ``latent_avg``) -> (Generator, latent_avg)."""
    if str(path).lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        if not os.path.isfile(path):
            return load_rosinality(path)  # its missing-file message names the folder and the checkpoint
        sd = load_file(path, device="cpu")
        if any(k.startswith("g_ema.") for k in sd):
            ckpt = {"g_ema": {k[len("g_ema."):]: v for k, v in sd.items() if k.startswith("g_ema.")}}
        else:
            ckpt = {"g_ema": {k: v for k, v in sd.items() if k != "latent_avg"}}
        if "latent_avg" in sd:
            ckpt["latent_avg"] = sd["latent_avg"]
        return load_rosinality(ckpt)
    return load_rosinality(path)


def swapper_from_parts(psp_path: Optional[str], stylegan_path: str, sbm_layers: int = 4, sbm_heads: int = 8,
                       kind: Optional[str] = None, shortcut_resolutions: Sequence[int] = (16, 32, 64),
                       seed: int = 0) -> Tuple[Swapper, str]:
    """Compose a Swapper from released parts -> (swapper in eval mode on the CPU, warning text).

    * decoder: the rosinality generator of ``stylegan_path`` (``stylegan2-ffhq-config-f.pt``: 1024 px,
      18 styles), loaded strictly;
    * encoder: the pSp / e4e encoder of ``psp_path`` (split 3/4/11, its latent_avg folded into the head
      biases), or, with ``psp_path=None``, a randomly initialised encoder with the paper's 6/6/6 split
      whose codes start at the generator's latent_avg (pSp's start_from_latent_avg), to be trained;
    * SBM: attention randomly initialised (torch seed ``seed``) and started as the layer-wise blend
      (``sbm.StyleBlendingModule.init_layerwise_blend``): the target's coarse styles (pose), the source's
      middle styles (identity), the target's fine styles (colour, light), so it swaps before any training;
    * shortcut: zero-initialised, so the decoder is the plain generator until trained.
    The warning text says which parts are untrained; show it to the user.
    """
    gen, gen_avg = load_stylegan2(stylegan_path)
    encoder = None
    if psp_path is not None:
        encoder = load_psp_encoder(psp_path, kind)
        if encoder.n_styles != gen.n_latent or encoder.style_dim != gen.style_dim:
            raise ValueError(f"SwapForge: the encoder gives {encoder.n_styles} x {encoder.style_dim} codes but the "
                             f"generator takes {gen.n_latent} x {gen.style_dim}. Use pSp/e4e and StyleGAN2 files "
                             f"trained together (e.g. psp_ffhq_encode.pt with stylegan2-ffhq-config-f.pt).")
    torch.manual_seed(int(seed))
    swapper = Swapper(size=gen.size, style_dim=gen.style_dim, n_mlp=gen.n_mlp,
                      channel_multiplier=gen.channel_multiplier, generator_channels=gen.channels,
                      encoder_channels=encoder.channels if encoder is not None else 64,
                      sbm_layers=sbm_layers, sbm_heads=sbm_heads,
                      split=encoder.split if encoder is not None else None,
                      shortcut_resolutions=shortcut_resolutions,
                      encoder_kind=encoder.kind if encoder is not None else "psp")
    swapper.decoder.load_state_dict(gen.state_dict(), strict=True)
    notes = ["SwapForge: this swapper was composed from parts. Its Style Blending Module is untrained and starts "
             "as the layer-wise blend: the target's coarse styles (rows 0-3, pose), the source's middle styles "
             "(rows 4-7, identity) and the target's fine styles (rows 8 and up, colour and light).",
             "The target-feature shortcut is zero-initialised (inactive until trained)."]
    if encoder is not None:
        swapper.encoder.load_state_dict(encoder.state_dict(), strict=True)
        notes.append(f"Encoder: {encoder.kind} weights from {os.path.basename(str(psp_path))} (split "
                     f"{'/'.join(map(str, encoder.split))}, not the paper's equal thirds).")
    else:
        fold_latent_avg(swapper.encoder, gen_avg)
        notes.append("Encoder: randomly initialised (paper split); its codes start at the generator's "
                     "latent_avg." if gen_avg is not None else "Encoder: randomly initialised (paper split).")
    notes.append("Train it with `python -m models.styleswap.train` for the paper's learned blend.")
    return swapper.eval(), " ".join(notes)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m models.styleswap.checkpoints --stylegan2 G.pt [--psp E.pt] --out swapper.safetensors``:
    compose a swapper (:func:`swapper_from_parts`) and save it where the StyleSwap Loader lists it."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m models.styleswap.checkpoints",
                                 description="Compose a StyleSwap swapper from public parts and save it.")
    ap.add_argument("--stylegan2", required=True, help="rosinality StyleGAN2 checkpoint (stylegan2-ffhq-config-f.pt)")
    ap.add_argument("--psp", default=None, help="pSp/e4e encoder (psp_ffhq_encode.pt); omit for a random encoder")
    ap.add_argument("--out", required=True, help=f"the .safetensors to write (the loader reads {WEIGHTS_FOLDER})")
    args = ap.parse_args(argv)
    swapper, notes = swapper_from_parts(args.psp, args.stylegan2)
    save_swapper(swapper, args.out, extra_metadata={"composed_from": " + ".join(
        os.path.basename(p) for p in (args.psp, args.stylegan2) if p)})
    print(notes)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
