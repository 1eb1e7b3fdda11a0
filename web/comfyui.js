// comfyui.js — the drop-in ES module for pools of ComfyUI servers.
//
// It keeps the function names of the old JavaScript services module, so an existing web
// client only changes its import line. Underneath, every call goes to a Python client
// (py_src/comfyui_client) running in Pyodide, which locks each job to one server for its
// whole life. Every asset is found relative to this file (import.meta.url), so `dist/` can
// be hosted anywhere; nothing is fetched from a CDN.

const PYODIDE_DIR = new URL("../pyodide/", import.meta.url);
const PACKAGE = "comfyui-client";

/** Errors thrown by this module: `code` is stable, `server`/`promptId` say where. */
export class ComfyUIError extends Error {
  constructor(info) {
    super(info.message);
    this.name = info.name || "ComfyUIError";
    this.code = info.code || "client_error";
    this.server = info.server ?? null;
    this.promptId = info.promptId ?? null;
    this.hint = info.hint ?? null;
    this.details = info.details ?? {};
    this.summary = info.summary ?? info.message;
  }
}

let bootPromise = null; // one interpreter per page, shared by every init()
let bridge = null; // the Python-side API object (a PyProxy we keep for the page's life)
export const bootTimings = {};

async function describeBootFailure(err) {
  // Name the asset that broke and how to fix it, instead of Pyodide's generic message.
  const checks = [
    ["pyodide.mjs", /javascript/],
    ["pyodide.asm.mjs", /javascript/],
    ["pyodide.asm.wasm", /application\/wasm/],
    ["python_stdlib.zip", null],
    ["pyodide-lock.json", /json/],
  ];
  for (const [name, mime] of checks) {
    const url = new URL(name, PYODIDE_DIR).href;
    let resp;
    try {
      resp = await fetch(url, { cache: "no-store" });
    } catch (e) {
      return `cannot fetch ${url} (${e.message}): serve the whole dist/ folder built by ` +
        "`python3 build.py` and keep web/ and pyodide/ side by side";
    }
    if (!resp.ok) {
      return `${url} answered HTTP ${resp.status}: run \`python3 build.py\` and serve the ` +
        "whole dist/ folder (web/ and pyodide/ side by side)";
    }
    const type = resp.headers.get("content-type") || "";
    if (mime && !mime.test(type)) {
      return `${url} is served as "${type}", expected ${mime.source.replace(/\\/g, "")}: ` +
        "configure your static server's MIME types (.wasm -> application/wasm, " +
        ".mjs -> text/javascript)";
    }
    if (name === "pyodide-lock.json") {
      const lock = await resp.json();
      for (const pkg of Object.values(lock.packages || {})) {
        const wurl = new URL(pkg.file_name, PYODIDE_DIR).href;
        const w = await fetch(wurl, { cache: "no-store" });
        if (!w.ok) {
          return `${wurl} answered HTTP ${w.status}: the lockfile lists a wheel the server ` +
            "does not have; rebuild with `python3 build.py` and redeploy dist/ whole";
        }
        const digest = await crypto.subtle.digest("SHA-256", await w.arrayBuffer());
        const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
        if (hex !== pkg.sha256) {
          return `${wurl} does not match the sha256 in pyodide-lock.json (integrity check ` +
            "failed): the wheel and the lockfile come from different builds; redeploy dist/ " +
            "from one `python3 build.py` run";
        }
      }
    }
  }
  return null;
}

