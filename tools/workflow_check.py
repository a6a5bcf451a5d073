"""Offline checks and conversions for ComfyUI workflow JSON (UI format and API format).

Schemas come from a saved ``GET /object_info`` answer (the 383 core nodes) plus the pack's own node
classes, turned into the same shape without a server (``pack_schemas``).

Usage::

    python -m tools.workflow_check FILE... [--object-info PATH | --server URL] [--to-api OUT] [--no-pack]

``--server http://127.0.0.1:8188`` reads the schemas from a running ComfyUI (its ``GET /object_info``, with
every custom pack it loaded), so no saved answer is needed.

Results: ``check_api`` and ``check_ui`` return a ``CheckResult`` with ``errors`` and ``warnings`` (lists
of strings, each naming the node as ``node 12 (KSampler)``); it unpacks as ``errors, warnings = ...``.

Rules
-----
* Widget inputs: type INT, FLOAT, STRING, BOOLEAN, ``COMBO`` or a list of choices, unless the input has
  ``forceInput``. Every other type is a socket (a link), unless a UI node lists the input with a
  ``widget`` key.
* Seed-like inputs: INT inputs whose options have ``control_after_generate: true`` or whose name is
  ``seed``/``noise_seed``. The frontend stores one extra ``widgets_values`` entry after them
  (``fixed``/``increment``/``decrement``/``randomize``); it is skipped when reading and written as
  ``fixed`` by ``api_to_ui``. Combos with ``image_upload`` or ``video_upload`` may be followed by an extra ``"image"``
  value (the upload button), which is skipped when the list is long enough to hold it.
* Types: an output type fits an input type when they are equal, when either is ``*``, or when the
  comma-separated type sets (``IMAGE,MASK``) share a member. A combo input takes ``COMBO``, ``*`` or
  a list-typed output.
* Values: INT must be an integer (an integral float is accepted) in [min, max]; FLOAT a number in
  [min, max]; BOOLEAN a bool; STRING a str. All errors.
* Combos: a value outside the choices is an error, except for file-listing combos, whose choices
  depend on the server's files: if the choice list is empty here, any string is accepted silently; if
  the input has an upload option (``image_upload``, ``video_upload``, ``audio_upload``,
  ``file_upload``, ``remote``) or most of its choices look like file names (have a file extension),
  a missing value is a warning.
* Unknown input names are warnings; missing required inputs are errors; hidden inputs are ignored.
* UI nodes muted (mode 2) or bypassed (mode 4) are not executed: an unknown type there is a warning and
  their values are not checked. ``check_ui`` also converts the graph with ``ui_to_api`` and runs
  ``check_api`` on the result, so rerouted links and required inputs are checked as the server will see
  them.
* ``None`` in ``widgets_values`` means "not set": ``ui_to_api`` leaves that input out (``api_to_ui``
  writes ``None`` for widget inputs a prompt leaves out, so the round trip is exact).
* ``_meta.title`` is the UI node's ``title``, else the schema's ``display_name``, else the type.
* Subgraphs (``definitions.subgraphs``) are not expanded: a node whose type names a subgraph is an
  error.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "file_upload", "remote")
VIRTUAL_TYPES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")
NOTE_TYPES = ("Note", "MarkdownNote")
MODE_MUTED = 2
MODE_BYPASS = 4
FILE_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".sft", ".gguf",
                   ".onnx", ".yaml", ".yml", ".json", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp",
                   ".tif", ".tiff", ".wav", ".mp3", ".flac", ".ogg", ".mp4", ".webm", ".mov", ".mkv",
                   ".latent", ".glb", ".gltf", ".obj", ".fbx", ".stl", ".dat", ".npz", ".npy")


# ----------------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------------

def default_object_info_path() -> Optional[str]:
    """$SWAPFORGE_OBJECT_INFO, else ../shared/comfyui/object_info.json next to the repo, else
    tools/object_info_core.json; None when none of them exists."""
    env = os.environ.get("SWAPFORGE_OBJECT_INFO")
    candidates = [env] if env else []
    candidates += [os.path.join(os.path.dirname(REPO_ROOT), "shared", "comfyui", "object_info.json"),
                   os.path.join(REPO_ROOT, "tools", "object_info_core.json")]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    return None


def _jsonable(value):
    """Tuples to lists, as the server's JSON answer has them."""
    return json.loads(json.dumps(value, default=str))


