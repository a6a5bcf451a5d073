"""The one place SwapForge touches ComfyUI: model folders, devices, the memory manager, progress and
interrupts. Everything else asks this module. Without ComfyUI (tests, scripts) each service has a plain
fallback: folders under $SWAPFORGE_MODELS_DIR (default ./models), the CPU, a no-op progress bar.
"""
from __future__ import annotations

import logging
import os
import traceback
from typing import Callable, Dict, List, Optional

import torch

log = logging.getLogger("SwapForge")

folder_paths = None
_mm = None
_cu = None
HAS_COMFY = False
#: The traceback of a failed import of ComfyUI's modules (None: not inside ComfyUI, or all imported).
COMFY_IMPORT_ERROR: Optional[str] = None
try:  # inside a ComfyUI server
    import folder_paths  # type: ignore
    import comfy.model_management as _mm  # type: ignore
    import comfy.utils as _cu  # type: ignore
    HAS_COMFY = True
except ModuleNotFoundError as _e:
    if _e.name != "folder_paths":  # ComfyUI is there (or half there) but one of its modules is missing
        COMFY_IMPORT_ERROR = traceback.format_exc()
except Exception:  # a ComfyUI module raised while importing
    COMFY_IMPORT_ERROR = traceback.format_exc()
if not HAS_COMFY:
    folder_paths = _mm = _cu = None
    if COMFY_IMPORT_ERROR is not None:  # loud, once (this module is imported once per process)
        log.error("SwapForge: ComfyUI's own modules (folder_paths, comfy.model_management, comfy.utils) failed to "
                  "import:\n%s\nSwapForge falls back to its plain-Python services: models are looked for under "
                  "$SWAPFORGE_MODELS_DIR or ./models instead of ComfyUI's folders, everything runs on the CPU, "
                  "and there is no progress bar or cancel. Fix the ComfyUI installation (the error above names the "
                  "module) and restart ComfyUI.", COMFY_IMPORT_ERROR.rstrip())

# SwapForge's own folders, relative to ComfyUI's models dir. Core keys are reused where the file is the
# same kind (insightface packs live where every insightface-based pack keeps them).
SWAPFORGE_FOLDERS: Dict[str, str] = {
    "swapforge_identities": os.path.join("swapforge", "identities"),
    "swapforge_fuseanypart": os.path.join("swapforge", "fuseanypart"),
    "swapforge_styleswap": os.path.join("swapforge", "styleswap"),
    "swapforge_psp": os.path.join("swapforge", "psp"),
    "swapforge_stylegan2": os.path.join("swapforge", "stylegan2"),
    "swapforge_smplx": os.path.join("swapforge", "smplx"),  # any file: <dir>/smplx/SMPLX_NEUTRAL.npz
    "swapforge_avatars": os.path.join("swapforge", "avatars"),
}
# Extensions per SwapForge folder (ComfyUI lists only these).
FOLDER_EXTENSIONS: Dict[str, set] = {
    "swapforge_identities": {".safetensors"},
    "swapforge_fuseanypart": {".bin", ".safetensors", ".sft"},
    "swapforge_styleswap": {".safetensors"},
    "swapforge_psp": {".pt", ".pth"},
    "swapforge_stylegan2": {".pt", ".pth", ".safetensors"},
    "swapforge_avatars": {".safetensors"},
}
CORE_FOLDERS: Dict[str, str] = {
    "insightface": "insightface",
    # the keys other segment/ground packs use, so one copy of each file serves them all
    "sams": "sams",
    "grounding-dino": "grounding-dino",
    "bert-base-uncased": "bert-base-uncased",  # a folder: config.json + vocab.txt (Grounding DINO's text side)
    "inpaint": "inpaint",  # LaMa-type inpainting models (the folder the inpainting packs use)
}
# Extensions SwapForge lists under shared keys (added to what other packs registered, never removed).
CORE_EXTENSIONS: Dict[str, set] = {
    "sams": {".pth", ".safetensors"},
    "grounding-dino": {".pth", ".safetensors"},
    "inpaint": {".pt", ".pth", ".safetensors"},
}
_fallback_extra: Dict[str, List[str]] = {}


def models_dir() -> str:
    if HAS_COMFY:
        return folder_paths.models_dir
    return os.path.abspath(os.environ.get("SWAPFORGE_MODELS_DIR", "models"))


