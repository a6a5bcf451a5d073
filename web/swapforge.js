// SwapForge editor extension (ComfyUI frontend 1.2x): a face picker on the nodes that take a face index, and a
// part-box editor on the Part Detector. Both read the node's `ui` output of the last run (nodes/preview.py) and
// write only the node's own widgets (face_index / indices, boxes), so a saved workflow carries the choice and a
// workflow queued through the API alone gives the same result. Without a run they show a hint and the widgets
// take typed values as usual.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PARTS = ["eyes", "nose", "mouth"];
const PART_COLORS = { eyes: "#ff3333", nose: "#33dd33", mouth: "#3366ff" };
const HANDLE_PX = 8; // a press this close to a box corner resizes it
const MIN_SIZE = 0.01; // smallest box side (normalised)

function viewUrl(ref) {
  const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder || "", type: ref.type || "temp" });
  return api.apiURL(`/view?${q.toString()}&rand=${Math.random()}`);
}

function widgetOf(node, name) {
  return (node.widgets || []).find((w) => w.name === name);
}

function setWidget(node, name, value) {
  const w = widgetOf(node, name);
  if (!w) return;
  w.value = value;
  w.callback?.(value, app.canvas, node);
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

// ------------------------------------------------------------------------------------------------------------
// Tiling, as models/partswap/part_edit.py tile_edited: boxes are [y0, x0, y1, x1] in 0..1.
// ------------------------------------------------------------------------------------------------------------
function split(upper, lower, upperEdited, lowerEdited) {
  if (upperEdited !== lowerEdited) return upperEdited ? upper[2] : lower[0];
  if (lower[0] < 0.5 * (upper[0] + upper[2])) return upper[2];
  return 0.5 * (upper[2] + lower[0]);
}

export function tileEdited(parts, edited) {
  const [e, n, m] = PARTS.map((p) => parts[p].slice());
  const s1 = split(e, n, edited.has("eyes"), edited.has("nose"));
  const s2 = split(n, m, edited.has("nose"), edited.has("mouth"));
  if (!(e[0] < s1 && s1 < s2 && s2 < m[2])) return null;
  e[2] = s1; n[0] = s1; n[2] = s2; m[0] = s2;
  return { eyes: e, nose: n, mouth: m };
}

function parseBoxes(text) {
  if (!text || !String(text).trim()) return { face: null, boxes: {} };
  try {
    const d = JSON.parse(text);
    const boxes = {};
    for (const p of PARTS) if (Array.isArray(d[p]) && d[p].length === 4) boxes[p] = d[p].map(Number);
    return { face: Number.isInteger(d.face) ? d.face : 0, boxes };
  } catch (e) {
    return { face: null, boxes: {}, error: String(e) };
  }
}

// ------------------------------------------------------------------------------------------------------------
// A canvas panel inside a DOM widget: the preview image scaled to the node's width.
// ------------------------------------------------------------------------------------------------------------
function makePanel(node, name, hint) {
  const root = document.createElement("div");
  root.className = `swapforge-panel swapforge-${name}`;
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;font:12px sans-serif;color:#ccc";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "width:100%;flex:1 1 auto;min-height:60px;background:#222;border-radius:4px;cursor:crosshair";
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;gap:4px;flex-wrap:wrap;align-items:center;min-height:18px";
  const caption = document.createElement("span");
  caption.textContent = hint;
  bar.append(caption);
  root.append(canvas, bar);
  const widget = node.addDOMWidget(name, "swapforge_panel", root, { serialize: false, hideOnZoom: false,
    getMinHeight: () => 200, getValue: () => "", setValue: () => {} });
  widget.serialize = false; // not in widgets_values: saved workflows keep the node's own widgets only
  // view: the part of the frame shown, [x0, y0, x1, y1] in 0..1 (the whole frame unless zoomed)
  const panel = { root, canvas, bar, caption, widget, img: null, data: null, fit: null, view: [0, 0, 1, 1] };
  panel.layout = () => {
    // fit the view of the frame (width x height) into the canvas, keeping its aspect; fit maps frame
    // coordinates: canvas x = fit.x + x * fit.w
    const rect = canvas.getBoundingClientRect();
    const cw = Math.max(1, Math.round(rect.width)), ch = Math.max(1, Math.round(rect.height));
    if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
    const d = panel.data;
    if (!d) return null;
    const [vx0, vy0, vx1, vy1] = panel.view;
    const vw = (vx1 - vx0) * d.width, vh = (vy1 - vy0) * d.height;
    const s = Math.min(cw / vw, ch / vh);
    const w = d.width * s, h = d.height * s;
    panel.fit = { x: (cw - vw * s) / 2 - vx0 * w, y: (ch - vh * s) / 2 - vy0 * h, w, h,
                  clip: [(cw - vw * s) / 2, (ch - vh * s) / 2, vw * s, vh * s] };
    return panel.fit;
  };
  panel.drawBase = (ctx) => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const f = panel.fit;
    if (!f) return;
    ctx.save();
    ctx.beginPath();
    ctx.rect(...f.clip);
    ctx.clip();
    if (panel.img && panel.img.complete && panel.img.naturalWidth) ctx.drawImage(panel.img, f.x, f.y, f.w, f.h);
    else { ctx.fillStyle = "#555"; ctx.fillRect(f.x, f.y, f.w, f.h); }
    ctx.restore();
  };
  // normalised frame coordinates of a pointer event
  panel.toFrame = (ev) => {
    const f = panel.fit;
    const rect = canvas.getBoundingClientRect();
    const px = (ev.clientX - rect.left) * (canvas.width / rect.width);
    const py = (ev.clientY - rect.top) * (canvas.height / rect.height);
    return { x: (px - f.x) / f.w, y: (py - f.y) / f.h, px, py };
  };
  panel.load = (data, redraw) => {
    panel.data = data;
    if (data.image) {
      const img = new Image();
      img.onload = redraw;
      img.src = viewUrl(data.image);
      panel.img = img;
    } else panel.img = null;
    redraw();
  };
  new ResizeObserver(() => panel.redraw?.()).observe(canvas);
  return panel;
}

