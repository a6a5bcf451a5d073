"""Loading FuseAnyPart's released weights (``fap.bin``) and the pack's safetensors export.

``fap.bin`` (a torch pickle dict, read with ``weights_only=True``) holds:

* ``"unet"``: a fine-tuned SD1.5 UNet in diffusers key layout, ``conv_in`` widened to 9 input channels
  ordered [noisy latent (4), masked reference latent (4), mask (1)], and on each of the 16 ``attn2``
  layers an extra ``<layer>.processor.image_projector`` Linear(768 -> C_l) (paper eq. 4);
* ``"image_proj2"``: the MLP giving the condition C from the fused CLIP patch tokens (``proj.0``,
  ``proj.2``, ``proj.3``);
* ``"image_proj"``: a Resampler the released inference path computes and discards. It is accepted,
  kept by the export, and otherwise ignored.

The export is one flat safetensors file: keys ``unet.*``, ``image_proj2.*``, ``image_proj.*``, metadata
``format = swapforge_fap_v1``.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile

import torch

from ..safe_load import UnsafeCheckpointError, load_torch_file
from .injection import SD15_ATTN2_NAMES, LayerProjectors, PartMLP

EXPORT_FORMAT = "swapforge_fap_v1"
GROUPS = ("unet", "image_proj2", "image_proj")
REQUIRED = ("unet", "image_proj2")
PROJECTOR_INFIX = ".processor.image_projector."
CLIP_MODELS_BY_WIDTH = {
    1024: "CLIP ViT-L/14 (the encoder the paper names)",
    1280: "CLIP ViT-H/14 (the IP-Adapter SD1.5 image encoder, hard-coded in the authors' code)",
}


class FapCheckpointError(ValueError):
    """A FuseAnyPart weights file that cannot be used as it is."""


class FapWeightsMissing(FapCheckpointError, FileNotFoundError):
    """The FuseAnyPart weights file is not where it was looked for."""


def _missing_message(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    return (
        f"SwapForge: no FuseAnyPart weights at {path}. "
        f"Expected {os.path.basename(path)} (the authors' fap.bin, about 3.4 GB) in the folder {folder}; it is the "
        f"FuseAnyPart authors' release on the Hugging Face hub, repo Thomas-Tom/FuseAnyPart. "
        f"The authors state no licence for these weights, so treat them as for research use only. "
        f"Put the file there and refresh the node.")


def load_fap_state(path: str) -> dict:
    """Read ``fap.bin`` or the pack's ``.safetensors`` export -> {"unet": {...}, "image_proj2": {...}, ...}.

    Raises:
        FapWeightsMissing: no file at ``path`` (the message says where to get it and its licence status).
        FapCheckpointError: a truncated or corrupt file, a safetensors file that is not this pack's
            export, or a dict without "unet" and "image_proj2".
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FapWeightsMissing(_missing_message(path))
    if path.lower().endswith((".safetensors", ".sft")):
        state = _load_export(path)
    else:
        try:
            state = load_torch_file(path)
        except UnsafeCheckpointError as exc:
            raise FapCheckpointError(
                f"SwapForge: {path} is not a plain FuseAnyPart weights file ({exc}). Expected the authors' "
                f"fap.bin (about 3.4 GB, tensors only) or the pack's .safetensors export.") from None
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            raise FapCheckpointError(
                f"SwapForge: {path} is not a readable FuseAnyPart checkpoint (truncated or corrupt: {exc}). "
                f"Expected the complete fap.bin (about 3.4 GB). Download it again and replace the file."
            ) from exc
    _check_groups(state, path)
    return state