def register_folders() -> None:
    """Register SwapForge's folders with ComfyUI, extending (never replacing) what users configured in
    extra_model_paths.yaml. Safe to call more than once."""
    if not HAS_COMFY:
        return
    for key, rel in {**SWAPFORGE_FOLDERS, **CORE_FOLDERS}.items():
        path = os.path.join(folder_paths.models_dir, rel)
        known = folder_paths.folder_names_and_paths.get(key)
        if known is None or path not in known[0]:
            folder_paths.add_model_folder_path(key, path)
    # an empty extension set means "any file": list only the files each folder is for
    for key, exts in FOLDER_EXTENSIONS.items():
        paths, _ = folder_paths.folder_names_and_paths[key]
        folder_paths.folder_names_and_paths[key] = (paths, set(exts))
    for key, exts in CORE_EXTENSIONS.items():
        paths, known_exts = folder_paths.folder_names_and_paths[key]
        if known_exts:  # an empty set already means "any file"
            folder_paths.folder_names_and_paths[key] = (paths, set(known_exts) | set(exts))


def folder_paths_for(key: str) -> List[str]:
    """All folders registered under a key (the default first)."""
    if HAS_COMFY:
        try:
            return list(folder_paths.get_folder_paths(key))
        except KeyError:
            return []
    rel = SWAPFORGE_FOLDERS.get(key) or CORE_FOLDERS.get(key) or key
    return [os.path.join(models_dir(), rel)] + _fallback_extra.get(key, [])


def add_folder(key: str, path: str) -> None:
    """Add a folder to a key (tests, scripts; ComfyUI users use extra_model_paths.yaml)."""
    if HAS_COMFY:
        folder_paths.add_model_folder_path(key, path)
    else:
        _fallback_extra.setdefault(key, []).append(path)


def default_folder(key: str) -> str:
    paths = folder_paths_for(key)
    if not paths:
        raise KeyError(f"SwapForge: no model folder registered for {key!r}.")
    return paths[0]


def list_files(key: str, extensions=(".safetensors",)) -> List[str]:
    """File names (relative to their folder) under a key, sorted."""
    if HAS_COMFY:
        try:
            return [f for f in folder_paths.get_filename_list(key) if f.lower().endswith(tuple(extensions))]
        except KeyError:
            return []
    out = set()
    for root in folder_paths_for(key):
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.lower().endswith(tuple(extensions)):
                    out.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def _dirs(key: str, marker: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    base = models_dir()
    for root in folder_paths_for(key):
        if not os.path.isdir(root):
            continue
        for c in [root] + [os.path.join(root, d) for d in sorted(os.listdir(root))]:
            if os.path.isfile(os.path.join(c, marker)):
                rel = os.path.relpath(c, base).replace(os.sep, "/")
                out.setdefault(os.path.abspath(c).replace(os.sep, "/") if rel.startswith("..") else rel, c)
    return out


def list_dirs(key: str, marker: str = "config.json") -> List[str]:
    """Folders holding `marker` under a key, for models kept as a folder of files (a BERT tokenizer and
    config): each registered folder itself and its direct subfolders, named by their path relative to the
    models dir (absolute when outside it)."""
    return sorted(_dirs(key, marker))


def dir_path(key: str, name: str, marker: str = "config.json") -> Optional[str]:
    """The full path of a folder listed by list_dirs, or None."""
    return _dirs(key, marker).get(name)


def full_path(key: str, name: str) -> Optional[str]:
    """The full path of a file under a key, or None."""
    if HAS_COMFY:
        try:
            return folder_paths.get_full_path(key, name)
        except KeyError:
            return None
    for root in folder_paths_for(key):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            return p
    return None


def require_file(key: str, name: str, expected: str) -> str:
    """The full path of `name` under `key`, or FileNotFoundError naming the file, the folders searched and
    `expected` (what the file is, where users get it, its licence)."""
    path = full_path(key, name)
    if path is None:
        raise FileNotFoundError(f"SwapForge: no file {name!r} in {folder_paths_for(key)}. {expected} "
                                "Put the file there and refresh the node list.")
    return path


def new_file_path(key: str, filename: str, default_stem: str, overwrite: bool,
                  extension: str = ".safetensors") -> str:
    """Where a Save node writes `filename` (base name only, extension added) in the key's default folder;
    refuses to replace an existing file unless `overwrite`."""
    name = os.path.basename(filename.strip()) or default_stem
    if not name.endswith(extension):
        name += extension
    folder = default_folder(key)
    path = os.path.join(folder, name)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"SwapForge: {path} already exists. Choose another file name or set overwrite "
                              "to true.")
    os.makedirs(folder, exist_ok=True)
    return path


