// Shared by the headless-Chromium checks (editor_check.mjs, web_check.mjs): playwright-core, a ComfyUI editor
// page ready to use, small helpers.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

export function loadPlaywright() {
  const dir = process.env.SWAPFORGE_E2E_NODE_MODULES;
  if (dir) return require(path.join(path.resolve(dir), "playwright-core"));
  return require("playwright-core");
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function getJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
  return r.json();
}

// Launches Chromium with a fresh profile under `shots` and opens the editor at `url`, once the app and the
// node definitions are there. `result` collects console errors, page errors and HTTP errors.
export async function openEditor({ url, shots, chromium, timeout, result, viewport }) {
  const { chromium: browser } = loadPlaywright();
  fs.mkdirSync(shots, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(shots, "chromium-profile-"));
  // A fresh user folder makes the frontend show its first-run template browser; mark it done.
  await fetch(`${url}/settings/Comfy.TutorialCompleted`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: "true",
  }).catch(() => {});
  const context = await browser.launchPersistentContext(userDataDir, {
    executablePath: chromium,
    headless: true,
    viewport: viewport ?? { width: 1600, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const close = async () => {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    const page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on("console", (m) => {
      if (m.type() === "error") result.console_errors.push(m.text().slice(0, 500));
    });
    page.on("pageerror", (e) => result.page_errors.push(String(e?.stack ?? e).slice(0, 800)));
    page.on("response", (r) => {
      if (r.status() >= 400) result.http_errors.push(`${r.status()} ${r.url()}`);
    });
    await page.goto(url + "/", { waitUntil: "domcontentloaded" });
    await page.waitForFunction(
      () => window.app && window.app.graph && window.app.canvas && window.LiteGraph &&
            Object.keys(window.LiteGraph.registered_node_types || {}).length > 0,
      null, { timeout });
    // let extensions finish their setup (the default graph loads after app.setup)
    await sleep(1500);
    result.frontend_version = await page.evaluate(() =>
      window.__COMFYUI_FRONTEND_VERSION__ ?? window.app?.ui?.settings?.version ?? null);
    return { page, context, close };
  } catch (e) {
    await close();
    throw e;
  }
}

// Opens the editor, runs body(page) and closes the browser; result.ok is true when body finished, else
// result.error holds the failure. Returns result.
export async function inEditor(opts, result, body) {
  let session = null;
  try {
    session = await openEditor({ ...opts, result });
    await body(session.page);
    result.ok = true;
  } catch (e) {
    result.error = String(e?.stack ?? e);
  } finally {
    await session?.close();
  }
  return result;
}

// Runs main() (which returns the result object) and prints the result as one JSON line on stdout.
export function runMain(main) {
  main().then((result) => process.stdout.write(JSON.stringify(result) + "\n")).catch((e) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e?.stack ?? e) }) + "\n");
    process.exit(1);
  });
}
