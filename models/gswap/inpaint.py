"""LaMa-type inpainting models for the background Î_tgt (paper step 6 uses Inpaint-Anything, whose fill model
is LaMa), loaded through spandrel (a ComfyUI dependency) from the user's `models/inpaint` folder.

The state dict is read by this module (safetensors, or a pickle with torch.load(weights_only=True): nothing in
the file can run code) and handed to spandrel's `ModelLoader.load_from_state_dict`, which recognises the
architecture from the keys. Only masked-image (inpainting) models are accepted.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..safe_load import load_torch_file, safe_error_text

INPAINT_SOURCE = ("big-lama.pt (LaMa, Apache-2.0, about 200 MB) as the ComfyUI inpainting packs distribute it "
                  "(the Acly/comfyui-inpaint-nodes README links it), or another LaMa-type model spandrel reads")


def inpaint_file_error(path: str, why: str) -> ValueError:
    return ValueError(f"SwapForge: {os.path.basename(path)} in {os.path.dirname(path)} is not a usable inpainting "
                      f"model ({why}). Expected a LaMa-type inpainting state dict (keys such as "
                      f"'model.model.1.bn_l.running_mean'): {INPAINT_SOURCE}. Put such a file in models/inpaint, or "
                      "leave the inpaint_model input empty to use the embedded fill.")


def read_state_dict(path: str) -> dict:
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file
        return load_file(path)
    try:
        sd = load_torch_file(path)
    except Exception as e:  # a TorchScript archive or a pickle with code: never unpickled unsafely
        raise inpaint_file_error(path, f"it cannot be read as plain tensors: {safe_error_text(e)}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise inpaint_file_error(path, "it holds no state dict of tensors")
    return sd


class InpaintModel:
    """A spandrel masked-image model as a callable: (image [H, W, 3] float 0..1, hole [H, W] nonzero) -> image.
    The frame is padded to the model's size multiple (reflection) and only the hole takes the model's output."""

    def __init__(self, descriptor, name: str):
        self.descriptor = descriptor
        self.name = name

    @property
    def device(self):
        return next(self.descriptor.model.parameters()).device

    def __call__(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        H, W = image.shape[:2]
        m = int(getattr(self.descriptor.size_requirements, "multiple_of", 8) or 1)
        ph, pw = (-H) % m, (-W) % m
        x = torch.from_numpy(np.ascontiguousarray(image, np.float32)).permute(2, 0, 1)[None]
        k = torch.from_numpy((np.asarray(hole) > 0).astype(np.float32))[None, None]
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        k = torch.nn.functional.pad(k, (0, pw, 0, ph))
        with torch.no_grad():
            y = self.descriptor(x.to(self.device), k.to(self.device)).float().cpu()[0, :, :H, :W]
        out = y.permute(1, 2, 0).clamp(0, 1).numpy()
        return np.where(np.asarray(hole)[..., None] > 0, out, image).astype(np.float32)


def load_inpaint_model(path: str) -> InpaintModel:
    """Reads `path` (module docstring) and returns the model on the CPU, in eval mode."""
    try:
        from spandrel import MaskedImageModelDescriptor, ModelLoader
    except ImportError as e:
        raise ImportError("SwapForge: inpainting models are read with spandrel, which ComfyUI installs. Install it "
                          "into this Python (pip install spandrel) or leave the inpaint_model input empty.") from e
    sd = read_state_dict(path)
    try:
        desc = ModelLoader().load_from_state_dict(sd)
    except Exception as e:
        raise inpaint_file_error(path, f"spandrel does not recognise it: {e}") from None
    if not isinstance(desc, MaskedImageModelDescriptor):
        raise inpaint_file_error(path, f"it is a {type(desc).__name__} ({desc.architecture.name}), not an "
                                       "inpainting model")
    desc.model.eval()
    return InpaintModel(desc, os.path.basename(path))
