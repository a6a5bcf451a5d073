"""GSwap's body surfaces, one entry point: `load_surface(kind)` and the names other modules use.

The surfaces live in their own files: surface.py (the interface, records and shared maths),
surface_template.py (`TemplateHeadSurface`: a procedural head that needs nothing), surface_smplx.py
(`SMPLXSurface`: licence-gated SMPL-X files) and surface_anny.py (`AnnySurface`: the free Anny body, the embedded
default). This module re-exports them so `from models.gswap import body; body.AnnySurface` keeps working.
"""
from __future__ import annotations

from typing import Optional

from .surface import (EYE_DISTANCE_M, IBUG68_FRONTAL, BodyOutput, BodyParams, BodySurface, _subset,  # noqa: F401
                      apply_transforms, barycentric_points, batch_rodrigues, blend_transforms, embed_landmarks68,
                      ray_cast, rigid_chain)
from .surface_anny import ANNY_TO_SURFACE, AnnySurface  # noqa: F401
from .surface_smplx import (SMPLX_LICENCE_SOURCE, SMPLX_PARENTS, SMPLX_REQUIRED_ARRAYS, SMPLXSurface,  # noqa: F401
                            read_smplx_arrays, smplx_missing_error, synthetic_smplx_arrays,
                            write_synthetic_smplx_npz)
from .surface_template import (EYE_LEVEL, HEAD_AXES, TemplateHeadSurface, head_landmarks68,  # noqa: F401
                               head_weights, procedural_head)

SURFACE_KINDS = ("auto", "anny", "smplx", "template")


def anny_available() -> bool:
    try:
        import importlib.util
        return importlib.util.find_spec("anny") is not None
    except (ImportError, ValueError):
        return False


def load_surface(kind: str = "auto", model_dir: Optional[str] = None) -> BodySurface:
    """The body surface of `kind`: "anny" (needs the anny package), "smplx" (needs the smplx package and
    <model_dir>/smplx/SMPLX_NEUTRAL.npz), "template" (always available) or "auto" (anny when installed,
    else template)."""
    if kind == "auto":
        kind = "anny" if anny_available() else "template"
    if kind == "anny":
        return AnnySurface()
    if kind == "template":
        return TemplateHeadSurface()
    if kind == "smplx":
        if model_dir is None:
            raise ValueError("SwapForge: the SMPL-X surface needs model_dir (the folder models/swapforge that holds "
                             "smplx/SMPLX_NEUTRAL.npz).")
        return SMPLXSurface(model_dir)
    raise ValueError(f"SwapForge: unknown body surface {kind!r}; expected one of {', '.join(SURFACE_KINDS)}.")