def _load_export(path: str) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != EXPORT_FORMAT:
                raise FapCheckpointError(
                    f"SwapForge: {path} is not a SwapForge FuseAnyPart export (metadata format "
                    f"{metadata.get('format')!r}, expected {EXPORT_FORMAT!r}). Use fap.bin or a file "
                    f"written by export_safetensors.")
            state: dict = {}
            for key in f.keys():
                group, _, rest = key.partition(".")
                if group not in GROUPS or not rest:
                    raise FapCheckpointError(
                        f"SwapForge: {path} has key {key!r}, outside the expected groups {list(GROUPS)}.")
                state.setdefault(group, {})[rest] = f.get_tensor(key)
    except FapCheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError for a truncated header/body
        raise FapCheckpointError(
            f"SwapForge: {path} is not a readable FuseAnyPart safetensors export (truncated or corrupt: "
            f"{exc}). Export it again from fap.bin.") from exc
    return state


def _check_groups(state, path: str) -> None:
    found = sorted(map(str, state.keys())) if isinstance(state, dict) else type(state).__name__
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        raise FapCheckpointError(
            f"SwapForge: {path} is not a FuseAnyPart checkpoint: its top-level keys are {found}, expected "
            f"{list(REQUIRED)} (and optionally 'image_proj'). Use the authors' fap.bin.")


def reorder_conv_in_to_comfy(weight: torch.Tensor) -> torch.Tensor:
    """conv_in weight [C_out, 9, kh, kw]: authors' input order -> ComfyUI's inpaint order.

    Authors: [noisy latent (4), masked reference latent (4), mask (1)].
    ComfyUI 0.3.64: comfy/model_base.py, BaseModel.set_inpaint (line 340) sets
    ``concat_keys = ("mask", "masked_image")``; BaseModel.concat_cond (lines 244-264) concatenates them in
    that order, and BaseModel._apply_model (lines 170-171) puts the noisy latent first:
    ``torch.cat([xc] + [c_concat], dim=1)`` -> [noisy latent (4), mask (1), masked image latent (4)].
    """
    if weight.dim() != 4 or weight.shape[1] != 9:
        raise FapCheckpointError(
            f"SwapForge: FuseAnyPart conv_in should take 9 input channels, got weight shape {tuple(weight.shape)}.")
    return torch.cat([weight[:, 0:4], weight[:, 8:9], weight[:, 4:8]], dim=1)


def split_fap_state(state: dict, conv_in_order: str = "comfy") -> tuple:
    """Split a loaded checkpoint -> (unet_sd, mlp_sd, projector_sd, clip_width).

    * unet_sd: the "unet" dict in diffusers layout without the 16 image_projector entries, with
      ``conv_in.weight`` moved to ComfyUI's inpaint order (``conv_in_order="authors"`` keeps it as is).
    * mlp_sd: the "image_proj2" dict (PartMLP keys).
    * projector_sd: {diffusers attn2 layer name: {"weight", "bias"}} from the image_projector entries.
    * clip_width: D, the CLIP width, read from ``image_proj2`` ``proj.0.weight`` [D, D].

    "image_proj" (the Resampler the released inference path discards) is ignored.
    """
    if conv_in_order not in ("comfy", "authors"):
        raise ValueError(f"conv_in_order must be 'comfy' or 'authors', got {conv_in_order!r}.")
    _check_groups(state, "the checkpoint")
    unet_sd: dict = {}
    projector_sd: dict = {}
    for key, value in state["unet"].items():
        if PROJECTOR_INFIX in key:
            layer, _, param = key.partition(PROJECTOR_INFIX)
            projector_sd.setdefault(layer, {})[param] = value
        else:
            unet_sd[key] = value
    if "conv_in.weight" not in unet_sd:
        raise FapCheckpointError("SwapForge: the FuseAnyPart UNet has no conv_in.weight; the checkpoint is incomplete.")
    if conv_in_order == "comfy":
        unet_sd["conv_in.weight"] = reorder_conv_in_to_comfy(unet_sd["conv_in.weight"])
    mlp_sd = dict(state["image_proj2"])
    if "proj.0.weight" not in mlp_sd:
        raise FapCheckpointError(
            f"SwapForge: image_proj2 has no proj.0.weight (keys {sorted(mlp_sd)}); cannot tell the CLIP width.")
    clip_width = int(mlp_sd["proj.0.weight"].shape[1])
    return unet_sd, mlp_sd, projector_sd, clip_width