def schema_from_class(cls, name: Optional[str] = None, display_name: Optional[str] = None) -> dict:
    """The /object_info entry ComfyUI's server would build for a classic (V1) node class."""
    name = name or cls.__name__
    inputs = _jsonable(cls.INPUT_TYPES())
    returns = list(getattr(cls, "RETURN_TYPES", ()))
    info = {
        "input": inputs,
        "input_order": {section: list(values.keys()) for section, values in inputs.items()},
        "output": _jsonable(returns),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns))),
        "output_name": list(getattr(cls, "RETURN_NAMES", returns)),
        "name": name,
        "display_name": display_name or name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "custom_nodes.swapforge"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }
    for attr, key in (("OUTPUT_TOOLTIPS", "output_tooltips"), ("DEPRECATED", "deprecated"),
                      ("EXPERIMENTAL", "experimental"), ("API_NODE", "api_node")):
        if hasattr(cls, attr):
            info[key] = _jsonable(getattr(cls, attr))
    return info


def _import_pack():
    """The pack's module holding NODE_CLASS_MAPPINGS: the repo root imported as a package, as ComfyUI does."""
    from .pack import load_pack
    return load_pack("swapforge_pack_schemas")


def pack_schemas() -> dict:
    """Schemas of the pack's own nodes, built offline from their classes; {} (and a warning) when the
    pack cannot be imported."""
    try:
        mod = _import_pack()
        mappings = getattr(mod, "NODE_CLASS_MAPPINGS")
    except Exception as e:  # the checker still works on core nodes
        warnings.warn(f"SwapForge: the pack's node classes could not be imported ({type(e).__name__}: {e}); "
                      "only core node schemas are known. Fix the import error to check the pack's nodes.")
        return {}
    names = getattr(mod, "NODE_DISPLAY_NAME_MAPPINGS", {}) or {}
    out = {}
    for key, cls in mappings.items():
        try:
            out[key] = schema_from_class(cls, key, names.get(key))
        except Exception as e:
            warnings.warn(f"SwapForge: node {key} has no usable INPUT_TYPES ({type(e).__name__}: {e}).")
    return out


def fetch_object_info(server: str, timeout: float = 60.0) -> dict:
    """GET <server>/object_info from a running ComfyUI (every node it has loaded, custom packs included).
    Raises ConnectionError naming the URL and what to check when the server cannot be read."""
    import urllib.error
    import urllib.request

    base = server.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    url = base + "/object_info"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = json.loads(r.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ConnectionError(
            f"SwapForge: could not read {url} ({type(e).__name__}: {getattr(e, 'reason', e)}). Expected a running "
            "ComfyUI server at that address (for example http://127.0.0.1:8188); start ComfyUI or fix the "
            "address, or check against a saved answer with --object-info.") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConnectionError(f"SwapForge: {url} did not answer with node schemas (a JSON object of objects). "
                              "Point --server at a ComfyUI server.")
    return data


def load_schemas(object_info_path: Optional[str] = None, include_pack: bool = True,
                 server: Optional[str] = None) -> dict:
    """class_type -> /object_info-shaped schema: the core nodes from a running server's GET /object_info
    (``server``) or a saved answer, plus the pack's own (a node the source already has is kept as it is)."""
    if server:
        schemas = fetch_object_info(server)
    else:
        path = object_info_path or default_object_info_path()
        if not path or not os.path.isfile(path):
            looked = path or "$SWAPFORGE_OBJECT_INFO, ../shared/comfyui/object_info.json, tools/object_info_core.json"
            raise FileNotFoundError(
                f"SwapForge: no object_info JSON found (looked at {looked}). Check against a running ComfyUI "
                "with --server http://127.0.0.1:8188, or save GET /object_info from one and pass it with "
                "--object-info.")
        with open(path, encoding="utf-8") as f:
            schemas = json.load(f)
    if include_pack:
        for key, schema in pack_schemas().items():
            schemas.setdefault(key, schema)  # core nodes cannot be overridden, as in ComfyUI
    return schemas


# ----------------------------------------------------------------------------------------------------
# Schema helpers
# ----------------------------------------------------------------------------------------------------

def iter_inputs(schema: dict, sections=("required", "optional")) -> Iterator[Tuple[str, Any, dict, str]]:
    """(name, type, options, section) for each input, in the schema's input order."""
    inputs = schema.get("input", {}) or {}
    order = schema.get("input_order", {}) or {}
    for section in sections:
        specs = inputs.get(section) or {}
        names = order.get(section) or list(specs.keys())
        for name in names:
            if name not in specs:
                continue
            spec = specs[name]
            if isinstance(spec, str):
                spec = [spec]
            typ = spec[0] if spec else "*"
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            yield name, typ, opts, section


def input_spec(schema: dict, name: str) -> Optional[Tuple[Any, dict, str]]:
    for n, typ, opts, section in iter_inputs(schema, ("required", "optional", "hidden")):
        if n == name:
            return typ, opts, section
    return None


def combo_options(typ, opts: dict) -> Optional[list]:
    if isinstance(typ, list):
        return typ
    if typ == "COMBO":
        return list(opts.get("options") or [])
    return None


def is_widget_type(typ, opts: dict) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def is_seed_like(name: str, typ, opts: dict) -> bool:
    return typ == "INT" and (bool(opts.get("control_after_generate")) or name in SEED_NAMES)


def type_name(typ) -> str:
    """Slot type as the UI writes it: lists are COMBO."""
    return "COMBO" if isinstance(typ, list) else str(typ)


def types_compatible(out_type, in_type) -> bool:
    if isinstance(in_type, list) or in_type == "COMBO":
        return isinstance(out_type, list) or out_type in ("COMBO", "*")
    if isinstance(out_type, list):
        out_type = "COMBO"
    if out_type == in_type or "*" in (out_type, in_type) or not out_type or not in_type:
        return True
    outs = {t.strip() for t in str(out_type).split(",")}
    ins = {t.strip() for t in str(in_type).split(",")}
    return bool(outs & ins) or "*" in outs or "*" in ins


def is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int)
            and not isinstance(value[1], bool))


