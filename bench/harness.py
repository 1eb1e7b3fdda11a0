"""Pages written into dist/ at run time (and removed afterwards)."""

# Our module, booted the way a web client boots it. With ?boot=<json servers> it calls
# init() at once and records performance.now() (ms since navigation start) on resolution.
OURS = """<!doctype html>
<meta charset="utf-8"><title>comfyui.js bench</title>
<script type="module">
  import * as comfy from "./web/comfyui.js";
  window.comfy = comfy;
  const q = new URLSearchParams(location.search);
  if (q.has("boot")) {
    comfy.init({ servers: JSON.parse(q.get("boot")) }).then(
      () => { window.bootMs = performance.now(); window.bootBreakdown = { ...comfy.bootTimings }; },
      (e) => { window.bootError = String(e && e.message); });
  }
  window.harnessReady = true;
</script>
"""

# The same Pyodide core, bare: loadPyodide() with the same indexURL, no packages.
BARE = """<!doctype html>
<meta charset="utf-8"><title>bare pyodide bench</title>
<script type="module">
  const dir = new URL("./pyodide/", location.href);
  const { loadPyodide } = await import(new URL("pyodide.mjs", dir).href);
  loadPyodide({ indexURL: dir.href }).then(
    () => { window.bootMs = performance.now(); },
    (e) => { window.bootError = String(e && e.message); });
</script>
"""

# Injected into the booted OURS page: input image, our job, and a minimal reference client
# in plain JS (fetch + FormData + one WebSocket), for the same jobs on the same server.
JOBS_JS = r"""
(() => {
  const B = (window.bench = {});
  B.makeInput = async () => {
    const c = new OffscreenCanvas(256, 256);
    const g = c.getContext("2d");
    const grad = g.createLinearGradient(0, 0, 256, 256);
    grad.addColorStop(0, "rgb(200,40,10)"); grad.addColorStop(1, "rgb(10,80,220)");
    g.fillStyle = grad; g.fillRect(0, 0, 256, 256);
    for (let i = 0; i < 64; i++) {           // some texture, so the PNG is not trivial
      g.fillStyle = `rgb(${(i * 37) % 256},${(i * 91) % 256},${(i * 53) % 256})`;
      g.fillRect((i * 29) % 240, (i * 47) % 240, 16, 16);
    }
    B.blob = await c.convertToBlob({ type: "image/png" });
    return B.blob.size;
  };

  // ---- ours
  B.ours = async (workflow) => {
    const r = await window.comfy.processImage(workflow, B.blob);
    const bytes = (await r.images[0].blob.arrayBuffer()).byteLength;
    if (!bytes) throw new Error("ours: empty output");
    return bytes;
  };

  // ---- reference: plain JS, one persistent WebSocket per page
  B.ref = { base: null, clientId: null, ws: null, done: new Set(), waiters: new Map(), seq: 0 };
  B.refConnect = (base) => new Promise((resolve, reject) => {
    const R = B.ref;
    R.base = base.replace(/\/+$/, "");
    R.clientId = crypto.randomUUID();
    const ws = new WebSocket(R.base.replace(/^http/, "ws") + "/ws?clientId=" + R.clientId);
    ws.onopen = () => resolve(true);
    ws.onerror = () => reject(new Error("reference WebSocket failed"));
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;           // previews: ignored
      let m; try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === "executing" && m.data && m.data.node === null && m.data.prompt_id) {
        const id = m.data.prompt_id, w = R.waiters.get(id);
        if (w) { R.waiters.delete(id); w(); } else R.done.add(id);
      }
    };
    R.ws = ws;
  });
  const ok = async (resp, what) => {
    if (!resp.ok) throw new Error(`reference ${what}: HTTP ${resp.status}`);
    return resp;
  };
  B.refJob = async (workflow) => {
    const R = B.ref;
    const name = `bench_ref_${R.clientId.slice(0, 8)}_${R.seq++}.png`;
    const fd = new FormData();
    fd.append("image", B.blob, name);
    fd.append("overwrite", "true");
    const upResp = await fetch(R.base + "/upload/image", { method: "POST", body: fd });
    const up = await (await ok(upResp, "upload")).json();
    const wf = JSON.parse(JSON.stringify(workflow));
    for (const n of Object.values(wf)) if (n.class_type === "LoadImage")
      n.inputs.image = up.subfolder ? `${up.subfolder}/${up.name}` : up.name;
    const sub = await (await ok(await fetch(R.base + "/prompt", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: wf, client_id: R.clientId }) }), "prompt")).json();
    const id = sub.prompt_id;
    if (R.done.has(id)) R.done.delete(id);
    else await new Promise((res) => R.waiters.set(id, res));
    let entry = null;
    for (let i = 0; i < 500 && !entry; i++) {     // history may land just after executing:null
      const h = await (await ok(await fetch(`${R.base}/history/${id}`), "history")).json();
      entry = h[id] || null;
      if (!entry) await new Promise((r) => setTimeout(r, 5));
    }
    if (!entry) throw new Error("reference: no history for " + id);
    let img = null;
    for (const out of Object.values(entry.outputs || {})) {
      if (out.images && out.images.length) { img = out.images[0]; break; }
    }
    if (!img) throw new Error("reference: no output image");
    const q = new URLSearchParams({
      filename: img.filename, subfolder: img.subfolder || "", type: img.type || "output" });
    const blob = await (await ok(await fetch(`${R.base}/view?${q}`), "view")).blob();
    const bytes = (await blob.arrayBuffer()).byteLength;
    if (!bytes) throw new Error("reference: empty output");
    return bytes;
  };

  // ---- timing helpers: sequential latencies, interleaved (order alternates per job)
  B.sequential = async (workflow, n, warmup) => {
    const run = { ours: () => B.ours(workflow), js: () => B.refJob(workflow) };
    for (let i = 0; i < warmup; i++) { await run.ours(); await run.js(); }
    const lat = { ours: [], js: [] };
    for (let i = 0; i < n; i++) {
      const order = i % 2 ? ["js", "ours"] : ["ours", "js"];
      for (const k of order) {
        const t = performance.now(); await run[k](); lat[k].push(performance.now() - t);
      }
    }
    return lat;
  };
  // one batch of `width` concurrent jobs of one client: wall time in ms
  B.batch = async (which, workflow, width) => {
    const f = which === "ours" ? () => B.ours(workflow) : () => B.refJob(workflow);
    const t = performance.now();
    await Promise.all(Array.from({ length: width }, f));
    return performance.now() - t;
  };
})();
"""