// Our wheel is fetched while Pyodide boots and unpacked into site-packages once it is up,
// instead of `loadPyodide({packages: [...]})`, whose package step runs after start-up: there
// it cost 125-140 ms (loadPackage), here ~20 ms (`bootTimings.installClient`), the
// download overlapping start-up (`python3 build.py bench`: warm boot minus bare Pyodide went
// from ~330 to ~230 ms). Integrity is kept: the fetch carries the lockfile's sha256 as
// Subresource Integrity, so the browser refuses a wheel that does not match, as loadPackage
// would (describeBootFailure then names the file).
async function fetchLockEntry() {
  const lockUrl = new URL("pyodide-lock.json", PYODIDE_DIR);
  const lockResp = await fetch(lockUrl);
  if (!lockResp.ok) throw new Error(`${lockUrl.href} answered HTTP ${lockResp.status}`);
  const entry = ((await lockResp.json()).packages || {})[PACKAGE];
  if (!entry || !entry.file_name || !/^[0-9a-f]{64}$/.test(entry.sha256 || "")) {
    throw new Error(`${lockUrl.href} has no usable "${PACKAGE}" entry`);
  }
  return entry;
}

async function fetchClientWheel(entry) {
  const bytes = entry.sha256.match(/../g).map((h) => parseInt(h, 16));
  const integrity = "sha256-" + btoa(String.fromCharCode(...bytes));
  const url = new URL(entry.file_name, PYODIDE_DIR);
  const resp = await fetch(url, { integrity });
  if (!resp.ok) throw new Error(`${url.href} answered HTTP ${resp.status}`);
  return resp.arrayBuffer();
}

function importLoader() {
  return import(new URL("pyodide.mjs", PYODIDE_DIR).href);
}

function pyodideOptions() {
  return {
    indexURL: PYODIDE_DIR.href,
    lockFileURL: new URL("pyodide-lock.json", PYODIDE_DIR).href,
    fullStdLib: false,
  };
}

// Our wheel's files into site-packages. After a boot-cache restore too: the snapshot holds
// the imported modules, not the file system (modules imported later, tracebacks' lines).
function installClient(pyodide, wheelBytes) {
  const site = pyodide.runPython(
    "import sys; next(p for p in sys.path if p.endswith('site-packages'))");
  pyodide.unpackArchive(wheelBytes, "wheel", { extractDir: site });
}

// The boot cache. Starting CPython and importing the client is most of a boot, even with
// every file in the HTTP cache (`afterWasm` in BENCHMARKS.md), and none of it depends on
// the page. So once a page has booted normally, a worker
// (boot-cache-worker.js) boots a second interpreter off the page's thread, imports the
// client, takes a memory snapshot of it (Pyodide's `makeMemorySnapshot`) and keeps it in
// Cache Storage under a key made of the Pyodide version and our wheel's sha256; later
// boots restore it (`loadPyodide({_loadSnapshot})`) instead of starting CPython: ~0.5 s.
// Why a worker: a snapshot can only be taken from an interpreter started with
// `_makeSnapshot`, which wraps every JS global in a path-recording proxy (some getters,
// `location.origin`, then throw); the page's own interpreter never runs in that mode.
// Both options are Pyodide's own, marked experimental (underscored); Pyodide refuses a
// snapshot of another build, and anything wrong (another build, a broken entry, no Cache
// Storage: insecure origins have none) means a normal boot that replaces the entry.
// Python draws again what must differ per page (`create_bridge`).
// `init({bootCache: false})` turns it off; `bootTimings.bootCache` says what happened.
const BOOT_CACHE = "comfyui.js-boot";
export let bootCacheSaved = Promise.resolve(false);

function snapshotKey(pyodideVersion, sha256) {
  return new URL(`boot-snapshot/${pyodideVersion}/${sha256}`, PYODIDE_DIR).href;
}

function openBootCache() {
  // no Cache Storage here (opaque origin, storage blocked): boot normally
  return caches.open(BOOT_CACHE).catch(() => null);
}

// Which snapshot this browser saved: a localStorage note written once the worker saved
// it, read before Cache Storage is touched. Why: opening Cache Storage in a profile that
// never used it started its backend beside Pyodide's start-up and cost ~150 ms of a cold
// boot (`python3 build.py bench`), to find nothing. undefined: no localStorage (a
// sandboxed frame...), so no boot cache either, or every boot would start the worker.
function savedNote() {
  try {
    return localStorage.getItem(BOOT_CACHE);
  } catch {
    return undefined;
  }
}