def output_directory() -> str:
    if HAS_COMFY:
        return folder_paths.get_output_directory()
    return os.path.abspath(os.environ.get("SWAPFORGE_OUTPUT_DIR", "output"))


def temp_directory() -> str:
    """ComfyUI's temp folder (emptied at start and exit; served by GET /view?type=temp); without ComfyUI
    $SWAPFORGE_TEMP_DIR or <system temp>/swapforge_temp."""
    if HAS_COMFY:
        return folder_paths.get_temp_directory()
    import tempfile
    return os.path.abspath(os.environ.get("SWAPFORGE_TEMP_DIR", os.path.join(tempfile.gettempdir(), "swapforge_temp")))


def save_temp_image(rgb_uint8, prefix: str) -> dict:
    """Write an [H, W, 3] uint8 picture as a JPEG into the temp folder; returns the reference a node's `ui`
    output carries ({"filename", "subfolder", "type": "temp"}), as ComfyUI's PreviewImage does."""
    from PIL import Image
    import uuid
    folder = temp_directory()
    sub = "swapforge"
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}.jpg"
    Image.fromarray(rgb_uint8).save(os.path.join(folder, sub, name), quality=88)
    return {"filename": name, "subfolder": sub, "type": "temp"}


# ---------------------------------------------------------------- interrupts and progress

class Interrupted(Exception):
    """Raised by the fallback interrupt check (ComfyUI raises its own InterruptProcessingException)."""


_fallback_interrupt = False


def request_interrupt(value: bool = True) -> None:
    """Ask the running loop to stop at its next progress step (tests; ComfyUI has POST /interrupt)."""
    global _fallback_interrupt
    if HAS_COMFY:
        _mm.interrupt_current_processing(value)
    else:
        _fallback_interrupt = value


def check_interrupt() -> None:
    """Raise if the user pressed Cancel (ComfyUI) or request_interrupt() was called (fallback)."""
    global _fallback_interrupt
    if HAS_COMFY:
        _mm.throw_exception_if_processing_interrupted()
    elif _fallback_interrupt:
        _fallback_interrupt = False
        raise Interrupted("SwapForge: processing was interrupted.")


class Progress:
    """A progress bar that is also an interrupt point: call it (or .update()) once per frame/step.

    Inside ComfyUI it drives comfy.utils.ProgressBar (websocket `progress` messages, the node's bar in the
    editor); everywhere it checks for interrupts first. An optional `on_step(done, total)` callback is
    called too (scripts print with it).
    """

    def __init__(self, total: int, on_step: Optional[Callable[[int, int], None]] = None):
        self.total = max(int(total), 1)
        self.done = 0
        self.on_step = on_step
        self._bar = _cu.ProgressBar(self.total) if HAS_COMFY else None

    def update(self, n: int = 1, preview=None) -> None:
        check_interrupt()
        self.done += n
        if self._bar is not None:
            if preview is not None:
                self._bar.update_absolute(self.done, self.total, preview)
            else:
                self._bar.update(n)
        if self.on_step is not None:
            self.on_step(self.done, self.total)

    __call__ = update


# ---------------------------------------------------------------- devices and the memory manager

def torch_device():
    return _mm.get_torch_device() if HAS_COMFY else torch.device("cpu")


def intermediate_device():
    return _mm.intermediate_device() if HAS_COMFY else torch.device("cpu")


def compute_dtype(device=None):
    """The dtype ComfyUI would pick for a model on `device` (float32 without ComfyUI)."""
    if not HAS_COMFY:
        return torch.float32
    device = device or _mm.get_torch_device()
    return torch.float16 if _mm.should_use_fp16(device) else torch.float32


class _Holder(torch.nn.Module):
    """What ModelPatcher manages: a plain module holding ours. ModelPatcher writes attributes such as `.device`
    onto its model, which transformers' and segment_anything's models expose as read-only properties; moving
    the holder moves the module it holds."""

    def __init__(self, module):
        super().__init__()
        self.inner = module


