"""The fitted GSwap avatar (SWAPFORGE_AVATAR): the neural Gaussian field, the 2D renderer (E_bg, reducer, U) and
the static surface data needed to drive it, saved to and loaded from one .safetensors file.

File layout: tensors `field.<name>` (NeuralGaussianField state dict, including faces/face_idx/bary),
`renderer.<name>` (GSwapRenderer state dict), `surface.uv`, `surface.uv_faces`, `surface.rest_vertices`;
metadata (strings): format = "swapforge_gswap_avatar", version = "1", surface_kind, num_frames, and
config (JSON: uv resolution, learning rates, steps, seed, ...).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field as dc_field
from typing import Any, Dict

import torch
from torch import Tensor

from .gaussians import NeuralGaussianField
from .rerenderer import GSwapRenderer

AVATAR_FORMAT = "swapforge_gswap_avatar"
AVATAR_VERSION = "1"


@dataclass
class Avatar:
    """field: NeuralGaussianField; renderer: GSwapRenderer; surface_kind: the BodySurface name ("smplx",
    "anny", "template_head", or a caller's own); uv [Vt, 2], uv_faces [F, 3]: the surface's UV layout;
    rest_vertices [V, 3]: the rest shape the field was fitted on (the canonical surface); num_frames: training
    frames (rows of the temporal features c_t); config: JSON-able fitting settings."""
    field: NeuralGaussianField
    renderer: GSwapRenderer
    surface_kind: str
    uv: Tensor
    uv_faces: Tensor
    rest_vertices: Tensor
    num_frames: int
    config: Dict[str, Any] = dc_field(default_factory=dict)

    @property
    def faces(self) -> Tensor:
        return self.field.faces


def save_avatar(avatar: Avatar, path: str) -> str:
    """Writes the avatar to `path` (.safetensors); returns the path."""
    from safetensors.torch import save_file

    tensors = {f"field.{k}": v.detach().cpu().contiguous().clone() for k, v in avatar.field.state_dict().items()}
    tensors.update({f"renderer.{k}": v.detach().cpu().contiguous().clone()
                    for k, v in avatar.renderer.state_dict().items()})
    tensors["surface.uv"] = avatar.uv.detach().cpu().float().contiguous().clone()
    tensors["surface.uv_faces"] = avatar.uv_faces.detach().cpu().long().contiguous().clone()
    tensors["surface.rest_vertices"] = avatar.rest_vertices.detach().cpu().float().contiguous().clone()
    meta = dict(format=AVATAR_FORMAT, version=AVATAR_VERSION, surface_kind=str(avatar.surface_kind),
                num_frames=str(int(avatar.num_frames)), config=json.dumps(avatar.config, sort_keys=True))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=meta)
    return path


def load_avatar(path: str, device: str = "cpu") -> Avatar:
    """Reads an avatar written by `save_avatar`."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"SwapForge: no avatar file at {path}. Expected a .safetensors file written by the "
                                "GSwap fitting node. Fit an avatar first or fix the path.")
    with safe_open(path, framework="pt", device=device) as f:
        meta = f.metadata() or {}
        if meta.get("format") != AVATAR_FORMAT:
            raise ValueError(f"SwapForge: {path} is not a GSwap avatar (format {meta.get('format')!r}). Expected "
                             f"format {AVATAR_FORMAT!r}. Load a file saved by the GSwap fitting node.")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    fs = {k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")}
    rs = {k[len("renderer."):]: v for k, v in tensors.items() if k.startswith("renderer.")}
    fld = NeuralGaussianField(fs["faces"], fs["face_idx"], fs["bary"], fs["vertex_offsets"].shape[0],
                              fs["temporal"].shape[0], feature_dim=fs["features"].shape[1],
                              temporal_dim=fs["temporal"].shape[1]).to(device)
    fld.load_state_dict(fs)
    renderer = GSwapRenderer(in_dim=fs["features"].shape[1] + fs["temporal"].shape[1]).to(device)
    renderer.load_state_dict(rs)
    return Avatar(field=fld, renderer=renderer, surface_kind=meta.get("surface_kind", ""),
                  uv=tensors["surface.uv"], uv_faces=tensors["surface.uv_faces"],
                  rest_vertices=tensors["surface.rest_vertices"], num_frames=int(meta.get("num_frames", "1")),
                  config=json.loads(meta.get("config", "{}")))