def _looks_like_files(options: list) -> bool:
    names = [o for o in options if isinstance(o, str)]
    if not names:
        return False
    hits = sum(1 for o in names if o.lower().endswith(FILE_EXTENSIONS))
    return hits * 2 > len(names)


def is_file_combo(options: list, opts: dict) -> bool:
    return not options or any(opts.get(k) for k in UPLOAD_OPTIONS) or _looks_like_files(options)


def check_value(name: str, typ, opts: dict, value) -> Tuple[Optional[str], Optional[str]]:
    """(error, warning) for one widget value; each None when fine. Messages name the input."""
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    options = combo_options(typ, opts)
    if options is not None:
        values = value if opts.get("multiselect") and isinstance(value, list) else [value]
        for v in values:
            if v in options:
                continue
            # a value that is itself a model/image file name can only belong to a file list (e.g. VAELoader
            # lists "pixel_space" plus the files of models/vae): a file missing here is a warning
            file_value = isinstance(v, str) and v.lower().endswith(FILE_EXTENSIONS)
            if is_file_combo(options, opts) or file_value:
                if not isinstance(v, str):
                    return f"input '{name}': {v!r} is not a file name", None
                if options:
                    return None, (f"input '{name}': '{v}' is not in the known file list here; "
                                  "make sure the file exists on the server")
                continue
            shown = ", ".join(map(str, options[:8])) + (", ..." if len(options) > 8 else "")
            return f"input '{name}': {v!r} is not one of the choices ({shown})", None
        return None, None
    lo, hi = opts.get("min"), opts.get("max")
    if typ == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            return f"input '{name}': expected an integer, got {value!r}", None
    elif typ == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"input '{name}': expected a number, got {value!r}", None
    elif typ == "BOOLEAN":
        if not isinstance(value, bool):
            return f"input '{name}': expected true or false, got {value!r}", None
        return None, None
    elif typ == "STRING":
        if not isinstance(value, str):
            return f"input '{name}': expected a string, got {value!r}", None
        return None, None
    else:
        return None, None
    if lo is not None and value < lo:
        return f"input '{name}': {value} is below the minimum {lo}", None
    if hi is not None and value > hi:
        return f"input '{name}': {value} is above the maximum {hi}", None
    return None, None


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------

