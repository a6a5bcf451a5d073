"""The pack as ComfyUI sees it: registration, node contract, family fault isolation, services fallback."""
import importlib
import logging
import sys

import pytest

from packloader import load_pack

# Combo inputs that list files on disk: empty until the user has such a file (as in ComfyUI's own loaders).
FILE_LIST_INPUTS = {("SwapForge_LoadIdentity", "name"), ("SwapForge_FuseAnyPartLoader", "fap_name"),
                    ("SwapForge_StyleSwapLoader", "swapper_name"), ("SwapForge_PSPEncoderLoader", "encoder_name"),
                    ("SwapForge_StyleGAN2Loader", "generator_name"),
                    ("SwapForge_LoadAvatar", "name"), ("SwapForge_GroundingDinoLoader", "model_name"),
                    ("SwapForge_GroundingDinoLoader", "bert"), ("SwapForge_SAMLoader", "model_name"),
                    ("SwapForge_LoadInpaintModel", "name")}
COMFY_TYPES = {"IMAGE", "MASK", "LATENT", "CONDITIONING", "MODEL", "VAE", "CLIP_VISION", "INT", "FLOAT",
               "STRING", "BOOLEAN", "NOISE"}


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def test_every_family_loads_without_errors(pack):
    nodes = sys.modules["swapforge.nodes"]
    assert nodes.DISABLED_FAMILIES == {}
    assert set(nodes.FAMILIES) == {"face", "partswap", "fuseanypart", "styleswap", "gswap", "headswap"}


def test_node_ids_are_prefixed_and_have_display_names_and_categories(pack):
    assert len(pack.NODE_CLASS_MAPPINGS) >= 12
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("SwapForge_"), node_id
        assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY.startswith("SwapForge/"), node_id
        assert len(cls.DESCRIPTION) > 20, node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id


def test_every_input_has_a_tooltip_and_types_are_comfy_or_prefixed(pack):
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                typ, opts = entry[0], (entry[1] if len(entry) > 1 else {})
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if isinstance(typ, str):
                    assert typ in COMFY_TYPES or typ.startswith("SWAPFORGE_"), f"{node_id}.{name}: {typ}"
                else:
                    assert isinstance(typ, list), f"{node_id}.{name}: {typ!r}"
                    assert typ or (node_id, name) in FILE_LIST_INPUTS, f"{node_id}.{name}: empty choice list"
                    if "default" in opts:
                        assert opts["default"] in typ, f"{node_id}.{name}: default not a choice"
        for typ in cls.RETURN_TYPES:
            assert typ in COMFY_TYPES or typ.startswith("SWAPFORGE_"), f"{node_id} returns {typ}"
        if getattr(cls, "RETURN_NAMES", None):
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        if cls.RETURN_TYPES:
            tips = getattr(cls, "OUTPUT_TOOLTIPS", ())
            assert len(tips) == len(cls.RETURN_TYPES) and all(tips), f"{node_id}: output tooltips"
        if getattr(cls, "OUTPUT_IS_LIST", None):
            assert len(cls.OUTPUT_IS_LIST) == len(cls.RETURN_TYPES)


def test_a_family_whose_import_fails_is_disabled_alone_with_one_log_line(pack, monkeypatch, caplog):
    nodes = sys.modules["swapforge.nodes"]
    real_import = importlib.import_module

    def fake_import(name, package=None):
        if name == ".partswap":
            raise ImportError("No module named 'cv2'")
        return real_import(name, package)

    monkeypatch.setattr(nodes.importlib, "import_module", fake_import)
    monkeypatch.setattr(nodes, "NODE_CLASS_MAPPINGS", {})
    monkeypatch.setattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", {})
    monkeypatch.setattr(nodes, "DISABLED_FAMILIES", {})
    with caplog.at_level(logging.WARNING, logger="SwapForge"):
        disabled = nodes.load_families()
    assert set(disabled) == {"partswap"}
    assert "SwapForge_DetectFaces" in nodes.NODE_CLASS_MAPPINGS
    assert not any(k.startswith("SwapForge_ClassicPartSwap") for k in nodes.NODE_CLASS_MAPPINGS)
    lines = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert len(lines) == 1 and "partswap" in lines[0] and "cv2" in lines[0]


def test_models_package_never_imports_comfyui():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "models"
    for path in root.rglob("*.py"):
        text = path.read_text()
        for banned in ("import folder_paths", "import comfy", "from comfy", "from folder_paths", "from nodes"):
            assert banned not in text, f"{path} contains {banned!r}"


def test_only_the_services_module_imports_comfyui():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "nodes"
    for path in root.rglob("*.py"):
        if path.name == "services.py":
            continue
        text = path.read_text()
        for banned in ("import folder_paths", "import comfy", "from comfy"):
            assert banned not in text, f"{path} contains {banned!r}"


def test_fallback_progress_counts_steps_and_is_an_interrupt_point(pack):
    services = sys.modules["swapforge.nodes.services"]
    assert services.HAS_COMFY is False
    seen = []
    bar = services.Progress(3, on_step=lambda d, t: seen.append((d, t)))
    bar()
    bar.update()
    assert seen == [(1, 3), (2, 3)]
    services.request_interrupt()
    with pytest.raises(services.Interrupted):
        bar()
    bar()  # the flag is cleared once raised
    assert seen[-1] == (3, 3)


def test_fallback_folders_follow_env_and_list_files(pack, tmp_path, monkeypatch):
    services = sys.modules["swapforge.nodes.services"]
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    folder = services.default_folder("swapforge_identities")
    assert folder == str(tmp_path / "swapforge" / "identities")
    (tmp_path / "swapforge" / "identities" / "sub").mkdir(parents=True)
    (tmp_path / "swapforge" / "identities" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "swapforge" / "identities" / "sub" / "b.safetensors").write_bytes(b"x")
    (tmp_path / "swapforge" / "identities" / "notes.txt").write_text("x")
    assert services.list_files("swapforge_identities") == ["a.safetensors", "sub/b.safetensors"]
    assert services.full_path("swapforge_identities", "sub/b.safetensors").endswith("b.safetensors")
    assert services.full_path("swapforge_identities", "missing.safetensors") is None