function setSavedNote(key) {
  try {
    if (key) localStorage.setItem(BOOT_CACHE, key);
    else localStorage.removeItem(BOOT_CACHE);
  } catch {
    // no note: the next boot is a normal one
  }
}

async function findSnapshot(cache, key) {
  try {
    return (cache && (await cache.match(key))) || null;
  } catch {
    return null;
  }
}

async function forgetSnapshot(key) {
  setSavedNote(null);
  try {
    await (await caches.open(BOOT_CACHE)).delete(key);
  } catch {
    // nothing to forget
  }
}

// The steps a page boot and boot-cache-worker.js share, so that the worker snapshots the
// interpreter a page boot makes (same options, same install). Internal: for the worker.
export const _bootSteps = {
  BOOT_CACHE, fetchLockEntry, fetchClientWheel, importLoader, pyodideOptions, installClient,
  snapshotKey,
};

// The save boots a second interpreter: ~2 s of CPU beside the page's. Started at once, it
// made the page's first jobs slower (8 sequential jobs right after a cold boot: 674 ms
// against 499 ms with bootCache: false, median of 6 pages each; 504 vs 496 ms once it
// waits). So it waits for a quiet moment: no call into Python in flight at QUIET_POLLS
// checks in a row, QUIET_POLL_MS apart (short calls, like a page polling
// debugWebSocketLock(), are rarely caught; a job is). A page that never rests still saves
// QUIET_MAX_MS after its boot, or every later boot would pay the full start.
const QUIET_POLL_MS = 250;
const QUIET_POLLS = 4;
const QUIET_MAX_MS = 30_000;
let callsInFlight = 0;

function whenQuiet() {
  const since = performance.now();
  let calm = 0;
  return new Promise((resolve) => {
    const check = () => {
      calm = callsInFlight === 0 ? calm + 1 : 0;
      if (calm >= QUIET_POLLS || performance.now() - since >= QUIET_MAX_MS) resolve();
      else setTimeout(check, QUIET_POLL_MS);
    };
    setTimeout(check, QUIET_POLL_MS);
  });
}

// Starts the worker that saves the snapshot; resolves true once it is in Cache Storage.
function saveSnapshotInWorker() {
  return new Promise((resolve) => {
    let worker;
    try {
      worker = new Worker(new URL("boot-cache-worker.js", import.meta.url), { type: "module" });
    } catch (err) {
      console.info(`comfyui.js: no boot cache (${err.message})`);
      resolve(false);
      return;
    }
    let timer = null;
    const done = (ok, why, key) => {
      if (timer === null) return; // answered already
      clearTimeout(timer);
      timer = null;
      worker.terminate();
      if (ok) setSavedNote(key);
      else console.info(`comfyui.js: boot cache not saved (${why})`);
      bootTimings.bootCache = ok ? "saved" : "failed";
      resolve(ok);
    };
    worker.onmessage = (e) => done(!!(e.data && e.data.ok), e.data && e.data.error,
                                   e.data && e.data.key);
    worker.onerror = (e) => done(false, e.message || "the worker failed to start");
    // a boot takes a few seconds; one that never ends must not leave bootCacheSaved pending
    timer = setTimeout(() => done(false, "no answer from the worker within 120 s"), 120_000);
    worker.postMessage("save");
  });
}

// Python sends answers as JSON text with its JS handles (Blobs) beside it, each marked
// in the text by a one-key object {[key]: index}; the key is random per page.
function revive(text, key, handles) {
  return JSON.parse(text, (_k, v) =>
    (v !== null && typeof v === "object" && !Array.isArray(v) && key in v) ? handles[v[key]] : v);
}

// A page callback called for Python: one that throws is reported and never breaks the job.
function callSafely(fn, value) {
  try {
    fn(value);
  } catch (e) {
    console.warn(`comfyui.js: a callback threw: ${e && e.message}`);
  }
}

// sessionStorage writes waiting for Python's call to return (pyHelpers.store)
const pendingStore = new Map();