@dataclass
class CheckResult:
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __iter__(self):
        return iter((self.errors, self.warnings))

    def error(self, msg: str):
        if msg not in self.errors:
            self.errors.append(msg)

    def warn(self, msg: str):
        if msg not in self.warnings:
            self.warnings.append(msg)


def detect_format(wf: dict) -> str:
    """"ui" for a saved frontend graph, "api" for a POST /prompt prompt; ValueError otherwise."""
    if isinstance(wf, dict) and isinstance(wf.get("nodes"), list) and "links" in wf:
        return "ui"
    if isinstance(wf, dict) and wf and all(isinstance(v, dict) and "class_type" in v for v in wf.values()):
        return "api"
    raise ValueError("SwapForge: this JSON is neither a UI workflow (nodes + links) nor an API prompt "
                     "(node id -> {class_type, inputs}). Export it from ComfyUI with Save or Export (API).")


def _api_label(node_id, node: dict) -> str:
    title = (node.get("_meta") or {}).get("title")
    ct = node.get("class_type")
    return f"node {node_id} ({ct}" + (f" '{title}'" if title and title != ct else "") + ")"


# ----------------------------------------------------------------------------------------------------
# API format
# ----------------------------------------------------------------------------------------------------

def check_api(prompt: dict, schemas: dict) -> CheckResult:
    """Check an API-format prompt against schemas; see the module docstring for the rules."""
    res = CheckResult()
    if not isinstance(prompt, dict) or not prompt:
        res.error("prompt: expected a non-empty object of node id -> {class_type, inputs}")
        return res
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            res.error(f"node {node_id}: has no class_type")
            continue
        label = _api_label(node_id, node)
        schema = schemas.get(node["class_type"])
        if schema is None:
            res.error(f"{label}: unknown node type '{node['class_type']}' (not a core node and not in "
                      "this pack; install the pack that provides it)")
            continue
        inputs = node.get("inputs") or {}
        known = {n: (t, o, s) for n, t, o, s in iter_inputs(schema, ("required", "optional", "hidden"))}
        for name, value in inputs.items():
            if name not in known:
                res.warn(f"{label}: input '{name}' is not an input of {node['class_type']}; it is ignored")
                continue
            typ, opts, section = known[name]
            if section == "hidden":
                continue
            if is_link(value):
                src_id = str(value[0])
                src = prompt.get(src_id)
                if not isinstance(src, dict):
                    res.error(f"{label}: input '{name}' links to node {src_id}, which is not in the prompt")
                    continue
                src_schema = schemas.get(src.get("class_type"))
                if src_schema is None:
                    continue  # reported on that node
                outs = src_schema.get("output") or []
                if not 0 <= value[1] < len(outs):
                    res.error(f"{label}: input '{name}' links to output {value[1]} of node {src_id} "
                              f"({src.get('class_type')}), which has {len(outs)} outputs")
                    continue
                if not types_compatible(outs[value[1]], typ):
                    res.error(f"{label}: input '{name}' expects {type_name(typ)} but is linked to "
                              f"{type_name(outs[value[1]])} (output {value[1]} of node {src_id} "
                              f"{src.get('class_type')})")
                continue
            if not is_widget_type(typ, opts):
                res.error(f"{label}: input '{name}' expects a link to a {type_name(typ)} output, "
                          f"got the value {value!r}")
                continue
            err, warn = check_value(name, typ, opts, value)
            if err:
                res.error(f"{label}: {err}")
            if warn:
                res.warn(f"{label}: {warn}")
        for name, typ, opts, section in iter_inputs(schema, ("required",)):
            if name not in inputs:
                res.error(f"{label}: required input '{name}' ({type_name(typ)}) is missing")
    return res


# ----------------------------------------------------------------------------------------------------
# UI format
# ----------------------------------------------------------------------------------------------------

def _ui_label(node: dict) -> str:
    title = node.get("title")
    typ = node.get("type")
    return f"node {node.get('id')} ({typ}" + (f" '{title}'" if title and title != typ else "") + ")"


def _ui_widget_names(node: dict) -> set:
    return {i.get("name") for i in node.get("inputs") or [] if isinstance(i, dict) and i.get("widget")}


def widget_inputs(schema: dict, node: Optional[dict] = None) -> List[Tuple[str, Any, dict, str]]:
    """The inputs that own a widgets_values slot, in order."""
    listed = _ui_widget_names(node) if node else set()
    return [(n, t, o, s) for n, t, o, s in iter_inputs(schema)
            if is_widget_type(t, o) or n in listed]


