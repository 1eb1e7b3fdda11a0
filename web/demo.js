// The demo page: a user's view of the pool client. Everything a server sends is rendered
// with textContent (never innerHTML), so a hostile server cannot inject markup.
import * as comfy from "./comfyui.js";
import { t, setLang, getLang, errorText, applyStatic } from "./i18n.js";

const $ = (sel) => document.querySelector(sel);
const WORKFLOWS = {
  invert: {
    1: { class_type: "LoadImage", inputs: { image: "input.png" }, _meta: { title: "Load Image" } },
    2: { class_type: "ImageInvert", inputs: { image: ["1", 0] } },
    3: { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "demo_invert" } },
  },
  blur: {
    1: { class_type: "LoadImage", inputs: { image: "input.png" } },
    2: { class_type: "ImageBlur", inputs: { image: ["1", 0], blur_radius: 6, sigma: 3.0 } },
    3: { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "demo_blur" } },
  },
  scale: {
    1: { class_type: "LoadImage", inputs: { image: "input.png" } },
    2: { class_type: "ImageScaleBy", inputs: { image: ["1", 0], upscale_method: "bilinear", scale_by: 0.5 } },
    3: { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "demo_scale" } },
  },
};

const state = { servers: [], affinity: "session", file: null, jobs: new Map() };

function text(el, value) {
  el.textContent = value == null ? "" : String(value);
  return el;
}

function make(tag, cls, value) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (value != null) el.textContent = String(value);
  return el;
}

async function loadConfig() {
  const params = new URLSearchParams(location.search);
  if (params.get("servers")) return params.get("servers").split(",");
  try {
    const resp = await fetch("demo-config.json", { cache: "no-store" });
    if (resp.ok) return (await resp.json()).servers || [];
  } catch (_) { /* no config: the user adds servers */ }
  return JSON.parse(localStorage.getItem("comfyui-demo-servers") || "[]");
}

async function reinit() {
  if (!state.servers.length) {
    text($("#run-msg"), t("add_first"));
    return;
  }
  await comfy.init({ servers: state.servers, affinity: state.affinity });
  localStorage.setItem("comfyui-demo-servers", JSON.stringify(state.servers));
  $("#run").disabled = false;
  $("#selftest").disabled = false;
  await refreshServers();
}

function explain(err) {
  return errorText(err);
}

async function refreshServers() {
  if (!state.servers.length) return;
  let statuses = [];
  try {
    statuses = await comfy.checkComfyUIServerStatus();
  } catch (err) {
    text($("#run-msg"), explain(err));
  }
  const list = $("#servers");
  list.replaceChildren();
  for (const s of statuses) {
    const li = make("li", `server ${s.status}`);
    const dot = make("span", "dot");
    dot.setAttribute("aria-hidden", "true");
    li.append(dot, make("span", "url", s.server));
    li.append(make("span", "meta", s.status === "up"
      ? t("up_meta", { version: s.version || t("version_unknown"), queue: s.queueRemaining ?? "?", ms: Math.round(s.latencyMs || 0) })
      : `${s.status}${s.error ? " · " + s.error.message : ""}`));
    const rm = make("button", "remove", t("remove"));
    rm.type = "button";
    rm.setAttribute("aria-label", t("remove_label", { url: s.server }));
    rm.addEventListener("click", async () => {
      state.servers = state.servers.filter((u) => u.replace(/\/+$/, "") !== s.server);
      try { await reinit(); } catch (err) { text($("#run-msg"), explain(err)); }
      if (!state.servers.length) list.replaceChildren();
    });
    li.append(rm);
    list.append(li);
  }
}

async function refreshLock() {
  if (!state.servers.length) return;
  try {
    const d = comfy.debugWebSocketLock(); // synchronous; prints nothing unless asked
    if (!d.initialised) return;
    const ws = t(`ws.${d.wsState}`);
    const held = d.lock ? d.lock.held : Boolean(d.lockedServer);
    text($("#lock-server"), d.lockedServer || (state.affinity === "job" ? t("per_job") : t("none")));
    text($("#lock-why"), state.affinity === "job" ? "—"
      : !held ? t("lock_free")
      : d.pendingTasks && d.pendingTasks.length ? t("lock_pending", { n: d.pendingTasks.length, ws })
      : t("lock_ws"));
    text($("#lock-ws"), d.reconnectAttempts ? t("reconnects", { ws, n: d.reconnectAttempts }) : ws);
    $("#lock-panel").dataset.held = String(held);
  } catch (_) { /* not initialised yet */ }
}

