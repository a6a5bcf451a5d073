"""Reading PyTorch and NumPy files without running code from them.

A ``.pt``/``.pth``/``.bin`` file is a Python pickle: unpickling it can call any function the file names, so a
checkpoint from the internet could run code on the user's machine. SwapForge therefore reads every pickle with
``torch.load(weights_only=True)`` (tensors, numbers, strings and plain containers only) and every ``.npy``/``.npz``
with ``allow_pickle=False``. A file that needs anything else is refused, never retried with the unsafe setting.

torch's own refusal text advises re-running with ``weights_only=False``; SwapForge must not pass that advice on,
so :func:`load_torch_file` replaces it with a short reason (which Python object the file references) and says
what to do instead. No ComfyUI import here.
"""
from __future__ import annotations

import os
import pickle
import re

import torch

__all__ = ["UnsafeCheckpointError", "load_torch_file", "safe_error_text"]

_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_ADVICE_RE = re.compile(r"weights_only|safe_globals|add_safe_globals|allow_pickle", re.IGNORECASE)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A pickle that holds Python objects besides tensors and plain containers: refused (loading it could run
    code). Subclasses pickle.UnpicklingError so callers catching unreadable files catch it too."""


def safe_error_text(exc: BaseException) -> str:
    """The reason of a failed load, without advice to load unsafely: torch's "re-run with weights_only=False"
    (or "allowlist this global") text becomes the name of the object the file references."""
    text = str(exc)
    if not _ADVICE_RE.search(text):
        return text
    m = _GLOBAL_RE.search(text)
    what = f"it references the Python object {m.group(1)}" if m else "it holds Python objects besides tensors"
    return (f"{what}, and SwapForge loads only tensors, numbers, strings and plain containers, because "
            f"unpickling anything else can run code from the file")


def load_torch_file(path: str, map_location="cpu"):
    """``torch.load(path, map_location, weights_only=True)``; a file that needs other Python objects raises
    UnsafeCheckpointError (with :func:`safe_error_text`'s reason, never the advice to use weights_only=False).
    Other read errors (truncated zip, missing file) propagate unchanged."""
    try:
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{os.fspath(path)} was refused: {safe_error_text(exc)}. Use the original release file (or a "
            f".safetensors copy of its tensors) from a source you trust.") from None