def parse_widgets(node: dict, schema: dict) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """Map a UI node's widgets_values onto its widget inputs: ({name: value}, errors, warnings).
    Values that are None (not set) are left out of the mapping."""
    values = node.get("widgets_values")
    widgets = widget_inputs(schema, node)
    out: Dict[str, Any] = {}
    errors: List[str] = []
    warns: List[str] = []
    if values is None:
        values = []
    if isinstance(values, dict):  # some frontends/extensions save by name
        for name, typ, opts, section in widgets:
            if values.get(name) is not None:
                out[name] = values[name]
        return out, errors, warns
    pos = 0
    missing: List[Tuple[str, str]] = []
    for idx, (name, typ, opts, section) in enumerate(widgets):
        if pos >= len(values):
            missing.append((name, section))
            continue
        value = values[pos]
        pos += 1
        if value is not None:
            out[name] = value
        left_widgets = len(widgets) - idx - 1
        if is_seed_like(name, typ, opts) and pos < len(values) and values[pos] in CONTROL_VALUES:
            pos += 1
        elif any(opts.get(k) for k in UPLOAD_OPTIONS[:4]) and len(values) - pos > left_widgets:
            pos += 1  # the upload button's value
    expected = len(widgets)
    if any(s == "required" for _, s in missing):
        names = ", ".join(n for n, _ in missing)
        errors.append(f"widgets_values is too short: {len(values)} values, no value for {names}")
    elif missing:
        warns.append("widgets_values has no value for the optional input(s) "
                     + ", ".join(n for n, _ in missing) + "; the server default is used")
    if pos < len(values):
        errors.append(f"widgets_values is too long: {len(values)} values for {expected} widget inputs "
                      f"({', '.join(n for n, *_ in widgets) or 'none'}); values may be shifted")
    return out, errors, warns


def _subgraph_ids(workflow: dict) -> set:
    subs = ((workflow.get("definitions") or {}).get("subgraphs")) or []
    return {s.get("id") for s in subs if isinstance(s, dict)}