// ------------------------------------------------------------------------------------------------------------
// Face picker: faces numbered in the node's own order; a click sets the index widget.
// ------------------------------------------------------------------------------------------------------------
function selectedIndices(node, widgetName) {
  const v = widgetOf(node, widgetName)?.value;
  if (typeof v === "number") return new Set(v >= 0 ? [v] : []);
  const out = new Set();
  for (const part of String(v ?? "").split(",")) {
    const t = part.trim();
    if (/^\d+$/.test(t)) out.add(Number(t));
    const r = t.match(/^(\d+)-(\d+)$/);
    if (r) for (let i = Number(r[1]); i <= Number(r[2]); i++) out.add(i);
  }
  return out;
}

function addFacePicker(node) {
  const panel = makePanel(node, "swapforge_face_picker", "Run the workflow once, then click a face to pick it.");
  node.swapforgeFacePicker = panel;
  panel.redraw = () => {
    const fit = panel.layout();
    const ctx = panel.canvas.getContext("2d");
    panel.drawBase(ctx);
    const d = panel.data;
    if (!fit || !d) return;
    const chosen = selectedIndices(node, d.widget);
    d.boxes.forEach((b, k) => {
      const x = fit.x + b[0] * fit.w, y = fit.y + b[1] * fit.h, w = (b[2] - b[0]) * fit.w, h = (b[3] - b[1]) * fit.h;
      const on = chosen.has(k);
      ctx.lineWidth = on ? 3 : 1.5;
      ctx.strokeStyle = on ? "#ffd400" : "#ffffff";
      ctx.strokeRect(x, y, w, h);
      ctx.fillStyle = on ? "#ffd400" : "rgba(0,0,0,0.65)";
      ctx.fillRect(x, y - 16, 18, 16);
      ctx.fillStyle = on ? "#000" : "#fff";
      ctx.font = "bold 12px sans-serif";
      ctx.fillText(String(k), x + 4, y - 4);
    });
    panel.caption.textContent = d.boxes.length
      ? `frame ${d.frame}: ${d.boxes.length} face(s). Click a face to set ${d.widget}` +
        (d.widget === "indices" ? " (shift-click adds or removes)." : ".")
      : `frame ${d.frame}: no face found.`;
  };
  panel.canvas.addEventListener("pointerdown", (ev) => {
    const d = panel.data;
    if (!d || !panel.fit) return;
    const p = panel.toFrame(ev);
    // the smallest face box under the pointer
    let best = -1, area = Infinity;
    d.boxes.forEach((b, k) => {
      if (p.x >= b[0] && p.x <= b[2] && p.y >= b[1] && p.y <= b[3]) {
        const a = (b[2] - b[0]) * (b[3] - b[1]);
        if (a < area) { area = a; best = k; }
      }
    });
    if (best < 0) return;
    ev.preventDefault(); ev.stopPropagation();
    if (d.widget === "indices") {
      const set = selectedIndices(node, "indices");
      if (ev.shiftKey) { if (set.has(best)) set.delete(best); else set.add(best); }
      const value = ev.shiftKey ? [...set].sort((a, b) => a - b).join(",") : String(best);
      setWidget(node, "indices", value || "0");
    } else setWidget(node, d.widget, best);
    panel.redraw();
  });
  return panel;
}