function flushStore() {
  for (const [key, value] of pendingStore) {
    try {
      sessionStorage.setItem(key, value);
    } catch {
      // quota or disabled storage: persistence is best effort
    }
  }
  pendingStore.clear();
}

// Python's asyncio callbacks (see MicrotaskSoon in _browser.py): in a microtask while the
// run of microtask-driven callbacks started under SOON_BUDGET_MS ago, else in a task of
// their own, so Python that keeps scheduling cannot starve the page. A run starts with the
// first callback after the page had a task turn: a message on soonTurn marks that turn.
const SOON_BUDGET_MS = 4;
let soonRunStart = -1;
let soonTurn = null;
const soonTasks = [];

function soon(fn) {
  if (!soonTurn) {
    soonTurn = new MessageChannel();
    soonTurn.port1.onmessage = (e) => {
      if (e.data === "turn") soonRunStart = -1;
      else soonTasks.shift()();
    };
  }
  const now = performance.now();
  if (soonRunStart < 0) {
    soonRunStart = now;
    soonTurn.port2.postMessage("turn");
  }
  if (now - soonRunStart < SOON_BUDGET_MS) {
    queueMicrotask(fn);
  } else {
    soonTasks.push(fn);
    soonTurn.port2.postMessage("task");
  }
}

// The per-message hot path stays on this side of the FFI where JS does it for free: every
// crossing between Python and JS costs microseconds (see BENCHMARKS.md, event throughput).
const pyHelpers = {
  revive,
  soon,
  // Call a page callback with the JSON text Python built: the parsed object goes straight
  // to the callback instead of coming back to Python as a proxy first.
  deliver(fn, text, key, handles) {
    callSafely(fn, handles === undefined ? JSON.parse(text) : revive(text, key, handles));
  },
  // One HTTP exchange, for Python's transport. Browser APIs that start asynchronous work
  // (fetch, body reads) cost ~0.5-0.8 ms more when called with Python's frames on the stack
  // (the browser records the calling stack; measured in python3 build.py bench), so the
  // exchange starts after a microtask, from a plain JS stack, and Python awaits it once.
  // After timeoutMs the controller aborts it with a "TimeoutError" (answer and body alike).
  // Answers {status, headers (JSON text, lower-case names), body}: body is a Blob for
  // expect "blob", null for "none" (not read), else an ArrayBuffer.
  async request(url, initJson, body, controller, expect, timeoutMs) {
    await null;
    const init = JSON.parse(initJson);
    if (body != null) init.body = body;
    init.signal = controller.signal;
    const timer = setTimeout(() => controller.abort(
      new DOMException(`no answer within ${timeoutMs / 1000}s`, "TimeoutError")), timeoutMs);
    try {
      const resp = await fetch(url, init);
      const headers = JSON.stringify(Object.fromEntries(resp.headers));
      const ok = resp.status >= 200 && resp.status < 300;
      let data = null;
      if (expect === "blob" && ok) data = await resp.blob();
      else if (expect !== "none" || !ok) data = await resp.arrayBuffer();
      return { status: resp.status, headers, body: data };
    } finally {
      clearTimeout(timer);
    }
  },
  // Console output from Python, written after Python's call returns (console.log under
  // Python's frames costs ~0.3 ms for the same reason).
  log(text) {
    queueMicrotask(() => console.log(text));
  },
  // The client's sessionStorage writes (its job map, twice per job), made once Python's
  // call returned: under Python's frames one cost ~0.25 ms. The last value per key wins.
  store(key, value) {
    if (!pendingStore.size) queueMicrotask(flushStore);
    pendingStore.set(key, value);
  },
  // One job's progress/progress_state callback (one per sampler step): its fixed values
  // now, the five that move per message, and the object deliver() would give for
  // jobs.progress_to_dict (keys in its order; Python's None arrives as undefined and
  // leaves as null): no JSON on either side, and no dict built in Python.
  progressSender(fn, jobId, promptId, server, totalNodes) {
    promptId = promptId ?? null;
    totalNodes = totalNodes ?? null;
    return (event, state, progress, currentNode, value, max) => callSafely(fn, {
      event, jobId, promptId, server, state, progress,
      currentNode: currentNode ?? null,
      nodeProgress: value == null || max == null ? null : { value, max },
      totalNodes,
    });
  },
  // A WebSocket's listeners: the message's text or ArrayBuffer reaches Python as the
  // argument, one crossing per message (reading event.data from Python was a second one).
  // abort() on the returned controller removes all of them.
  listen(ws, onOpen, onText, onBinary, onClose) {
    const ctl = new AbortController();
    const opts = { signal: ctl.signal };
    ws.addEventListener("open", () => onOpen(), opts);
    ws.addEventListener("message", (e) => {
      const d = e.data;
      if (typeof d === "string") onText(d); else onBinary(d);
    }, opts);
    ws.addEventListener("close", (e) => onClose(e.code, e.reason || ""), opts);
    return ctl;
  },
};