def check_ui(workflow: dict, schemas: dict) -> CheckResult:
    """Check a UI-format workflow: node types, links, widgets_values, then the converted prompt."""
    res = CheckResult()
    nodes = {n.get("id"): n for n in workflow.get("nodes") or []}
    subgraphs = _subgraph_ids(workflow)
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"),
                    link.get("target_id"), link.get("target_slot"), link.get("type")]
        if not isinstance(link, list) or len(link) < 6:
            res.error(f"link {link!r}: expected [id, from_node, from_slot, to_node, to_slot, type]")
            continue
        links[link[0]] = link

    for node in nodes.values():
        typ = node.get("type")
        label = _ui_label(node)
        mode = node.get("mode", 0)
        if typ in subgraphs:
            res.error(f"{label}: subgraph nodes are not supported by this checker; "
                      "unpack the subgraph in ComfyUI and save again")
            continue
        if typ in VIRTUAL_TYPES:
            continue
        schema = schemas.get(typ)
        if schema is None:
            msg = f"{label}: unknown node type '{typ}' (not a core node and not in this pack)"
            (res.warn if mode in (MODE_MUTED, MODE_BYPASS) else res.error)(
                msg + (" - the node is muted/bypassed" if mode in (MODE_MUTED, MODE_BYPASS) else ""))
            continue
        _, errs, warns = parse_widgets(node, schema)
        for e in errs:
            (res.warn if mode in (MODE_MUTED, MODE_BYPASS) else res.error)(f"{label}: {e}")
        for w in warns:
            res.warn(f"{label}: {w}")
        for slot in node.get("inputs") or []:
            if slot.get("name") and input_spec(schema, slot["name"]) is None:
                res.warn(f"{label}: input '{slot['name']}' is not an input of {typ}")
            if slot.get("link") is not None and slot["link"] not in links:
                res.error(f"{label}: input '{slot.get('name')}' refers to link {slot['link']}, "
                          "which is not in the links list")

    for lid, (_, src_id, src_slot, dst_id, dst_slot, ltype) in links.items():
        src, dst = nodes.get(src_id), nodes.get(dst_id)
        if src is None or dst is None:
            res.error(f"link {lid}: connects node {src_id} to node {dst_id}, but node "
                      f"{src_id if src is None else dst_id} does not exist")
            continue
        outs = src.get("outputs") or []
        ins = dst.get("inputs") or []
        if not isinstance(src_slot, int) or not 0 <= src_slot < len(outs):
            res.error(f"link {lid}: {_ui_label(src)} has no output slot {src_slot}")
            continue
        if not isinstance(dst_slot, int) or not 0 <= dst_slot < len(ins):
            res.error(f"link {lid}: {_ui_label(dst)} has no input slot {dst_slot}")
            continue
        if ins[dst_slot].get("link") != lid:
            res.warn(f"link {lid}: {_ui_label(dst)} input '{ins[dst_slot].get('name')}' does not "
                     "refer back to it (stale link; ComfyUI ignores it)")
            continue
        if lid not in (outs[src_slot].get("links") or []):
            res.warn(f"link {lid}: {_ui_label(src)} output {src_slot} does not list it")
        src_schema = schemas.get(src.get("type"))
        dst_schema = schemas.get(dst.get("type"))
        out_type = (src_schema["output"][src_slot]
                    if src_schema and src_slot < len(src_schema.get("output") or []) else outs[src_slot].get("type"))
        spec = input_spec(dst_schema, ins[dst_slot].get("name")) if dst_schema else None
        in_type = spec[0] if spec else ins[dst_slot].get("type")
        if src.get("type") == "Reroute" or dst.get("type") == "Reroute":
            out_type = out_type if src.get("type") != "Reroute" else ltype
        if not types_compatible(out_type, in_type):
            res.error(f"link {lid}: {_ui_label(src)} output {src_slot} ({type_name(out_type)}) cannot "
                      f"feed {_ui_label(dst)} input '{ins[dst_slot].get('name')}' ({type_name(in_type)})")

    if res.errors:  # conversion of a broken graph would only repeat these
        return res
    try:
        prompt = ui_to_api(workflow, schemas)
    except ValueError as e:
        res.error(str(e))
        return res
    if not prompt:
        res.warn("workflow: no node would execute (all muted, bypassed or virtual)")
        return res
    api = check_api(prompt, schemas)
    for e in api.errors:
        res.error(e)
    for w in api.warnings:
        res.warn(w)
    return res


def ui_to_api(workflow: dict, schemas: dict) -> dict:
    """Convert a UI workflow to an API prompt, as the frontend's graphToPrompt does (see module doc)."""
    nodes = {n.get("id"): n for n in workflow.get("nodes") or []}
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"),
                    link.get("target_id"), link.get("target_slot"), link.get("type")]
        links[link[0]] = link
    subgraphs = _subgraph_ids(workflow)

    def resolve(link_id, want_type, depth=0):
        """('link', node_id, slot) | ('value', v) | None for the source feeding through link_id."""
        if link_id is None or link_id not in links or depth > 1000:
            return None
        _, src_id, src_slot, _, _, _ = links[link_id]
        src = nodes.get(src_id)
        if src is None:
            return None
        typ = src.get("type")
        if typ == "Reroute":
            ins = src.get("inputs") or []
            return resolve(ins[0].get("link") if ins else None, want_type, depth + 1)
        if typ == "PrimitiveNode":
            vals = src.get("widgets_values") or []
            return ("value", vals[0]) if vals else None
        if typ in NOTE_TYPES:
            return None
        if src.get("mode") == MODE_BYPASS:
            ins = src.get("inputs") or []
            order = ([src_slot] if isinstance(src_slot, int) and src_slot < len(ins) else []) + \
                list(range(len(ins)))
            for i in order:
                if type_name(ins[i].get("type")) == type_name(want_type):
                    return resolve(ins[i].get("link"), want_type, depth + 1)
            return None
        return ("link", str(src_id), src_slot)

    prompt: Dict[str, dict] = {}
    for node in sorted(nodes.values(), key=lambda n: (n.get("order", 0), str(n.get("id")))):
        typ = node.get("type")
        if typ in VIRTUAL_TYPES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        if typ in subgraphs:
            raise ValueError(f"{_ui_label(node)}: subgraph nodes are not supported; unpack the subgraph "
                             "in ComfyUI and save again")
        schema = schemas.get(typ)
        if schema is None:
            raise ValueError(f"{_ui_label(node)}: unknown node type '{typ}', so its widgets_values "
                             "cannot be mapped; install the pack that provides it")
        inputs, _, _ = parse_widgets(node, schema)
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            spec = input_spec(schema, slot.get("name"))
            want = slot.get("type") if spec is None else spec[0]
            src = resolve(slot["link"], want)
            if src is None:
                continue
            if src[0] == "value":
                inputs[slot["name"]] = src[1]
            else:
                inputs[slot["name"]] = [src[1], src[2]]
        title = node.get("title") or schema.get("display_name") or typ
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": typ, "_meta": {"title": title}}

    for node in prompt.values():  # links into muted/dropped nodes go, as in graphToPrompt
        for name in [n for n, v in node["inputs"].items() if is_link(v) and str(v[0]) not in prompt]:
            del node["inputs"][name]
    return prompt


