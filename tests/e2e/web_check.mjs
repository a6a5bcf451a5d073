// The pack in the real ComfyUI editor, as a new user meets it (headless Chromium, playwright-core):
//
//   node tests/e2e/web_check.mjs --url http://127.0.0.1:8188 --shots /tmp/shots [--chromium /usr/bin/chromium]
//
// 1. Template browser: GET /api/workflow_templates, then each SwapForge template is opened from the editor's
//    template dialog (Workflow > Browse Templates) by clicking its card; records its node count and thumbnail.
// 2. pick_face_edit_part_boxes (web/swapforge.js): run it once from the editor; click face 1 in Classic Part
//    Swap's face picker and in the Part Detector's box editor; drag the eyes box of face 1; run again; save the
//    workflow (graph.serialize), load the saved JSON back and give its graphToPrompt output to the caller, which
//    queues it through the HTTP API alone.
// Prints one JSON object on stdout (the last line); progress on stderr. Screenshots in --shots.
import fs from "node:fs";
import path from "node:path";
import { getJson, inEditor, runMain, sleep } from "./browser.mjs";

const TEMPLATE = "pick_face_edit_part_boxes";
const PART_DETECTOR = "4";
const CLASSIC_SWAP = "9";
const log = (...a) => console.error("[web_check]", ...a);

function parseArgs(argv) {
  const args = { url: "", shots: "", chromium: "/usr/bin/chromium", timeout: 240000, pack: "SwapForge" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--url") args.url = argv[++i];
    else if (a === "--shots") args.shots = argv[++i];
    else if (a === "--chromium") args.chromium = argv[++i];
    else if (a === "--pack") args.pack = argv[++i];
    else if (a === "--timeout-ms") args.timeout = Number(argv[++i]);
  }
  if (!args.url || !args.shots) throw new Error("usage: web_check.mjs --url URL --shots DIR");
  return args;
}

async function waitForRun(url, before, timeout) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeout) {
    const h = await getJson(`${url}/history`);
    const fresh = Object.keys(h).filter((k) => !before.has(k));
    for (const id of fresh) {
      if (h[id].status?.completed !== undefined && h[id].status?.status_str) return { id, entry: h[id] };
    }
    await sleep(500);
  }
  return { id: null, entry: null };
}

async function queueFromEditor(page, url, timeout) {
  const before = new Set(Object.keys(await getJson(`${url}/history`)));
  const prompt = await page.evaluate(async () => {
    const p = await window.app.graphToPrompt();
    await window.app.queuePrompt(0, 1);
    return p.output;
  });
  const run = await waitForRun(url, before, timeout);
  return { prompt, prompt_id: run.id, status: run.entry?.status ?? null, outputs: run.entry?.outputs ?? null };
}

// Puts node `id` at the top left of the canvas at zoom 1, so its DOM widgets are on screen.
async function focusNode(page, id) {
  await page.evaluate((nid) => {
    const app = window.app;
    const node = app.graph.getNodeById(Number(nid));
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [-node.pos[0] + 40, -node.pos[1] + 60];
    app.graph.setDirtyCanvas(true, true);
    app.canvas.draw(true, true);
  }, id);
  await sleep(500);
}

function widgets(page, id) {
  return page.evaluate((nid) => {
    const node = window.app.graph.getNodeById(Number(nid));
    return Object.fromEntries((node.widgets ?? []).filter((w) => w.serialize !== false).map((w) => [w.name, w.value]));
  }, id);
}

// Client (page) coordinates of a normalised frame point in a node's panel canvas.
function panelPoint(page, id, panelName, x, y) {
  return page.evaluate(({ nid, panelName, x, y }) => {
    const node = window.app.graph.getNodeById(Number(nid));
    const panel = node[panelName];
    const r = panel.canvas.getBoundingClientRect();
    const f = panel.fit;
    const sx = r.width / panel.canvas.width, sy = r.height / panel.canvas.height;
    return { x: r.left + (f.x + x * f.w) * sx, y: r.top + (f.y + y * f.h) * sy, visible: r.width > 0 && r.height > 0 };
  }, { nid: id, panelName, x, y });
}

