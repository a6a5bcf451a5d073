// Drives the ComfyUI editor (frontend 1.2x) in headless Chromium and checks the pack's UI workflows.
//
//   node tests/e2e/editor_check.mjs --url http://127.0.0.1:8188 --shots /tmp/shots \
//       [--queue classic_part_swap] [--chromium /usr/bin/chromium] workflows/a.json workflows/b.json ...
//
// playwright-core is loaded from $SWAPFORGE_E2E_NODE_MODULES (the node_modules folder that holds it),
// else from the usual Node resolution. For every UI-format workflow it:
//   * loads it with `app.loadGraphData(json)` and records the missing node types the frontend reports
//     (an `afterConfigureGraph` extension hook), any dialog that opened, nodes whose type is not in
//     LiteGraph.registered_node_types or that have `has_errors`;
//   * compares each node's widget values and input/output slots with the file;
//   * records the saved node size against the size the editor needs (computeSize), and which inputs
//     of the node definitions lack tooltips;
//   * returns `(await app.graphToPrompt()).output` (the Python test compares it with the API twin);
//   * takes a screenshot (<shots>/<name>.png).
// With --queue NAME it loads that workflow again, queues it with `app.queuePrompt(0, 1)` and waits for
// the new /history entry. Prints one JSON object on stdout (the last line); progress goes to stderr.
import fs from "node:fs";
import path from "node:path";
import { getJson, inEditor, runMain, sleep } from "./browser.mjs";

function parseArgs(argv) {
  const args = { url: "", shots: "", queue: "", chromium: "/usr/bin/chromium", files: [],
                 timeout: 240000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--url") args.url = argv[++i];
    else if (a === "--shots") args.shots = argv[++i];
    else if (a === "--queue") args.queue = argv[++i];
    else if (a === "--chromium") args.chromium = argv[++i];
    else if (a === "--timeout-ms") args.timeout = Number(argv[++i]);
    else args.files.push(a);
  }
  if (!args.url || !args.shots || !args.files.length) {
    throw new Error("usage: editor_check.mjs --url URL --shots DIR [--queue NAME] FILE.json ...");
  }
  return args;
}

const log = (...a) => console.error("[editor_check]", ...a);