class ManagedModel:
    """A torch module placed through ComfyUI's memory manager (ModelPatcher + load_models_gpu), so it is
    loaded, offloaded and counted like ComfyUI's own models. Without ComfyUI it stays on the CPU.

    Use `module = managed.load()` right before running it; never pick a GPU by hand. ModelPatcher sizes the
    module itself (the bytes of its state dict) for the memory manager.
    """

    def __init__(self, module):
        self.module = module
        self.patcher = None
        if HAS_COMFY:
            import comfy.model_patcher  # type: ignore
            self.patcher = comfy.model_patcher.ModelPatcher(
                _Holder(module), load_device=_mm.get_torch_device(), offload_device=_mm.unet_offload_device())

    @property
    def device(self):
        if self.patcher is not None:
            return self.patcher.load_device
        return torch.device("cpu")

    def load(self):
        if self.patcher is not None:
            _mm.load_models_gpu([self.patcher])
        return self.module


def load_diffusion_model(unet_sd: dict, what: str):
    """A ComfyUI MODEL (ModelPatcher) from a UNet state dict (diffusers or ldm layout), with ComfyUI's own
    model detection, dtype choice and memory management."""
    if not HAS_COMFY:
        raise RuntimeError(f"SwapForge: {what} can only be turned into a MODEL inside ComfyUI.")
    import comfy.sd  # type: ignore
    model = comfy.sd.load_diffusion_model_state_dict(unet_sd)
    if model is None:
        raise ValueError(f"SwapForge: ComfyUI could not recognise the UNet in {what}. Expected an SD1.5 UNet "
                         "with a 9-channel input (FuseAnyPart's fap.bin).")
    return model


# ---------------------------------------------------------------- CLIP vision and sampling noise

_warned_pixels = False


def clip_vision_pixels(clip_vision, pixel_values: torch.Tensor) -> Optional[torch.Tensor]:
    """Penultimate hidden states [N, tokens, D] of a ComfyUI CLIP_VISION for pixel values that are ALREADY
    normalised [N, 3, S, S]: what ``ClipVisionModel.encode_image`` does after its preprocessing (resize, crop,
    8-bit rounding, normalisation), which this skips, so an input can be exactly zero after normalisation.
    Mirrors comfy/clip_vision.py (0.3.64): load_model_gpu(patcher), model(pixel_values=...,
    intermediate_output=-2 or 'all'), the penultimate states moved to the intermediate device.
    None (and one warning) for a CLIP_VISION object without that inner model, so the caller can fall back."""
    global _warned_pixels
    model = getattr(clip_vision, "model", None)
    if model is None or not callable(model):
        if not _warned_pixels:
            log.warning("SwapForge: this CLIP_VISION (%s) has no inner model to call on pixel values; the exact "
                        "zero unconditional input falls back to the mean-colour image (8-bit rounded).",
                        type(clip_vision).__name__)
            _warned_pixels = True
        return None
    patcher = getattr(clip_vision, "patcher", None)
    if HAS_COMFY and patcher is not None:
        _mm.load_model_gpu(patcher)
    device = getattr(clip_vision, "load_device", None) or pixel_values.device
    all_states = bool(getattr(clip_vision, "return_all_hidden_states", False))
    with torch.no_grad():
        out = model(pixel_values=pixel_values.to(device).float(), intermediate_output="all" if all_states else -2)
    states = out[1][:, -2] if all_states else out[1]
    return states.to(intermediate_device())


def prepare_noise(latent: torch.Tensor, seed: int, batch_index=None) -> torch.Tensor:
    """The initial noise ComfyUI's samplers draw for a latent and a seed (comfy.sample.prepare_noise inside
    ComfyUI; outside it the same numbers from a local generator seeded alike, without touching the global
    seed)."""
    if HAS_COMFY:
        import comfy.sample  # type: ignore
        return comfy.sample.prepare_noise(latent, seed, batch_index)
    g = torch.Generator("cpu").manual_seed(int(seed))
    if batch_index is None:
        return torch.randn(latent.size(), dtype=latent.dtype, layout=latent.layout, generator=g, device="cpu")
    inds = [int(i) for i in batch_index]
    noises = [torch.randn([1] + list(latent.size())[1:], dtype=latent.dtype, layout=latent.layout, generator=g,
                          device="cpu") for _ in range(max(inds) + 1)]
    return torch.cat([noises[i] for i in inds], dim=0)
