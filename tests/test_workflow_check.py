"""tools.workflow_check against ComfyUI 0.3.64's core schemas, with hand-made API and UI workflows."""
import copy
import json
import os
import warnings

import pytest

from tools import make_ui_workflow
from tools import workflow_check as wc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECT_INFO = os.path.join(os.path.dirname(ROOT), "shared", "comfyui", "object_info.json")

pytestmark = pytest.mark.skipif(wc.default_object_info_path() is None,
                                reason="no object_info.json (set SWAPFORGE_OBJECT_INFO)")


@pytest.fixture(scope="module")
def schemas():
    return wc.load_schemas(include_pack=False)


def scale_api():
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                     "width": 512, "height": 768, "crop": "center"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "scaled"}},
    }


def ksampler_api():
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a portrait", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 1234, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
            "scheduler": "karras", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ks"}},
    }


def ksampler_ui():
    """A KSampler graph as the frontend saves it: seed followed by its control_after_generate value."""
    def node(id, type, inputs, outputs, widgets, mode=0, title=None):
        n = {"id": id, "type": type, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": id,
             "mode": mode, "inputs": inputs, "outputs": outputs, "properties": {}, "widgets_values": widgets}
        if title:
            n["title"] = title
        return n

    def inp(name, type, link):
        return {"name": name, "type": type, "link": link}

    def out(name, type, links, slot):
        return {"name": name, "type": type, "links": links, "slot_index": slot}

    nodes = [
        node(4, "CheckpointLoaderSimple", [], [out("MODEL", "MODEL", [1], 0), out("CLIP", "CLIP", [2, 3], 1),
                                               out("VAE", "VAE", [8], 2)], ["sd15.safetensors"]),
        node(6, "CLIPTextEncode", [inp("clip", "CLIP", 2)], [out("CONDITIONING", "CONDITIONING", [4], 0)],
             ["a portrait"], title="Positive"),
        node(7, "CLIPTextEncode", [inp("clip", "CLIP", 3)], [out("CONDITIONING", "CONDITIONING", [5], 0)],
             ["blurry"]),
        node(5, "EmptyLatentImage", [], [out("LATENT", "LATENT", [6], 0)], [512, 512, 1]),
        node(3, "KSampler", [inp("model", "MODEL", 1), inp("positive", "CONDITIONING", 4),
                             inp("negative", "CONDITIONING", 5), inp("latent_image", "LATENT", 6)],
             [out("LATENT", "LATENT", [7], 0)], [1234, "randomize", 20, 7.5, "euler", "karras", 1.0]),
        node(8, "VAEDecode", [inp("samples", "LATENT", 7), inp("vae", "VAE", 8)],
             [out("IMAGE", "IMAGE", [9], 0)], []),
        node(9, "SaveImage", [inp("images", "IMAGE", 9)], [], ["ks"]),
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 4, 1, 6, 0, "CLIP"], [3, 4, 1, 7, 0, "CLIP"],
             [4, 6, 0, 3, 1, "CONDITIONING"], [5, 7, 0, 3, 2, "CONDITIONING"], [6, 5, 0, 3, 3, "LATENT"],
             [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]]
    return {"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def virtual_ui():
    """LoadImage -> Reroute -> ImageScale (bypassed) -> ImageInvert -> SaveImage, a PrimitiveNode
    feeding SaveImage's filename_prefix, a muted PreviewImage, a muted ImageInvert feeding a PreviewImage,
    and a Note."""
    nodes = [
        {"id": 1, "type": "LoadImage", "mode": 0, "order": 0,
         "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1, 6, 7]},
                                   {"name": "MASK", "type": "MASK", "links": None}],
         "widgets_values": ["face.png", "image"]},
        {"id": 2, "type": "Reroute", "mode": 0, "order": 1,
         "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"name": "", "type": "IMAGE", "links": [2]}]},
        {"id": 3, "type": "ImageScale", "mode": 4, "order": 2,
         "inputs": [{"name": "image", "type": "IMAGE", "link": 2}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}],
         "widgets_values": ["bilinear", 256, 256, "disabled"]},
        {"id": 4, "type": "ImageInvert", "mode": 0, "order": 3, "title": "Invert",
         "inputs": [{"name": "image", "type": "IMAGE", "link": 3}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}], "widgets_values": []},
        {"id": 5, "type": "SaveImage", "mode": 0, "order": 4,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 4},
                    {"name": "filename_prefix", "type": "STRING", "widget": {"name": "filename_prefix"},
                     "link": 5}],
         "outputs": [], "widgets_values": ["ignored"]},
        {"id": 6, "type": "PrimitiveNode", "mode": 0, "order": 5, "inputs": [],
         "outputs": [{"name": "STRING", "type": "STRING", "links": [5], "widget": {"name": "filename_prefix"}}],
         "widgets_values": ["swapped"]},
        {"id": 7, "type": "PreviewImage", "mode": 2, "order": 6,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 6}], "outputs": [], "widgets_values": []},
        {"id": 8, "type": "ImageInvert", "mode": 2, "order": 7,
         "inputs": [{"name": "image", "type": "IMAGE", "link": 7}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [8]}], "widgets_values": []},
        {"id": 9, "type": "PreviewImage", "mode": 0, "order": 8,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 8}], "outputs": [], "widgets_values": []},
        {"id": 10, "type": "Note", "mode": 0, "order": 9, "inputs": [], "outputs": [],
         "widgets_values": ["remember the mask"]},
    ]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"],
             [4, 4, 0, 5, 0, "IMAGE"], [5, 6, 0, 5, 1, "STRING"], [6, 1, 0, 7, 0, "IMAGE"],
             [7, 1, 0, 8, 0, "IMAGE"], [8, 8, 0, 9, 0, "IMAGE"]]
    return {"last_node_id": 10, "last_link_id": 8, "nodes": nodes, "links": links, "version": 0.4}