def check_clip_width(fap_width: int, encoder_width: int) -> None:
    """Refuse a CLIP vision encoder whose width differs from the one the FuseAnyPart MLP was trained on."""
    if int(fap_width) == int(encoder_width):
        return

    def name(w):
        return CLIP_MODELS_BY_WIDTH.get(int(w), "no CLIP model FuseAnyPart is known to use")

    raise FapCheckpointError(
        f"SwapForge: the FuseAnyPart weights expect CLIP features of width {fap_width} ({name(fap_width)}), "
        f"but the CLIP vision model gives width {encoder_width} ({name(encoder_width)}). "
        f"Load the CLIP vision model of width {fap_width}.")


def export_safetensors(state: dict, path: str) -> None:
    """Write ``state`` as the pack's flat safetensors export (keys "<group>.<key>", file mode 0644)."""
    from safetensors.torch import save_file

    _check_groups(state, "the state to export")
    flat: dict = {}
    seen: set = set()
    for group in GROUPS:
        for key, value in state.get(group, {}).items():
            if not isinstance(value, torch.Tensor):
                raise FapCheckpointError(f"SwapForge: {group}.{key} is not a tensor ({type(value).__name__}).")
            tensor = value.detach().contiguous()
            ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
            if tensor.numel() and ptr in seen:       # safetensors refuses tensors sharing memory
                tensor = tensor.clone()
            seen.add(ptr)
            flat[f"{group}.{key}"] = tensor
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fap_export_", suffix=".safetensors", dir=folder)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata={"format": EXPORT_FORMAT})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def build_adapter(mlp_sd: dict, projector_sd: dict) -> tuple:
    """(PartMLP, LayerProjectors) from split_fap_state's mlp_sd and projector_sd, every key used.

    Widths are read from the tensors (D from proj.0.weight, C_l from each projector weight).
    Raises FapCheckpointError listing missing and unexpected keys or layers.
    """
    if "proj.0.weight" not in mlp_sd or "proj.2.weight" not in mlp_sd:
        raise FapCheckpointError(f"SwapForge: image_proj2 lacks proj.0.weight/proj.2.weight (keys {sorted(mlp_sd)}).")
    mlp = PartMLP(int(mlp_sd["proj.0.weight"].shape[1]), int(mlp_sd["proj.2.weight"].shape[0]))
    _strict_load(mlp, mlp_sd, "image_proj2")

    missing = [n for n in SD15_ATTN2_NAMES if n not in projector_sd]
    unexpected = sorted(n for n in projector_sd if n not in SD15_ATTN2_NAMES)
    if missing or unexpected:
        raise FapCheckpointError(
            f"SwapForge: FuseAnyPart image_projector layers do not match SD1.5's 16 cross-attention layers: "
            f"missing {missing}, unexpected {unexpected}.")
    widths = [int(projector_sd[n]["weight"].shape[0]) if "weight" in projector_sd[n] else 0
              for n in SD15_ATTN2_NAMES]
    cond_dims = {int(projector_sd[n]["weight"].shape[1]) for n in SD15_ATTN2_NAMES if "weight" in projector_sd[n]}
    if len(cond_dims) > 1:
        raise FapCheckpointError(f"SwapForge: image_projector input widths differ across layers: {sorted(cond_dims)}.")
    projectors = LayerProjectors(widths, cond_dims.pop() if cond_dims else mlp.out_dim)
    flat = {f"layers.{i}.{param}": value
            for i, name in enumerate(SD15_ATTN2_NAMES) for param, value in projector_sd[name].items()}
    _strict_load(projectors, flat, "image_projector")
    return mlp, projectors


def _strict_load(module: torch.nn.Module, sd: dict, what: str) -> None:
    expected = set(module.state_dict().keys())
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        raise FapCheckpointError(
            f"SwapForge: FuseAnyPart {what} weights do not match: missing {missing}, unexpected {unexpected}.")
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise FapCheckpointError(f"SwapForge: FuseAnyPart {what} weights have the wrong shapes: {exc}") from exc
