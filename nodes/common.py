"""Small helpers every SwapForge node family shares: type names and IMAGE/MASK conversion."""
from __future__ import annotations

import math

import numpy as np
import torch

from . import services

FACE_MODEL = "SWAPFORGE_FACE_MODEL"
FACES = "SWAPFORGE_FACES"
CROPS = "SWAPFORGE_CROPS"
IDENTITY = "SWAPFORGE_IDENTITY"
PARTS_TYPE = "SWAPFORGE_PARTS"
PARTS = ("eyes", "nose", "mouth")


def check_finite(node: str, **values) -> None:
    """Refuse NaN or infinite widget values (ComfyUI's min/max checks let NaN through), naming the input."""
    for name, v in values.items():
        if v is None:
            continue
        try:
            ok = math.isfinite(float(v))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{node}: the input {name} is {v!r}, which is not a finite number. Type a number in "
                             f"the {name} widget (or fix the node that feeds it).")


def progress(total: int) -> services.Progress:
    """A per-frame progress bar that is also an interrupt point."""
    return services.Progress(total)


def _float_np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy() if hasattr(t, "detach") else np.asarray(t, np.float32)


def images_np(image) -> np.ndarray:
    """ComfyUI IMAGE [B,H,W,C] (or [H,W,C]) -> float32 numpy [B,H,W,3] (alpha dropped, grey expanded)."""
    a = _float_np(image)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"SwapForge: expected an IMAGE batch [B,H,W,C], got shape {tuple(a.shape)}.")
    if a.shape[0] == 0:
        raise ValueError("SwapForge: the image batch is empty (0 frames). Expected at least one frame; check the "
                         "node that produced it (e.g. a video loader with a frame range past the end).")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3], dtype=np.float32)


def mask_np(mask) -> np.ndarray:
    """ComfyUI MASK [B,H,W] (or [H,W]) -> float32 numpy [B,H,W]."""
    a = _float_np(mask)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"SwapForge: expected a MASK [B,H,W], got shape {tuple(a.shape)}.")
    if a.shape[0] == 0:
        raise ValueError("SwapForge: the mask batch is empty (0 masks). Expected at least one mask; check the "
                         "node that produced it.")
    return a


def to_image(a) -> torch.Tensor:
    """float numpy [B,H,W,3] -> ComfyUI IMAGE tensor on the intermediate device."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(services.intermediate_device())


def to_mask(a) -> torch.Tensor:
    """float numpy [B,H,W] -> ComfyUI MASK tensor on the intermediate device."""
    return to_image(a)
