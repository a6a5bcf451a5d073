"""The services adapter outside ComfyUI stays quiet, and inside a ComfyUI whose own modules fail to import it says
so loudly once (with the traceback) instead of silently running on its plain-Python fallbacks."""
import importlib.util
import logging
import os
import sys
import types

SERVICES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nodes", "services.py")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SERVICES)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _errors(caplog):
    return [r for r in caplog.records if r.name == "SwapForge" and r.levelno >= logging.ERROR]


def test_plain_python_without_comfyui_logs_nothing(caplog, monkeypatch):
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    with caplog.at_level(logging.DEBUG, logger="SwapForge"):
        mod = _load("swapforge_services_plain")
    assert not mod.HAS_COMFY and mod.COMFY_IMPORT_ERROR is None and _errors(caplog) == []


def test_comfyui_module_that_raises_on_import_is_logged_once_with_its_error(caplog, monkeypatch, tmp_path):
    pkg = tmp_path / "comfy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model_management.py").write_text("raise RuntimeError('no usable torch device: driver too old')\n")
    (pkg / "utils.py").write_text("")
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    for k in [k for k in sys.modules if k == "comfy" or k.startswith("comfy.")]:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="SwapForge"):
        mod = _load("swapforge_services_broken")
    errs = _errors(caplog)
    assert not mod.HAS_COMFY and mod.folder_paths is None
    assert len(errs) == 1
    text = errs[0].getMessage()
    assert "driver too old" in text and "model_management" in text and "fix the comfyui installation" in text.lower()


def test_a_missing_comfy_module_inside_comfyui_is_logged_too(caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))   # a package without its modules
    with caplog.at_level(logging.DEBUG, logger="SwapForge"):
        mod = _load("swapforge_services_missing")
    errs = _errors(caplog)
    assert not mod.HAS_COMFY and len(errs) == 1 and "comfy.model_management" in errs[0].getMessage()