# ---------------------------------------------------------------------------- API format

def test_detect_format_tells_ui_from_api():
    assert wc.detect_format(scale_api()) == "api"
    assert wc.detect_format(ksampler_ui()) == "ui"
    with pytest.raises(ValueError):
        wc.detect_format({"foo": 1})


@pytest.mark.parametrize("prompt", [scale_api(), ksampler_api()])
def test_valid_api_prompts_have_no_errors(schemas, prompt):
    errors, warnings = wc.check_api(prompt, schemas)
    assert errors == []


def test_file_combo_value_missing_from_list_is_only_a_warning(schemas):
    errors, warnings = wc.check_api(scale_api(), schemas)  # LoadImage lists only example.png here
    assert errors == []
    assert any("node 1 (LoadImage)" in w and "face.png" in w for w in warnings)
    errors, warnings = wc.check_api(ksampler_api(), schemas)  # empty checkpoint list: silent
    assert not any("sd15" in w for w in warnings)


def _only_error(schemas, prompt):
    errors, _ = wc.check_api(prompt, schemas)
    assert len(errors) == 1, errors
    return errors[0]


def test_unknown_class_type_is_an_error_naming_the_node(schemas):
    p = scale_api()
    p["2"]["class_type"] = "ImageScaleDeluxe"
    msg = _only_error(schemas, p)
    assert "node 2" in msg and "ImageScaleDeluxe" in msg


def test_link_of_wrong_type_is_an_error(schemas):
    p = ksampler_api()
    p["8"]["inputs"]["samples"] = ["4", 2]  # VAE into a LATENT input
    msg = _only_error(schemas, p)
    assert "node 8 (VAEDecode)" in msg and "LATENT" in msg and "VAE" in msg


def test_link_to_missing_node_or_output_is_an_error(schemas):
    p = scale_api()
    p["3"]["inputs"]["images"] = ["42", 0]
    assert "node 42" in _only_error(schemas, p)
    p = scale_api()
    p["3"]["inputs"]["images"] = ["2", 3]
    assert "node 3 (SaveImage)" in _only_error(schemas, p)


def test_missing_required_input_is_an_error(schemas):
    p = ksampler_api()
    del p["3"]["inputs"]["negative"]
    msg = _only_error(schemas, p)
    assert "node 3 (KSampler)" in msg and "'negative'" in msg


@pytest.mark.parametrize("name,value,words", [
    ("steps", 0, "minimum 1"), ("steps", 20.5, "integer"), ("cfg", 101.0, "maximum 100"),
    ("sampler_name", "euler_magic", "choices"), ("seed", -1, "minimum 0"), ("denoise", "1", "number")])
def test_widget_values_out_of_range_or_type_are_errors(schemas, name, value, words):
    p = ksampler_api()
    p["3"]["inputs"][name] = value
    msg = _only_error(schemas, p)
    assert "node 3 (KSampler)" in msg and name in msg and words in msg


def test_multi_type_and_wildcard_links_are_compatible():
    assert wc.types_compatible("IMAGE", "IMAGE,MASK")
    assert wc.types_compatible("*", "LATENT")
    assert wc.types_compatible("COMBO", ["a", "b"])
    assert not wc.types_compatible("STRING", ["a", "b"])
    assert not wc.types_compatible("IMAGE", "MASK")