// Runs in the page: node boxes (title bar included) and the pairs that overlap.
function graphLayout() {
  const app = window.app;
  const boxes = app.graph.nodes.map((n) => {
    // from pos/size (getBounding() is a cache refreshed only when the canvas draws)
    const th = n.collapsed ? 0 : (window.LiteGraph.NODE_TITLE_HEIGHT ?? 30);
    const b = [n.pos[0], n.pos[1] - th, n.size[0], n.size[1] + th];
    return { id: String(n.id), type: n.type, title: n.title, box: b.map((v) => Math.round(v)) };
  });
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [ax, ay, aw, ah] = boxes[i].box, [bx, by, bw, bh] = boxes[j].box;
      const ox = Math.min(ax + aw, bx + bw) - Math.max(ax, bx);
      const oy = Math.min(ay + ah, by + bh) - Math.max(ay, by);
      if (ox > 0 && oy > 0) {
        overlaps.push({ a: boxes[i].id, a_title: boxes[i].title, a_box: boxes[i].box,
                        b: boxes[j].id, b_title: boxes[j].title, b_box: boxes[j].box,
                        overlap: [ox, oy] });
      }
    }
  }
  const x0 = Math.min(...boxes.map((b) => b.box[0])), y0 = Math.min(...boxes.map((b) => b.box[1]));
  const x1 = Math.max(...boxes.map((b) => b.box[0] + b.box[2]));
  const y1 = Math.max(...boxes.map((b) => b.box[1] + b.box[3]));
  return { boxes, overlaps, bounds: [x0, y0, x1 - x0, y1 - y0] };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const result = { ok: false, url: args.url, shots_dir: args.shots, workflows: {}, console_errors: [],
                   page_errors: [], http_errors: [], frontend_version: null, queue: null };
  const opts = { url: args.url, shots: args.shots, chromium: args.chromium, timeout: args.timeout };
  return inEditor(opts, result, async (page) => {
    const stats = await getJson(`${args.url}/system_stats`).catch(() => null);
    result.server = stats?.system ?? null;

    await page.evaluate(() => {
      window.__sfMissing = null;
      window.app.registerExtension({
        name: "SwapForge.e2e.editorCheck",
        afterConfigureGraph(missing) { window.__sfMissing = JSON.parse(JSON.stringify(missing ?? [])); },
      });
    });

    for (const file of args.files) {
      const name = path.basename(file).replace(/\.json$/, "");
      log("checking", name);
      const data = JSON.parse(fs.readFileSync(file, "utf8"));
      const wf = await page.evaluate(async (graphData) => {
        const app = window.app;
        const LG = window.LiteGraph;
        const out = { missing_node_types: null, dialogs: [], nodes: {}, problems: [], prompt: null };
        window.__sfMissing = null;
        // close anything left open (e.g. a previous dialog)
        document.querySelectorAll(".p-dialog-close-button").forEach((b) => b.click());
        await app.loadGraphData(graphData);
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
        await new Promise((r) => setTimeout(r, 300));
        out.missing_node_types = window.__sfMissing;
        for (const d of document.querySelectorAll(".p-dialog")) {
          out.dialogs.push((d.innerText || "").trim().slice(0, 400));
        }
        const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
        const saved = new Map(graphData.nodes.map((n) => [String(n.id), n]));
        if (app.graph.nodes.length !== graphData.nodes.length) {
          out.problems.push(`graph has ${app.graph.nodes.length} nodes, file has ${graphData.nodes.length}`);
        }
        for (const node of app.graph.nodes) {
          const id = String(node.id);
          const f = saved.get(id);
          const registered = node.type in LG.registered_node_types;
          const def = node.constructor?.nodeData ?? null;
          const widgets = (node.widgets ?? []).map((w) => ({
            name: w.name, type: w.type, value: w.value,
            serialize: w.serialize !== false,  // into the workflow (options.serialize: into the prompt)
            tooltip: w.tooltip ?? null,
          }));
          const ser = node.serialize();
          const computed = Array.from(node.computeSize());
          const info = {
            type: node.type, title: node.title, registered, has_errors: !!node.has_errors,
            python_module: def?.python_module ?? null,
            widgets, widgets_values: ser.widgets_values ?? [],
            saved_widgets_values: f?.widgets_values ?? [],
            inputs: (node.inputs ?? []).map((i) => ({ name: i.name, type: i.type, link: i.link,
                                                       widget: i.widget?.name ?? null })),
            outputs: (node.outputs ?? []).map((o) => ({ name: o.name, type: o.type,
                                                         links: o.links ?? [] })),
            saved_size: f?.size ?? null, size: Array.from(node.size), computed_size: computed,
            description: def?.description ?? "",
            missing_tooltips: [],
          };
          if (def) {
            for (const section of ["required", "optional"]) {
              for (const [iname, spec] of Object.entries(def.input?.[section] ?? {})) {
                if (!(Array.isArray(spec) && spec[1] && spec[1].tooltip)) info.missing_tooltips.push(iname);
              }
            }
            const tips = def.output_tooltips ?? [];
            (def.output_name ?? def.output ?? []).forEach((o, k) => {
              if (!tips[k]) info.missing_tooltips.push(`output:${o}`);
            });
          }
          out.nodes[id] = info;
          if (!f) { out.problems.push(`node ${id} (${node.type}) is not in the file`); continue; }
          if (f.type !== node.type) out.problems.push(`node ${id}: type ${node.type}, file says ${f.type}`);
          // frontend-only nodes (Note, MarkdownNote, Reroute) are registered without a server nodeData
          if (!registered || (!def && !node.isVirtualNode)) {
            out.problems.push(`node ${id}: type ${node.type} is not registered (placeholder)`);
          }
          if (node.has_errors) out.problems.push(`node ${id} (${node.type}) has_errors`);
          if (!eq(ser.widgets_values ?? [], f.widgets_values ?? [])) {
            out.problems.push(`node ${id} (${node.type}): widgets_values ${JSON.stringify(ser.widgets_values)}` +
                              ` != saved ${JSON.stringify(f.widgets_values)}`);
          }
          // widget by widget: the serialized widgets, in order, must carry the saved values
          const serWidgets = widgets.filter((w) => w.serialize);
          (f.widgets_values ?? []).forEach((v, k) => {
            const w = serWidgets[k];
            if (!w || !eq(w.value, v)) {
              out.problems.push(`node ${id} (${node.type}): widget #${k} ${w ? w.name : "(none)"}=` +
                                `${JSON.stringify(w?.value)} != saved ${JSON.stringify(v)}`);
            }
          });
          // frontend 1.2x adds a slot per widget (input.widget set); the files list only link slots
          const fin = (f.inputs ?? []).filter((i) => !i.widget).map((i) => `${i.name}:${i.type}`);
          const gin = info.inputs.filter((i) => !i.widget).map((i) => `${i.name}:${i.type}`);
          if (!eq(fin, gin)) out.problems.push(`node ${id} (${node.type}): inputs ${gin} != saved ${fin}`);
          const fout = (f.outputs ?? []).map((o) => `${o.name}:${o.type}`);
          const gout = info.outputs.map((o) => `${o.name}:${o.type}`);
          if (!eq(fout, gout)) out.problems.push(`node ${id} (${node.type}): outputs ${gout} != saved ${fout}`);
        }
        if (out.missing_node_types === null) out.problems.push("afterConfigureGraph hook did not run");
        else if (out.missing_node_types.length) {
          out.problems.push(`frontend reports missing node types ${JSON.stringify(out.missing_node_types)}`);
        }
        for (const d of out.dialogs) out.problems.push(`dialog open after load: ${d.slice(0, 200)}`);
        const p = await app.graphToPrompt();
        out.prompt = p.output;
        out.workflow_extra = p.workflow?.extra ?? null;
        out.links_ok = app.graph.links ? (app.graph.links.size ?? Object.keys(app.graph.links).length) : null;
        return out;
      }, data);
      // bounding boxes (title included): overlapping nodes are reported, and the view is fitted to
      // them, in a viewport large enough that the canvas stays above its low-quality zoom threshold
      const layout = await page.evaluate(graphLayout);
      wf.node_boxes = layout.boxes;
      wf.overlaps = layout.overlaps;
      const [, , bw, bh] = layout.bounds;
      await page.setViewportSize({ width: Math.min(3600, Math.max(1600, Math.ceil(bw * 0.9 + 220))),
                                   height: Math.min(2400, Math.max(1000, Math.ceil(bh * 0.9 + 260))) });
      await sleep(300);
      await page.evaluate((bounds) => {
        const app = window.app;
        const [x, y, w, h] = bounds;
        try {
          if (app.canvas.ds.fitToBounds) app.canvas.ds.fitToBounds([x - 20, y - 20, w + 40, h + 40], { zoom: 0.9 });
        } catch (e) { /* keep the saved view */ }
        app.graph.setDirtyCanvas(true, true);
        app.canvas.draw(true, true);
      }, layout.bounds);
      await sleep(400);
      const shot = path.join(args.shots, `${name}.png`);
      await page.screenshot({ path: shot });
      wf.screenshot = shot;
      result.workflows[name] = wf;
    }

    if (args.queue) {
      const file = args.files.find((f) => path.basename(f) === `${args.queue}.json`);
      if (!file) throw new Error(`--queue ${args.queue}: not among the workflow files`);
      const data = JSON.parse(fs.readFileSync(file, "utf8"));
      const before = new Set(Object.keys(await getJson(`${args.url}/history`)));
      log("queueing", args.queue, "from the editor");
      const q = await page.evaluate(async (graphData) => {
        await window.app.loadGraphData(graphData);
        const p = await window.app.graphToPrompt();
        const ret = await window.app.queuePrompt(0, 1);
        return { returned: ret ?? null, output: p.output };
      }, data);
      const t0 = Date.now();
      let entry = null, id = null;
      while (Date.now() - t0 < args.timeout) {
        const h = await getJson(`${args.url}/history`);
        const fresh = Object.keys(h).filter((k) => !before.has(k));
        if (fresh.length) {
          id = fresh[0];
          if (h[id].status?.completed !== undefined && h[id].status?.status_str) { entry = h[id]; break; }
        }
        await sleep(500);
      }
      const dialogs = await page.evaluate(() =>
        Array.from(document.querySelectorAll(".p-dialog")).map((d) => (d.innerText || "").trim().slice(0, 400)));
      result.queue = {
        workflow: args.queue, prompt_id: id, queue_returned: q.returned,
        status: entry?.status ?? null,
        outputs: entry?.outputs ?? null,
        prompt_matches_editor: entry ? JSON.stringify(entry.prompt?.[2]) === JSON.stringify(q.output) : false,
        dialogs_after_queue: dialogs,
        timed_out: entry === null,
      };
      await sleep(1500);  // output previews (SaveImage, PreviewImage, PreviewAny text) grow their nodes
      result.queue.overlaps_after_run = (await page.evaluate(graphLayout)).overlaps;
      const shot = path.join(args.shots, `${args.queue}.after-queue.png`);
      await page.screenshot({ path: shot });
      result.queue.screenshot = shot;
    }
  });
}

runMain(main);
