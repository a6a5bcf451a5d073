"""A tiny random StyleSwap swapper file for the end-to-end workflow runs.

No public weights exist for "High-Fidelity Face Swapping with Style Blending", so the shipped workflows
(face_swap_image / face_swap_video) name ``styleswap_ffhq256.safetensors``, the file the pack's trainer
writes for the paper's 256 px model. For the e2e runs this module writes a file of that name with the
real format (``swapforge_styleswap_v1``) and the real 256 px / 14-style layout but tiny widths and
seeded random weights (about 3 MB, a few seconds per frame on a CPU): the swap results are noise, the
runs check the wiring inside ComfyUI.

    .venv/bin/python tests/e2e/styleswap_weights.py --models-dir <ComfyUI models dir>
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWAPPER_NAME = "styleswap_ffhq256.safetensors"
SWAPPER_REL = os.path.join("swapforge", "styleswap", SWAPPER_NAME)
TINY_256 = dict(size=256, style_dim=32, n_mlp=2, encoder_channels=16, sbm_layers=1, sbm_heads=2,
                generator_channels={4: 16, 8: 16, 16: 16, 32: 16, 64: 8, 128: 8, 256: 8})


def write_tiny_swapper(models_dir: str, name: str = SWAPPER_NAME, seed: int = 0) -> str:
    """Write ``<models_dir>/swapforge/styleswap/<name>`` (a tiny random 256 px swapper, deterministic for a
    seed; the shortcut gets small random weights so the whole path is exercised). Returns its path."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import torch

    from models.styleswap.checkpoints import save_swapper
    from models.styleswap.swapper import Swapper

    torch.manual_seed(seed)
    swapper = Swapper(**TINY_256).eval()
    with torch.no_grad():
        for conv in swapper.shortcut.values():
            conv.weight.normal_(0.0, 0.01)
    path = os.path.join(models_dir, "swapforge", "styleswap", name)
    save_swapper(swapper, path, extra_metadata={"note": "tiny random swapper for SwapForge e2e tests"})
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", required=True, help="ComfyUI's models folder")
    ap.add_argument("--name", default=SWAPPER_NAME)
    args = ap.parse_args(argv)
    print(write_tiny_swapper(args.models_dir, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