def test_unknown_input_name_is_a_warning(schemas):
    p = scale_api()
    p["2"]["inputs"]["sharpen"] = 2
    errors, warnings = wc.check_api(p, schemas)
    assert errors == [] and any("node 2" in w and "sharpen" in w for w in warnings)


# ---------------------------------------------------------------------------- UI format

def test_ui_workflow_with_seed_control_value_passes_and_converts(schemas):
    ui = ksampler_ui()
    errors, _ = wc.check_ui(ui, schemas)
    assert errors == []
    prompt = wc.ui_to_api(ui, schemas)
    assert wc.strip_meta(prompt) == ksampler_api()
    assert prompt["6"]["_meta"]["title"] == "Positive"
    assert prompt["7"]["_meta"]["title"] == "CLIP Text Encode (Prompt)"


def test_ui_widgets_values_too_short_is_an_error(schemas):
    ui = ksampler_ui()
    ui["nodes"][4]["widgets_values"] = [1234, "randomize", 20, 7.5]
    errors, _ = wc.check_ui(ui, schemas)
    assert any("node 3 (KSampler)" in e and "too short" in e and "scheduler" in e for e in errors)


def test_ui_unknown_type_bad_link_and_range_are_errors(schemas):
    ui = ksampler_ui()
    ui["nodes"][3]["widgets_values"] = [512, 512, 0]  # batch_size min 1
    errors, _ = wc.check_ui(ui, schemas)
    assert any("node 5 (EmptyLatentImage" in e and "batch_size" in e for e in errors)
    ui = ksampler_ui()
    ui["links"][6] = [7, 3, 0, 8, 1, "LATENT"]  # LATENT into VAEDecode's vae slot
    ui["nodes"][5]["inputs"][1]["link"] = 7
    ui["nodes"][5]["inputs"][0]["link"] = None
    errors, _ = wc.check_ui(ui, schemas)
    assert any("link 7" in e and "node 8 (VAEDecode)" in e and "'vae'" in e for e in errors)
    ui = ksampler_ui()
    ui["nodes"][0]["type"] = "MysteryLoader"
    errors, _ = wc.check_ui(ui, schemas)
    assert any("node 4 (MysteryLoader)" in e for e in errors)


def test_ui_to_api_resolves_reroute_primitive_bypass_and_mute(schemas):
    ui = virtual_ui()
    expected = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "swapped"}},
        "9": {"class_type": "PreviewImage", "inputs": {}},
    }
    prompt = wc.ui_to_api(ui, schemas)
    assert wc.strip_meta(prompt) == expected
    assert prompt["4"]["_meta"]["title"] == "Invert"
    errors, _ = wc.check_ui(ui, schemas)  # PreviewImage 9 lost its input to the muted node
    assert errors == ["node 9 (PreviewImage 'Preview Image'): required input 'images' (IMAGE) is missing"]


def test_converted_widget_keeps_its_widget_slot(schemas):
    ui = ksampler_ui()
    sampler = ui["nodes"][4]
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 10})
    ui["nodes"].append({"id": 11, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "links": [10]}],
                        "widgets_values": [77, "fixed"]})
    ui["links"].append([10, 11, 0, 3, 4, "INT"])
    prompt = wc.ui_to_api(ui, schemas)
    assert prompt["3"]["inputs"]["seed"] == 77 and prompt["3"]["inputs"]["steps"] == 20
    assert wc.check_ui(ui, schemas).errors == []


@pytest.mark.parametrize("prompt", [scale_api(), ksampler_api()])
def test_api_to_ui_round_trip_is_exact(schemas, prompt):
    ui = wc.api_to_ui(prompt, schemas)
    assert ui["version"] == 0.4 and ui["last_link_id"] == len(ui["links"])
    assert wc.check_ui(ui, schemas).errors == []
    assert wc.strip_meta(wc.ui_to_api(ui, schemas)) == prompt
    json.dumps(ui)


def test_api_to_ui_adds_control_value_after_seed_and_lays_out_columns(schemas):
    ui = wc.api_to_ui(ksampler_api(), schemas)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert nodes[3]["widgets_values"][:2] == [1234, "fixed"]
    assert nodes[4]["pos"][0] < nodes[6]["pos"][0] < nodes[3]["pos"][0] < nodes[8]["pos"][0]
    for lid, src, src_slot, dst, dst_slot, typ in ui["links"]:
        assert nodes[dst]["inputs"][dst_slot]["link"] == lid and lid in nodes[src]["outputs"][src_slot]["links"]