async function boot(options) {
  const t0 = performance.now();
  bootTimings.startedAt = t0; // ms since navigation start
  const note = options.bootCache !== false && typeof caches !== "undefined" &&
    typeof Worker !== "undefined" ? savedNote() : undefined;
  const useCache = note !== undefined;
  let pyodide;
  try {
    const entry = fetchLockEntry();
    const wheel = entry.then(fetchClientWheel);
    for (const p of [entry, wheel]) p.catch(() => {}); // reported below, after loadPyodide
    const loader = await importLoader();
    bootTimings.importLoader = performance.now() - t0;
    const config = pyodideOptions();
    const key = useCache ? snapshotKey(loader.version, (await entry).sha256) : null;
    const saved = key && note === key ? await findSnapshot(await openBootCache(), key) : null;
    bootTimings.bootCache = "off";
    if (saved) {
      try {
        pyodide = await loader.loadPyodide({ ...config, _loadSnapshot: saved.arrayBuffer() });
        bootTimings.bootCache = "restored";
      } catch (err) {
        console.warn(`comfyui.js: the boot cache could not be restored (${err.message}); ` +
          "booting normally and replacing it");
        await forgetSnapshot(key);
      }
    }
    if (!pyodide) pyodide = await loader.loadPyodide(config);
    bootTimings.loadPyodide = performance.now() - t0 - bootTimings.importLoader;
    const t1 = performance.now();
    installClient(pyodide, await wheel);
    // Nothing else is loaded unless asked (micropip, pyodide-http ship in dist/ but stay out).
    if (options.extraPackages && options.extraPackages.length) {
      await pyodide.loadPackage(options.extraPackages);
    }
    bootTimings.installClient = performance.now() - t1;
    const t2 = performance.now();
    const mod = pyodide.pyimport("comfyui_client._browser");
    bridge = mod.create_bridge(pyHelpers, options.microtaskLoop !== false);
    mod.destroy();
    bootTimings.importClient = performance.now() - t2;
    if (useCache && bootTimings.bootCache !== "restored") {
      bootTimings.bootCache = "saving";
      bootCacheSaved = whenQuiet().then(saveSnapshotInWorker);
    }
  } catch (err) {
    const why = await describeBootFailure(err).catch(() => null);
    throw new ComfyUIError({
      name: "BootError",
      code: "boot_failed",
      message: `comfyui.js could not start Python: ${why || err.message}`,
      details: { cause: String(err && err.message) },
    });
  }
  bootTimings.total = performance.now() - t0;
  return { pyodide, bridge };
}

function ensureBoot(options = {}) {
  if (!bootPromise) {
    bootPromise = boot(options);
    bootPromise.catch(() => {
      bootPromise = null; // a failed boot may be retried after the fix
    });
  }
  return bootPromise;
}