function currentWorkflow() {
  const which = $("#workflow").value;
  if (which !== "custom") return structuredClone(WORKFLOWS[which]);
  const raw = $("#custom-json").value.trim();
  if (!raw) throw Object.assign(new Error(t("paste_wf")), { code: "invalid_workflow" });
  return JSON.parse(raw);
}

function fillImageNodes() {
  const select = $("#image-node");
  select.replaceChildren();
  let wf;
  try { wf = currentWorkflow(); } catch (_) { return; }
  for (const [id, node] of Object.entries(wf || {})) {
    if (node && node.class_type === "LoadImage") {
      const title = (node._meta && node._meta.title) || node.class_type;
      const opt = make("option", null, `${id} · ${title}`);
      opt.value = id;
      select.append(opt);
    }
  }
}

async function testImage() {
  // A generated gradient, so the demo runs without picking a file.
  const canvas = new OffscreenCanvas(256, 256);
  const ctx = canvas.getContext("2d");
  const g = ctx.createLinearGradient(0, 0, 256, 256);
  g.addColorStop(0, "#1e3a8a"); g.addColorStop(0.5, "#f59e0b"); g.addColorStop(1, "#10b981");
  ctx.fillStyle = g; ctx.fillRect(0, 0, 256, 256);
  ctx.fillStyle = "#fff"; ctx.font = "bold 48px sans-serif"; ctx.fillText("ComfyUI", 24, 140);
  return new File([await canvas.convertToBlob({ type: "image/png" })], "gradient.png", { type: "image/png" });
}

function addJobCard(label) {
  const li = $("#job-tpl").content.firstElementChild.cloneNode(true);
  text(li.querySelector(".job-title"), label);
  applyStatic(li);
  li.querySelector(".job-progress").setAttribute("aria-label", t("progress_label", { job: label }));
  li.querySelector(".job-cancel").setAttribute("aria-label", t("cancel_label", { job: label }));
  text(li.querySelector(".job-state"), t("starting"));
  $("#jobs").prepend(li);
  return li;
}

function onProgress(card, started) {
  return (p) => {
    if (card.dataset.done) return; // a late event must not overwrite the final state
    text(card.querySelector(".job-server"), p.server);
    const label = t(`state.${p.state}`);
    text(card.querySelector(".job-state"), label.startsWith("state.") ? p.state : label);
    card.dataset.promptId = p.promptId;
    if (card.dataset.state !== p.state) refreshLock();
    card.dataset.state = p.state;
    card.querySelector(".job-progress").value = p.progress || 0;
    const np = p.nodeProgress;
    text(card.querySelector(".job-node"), p.currentNode
      ? t("node_progress", { node: p.currentNode, step: np ? ` · ${np.value}/${np.max}` : "" })
      : "");
    text(card.querySelector(".job-time"), `${((performance.now() - started) / 1000).toFixed(1)} s`);
  };
}

function onPreview(card) {
  return (p) => {
    if (!p.blob) return;
    const img = card.querySelector(".job-preview");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(p.blob);
    img.hidden = false;
  };
}

async function showAudit(card, promptId) {
  const ol = card.querySelector(".job-audit ol");
  ol.replaceChildren();
  for (const r of await comfy.getAuditLog(promptId)) {
    ol.append(make("li", null, `${r.method} ${r.server}${r.path} → ${r.status}`));
  }
}

async function runOne(file, index) {
  const started = performance.now();
  const card = addJobCard(t("job", { n: index + 1, wf: $("#workflow").selectedOptions[0].textContent }));
  card.querySelector(".job-cancel").addEventListener("click", async () => {
    if (card.dataset.promptId) {
      try { await comfy.interrupt(card.dataset.promptId); } catch (err) { text($("#run-msg"), explain(err)); }
    }
  });
  try {
    const result = await comfy.processImage(currentWorkflow(), file, {
      imageNode: $("#image-node").value || undefined,
      onProgress: onProgress(card, started),
      onPreview: onPreview(card),
    });
    card.dataset.state = "succeeded";
    text(card.querySelector(".job-state"), t("done"));
    card.querySelector(".job-progress").value = 1;
    const box = card.querySelector(".job-results");
    for (const im of result.images) {
      const fig = make("figure");
      const img = make("img", "result");
      img.src = im.url;
      img.alt = t("result_alt", { name: im.filename });
      const a = make("a", null, t("download", { name: im.filename }));
      a.href = im.url;
      a.download = im.filename;
      fig.append(img, make("figcaption", null, `${im.filename} · ${result.server}`), a);
      box.append(fig);
    }
    await showAudit(card, result.promptId);
  } catch (err) {
    card.dataset.state = "failed";
    text(card.querySelector(".job-state"), `${t("failed")} · ${err.code || "error"}`);
    card.dataset.code = err.code || "error";
    const p = card.querySelector(".job-error");
    text(p, explain(err));
    p.hidden = false;
    if (card.dataset.promptId) await showAudit(card, card.dataset.promptId).catch(() => {});
  } finally {
    refreshLock();
    card.dataset.done = "true";
    text(card.querySelector(".job-time"), `${((performance.now() - started) / 1000).toFixed(1)} s`);
    card.querySelector(".job-cancel").disabled = true;
  }
}