async function panelShot(page, id, panelName, file) {
  const handle = await page.evaluateHandle(({ nid, panelName }) =>
    window.app.graph.getNodeById(Number(nid))[panelName].root, { nid: id, panelName });
  await handle.asElement().screenshot({ path: file });
  return file;
}

async function templateBrowser(page, args, result) {
  const listed = await getJson(`${args.url}/api/workflow_templates`);
  const names = (listed[args.pack] ?? []).slice().sort();
  const out = { listed: names, opened: {}, thumbnails: {} };
  for (const name of names) {
    const r = await fetch(`${args.url}/api/workflow_templates/${args.pack}/${name}.jpg`);
    out.thumbnails[name] = { status: r.status, type: r.headers.get("content-type"), bytes: (await r.arrayBuffer()).byteLength };
  }
  for (const name of names) {
    // open the dialog as a user does, find the pack's card and click it
    await page.evaluate(async () => {
      await window.app.graph.clear();
      await window.app.extensionManager.command.execute("Comfy.BrowseTemplates");
    });
    await sleep(800);
    const nav = page.locator(".p-dialog").getByText(args.pack, { exact: true }).first();
    if (await nav.count()) await nav.click().catch(() => {});
    await sleep(500);
    // the dialog's grid renders cards lazily as it scrolls (14 templates do not all render at once): type the
    // name in its search box, as a user looking for one template does
    const search = page.locator('.p-dialog input[placeholder*="Search"]').first();
    if (await search.count()) {
      await search.fill(name);
      await sleep(900);
    }
    const card = page.locator(`.p-dialog [data-testid="template-workflow-${name}"]`).first();
    let how = "card";
    log(`template ${name}`);
    try {
      if (await card.count()) await card.click({ timeout: 30000 });
      else {
        how = "title";
        await page.locator(".p-dialog").getByText(name, { exact: false }).first().click({ timeout: 30000 });
      }
    } catch (e) {
      await page.screenshot({ path: path.join(args.shots, `template_${name}_failed.png`) });
      throw new Error(`template ${name}: could not click its card (${how}): ${e.message.split("\n").slice(0, 12).join(" | ")}`);
    }
    await page.waitForFunction(() => !document.querySelector(".p-dialog") || window.app.graph.nodes.length > 0,
                               null, { timeout: 30000 }).catch(() => {});
    await sleep(800);
    const loaded = await page.evaluate(() => ({ nodes: window.app.graph.nodes.length,
      types: window.app.graph.nodes.map((n) => n.type) }));
    out.opened[name] = { how, nodes: loaded.nodes, types: loaded.types };
    if (name === names[0]) {
      await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
      await sleep(800);
      const nav2 = page.locator(".p-dialog").getByText(args.pack, { exact: true }).first();
      if (await nav2.count()) await nav2.click().catch(() => {});
      await sleep(1200);
      out.dialog_screenshot = path.join(args.shots, "template_browser.png");
      await page.screenshot({ path: out.dialog_screenshot });
      await page.keyboard.press("Escape");
      await sleep(300);
    }
    await page.evaluate(() => document.querySelectorAll(".p-dialog-close-button").forEach((b) => b.click()));
  }
  result.templates = out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const result = { ok: false, url: args.url, console_errors: [], page_errors: [], http_errors: [],
                   frontend_version: null, steps: [] };
  const opts = { url: args.url, shots: args.shots, chromium: args.chromium, timeout: args.timeout,
                 viewport: { width: 1600, height: 1100 } };
  return inEditor(opts, result, async (page) => {
    log("template browser");
    await templateBrowser(page, args, result);

    log("loading", TEMPLATE);
    const data = await getJson(`${args.url}/api/workflow_templates/${args.pack}/${TEMPLATE}.json`);
    await page.evaluate(async (g) => { await window.app.loadGraphData(g); }, data);
    await sleep(500);
    result.before_run = { picker: await page.evaluate((id) => {
      const n = window.app.graph.getNodeById(Number(id));
      return { has_picker: !!n.swapforgeFacePicker, caption: n.swapforgeFacePicker?.caption.textContent ?? null };
    }, CLASSIC_SWAP), widgets: await widgets(page, PART_DETECTOR) };

    log("run 1");
    result.run1 = await queueFromEditor(page, args.url, args.timeout);
    await page.waitForFunction(({ pd, cs }) => {
      const g = window.app.graph;
      return g.getNodeById(Number(pd)).swapforgeBoxEditor?.data && g.getNodeById(Number(cs)).swapforgeFacePicker?.data;
    }, { pd: PART_DETECTOR, cs: CLASSIC_SWAP }, { timeout: 60000 });
    await sleep(800);
    result.run1.panels = await page.evaluate(({ pd, cs }) => {
      const g = window.app.graph;
      return { parts: g.getNodeById(Number(pd)).swapforgeBoxEditor.data, faces: g.getNodeById(Number(cs)).swapforgeFacePicker.data };
    }, { pd: PART_DETECTOR, cs: CLASSIC_SWAP });
    const faces = result.run1.panels.faces.boxes;

    // face picker: click the middle of face 1 on Classic Part Swap
    await focusNode(page, CLASSIC_SWAP);
    const b1 = faces[1];
    const p1 = await panelPoint(page, CLASSIC_SWAP, "swapforgeFacePicker", (b1[0] + b1[2]) / 2, (b1[1] + b1[3]) / 2);
    await page.mouse.click(p1.x, p1.y);
    await sleep(300);
    result.after_pick = await widgets(page, CLASSIC_SWAP);
    result.face_picker_shot = await panelShot(page, CLASSIC_SWAP, "swapforgeFacePicker", path.join(args.shots, "face_picker.png"));

    // box editor: show the whole frame, click face 1 (the editor zooms to it), then drag its eyes box
    await focusNode(page, PART_DETECTOR);
    const pf = result.run1.panels.parts.faces[1];
    await page.evaluate((id) => window.app.graph.getNodeById(Number(id)).swapforgeBoxEditor.root
      .querySelector(".swapforge-zoom").click(), PART_DETECTOR);
    await sleep(300);
    const q = await panelPoint(page, PART_DETECTOR, "swapforgeBoxEditor", (pf.box[0] + pf.box[2]) / 2,
                               (pf.box[1] + pf.box[3]) / 2);
    await page.mouse.click(q.x, q.y);
    await sleep(300);
    result.after_face_click = await widgets(page, PART_DETECTOR);
    const eyes = pf.detected.eyes; // [y0, x0, y1, x1]
    const c = await panelPoint(page, PART_DETECTOR, "swapforgeBoxEditor", (eyes[1] + eyes[3]) / 2, (eyes[0] + eyes[2]) / 2);
    const dragPx = { x: 12, y: -8 };
    await page.mouse.move(c.x, c.y);
    await page.mouse.down();
    for (let k = 1; k <= 5; k++) await page.mouse.move(c.x + (dragPx.x * k) / 5, c.y + (dragPx.y * k) / 5);
    await page.mouse.up();
    await sleep(300);
    result.drag_px = dragPx;
    result.after_drag = await widgets(page, PART_DETECTOR);
    result.box_editor_shot = await panelShot(page, PART_DETECTOR, "swapforgeBoxEditor", path.join(args.shots, "part_box_editor.png"));

    log("run 2");
    result.run2 = await queueFromEditor(page, args.url, args.timeout);
    await sleep(1500);
    await focusNode(page, PART_DETECTOR);
    result.box_editor_after_run_shot = await panelShot(page, PART_DETECTOR, "swapforgeBoxEditor",
                                                       path.join(args.shots, "part_box_editor.after-run.png"));
    await page.screenshot({ path: path.join(args.shots, `${TEMPLATE}.after-run.png`) });

    log("save and reload");
    const saved = await page.evaluate(() => window.app.graph.serialize());
    fs.writeFileSync(path.join(args.shots, `${TEMPLATE}.saved.json`), JSON.stringify(saved));
    result.saved_workflow = path.join(args.shots, `${TEMPLATE}.saved.json`);
    await page.evaluate(async (g) => { await window.app.graph.clear(); await window.app.loadGraphData(g); }, saved);
    await sleep(500);
    result.reloaded = { part_detector: await widgets(page, PART_DETECTOR), classic_swap: await widgets(page, CLASSIC_SWAP) };
    result.reloaded_prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
  });
}

runMain(main);