// Every call crosses into Python through here: Python answers a plain object
// {ok, value} or {ok: false, error}, never a proxy, so nothing leaks and errors keep types.
async function call(method, ...args) {
  if (!bridge) {
    throw new ComfyUIError({
      name: "ConfigError",
      code: "not_initialised",
      message: `${method}() was called before init(): await init({servers: [...]}) first`,
    });
  }
  callsInFlight++;
  let out;
  try {
    out = await new Promise((resolve) => bridge.start(method, args, resolve));
  } finally {
    callsInFlight--;
  }
  if (!out.ok) throw new ComfyUIError(out.error);
  return out.value;
}

// An output image's `url` is an object URL of its Blob, made on first read: creating one
// costs ~0.35 ms and keeps the Blob alive until URL.revokeObjectURL(url), so a caller that
// only uses `blob` pays neither. Reading it again gives the same URL.
function withLazyUrls(images) {
  for (const im of images || []) {
    if (im && im.blob instanceof Blob && !("url" in im)) {
      let url = null;
      Object.defineProperty(im, "url", {
        enumerable: true,
        configurable: true,
        get: () => (url ??= URL.createObjectURL(im.blob)),
      });
    }
  }
  return images;
}

/** The Pyodide instance (for advanced use and tests). */
export async function getPyodide() {
  return (await ensureBoot()).pyodide;
}

// Options comfyui.js reads itself when it boots Python (the client skips them): a boolean.
function checkBootFlag(options, name, hint) {
  const value = options && options[name];
  if (value !== undefined && value !== null && typeof value !== "boolean") {
    throw new ComfyUIError({
      name: "ConfigError",
      code: "config_error",
      message: `option ${name} must be true or false, got ${JSON.stringify(value)}`,
      hint,
    });
  }
}

/**
 * Boot Python (once per page) and configure the pool.
 * options: {servers: [url | {url, weight, label, token}], affinity: "session" | "job", ...}
 */
export async function init(options = {}) {
  checkBootFlag(options, "bootCache", "false boots without the memory snapshot kept in Cache Storage");
  checkBootFlag(options, "microtaskLoop",
    "false keeps Pyodide's own asyncio scheduling (one browser task per callback)");
  await ensureBoot(options || {});
  return call("init", options);
}

export const getApiBaseUrl = (promptId) => call("getApiBaseUrl", promptId ?? null);
export const ensureWebSocketConnection = (server) => call("ensureWebSocketConnection", server ?? null);
export const uploadImageToComfyUI = (file, opts = {}) => call("uploadImageToComfyUI", file, opts);
export const submitWorkflow = (workflow, opts = {}) => call("submitWorkflow", workflow, opts);
export const waitForCompletion = (promptId, opts = {}) => call("waitForCompletion", promptId, opts);
export const getTaskHistory = (promptId) => call("getTaskHistory", promptId);
export const getGeneratedImage = (promptId) =>
  call("getGeneratedImage", promptId).then((images) => withLazyUrls(images));
export const getImage = (filename, subfolder = "", type = "output", opts = {}) =>
  call("getImage", filename, subfolder, type, opts);
export const checkComfyUIServerStatus = () => call("checkComfyUIServerStatus");
export const validateServerConsistency = (operation) => call("validateServerConsistency", operation ?? null);
export const debugWebSocketLock = () => call("debugWebSocketLock");
export const checkServerUnlockCondition = () => call("checkServerUnlockCondition");
export const interrupt = (promptId) => call("interrupt", promptId);
export const processImage = (workflow, file, opts = {}) =>
  call("processImage", workflow, file, opts).then((r) => (withLazyUrls(r.images), r));
export const runConsistencySelfTest = (opts = {}) => call("runConsistencySelfTest", opts);
export const getJobs = () => call("getJobs");
export const getAuditLog = (promptId) => call("getAuditLog", promptId ?? null);
export const releaseTask = (promptId) => call("releaseTask", promptId);

// The console helpers the old module exposed, for proving the lock from DevTools.
if (typeof window !== "undefined") {
  Object.assign(window, {
    validateServerConsistency,
    debugWebSocketLock,
    getApiBaseUrl,
    checkServerUnlockCondition,
    runConsistencySelfTest,
  });
}