def test_api_to_ui_keeps_linked_widget_inputs_as_sockets(schemas):
    p = ksampler_api()
    p["10"] = {"class_type": "PrimitiveInt", "inputs": {"value": 99}}
    p["3"]["inputs"]["seed"] = ["10", 0]
    assert wc.check_api(p, schemas).errors == []
    ui = wc.api_to_ui(p, schemas)
    assert wc.strip_meta(wc.ui_to_api(ui, schemas)) == p


# ---------------------------------------------------------------------------- pack schemas, CLIs

def test_schema_from_class_matches_object_info_shape():
    class FakeNode:
        CATEGORY = "SwapForge/Test"
        DESCRIPTION = "Scales a face."
        RETURN_TYPES = ("IMAGE", "SWAPFORGE_FACES")
        RETURN_NAMES = ("image", "faces")
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": ("IMAGE",), "mode": (("fast", "slow"), {"default": "fast"}),
                                 "size": ("INT", {"default": 4, "min": 1, "max": 8})},
                    "optional": {"mask": ("MASK",)},
                    "hidden": {"unique_id": "UNIQUE_ID"}}

    s = wc.schema_from_class(FakeNode, "Fake", "Fake Node")
    assert s["input"]["required"]["mode"] == [["fast", "slow"], {"default": "fast"}]
    assert s["input_order"] == {"required": ["image", "mode", "size"], "optional": ["mask"],
                                "hidden": ["unique_id"]}
    assert s["output"] == ["IMAGE", "SWAPFORGE_FACES"] and s["output_name"] == ["image", "faces"]
    assert s["output_is_list"] == [False, False]
    assert (s["name"], s["display_name"], s["category"], s["output_node"]) == \
        ("Fake", "Fake Node", "SwapForge/Test", True)
    schemas = {"Fake": s}
    assert wc.check_api({"1": {"class_type": "Fake", "inputs": {"mode": "slow", "size": 9}}}, schemas).errors \
        == ["node 1 (Fake): input 'size': 9 is above the maximum 8",
            "node 1 (Fake): required input 'image' (IMAGE) is missing"]


def test_pack_schemas_gives_object_info_shaped_entries_or_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = wc.pack_schemas()
    assert isinstance(out, dict)
    for name, s in out.items():
        assert s["name"] == name and set(s["input_order"]) <= set(s["input"])


def test_cli_reports_ok_errors_and_writes_api(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ksampler_ui()))
    bad_prompt = scale_api()
    bad_prompt["2"]["inputs"]["width"] = -5
    bad = tmp_path / "bad.api.json"
    bad.write_text(json.dumps(bad_prompt))
    out = tmp_path / "good.api.json"
    assert wc.main([str(good), "--no-pack", "--to-api", str(out)]) == 0
    assert wc.strip_meta(json.loads(out.read_text())) == ksampler_api()
    assert wc.main([str(good), str(bad), "--no-pack"]) == 1
    text = capsys.readouterr().out
    assert "OK" in text and "node 2 (ImageScale)" in text and "width" in text


def test_make_ui_workflow_writes_twins_and_check_finds_stale_ones(tmp_path, schemas):
    (tmp_path / "api").mkdir()
    api = tmp_path / "api" / "portrait.api.json"
    api.write_text(json.dumps(ksampler_api()))
    out = make_ui_workflow.write_twin(str(api), schemas)
    assert out == str(tmp_path / "portrait.json")
    assert make_ui_workflow.check_twins(schemas, str(tmp_path)) == []
    changed = ksampler_api()
    changed["3"]["inputs"]["steps"] = 30
    api.write_text(json.dumps(changed))
    problems = make_ui_workflow.check_twins(schemas, str(tmp_path))
    assert len(problems) == 1 and "portrait.json" in problems[0]
    (tmp_path / "api" / "lonely.api.json").write_text(json.dumps(scale_api()))
    assert len(make_ui_workflow.check_twins(schemas, str(tmp_path))) == 2
    (tmp_path / "orphan.json").write_text((tmp_path / "portrait.json").read_text())
    problems = make_ui_workflow.check_twins(schemas, str(tmp_path))
    assert len(problems) == 3 and any("orphan.json: no API twin" in p for p in problems)


def test_a_file_name_in_a_combo_with_fixed_entries_is_a_warning_not_an_error(schemas):
    prompt = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}}}
    res = wc.check_api(prompt, schemas)
    assert res.errors == [] and any("vae_name" in w for w in res.warnings)
    prompt["1"]["inputs"]["vae_name"] = "not_a_choice"
    assert any("vae_name" in e for e in wc.check_api(prompt, schemas).errors)
