"""Lay a UI workflow out as a readable template: stages in titled groups, a Note, loaders beside what they feed.

A layout file (``example_workflows/api/<name>.layout.json``, see tools/workflow_dirs.py) says::

    {"note": {"title": "Read me", "text": "What the template does; the model files and their folders."},
     "groups": [{"title": "Target", "nodes": [2, 3, 4]}, {"title": "Models", "nodes": [17, 20, 22]}, ...],
     "rows": [["Read me", "Models"], ["Target", "Sampling", "Output"], ...]}

``rows`` places the groups (and the Note, by its title) in rows, left to right; inside a group the nodes stand
in columns by link depth within the group. Every executing node must be in exactly one group. ``apply_layout``
only moves nodes, adds the groups and the Note node: the converted prompt (``ui_to_api``) is unchanged.
"""
from __future__ import annotations

import copy
from typing import Dict, List

from .workflow_check import UI_TITLE_HEIGHT, is_link

GROUP_TITLE_HEIGHT = 38   # a group's title band (font 24)
PAD = 20                  # inside a group, around its nodes
NODE_GAP_X = 40
NODE_GAP_Y = 30
GROUP_GAP = 50
NOTE_SIZE = (420, 300)
PANEL_HEIGHT = 250        # the face picker / part-box editor of web/swapforge.js (200 px canvas + buttons)
COLORS = ["#3f789e", "#8a6a3e", "#5a7f4a", "#7a4f7f", "#a1309b", "#4f6f8f", "#8f5f4f", "#3f8f7f"]


def _check(spec: dict, prompt: dict) -> None:
    seen: Dict[str, str] = {}
    for g in spec.get("groups", []):
        for nid in g["nodes"]:
            key = str(nid)
            if key not in prompt:
                raise ValueError(f"layout group {g['title']!r}: node {nid} is not in the workflow")
            if key in seen:
                raise ValueError(f"layout: node {nid} is in groups {seen[key]!r} and {g['title']!r}")
            seen[key] = g["title"]
    missing = sorted(set(prompt) - set(seen), key=int)
    if missing:
        raise ValueError(f"layout: node(s) {', '.join(missing)} are in no group; put every node in one group")
    titles = [g["title"] for g in spec.get("groups", [])] + ([spec["note"]["title"]] if spec.get("note") else [])
    placed = [t for row in spec.get("rows", []) for t in row]
    if sorted(placed) != sorted(titles):
        raise ValueError(f"layout rows {placed} must name each group and the note once: {titles}")


def apply_layout(ui: dict, prompt: dict, spec: dict) -> dict:
    """A copy of `ui` (api_to_ui's output for `prompt`) laid out by `spec` (module docstring)."""
    _check(spec, prompt)
    ui = copy.deepcopy(ui)
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    for key, n in nodes.items():
        # the editor widens a node to its title (about 6.9 px a character at the default font; seen in 1.27)
        title = n.get("title") or ""
        n["size"][0] = max(n["size"][0], 60 + 7 * len(title))
        # web/swapforge.js adds a preview panel to these nodes
        inputs = prompt[key].get("inputs") or {}
        if n["type"].startswith("SwapForge_") and ("face_index" in inputs or n["type"] == "SwapForge_SelectFaces"):
            n["size"][1] += PANEL_HEIGHT
    boxes: Dict[str, dict] = {}  # title -> {"w", "h", "place": callable(x, y)}

    for gi, g in enumerate(spec.get("groups", [])):
        members = [str(n) for n in g["nodes"]]
        depth: Dict[str, int] = {}

        def node_depth(key, seen=()):
            if key in depth:
                return depth[key]
            srcs = [str(v[0]) for v in (prompt[key].get("inputs") or {}).values()
                    if is_link(v) and str(v[0]) in members and str(v[0]) not in seen]
            depth[key] = 1 + max((node_depth(s, seen + (key,)) for s in srcs), default=-1)
            return depth[key]

        for m in members:
            node_depth(m)
        cols: Dict[int, List[str]] = {}
        for m in members:  # keep the spec's order within a column
            cols.setdefault(depth[m], []).append(m)
        col_w = {d: max(nodes[m]["size"][0] for m in ms) for d, ms in cols.items()}
        col_h = {d: sum(nodes[m]["size"][1] + UI_TITLE_HEIGHT for m in ms) + NODE_GAP_Y * (len(ms) - 1)
                 for d, ms in cols.items()}
        order = sorted(cols)
        w = sum(col_w[d] for d in order) + NODE_GAP_X * (len(order) - 1) + 2 * PAD
        h = max(col_h.values()) + 2 * PAD + GROUP_TITLE_HEIGHT

        def place(x, y, g=g, order=order, cols=cols, col_w=col_w, w=w, h=h, gi=gi):
            cx = x + PAD
            for d in order:
                cy = y + GROUP_TITLE_HEIGHT + PAD
                for m in cols[d]:
                    nodes[m]["pos"] = [cx, cy + UI_TITLE_HEIGHT]
                    cy += nodes[m]["size"][1] + UI_TITLE_HEIGHT + NODE_GAP_Y
                cx += col_w[d] + NODE_GAP_X
            ui["groups"].append({"id": gi + 1, "title": g["title"], "bounding": [x, y, w, h],
                                 "color": g.get("color", COLORS[gi % len(COLORS)]), "font_size": 24, "flags": {}})

        boxes[g["title"]] = {"w": w, "h": h, "place": place}

    note = spec.get("note")
    if note:
        nid = max(int(k) for k in nodes) + 1
        size = list(note.get("size", NOTE_SIZE))
        note_node = {"id": nid, "type": "Note", "pos": [0, 0], "size": size, "flags": {}, "order": len(nodes),
                     "mode": 0, "inputs": [], "outputs": [], "title": note["title"],
                     "properties": {"text": ""}, "widgets_values": [note["text"]],
                     "color": "#432", "bgcolor": "#653"}
        ui["nodes"].append(note_node)
        ui["last_node_id"] = max(ui.get("last_node_id", 0), nid)

        def place_note(x, y, n=note_node):
            n["pos"] = [x, y + UI_TITLE_HEIGHT]

        boxes[note["title"]] = {"w": size[0], "h": size[1] + UI_TITLE_HEIGHT, "place": place_note}

    ui["groups"] = []
    y = 0
    for row in spec.get("rows", []):
        x = 0
        for title in row:
            boxes[title]["place"](x, y)
            x += boxes[title]["w"] + GROUP_GAP
        y += max(boxes[t]["h"] for t in row) + GROUP_GAP
    ui["groups"].sort(key=lambda g: g["id"])
    ui["extra"] = {"ds": {"scale": 0.6, "offset": [40, 40]}}
    return ui