// ------------------------------------------------------------------------------------------------------------
// Part-box editor (Part Detector): drag a box to move it, drag a corner to resize it, the part buttons toggle a
// part between the box edited here and the detector's box. The boxes widget holds the edited parts, tiled.
// ------------------------------------------------------------------------------------------------------------
function addBoxEditor(node) {
  const panel = makePanel(node, "swapforge_box_editor",
    "Run the workflow once, then drag the part boxes (corners resize); the buttons switch a part between edited and detected.");
  node.swapforgeBoxEditor = panel;
  const buttons = {};
  for (const p of PARTS) {
    const b = document.createElement("button");
    b.className = `swapforge-toggle-${p}`;
    b.style.cssText = `font:11px sans-serif;padding:1px 6px;border-radius:3px;border:1px solid ${PART_COLORS[p]};background:#333;color:#eee;cursor:pointer`;
    b.addEventListener("click", (ev) => { ev.preventDefault(); toggle(p); });
    buttons[p] = b;
  }
  const zoom = document.createElement("button");
  zoom.className = "swapforge-zoom";
  zoom.style.cssText = "font:11px sans-serif;padding:1px 6px;border-radius:3px;border:1px solid #888;background:#333;color:#eee;cursor:pointer";
  let zoomed = true; // zoomed on the edited face; the whole frame to choose another face
  zoom.addEventListener("click", (ev) => { ev.preventDefault(); zoomed = !zoomed; panel.redraw(); });
  const reset = document.createElement("button");
  reset.className = "swapforge-reset";
  reset.textContent = "detector's boxes";
  reset.style.cssText = "font:11px sans-serif;padding:1px 6px;border-radius:3px;border:1px solid #888;background:#333;color:#eee;cursor:pointer";
  reset.addEventListener("click", (ev) => { ev.preventDefault(); setWidget(node, "boxes", ""); panel.redraw(); });
  panel.bar.prepend(...PARTS.map((p) => buttons[p]), reset, zoom);

  const state = () => {
    // the face being edited and its boxes: edited ones from the widget, the others detected
    const d = panel.data;
    const parsed = parseBoxes(widgetOf(node, "boxes")?.value);
    const fi = widgetOf(node, "face_index")?.value;
    let face = parsed.face ?? (Number.isInteger(fi) && fi >= 0 ? fi : 0);
    if (!d || face >= d.faces.length) return { face, parsed, edited: new Set(), boxes: null };
    const edited = new Set(Object.keys(parsed.boxes));
    const merged = {};
    for (const p of PARTS) merged[p] = parsed.boxes[p] || d.faces[face].detected[p];
    return { face, parsed, edited, boxes: tileEdited(merged, edited) || merged };
  };

  const write = (face, boxes, edited) => {
    if (!edited.size) { setWidget(node, "boxes", ""); return true; }
    const tiled = tileEdited(boxes, edited);
    if (!tiled) {
      panel.caption.textContent = "Not stacked: keep eyes above nose above mouth.";
      return false;
    }
    const out = { face };
    for (const p of PARTS) if (edited.has(p)) out[p] = tiled[p].map((v) => Math.round(v * 1e6) / 1e6);
    setWidget(node, "boxes", JSON.stringify(out));
    return true;
  };

  const toggle = (p) => {
    const s = state();
    if (!s.boxes) return;
    const edited = new Set(s.edited);
    if (edited.has(p)) edited.delete(p); else edited.add(p);
    const boxes = {};
    for (const q of PARTS) boxes[q] = (edited.has(q) ? (s.parsed.boxes[q] || s.boxes[q]) : panel.data.faces[s.face].detected[q]);
    write(s.face, boxes, edited);
    panel.redraw();
  };

  let drag = null; // {part, mode: "move" | corner index, start, box0, face, edited}
  panel.redraw = (live) => {
    const s0 = live || state();
    const d0 = panel.data;
    if (d0 && zoomed && s0.boxes && d0.faces[s0.face]) {
      const [x0, y0, x1, y1] = d0.faces[s0.face].box;
      const mx = 0.35 * (x1 - x0), my = 0.35 * (y1 - y0);
      if (!drag) panel.view = [Math.max(0, x0 - mx), Math.max(0, y0 - my), Math.min(1, x1 + mx), Math.min(1, y1 + my)];
    } else panel.view = [0, 0, 1, 1];
    zoom.textContent = zoomed ? "whole frame" : "zoom to face";
    const fit = panel.layout();
    const ctx = panel.canvas.getContext("2d");
    panel.drawBase(ctx);
    const d = panel.data;
    if (!fit || !d) return;
    const s = live || state();
    d.faces.forEach((f, k) => {
      const b = f.box;
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1;
      ctx.strokeStyle = k === s.face ? "#ffd400" : "#aaaaaa";
      ctx.strokeRect(fit.x + b[0] * fit.w, fit.y + b[1] * fit.h, (b[2] - b[0]) * fit.w, (b[3] - b[1]) * fit.h);
      ctx.setLineDash([]);
    });
    if (!s.boxes || !zoomed) {
      panel.caption.textContent = zoomed ? `no face ${s.face} in frame ${d.frame}` : "Click a face to edit its boxes.";
      return;
    }
    for (const p of PARTS) {
      const [y0, x0, y1, x1] = s.boxes[p];
      const x = fit.x + x0 * fit.w, y = fit.y + y0 * fit.h, w = (x1 - x0) * fit.w, h = (y1 - y0) * fit.h;
      const edited = s.edited.has(p);
      ctx.lineWidth = edited ? 2.5 : 1.5;
      ctx.setLineDash(edited ? [] : [5, 3]);
      ctx.strokeStyle = PART_COLORS[p];
      ctx.strokeRect(x, y, w, h);
      ctx.setLineDash([]);
      ctx.fillStyle = PART_COLORS[p];
      for (const [cx, cy] of [[x, y], [x + w, y], [x, y + h], [x + w, y + h]]) ctx.fillRect(cx - 3, cy - 3, 6, 6);
      buttons[p].textContent = `${p}: ${edited ? "edited" : "detected"}`;
      buttons[p].style.background = edited ? PART_COLORS[p] : "#333";
    }
    panel.caption.textContent = `face ${s.face} of frame ${d.frame}`;
  };

  const hit = (p) => {
    // the part box under the pointer (a corner resizes it, elsewhere inside moves it); a corner just outside
    // every box resizes that box. Edited face only.
    const s = state();
    if (!s.boxes) return null;
    const fit = panel.fit;
    const corner = (part, radius) => {
      const [y0, x0, y1, x1] = s.boxes[part];
      const corners = [[x0, y0], [x1, y0], [x0, y1], [x1, y1]];
      for (let c = 0; c < 4; c++) {
        const dx = (p.x - corners[c][0]) * fit.w, dy = (p.y - corners[c][1]) * fit.h;
        if (Math.abs(dx) <= radius && Math.abs(dy) <= radius) return c;
      }
      return -1;
    };
    for (const part of PARTS) {
      const [y0, x0, y1, x1] = s.boxes[part];
      if (p.x >= x0 && p.x <= x1 && p.y >= y0 && p.y <= y1) {
        const radius = Math.min(HANDLE_PX, 0.25 * Math.min((x1 - x0) * fit.w, (y1 - y0) * fit.h));
        const c = corner(part, radius);
        return { part, mode: c >= 0 ? c : "move", s };
      }
    }
    for (const part of PARTS) {
      const c = corner(part, HANDLE_PX);
      if (c >= 0) return { part, mode: c, s };
    }
    return null;
  };

  panel.canvas.addEventListener("pointerdown", (ev) => {
    if (!panel.data || !panel.fit) return;
    const p = panel.toFrame(ev);
    if (!zoomed) {
      // the whole frame: a click on a face edits that face (and sets face_index)
      const k = panel.data.faces.findIndex((f) => p.x >= f.box[0] && p.x <= f.box[2] && p.y >= f.box[1] && p.y <= f.box[3]);
      if (k < 0) return;
      ev.preventDefault(); ev.stopPropagation();
      if (k !== state().face) {
        setWidget(node, "boxes", "");
        if (widgetOf(node, "face_index")) setWidget(node, "face_index", k);
      }
      zoomed = true;
      panel.redraw();
      return;
    }
    const h = hit(p);
    if (!h) return;
    ev.preventDefault(); ev.stopPropagation();
    panel.canvas.setPointerCapture(ev.pointerId);
    drag = { part: h.part, mode: h.mode, start: p, box0: h.s.boxes[h.part].slice(), s: h.s };
  });
  panel.canvas.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    ev.preventDefault(); ev.stopPropagation();
    const p = panel.toFrame(ev);
    const dx = p.x - drag.start.x, dy = p.y - drag.start.y;
    let [y0, x0, y1, x1] = drag.box0;
    if (drag.mode === "move") {
      const w = x1 - x0, h = y1 - y0;
      x0 = Math.min(Math.max(0, x0 + dx), 1 - w); y0 = Math.min(Math.max(0, y0 + dy), 1 - h);
      x1 = x0 + w; y1 = y0 + h;
    } else {
      const c = drag.mode;
      if (c === 0 || c === 2) x0 = Math.min(Math.max(0, x0 + dx), x1 - MIN_SIZE); else x1 = Math.max(Math.min(1, x1 + dx), x0 + MIN_SIZE);
      if (c === 0 || c === 1) y0 = Math.min(Math.max(0, y0 + dy), y1 - MIN_SIZE); else y1 = Math.max(Math.min(1, y1 + dy), y0 + MIN_SIZE);
    }
    const boxes = { ...drag.s.boxes, [drag.part]: [y0, x0, y1, x1] };
    const edited = new Set(drag.s.edited); edited.add(drag.part);
    drag.live = { face: drag.s.face, parsed: drag.s.parsed, edited, boxes: tileEdited(boxes, edited) || boxes, raw: boxes };
    panel.redraw(drag.live);
  });
  const end = (ev) => {
    if (!drag) return;
    ev.preventDefault(); ev.stopPropagation();
    if (drag.live) write(drag.live.face, drag.live.raw, drag.live.edited);
    drag = null;
    panel.redraw();
  };
  panel.canvas.addEventListener("pointerup", end);
  panel.canvas.addEventListener("pointercancel", end);
  return panel;
}

// ------------------------------------------------------------------------------------------------------------
app.registerExtension({
  name: "SwapForge.FacePickerAndBoxEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("SwapForge_")) return;
    const inputs = { ...(nodeData.input?.required || {}), ...(nodeData.input?.optional || {}) };
    const picker = "face_index" in inputs || (nodeData.name === "SwapForge_SelectFaces" && "indices" in inputs);
    const editor = nodeData.name === "SwapForge_PartDetector" && "boxes" in inputs;
    if (!picker && !editor) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      if (editor) addBoxEditor(this);
      else addFacePicker(this);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const parts = message?.swapforge_parts?.[0];
      const faces = message?.swapforge_faces?.[0];
      if (editor && parts && this.swapforgeBoxEditor) this.swapforgeBoxEditor.load(parts, () => this.swapforgeBoxEditor.redraw());
      else if (faces && this.swapforgeFacePicker) this.swapforgeFacePicker.load(faces, () => this.swapforgeFacePicker.redraw());
      return r;
    };
  },
});
