"""Small helpers every SwapForge node family shares: type names and IMAGE/MASK conversion."""
from __future__ import annotations

from . import services

FACE_MODEL = "SWAPFORGE_FACE_MODEL"
FACES = "SWAPFORGE_FACES"
CROPS = "SWAPFORGE_CROPS"
IDENTITY = "SWAPFORGE_IDENTITY"
PARTS_TYPE = "SWAPFORGE_PARTS"
PARTS = ("eyes", "nose", "mouth")

images_np = services.numpy_images
to_image = services.to_image
to_mask = services.to_mask


def progress(total: int) -> services.Progress:
    """A per-frame progress bar that is also an interrupt point."""
    return services.Progress(total)


def mask_np(mask):
    """ComfyUI MASK [B,H,W] (or [H,W]) -> float32 numpy [B,H,W]."""
    import numpy as np
    a = mask.detach().cpu().float().numpy() if hasattr(mask, "detach") else np.asarray(mask, np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"SwapForge: expected a MASK [B,H,W], got shape {tuple(a.shape)}.")
    return a