def _default_value(typ, opts: dict):
    if "default" in opts:
        return opts["default"]
    options = combo_options(typ, opts)
    if options is not None:
        return options[0] if options else ""
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False}.get(typ, "")


# Heights the ComfyUI frontend (1.27) grows some nodes to once they show an image or a value; laying
# them out smaller makes them cover the node below (seen in the editor). The title bar is extra.
UI_MIN_HEIGHT = {"LoadImage": 314, "SaveImage": 270, "PreviewImage": 270, "PreviewAny": 88}
UI_TITLE_HEIGHT = 30


def api_to_ui(prompt: dict, schemas: dict, layout: str = "columns") -> dict:
    """A UI workflow whose ui_to_api equals prompt (up to _meta): nodes in columns by link depth.
    Node ids must be integers (as strings); ValueError for unknown types or dangling links."""
    if layout != "columns":
        raise ValueError(f"layout '{layout}' is not supported; use 'columns'")
    ids = {}
    for key in prompt:
        try:
            ids[key] = int(key)
        except ValueError:
            raise ValueError(f"node {key}: api_to_ui needs integer node ids") from None
    for key, node in prompt.items():
        if node.get("class_type") not in schemas:
            raise ValueError(f"{_api_label(key, node)}: unknown node type, cannot lay out its widgets")
        for name, value in (node.get("inputs") or {}).items():
            if is_link(value) and str(value[0]) not in prompt:
                raise ValueError(f"{_api_label(key, node)}: input '{name}' links to missing node {value[0]}")

    depth: Dict[str, int] = {}

    def node_depth(key, seen=()):
        if key in depth:
            return depth[key]
        if key in seen:
            return 0
        srcs = [str(v[0]) for v in (prompt[key].get("inputs") or {}).values() if is_link(v)]
        depth[key] = 1 + max((node_depth(s, seen + (key,)) for s in srcs), default=-1)
        return depth[key]

    for key in prompt:
        node_depth(key)
    ordered = sorted(prompt, key=lambda k: (depth[k], ids[k]))

    ui_nodes: Dict[str, dict] = {}
    for order, key in enumerate(ordered):
        node = prompt[key]
        schema = schemas[node["class_type"]]
        inputs = node.get("inputs") or {}
        slots, widgets_values, n_widgets, extra_h = [], [], 0, 0
        for name, typ, opts, section in iter_inputs(schema):
            widget = is_widget_type(typ, opts)
            value = inputs.get(name)
            if widget:
                n_widgets += 1
                if opts.get("multiline"):
                    extra_h += 60
                if is_link(value):
                    slots.append({"name": name, "type": type_name(typ), "widget": {"name": name},
                                  "link": None, "_src": value})
                    widgets_values.append(_default_value(typ, opts))
                else:
                    widgets_values.append(value)
                if is_seed_like(name, typ, opts):
                    widgets_values.append("fixed")
                if opts.get("image_upload") or opts.get("video_upload"):
                    widgets_values.append("image")  # the upload button's value (the editor stores "image" for both)
            else:
                slot = {"name": name, "type": type_name(typ), "link": None}
                if is_link(value):
                    slot["_src"] = value
                slots.append(slot)
        outputs = [{"name": (schema.get("output_name") or schema["output"])[i], "type": type_name(t),
                    "links": [], "slot_index": i} for i, t in enumerate(schema.get("output") or [])]
        rows = max(len([s for s in slots if "widget" not in s]), len(outputs))
        height = max(46 + 22 * rows + 26 * n_widgets + extra_h, UI_MIN_HEIGHT.get(node["class_type"], 0))
        ui = {"id": ids[key], "type": node["class_type"], "pos": [0, 0], "size": [320, height],
              "flags": {}, "order": order, "mode": 0, "inputs": slots, "outputs": outputs,
              "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets_values}
        title = (node.get("_meta") or {}).get("title")
        if title and title != schema.get("display_name", node["class_type"]):
            ui["title"] = title
        ui_nodes[key] = ui

    col_y: Dict[int, float] = {}
    for key in ordered:
        d = depth[key]
        y = col_y.get(d, 100)
        ui_nodes[key]["pos"] = [100 + 380 * d, y]
        col_y[d] = y + ui_nodes[key]["size"][1] + UI_TITLE_HEIGHT + 40

    ui_links = []
    for key in ordered:
        ui = ui_nodes[key]
        for slot_idx, slot in enumerate(ui["inputs"]):
            src = slot.pop("_src", None)
            if src is None:
                continue
            src_ui = ui_nodes[str(src[0])]
            if not 0 <= src[1] < len(src_ui["outputs"]):
                raise ValueError(f"node {key}: input '{slot['name']}' links to output {src[1]} of node "
                                 f"{src[0]}, which has {len(src_ui['outputs'])} outputs")
            lid = len(ui_links) + 1
            ltype = src_ui["outputs"][src[1]]["type"]
            ui_links.append([lid, src_ui["id"], src[1], ui["id"], slot_idx, ltype])
            slot["link"] = lid
            src_ui["outputs"][src[1]]["links"].append(lid)
    return {
        "last_node_id": max(ids.values(), default=0),
        "last_link_id": len(ui_links),
        "nodes": [ui_nodes[k] for k in ordered],
        "links": ui_links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": 0.4,
    }


def strip_meta(prompt: dict) -> dict:
    """The prompt without _meta, for comparisons."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in prompt.items()}


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------

def check_file(path: str, schemas: dict) -> Tuple[str, CheckResult, dict]:
    """(format, result, workflow) for one JSON file."""
    with open(path, encoding="utf-8") as f:
        wf = json.load(f)
    fmt = detect_format(wf)
    res = check_ui(wf, schemas) if fmt == "ui" else check_api(wf, schemas)
    return fmt, res, wf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.workflow_check",
                                 description="Check ComfyUI workflow JSON (UI or API format) offline.")
    ap.add_argument("files", nargs="+", metavar="FILE")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--object-info", help="saved GET /object_info JSON (default: see load_schemas)")
    src.add_argument("--server", metavar="URL",
                     help="read the schemas from a running ComfyUI's GET /object_info, e.g. http://127.0.0.1:8188")
    ap.add_argument("--no-pack", action="store_true", help="do not import the pack's node classes")
    ap.add_argument("--to-api", metavar="OUT",
                    help="write the API prompt: a file for one input, a folder for several")
    args = ap.parse_args(argv)
    try:
        schemas = load_schemas(args.object_info, include_pack=not args.no_pack, server=args.server)
    except (FileNotFoundError, ConnectionError) as e:
        print(e, file=sys.stderr)
        return 1
    failed = False
    for path in args.files:
        try:
            fmt, res, wf = check_file(path, schemas)
        except (OSError, ValueError) as e:
            print(f"{path}: ERROR {e}")
            failed = True
            continue
        if res.ok:
            print(f"{path}: OK ({fmt} format)")
        else:
            failed = True
            print(f"{path}: {len(res.errors)} error(s) ({fmt} format)")
            for e in res.errors:
                print(f"  error: {e}")
        for w in res.warnings:
            print(f"  warning: {w}")
        if args.to_api and res.ok:
            prompt = ui_to_api(wf, schemas) if fmt == "ui" else wf
            out = args.to_api
            if len(args.files) > 1:
                os.makedirs(out, exist_ok=True)
                stem = os.path.basename(path)
                stem = stem[:-5] if stem.endswith(".json") else stem
                out = os.path.join(out, stem.replace(".api", "") + ".api.json")
            with open(out, "w", encoding="utf-8") as f:
                json.dump(prompt, f, indent=2)
                f.write("\n")
            print(f"  wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