async function run() {
  text($("#run-msg"), "");
  let file = state.file;
  if (!file) file = await testImage();
  const n = Math.max(1, Math.min(64, Number($("#count").value) || 1));
  await Promise.all(Array.from({ length: n }, (_, i) => runOne(file, i)));
  await refreshServers();
}

async function selfTest() {
  text($("#run-msg"), t("selftest_running"));
  try {
    const r = await comfy.runConsistencySelfTest();
    text($("#run-msg"), r.ok ? t("selftest_ok", { n: r.servers.length })
      : t("selftest_bad", { list: r.servers.filter((s) => !s.ok).map((s) => `${s.server}: ${s.error ? s.error.message : s.skipped || "mismatch"}`).join("; ") }));
  } catch (err) {
    text($("#run-msg"), explain(err));
  }
}

function wire() {
  $("#add-server").addEventListener("submit", async (e) => {
    e.preventDefault();
    const url = $("#server-url").value.trim();
    const before = state.servers.slice();
    state.servers.push(url);
    try {
      await reinit();
      $("#server-url").value = "";
    } catch (err) {
      state.servers = before;
      text($("#run-msg"), explain(err));
    }
  });
  $("#check-servers").addEventListener("click", refreshServers);
  for (const radio of document.querySelectorAll("input[name=affinity]")) {
    radio.addEventListener("change", async () => {
      state.affinity = radio.value;
      try { await reinit(); } catch (err) { text($("#run-msg"), explain(err)); }
    });
  }
  $("#file").addEventListener("change", () => {
    state.file = $("#file").files[0] || null;
    if (state.file) text($("#drop-help"), t("selected", { name: state.file.name }));
  });
  const drop = $("#drop");
  drop.addEventListener("keydown", (e) => {
    if (e.target !== drop || (e.key !== "Enter" && e.key !== " ")) return;
    e.preventDefault();
    $("#file").click();
  });
  drop.addEventListener("click", (e) => { if (e.target === drop) $("#file").click(); });
  const langSel = $("#lang");
  langSel.value = getLang();
  langSel.addEventListener("change", () => setLang(langSel.value));
  document.addEventListener("langchange", () => {
    if (state.bootSeconds != null) showReady();
    if (state.file) text($("#drop-help"), t("selected", { name: state.file.name }));
    fillImageNodes();
    refreshServers();
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    state.file = e.dataTransfer.files[0] || null;
    if (state.file) text($("#drop-help"), t("selected", { name: state.file.name }));
  });
  $("#workflow").addEventListener("change", () => {
    $("#custom-box").hidden = $("#workflow").value !== "custom";
    fillImageNodes();
  });
  $("#custom-json").addEventListener("input", fillImageNodes);
  $("#custom-file").addEventListener("change", async () => {
    const f = $("#custom-file").files[0];
    if (f) { $("#custom-json").value = await f.text(); fillImageNodes(); }
  });
  $("#run").addEventListener("click", () => run().catch((err) => text($("#run-msg"), explain(err))));
  $("#selftest").addEventListener("click", selfTest);
}

// "Python ready in 0.4 s", saying when the boot cache made it that fast
function showReady() {
  const restored = comfy.bootTimings.bootCache === "restored";
  text($("#boot"), t(restored ? "ready_cached" : "ready", { s: state.bootSeconds }));
}

async function main() {
  setLang(getLang());
  wire();
  fillImageNodes();
  const t0 = performance.now();
  try {
    state.servers = await loadConfig();
    if (state.servers.length) await reinit();
    else await comfy.getPyodide();
    state.bootSeconds = ((performance.now() - t0) / 1000).toFixed(1);
    showReady();
    document.body.dataset.ready = "true";
    refreshLock();
  } catch (err) {
    text($("#boot"), explain(err));
    document.body.dataset.ready = "error";
  }
  setInterval(refreshLock, 500);
  setInterval(refreshServers, 5000);
}

main();
