// comfyui.js — the drop-in ES module for pools of ComfyUI servers.
//
// It keeps the function names of the old JavaScript services module, so an existing web
// client only changes its import line. Underneath, every call goes to a Python client
// (py_src/comfyui_client) running in Pyodide, which locks each job to one server for its
// whole life. Nothing is fetched from a CDN: the Python assets (Pyodide's core, our wheel,
// the lockfile) are served with the app; see assetsDir below for where they are looked for.

import * as bootSteps from "./boot.js";

// The Vite plugin (comfyui-pool-client/vite) replaces the marked null below with the URL of
// the lockfile in the folder where it serves the Python assets (its transform hook; the
// marker comment is what it looks for). Anywhere else it stays null.
const INJECTED_LOCKFILE_URL = /* comfyui-pool-client:assets */ null;

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

// What relative URLs in options are resolved against: the page (a worker's own URL there).
function pageBase() {
  return globalThis.document?.baseURI ?? globalThis.location?.href;
}

// The folder of the Python assets, as a URL ending in "/": init({assetsURL}) when given,
// else where the Vite plugin serves them, else ../pyodide/ beside this file's web/ folder
// (the layout of dist/ and of the npm package).
// import.meta.url is read into a variable on purpose: Vite and webpack rewrite the literal
// pattern `new URL("...", import.meta.url)` as an asset import, and Vite's rewrite dropped
// the trailing slash of "../pyodide/", so the module asked for .../pyodide.mjs one folder too
// high. Read only when no other source applies (webpack makes it a file:// URL).
function defaultAssetsDir() {
  if (INJECTED_LOCKFILE_URL) return new URL("./", new URL(INJECTED_LOCKFILE_URL, pageBase()));
  const moduleUrl = import.meta.url;
  return new URL("../pyodide/", moduleUrl);
}

// init({assetsURL}): a string or URL, resolved against the page, with a trailing "/".
function assetsDirOption(value) {
  if (value === undefined || value === null) return null;
  const refuse = (why) => new ComfyUIError({
    name: "ConfigError",
    code: "config_error",
    message: `option assetsURL ${why}, got ${JSON.stringify(String(value))}`,
    hint: "the URL of the folder holding the package's pyodide/ files (pyodide.mjs, " +
      "pyodide-lock.json, ...), e.g. \"/comfyui-assets/\"",
  });
  if (!(typeof value === "string" || value instanceof URL) || value === "") {
    throw refuse("must be a non-empty string or a URL");
  }
  let url;
  try {
    url = new URL(String(value), pageBase());
  } catch {
    throw refuse("is not a URL");
  }
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}

// The Python assets a boot needs: [file, what its body must be, the MIME type the browser
// insists on for it (null: none; Pyodide fetches the zip and the lockfile as data)].
const BOOT_ASSETS = [
  ["pyodide.mjs", "js", /javascript/],
  ["pyodide.asm.mjs", "js", /javascript/],
  ["pyodide.asm.wasm", "wasm", /^application\/wasm/],
  ["python_stdlib.zip", "zip", null],
  ["pyodide-lock.json", "json", null],
];

const startsWith = (bytes, magic) => magic.every((b, i) => bytes[i] === b);

// Is this body the asset itself? A MIME-type complaint is only made for one that is: an
// HTML page served in a file's place is "not found", whatever its content type.
function isAsset(kind, bytes) {
  if (kind === "wasm") return startsWith(bytes, [0x00, 0x61, 0x73, 0x6d]); // \0asm
  if (kind === "zip") return startsWith(bytes, [0x50, 0x4b, 0x03, 0x04]); // PK\3\4
  const text = new TextDecoder().decode(bytes);
  if (kind === "json") {
    try {
      JSON.parse(text);
      return true;
    } catch {
      return false;
    }
  }
  return text.trim() !== "" && !looksLikeHtml(text, "");
}

function looksLikeHtml(text, contentType) {
  return /^text\/html/i.test(contentType) || /^\s*<(!doctype|html)[\s>]/i.test(text);
}

const WHERE_HINT = "serve the package's pyodide/ folder whole at that URL: with Vite add its " +
  "plugin (`import comfyui from \"comfyui-pool-client/vite\"`, `plugins: [comfyui()]`); " +
  "elsewhere copy node_modules/comfyui-pool-client/pyodide/ (or dist/pyodide/ of " +
  "`python3 build.py`) to your server and pass its URL as init({assetsURL})";

// One asset fetched again and judged: a message naming it and the fix, or null when it is
// fine. Returns [message, body bytes].
async function checkAsset(url, name, kind, mime) {
  let resp;
  try {
    resp = await fetch(url, { cache: "no-store" });
  } catch (e) {
    return [`cannot fetch ${url} (${e.message}): ${WHERE_HINT}`, null];
  }
  const type = resp.headers.get("content-type") || "";
  const bytes = new Uint8Array(await resp.arrayBuffer());
  // an app server's fallback: its index.html in place of any missing file, with a 200
  const html = resp.ok && looksLikeHtml(new TextDecoder().decode(bytes.subarray(0, 512)), type);
  if (resp.status === 404 || html) {
    const how = html ? "the server answered an HTML page" : "HTTP 404";
    return [`${name} not found at ${url} (${how}): ${WHERE_HINT}`, null];
  }
  if (!resp.ok) return [`${url} answered HTTP ${resp.status}: ${WHERE_HINT}`, null];
  if (!isAsset(kind, bytes)) {
    return [`${url} is not ${name} as Pyodide ships it (a ${kind} file): serve the ` +
      "package's pyodide/ files untransformed, byte for byte", null];
  }
  if (mime && !mime.test(type)) {
    return [`${url} is served as "${type}", expected ${mime.source.replace(/[\\^]/g, "")}: ` +
      "configure your server's MIME types (.wasm -> application/wasm, .mjs -> " +
      "text/javascript)", null];
  }
  return [null, bytes];
}

// Names the asset that broke a boot and how to fix it, instead of Pyodide's generic message
// (a browser reports a missing pyodide.mjs as a MIME-type error on whatever page came back).
async function describeBootFailure(dir) {
  let lock = null;
  for (const [name, kind, mime] of BOOT_ASSETS) {
    const [problem, bytes] = await checkAsset(new URL(name, dir).href, name, kind, mime);
    if (problem) return problem;
    if (kind === "json") lock = JSON.parse(new TextDecoder().decode(bytes));
  }
  for (const pkg of Object.values((lock && lock.packages) || {})) {
    const url = new URL(pkg.file_name, dir).href;
    const [problem, bytes] = await checkAsset(url, pkg.file_name, "zip", null);
    if (problem) return problem;
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (hex !== pkg.sha256) {
      return `${url} does not match the sha256 in pyodide-lock.json (integrity check ` +
        "failed): the wheel and the lockfile come from different builds; serve the pyodide/ " +
        "folder of one package version (or of one `python3 build.py` run) whole";
    }
  }
  return null;
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
const { BOOT_CACHE } = bootSteps;
export let bootCacheSaved = Promise.resolve(false);

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

// Starts the worker that saves the snapshot from the assets in `dir`; resolves true once it
// is in Cache Storage. The `new Worker(new URL("./…", import.meta.url), {type: "module"})`
// form is the one Vite and webpack 5 recognise and bundle (the worker and its imports
// become a chunk of their own); keep it literal. Where nothing bundles it (esbuild, plain
// Rollup) the file is missing beside the bundle: the worker fails to load, onerror says
// "not saved" once, and the boot itself is untouched.
function saveSnapshotInWorker(dir) {
  return new Promise((resolve) => {
    let worker;
    try {
      worker = new Worker(new URL("./boot-cache-worker.js", import.meta.url), { type: "module" });
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
    worker.postMessage({ assetsURL: dir.href });
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

// console lines from Python waiting for their task (pyHelpers.log)
const pendingLog = [];

function flushLog() {
  for (const line of pendingLog.splice(0)) console.log(line);
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
    if (init.form) {
      // an upload: the FormData made here from the fields Python named and its Blob
      const fd = new FormData();
      for (const [k, v] of init.form.fields) fd.append(k, v);
      fd.append(init.form.file[0], body, init.form.file[1]);
      delete init.form;
      body = fd;
    }
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
  // Console output from Python, written in a task of its own once the current work is done:
  // under Python's frames console.log costs ~0.3 ms, and even right after them (a
  // microtask) the lock line a job logs as it starts delayed its upload by ~0.5 ms (with
  // DevTools or a test driver attached, every line crosses to them). Lines keep their order.
  log(text) {
    if (!pendingLog.length) setTimeout(flushLog, 0);
    pendingLog.push(text);
  },
  // The client's sessionStorage writes (its job map, twice per job), made in a task of their
  // own once the current work is done: under Python's frames one cost ~0.25 ms, and even
  // right after them (a microtask) the write as a job starts delayed its upload by ~0.3 ms.
  // The last value per key wins.
  store(key, value) {
    if (!pendingStore.size) setTimeout(flushStore, 0);
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
  // A WebSocket's listeners. Text messages are gathered and handed to Python as one
  // batch per browser task (TextBatch), binary ones as they come (after the texts before
  // them): one crossing per batch instead of one per message. abort() on the returned
  // controller removes all of them; what is gathered then is dropped with the socket.
  listen(ws, onOpen, onTexts, onBinary, onClose) {
    const ctl = new AbortController();
    const opts = { signal: ctl.signal };
    const batch = new TextBatch(onTexts);
    ws.addEventListener("open", () => onOpen(), opts);
    ws.addEventListener("message", (e) => {
      const d = e.data;
      if (typeof d === "string") batch.push(d);
      else { batch.flush(); onBinary(d); }
    }, opts);
    ws.addEventListener("close", (e) => { batch.flush(); onClose(e.code, e.reason || ""); },
                        opts);
    ctl.signal.addEventListener("abort", () => batch.drop());
    return ctl;
  },
  // An upload and the POST /prompt whose workflow reads the uploaded name, both prepared
  // by Python: the second goes out the moment the first answers a JSON object with every
  // field of `expectJson` (the name Python chose), else not at all. So no Python step lies
  // between them, and a renamed upload never has a prompt read the wrong file. Answers
  // {first, second}: second is null when held back, {failed, message} when it got no answer.
  async requestPair(url1, init1, body1, ctl1, ms1, url2, init2, body2, ctl2, ms2, expectJson) {
    const first = await pyHelpers.request(url1, init1, body1, ctl1, "json", ms1);
    let second = null;
    if (first.status >= 200 && first.status < 300 && answers(first.body, expectJson)) {
      try {
        second = await pyHelpers.request(url2, init2, body2, ctl2, "json", ms2);
      } catch (e) {
        second = { failed: (e && e.name) || "Error", message: String((e && e.message) || e) };
      }
    }
    return { first, second };
  },
  // The sha256 (hex) of a Blob, for naming an upload after its content; remembered per
  // Blob, so a job repeated on the same File reads and hashes nothing. null where there is
  // no crypto.subtle (insecure origins): Python then hashes the bytes itself.
  digest(blob) {
    let hex = digests.get(blob);
    if (hex === undefined) {
      hex = hashBlob(blob);
      digests.set(blob, hex);
      hex.catch(() => digests.delete(blob)); // a read that failed is tried again next time
    }
    return hex;
  },
  // A request Python prepared for the moment a job's end marker (executing{node: null})
  // arrives: the history read and the last node's outputs. The socket listener sends it
  // before the message reaches Python (see TextBatch.push). Answers like request(), or
  // {failed, message} if it got no answer, or null when disarmed before it went out.
  armOnEnd(promptId, url, initJson, body, controller, expect, timeoutMs) {
    return new Promise((resolve) => {
      const list = armedOnEnd.get(promptId) || [];
      list.push({ resolve, args: [url, initJson, body, controller, expect, timeoutMs] });
      armedOnEnd.set(promptId, list);
    });
  },
  disarm(promptId) {
    const list = armedOnEnd.get(promptId);
    armedOnEnd.delete(promptId);
    for (const armed of list || []) armed.resolve(null);
  },
  // Whose progress messages someone listens to (Python says so per job).
  wantProgress(promptId, on) {
    if (on) progressWanted.add(promptId); else progressWanted.delete(promptId);
  },
};

const armedOnEnd = new Map(); // prompt id -> requests to send at its end marker

function fireOnEnd(promptId) {
  const list = armedOnEnd.get(promptId);
  if (!list) return;
  armedOnEnd.delete(promptId);
  for (const { resolve, args } of list) {
    resolve(pyHelpers.request(...args).catch((e) => (
      { failed: (e && e.name) || "Error", message: String((e && e.message) || e) })));
  }
}

const digests = new WeakMap(); // Blob -> promise of its sha256 hex (or null)

async function hashBlob(blob) {
  if (!(globalThis.crypto && crypto.subtle)) return null;
  const sum = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(sum), (b) => b.toString(16).padStart(2, "0")).join("");
}
const progressWanted = new Set();

function answers(buffer, expectJson) {
  let got;
  try {
    got = JSON.parse(new TextDecoder().decode(buffer));
  } catch {
    return false;
  }
  if (got === null || typeof got !== "object" || Array.isArray(got)) return false;
  return Object.entries(JSON.parse(expectJson)).every(([k, v]) => got[k] === v);
}

// One socket's text messages on their way to Python, handed over in batches: every call
// into Python wakes code that has left the CPU's caches while the page waited (BENCHMARKS.md,
// step warmth), so the fewer the better. Each message is read here (JSON.parse in JS costs
// a microsecond or two) and says when its batch must go:
// - a job's end marker (executing{node: null}): at once, in a microtask, after what Python
//   armed for it went out (its waiter reads the history next);
// - what a job's caller or its outputs wait for (executed, execution_error,
//   execution_interrupted), and every message of a job whose progress someone listens to
//   (wantProgress): in a task of its own (a MessageChannel turn), so that the messages the
//   browser has already queued behind it (a server sends in bursts) join the batch;
// - the rest (status, execution_start, executing, progress of a job nobody listens to...):
//   with the next batch that goes, or within LATER_MS; a run of progress or
//   progress_state messages of one job keeps only its latest, which says all the earlier
//   ones did. So a sampler's stream of steps nobody listens to wakes Python not at all, and
//   the job's state still catches up with the next batch.
const MAX_BATCH = 1024;
const LATER_MS = 100;
const NOW_TYPES = new Set(["executed", "execution_error", "execution_interrupted"]);
const dueBatches = new Set();
let batchTurn = null;

class TextBatch {
  constructor(deliver) {
    this.deliver = deliver;
    this.texts = [];
    this.held = new Map(); // "type\0prompt" -> index in texts of the latest such message
    this.due = false;
    this.urgent = false;
    this.timer = null;
  }

  push(text) {
    let m = null;
    try {
      m = JSON.parse(text);
    } catch {
      // not JSON: Python counts it as a malformed frame, with the next batch
    }
    const d = m && m.data;
    const pid = d && typeof d.prompt_id === "string" ? d.prompt_id : null;
    const type = m && m.type;
    if (pid && type === "executing" && d.node === null) {
      this.texts.push(text);
      fireOnEnd(pid);
      if (!this.urgent) {
        this.urgent = true;
        queueMicrotask(() => { this.urgent = false; this.flush(); });
      }
      return;
    }
    const listened = pid !== null && progressWanted.has(pid);
    if (!listened && pid !== null && (type === "progress" || type === "progress_state")) {
      const key = `${type}\0${pid}`;
      const at = this.held.get(key);
      if (at !== undefined) this.texts[at] = null; // superseded by this newer one
      this.held.set(key, this.texts.length);
    }
    this.texts.push(text);
    if (this.texts.length >= MAX_BATCH) this.flush();
    else if (listened || NOW_TYPES.has(type)) this.soon();
    else if (this.timer === null && !this.due) {
      this.timer = setTimeout(() => { this.timer = null; this.flush(); }, LATER_MS);
    }
  }

  soon() {
    if (this.due) return;
    this.due = true;
    dueBatches.add(this);
    if (!batchTurn) {
      batchTurn = new MessageChannel();
      batchTurn.port1.onmessage = () => {
        const due = [...dueBatches];
        dueBatches.clear();
        for (const b of due) b.flush();
      };
    }
    batchTurn.port2.postMessage(0);
  }

  flush() {
    if (this.due) {
      this.due = false;
      dueBatches.delete(this);
    }
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.texts.length) return;
    const out = this.held.size ? this.texts.filter((t) => t !== null) : this.texts;
    this.texts = [];
    this.held.clear();
    this.deliver(out);
  }

  drop() {
    if (this.timer !== null) clearTimeout(this.timer);
    dueBatches.delete(this);
    this.due = false;
    this.timer = null;
    this.texts = [];
    this.held.clear();
  }
}

async function boot(options) {
  const t0 = performance.now();
  bootTimings.startedAt = t0; // ms since navigation start
  const note = options.bootCache !== false && typeof caches !== "undefined" &&
    typeof Worker !== "undefined" ? savedNote() : undefined;
  const useCache = note !== undefined;
  let pyodide;
  let dir = null;
  try {
    dir = options.assetsDir || defaultAssetsDir();
    const entry = bootSteps.fetchLockEntry(dir);
    const wheel = entry.then((e) => bootSteps.fetchClientWheel(dir, e));
    for (const p of [entry, wheel]) p.catch(() => {}); // reported below, after loadPyodide
    const loader = await bootSteps.importLoader(dir);
    bootTimings.importLoader = performance.now() - t0;
    const config = bootSteps.pyodideOptions(dir);
    const key = useCache ? bootSteps.snapshotKey(dir, loader.version, (await entry).sha256) : null;
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
    bootSteps.installClient(pyodide, await wheel);
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
      bootCacheSaved = whenQuiet().then(() => saveSnapshotInWorker(dir));
    }
  } catch (err) {
    const why = dir && await describeBootFailure(dir).catch(() => null);
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

// ------------------------------------------------------------------ before init()
// A call that needs the pool before an init() succeeded says so in one plain sentence,
// at once: the async ones reject with ComfyUIError code "not_initialised", the two
// synchronous reports return {initialised: false, message, summary} (a console session
// must not throw at its first step). Both while nothing was booted and while the first
// init() still boots Python (the bridge exists before the pool does).
let initsRunning = 0; // init() calls not settled yet

function notReadyText(method) {
  const [why, whyZh] = initsRunning
    ? ["init() has not finished yet (the first one starts Python)",
       "init() 尚未完成（第一次调用会启动 Python）"]
    : ["no init() has succeeded on this page", "本页面还没有成功调用过 init()"];
  return [
    `${method}() needs init() first: ${why}. Run await init({servers: ["http://host:8188"]}) ` +
      "from comfyui.js, then call it again",
    `${method}() 需要先调用 init()：${whyZh}。请先执行 ` +
      'await init({servers: ["http://host:8188"]})，然后再调用',
  ];
}

function notInitialisedError(method, info = {}) {
  const [message] = notReadyText(method);
  return new ComfyUIError({ ...info, name: "ConfigError", code: "not_initialised", message,
                            summary: message });
}

// Every call crosses into Python through here: Python answers a plain object
// {ok, value} or {ok: false, error}, never a proxy, so nothing leaks and errors keep types.
async function call(method, ...args) {
  if (!bridge) throw notInitialisedError(method);
  callsInFlight++;
  let out;
  try {
    out = await new Promise((resolve) => bridge.start(method, args, resolve));
  } finally {
    callsInFlight--;
  }
  if (!out.ok) {
    if (out.error.code === "not_initialised") throw notInitialisedError(method, out.error);
    throw new ComfyUIError(out.error);
  }
  return out.value;
}

// debugWebSocketLock() and checkServerUnlockCondition(): answered at once (the old
// module's console session calls them without await; a Promise would print as
// `Promise {<pending>}`), through the bridge's synchronous entry, which answers plain
// data like call(). Pure reads of the client's state: nothing in them waits. With
// {print: true} (what the window.* helpers pass) the report's `summary` lines are
// written to the console from here: the locked server, why it is held, the WebSocket,
// the pending tasks, in English and Chinese (Python's console.py words them).
function report(method, options) {
  let out;
  const answer = bridge ? bridge.call_sync(method, []) : null;
  if (answer && answer.ok) {
    out = { initialised: true, ...answer.value };
  } else if (!answer || answer.error.code === "not_initialised") {
    const [en, zh] = notReadyText(method);
    out = { initialised: false, message: en, summary: [`[comfyui-client] ${en} | ${zh}`] };
  } else {
    throw new ComfyUIError(answer.error);
  }
  if (options && options.print) {
    for (const line of out.summary) (out.initialised ? console.log : console.warn)(line);
  }
  return out;
}

// ------------------------------------------------------------------ a duplicated tab
// A browser's "Duplicate tab" copies sessionStorage, so the copy would come up with the
// original's client id and job map. ComfyUI sends a client id's messages to its newest
// socket only: the original's jobs would then hear nothing and end from the stall check's
// history read (a trial on a real ComfyUI 0.33: 980 ms against 227 ms). So the first
// init() claims the saved client id on a BroadcastChannel while Python boots; a page of
// this origin that holds that id answers "taken", and the newcomer (the copy) forgets the
// saved entry before Python reads it: a fresh client id, an empty job map. The original
// keeps both. Every page answers for the id it holds for its whole life. Two pages
// claiming one id at once (tabs restored together) settle it by their random nonces: the
// lower keeps it. The wait is bounded (CLAIM_WAIT_MS, beside the boot, which takes far
// longer) and skipped where nothing is saved, persist is false, a clientId is given, or
// BroadcastChannel does not exist. bootTimings.tabClaim says what happened.
const SESSION_KEY = "comfyui-client:v1"; // persistence.SESSION_KEY
const CLAIM_WAIT_MS = 150;
let tabChannel; // undefined: not opened yet; null: no BroadcastChannel here
let heldClientId = null; // the client id this page holds (answered for on tabChannel)
let claiming = null; // {clientId, nonce, yieldIt} while this page's claim waits
let tabClaim = null; // the promise of the first init()'s claim

function openTabChannel() {
  if (tabChannel !== undefined) return tabChannel;
  tabChannel = null;
  try {
    tabChannel = new BroadcastChannel(SESSION_KEY);
  } catch {
    return null; // no BroadcastChannel (or an opaque origin)
  }
  tabChannel.onmessage = (e) => {
    const m = e.data;
    if (!m || m.type !== "claim" || typeof m.clientId !== "string") return;
    const taken = { type: "taken", clientId: m.clientId, nonce: m.nonce };
    if (m.clientId === heldClientId) tabChannel.postMessage(taken);
    else if (claiming && claiming.clientId === m.clientId && m.nonce !== claiming.nonce) {
      if (m.nonce > claiming.nonce) tabChannel.postMessage(taken);
      else claiming.yieldIt();
    }
  };
  return tabChannel;
}

function savedClientId() {
  try {
    const data = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return data && typeof data.clientId === "string" && data.clientId ? data.clientId : null;
  } catch {
    return null; // no sessionStorage (a worker, a sandboxed frame) or a broken entry
  }
}

// Resolves {outcome: "none" | "unsupported" | "kept" | "duplicate", ms}.
function claimClientId(options, quiet) {
  const t0 = performance.now();
  const result = (outcome) => ({ outcome, ms: performance.now() - t0 });
  const id = options.persist === false || options.clientId != null ? null : savedClientId();
  if (!id) return Promise.resolve(result("none"));
  const channel = typeof BroadcastChannel === "function" ? openTabChannel() : null;
  if (!channel) return Promise.resolve(result("unsupported"));
  const nonce = Math.random();
  return new Promise((resolve) => {
    let timer = null;
    const finish = (copy) => {
      if (!claiming || claiming.nonce !== nonce) return;
      claiming = null;
      clearTimeout(timer);
      channel.removeEventListener("message", onTaken);
      if (copy) {
        try {
          sessionStorage.removeItem(SESSION_KEY);
        } catch {
          // unreachable: it was just read
        }
        if (!quiet) {
          console.info(`[comfyui-client] this tab is a copy of an open tab using client id ${id}: ` +
            "it takes a fresh client id and starts with no jobs | 此标签页是一个已打开标签页的副本" +
            `（客户端 ID ${id}）：改用新的客户端 ID，任务列表为空`);
        }
      } else {
        heldClientId = id; // answered for from now on, before Python's reattach is over
      }
      resolve(result(copy ? "duplicate" : "kept"));
    };
    const onTaken = (e) => {
      const m = e.data;
      if (m && m.type === "taken" && m.clientId === id && m.nonce === nonce) finish(true);
    };
    claiming = { clientId: id, nonce, yieldIt: () => finish(true) };
    channel.addEventListener("message", onTaken);
    timer = setTimeout(() => finish(false), CLAIM_WAIT_MS);
    channel.postMessage({ type: "claim", clientId: id, nonce });
  });
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
  // assetsURL is this file's alone (checked on every call, used by the booting one): the
  // Python client does not know it, so it is not passed on.
  let clientOptions = options;
  let assetsDir = null;
  if (options && typeof options === "object" && "assetsURL" in options) {
    ({ assetsURL: assetsDir, ...clientOptions } = options);
    assetsDir = assetsDirOption(assetsDir);
  }
  initsRunning++;
  try {
    // the claim of a duplicated tab (see above) runs beside the first boot, once per page
    const first = tabClaim === null;
    if (first) {
      const opts = clientOptions && typeof clientOptions === "object" ? clientOptions : {};
      tabClaim = claimClientId(opts, opts.log === "off");
    }
    await ensureBoot({ ...(options || {}), assetsDir });
    if (first) {
      const booted = performance.now();
      const { outcome, ms } = await tabClaim;
      Object.assign(bootTimings, { tabClaim: outcome, tabClaimMs: ms,
                                   tabClaimWaitMs: performance.now() - booted });
    }
    const summary = await call("init", clientOptions);
    heldClientId = summary.clientId;
    if (typeof BroadcastChannel === "function") openTabChannel(); // answer claims of copies
    return summary;
  } finally {
    initsRunning--;
  }
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
/** Synchronous: the lock's whole state; {print: true} also writes its summary lines. */
export const debugWebSocketLock = (options) => report("debugWebSocketLock", options);
/** Synchronous: may the page move to another server now; {print: true} also says so. */
export const checkServerUnlockCondition = (options) => report("checkServerUnlockCondition", options);
export const interrupt = (promptId) => call("interrupt", promptId);
export const processImage = async (workflow, file, opts = {}) => {
  // The input is named after its bytes: a Blob is hashed here first (remembered per Blob),
  // so Python gets the digest with the call and runs once, instead of waking again for it
  // (measured: the upload went out no later than when Python awaited a promise of it).
  let digest = null;
  if (bridge && typeof Blob !== "undefined" && file instanceof Blob) {
    digest = await pyHelpers.digest(file).catch(() => null);
  }
  const r = await call("processImage", workflow, file, opts, digest);
  withLazyUrls(r.images);
  return r;
};
export const runConsistencySelfTest = (opts = {}) => call("runConsistencySelfTest", opts);
export const getJobs = () => call("getJobs");
export const getAuditLog = (promptId) => call("getAuditLog", promptId ?? null);
export const releaseTask = (promptId) => call("releaseTask", promptId);

// The console helpers the old module exposed, for proving the lock from DevTools. The two
// synchronous reports print their summary there (the module's exports print only when
// asked: a page that polls them, like the demo, would flood the console).
if (typeof window !== "undefined") {
  Object.assign(window, {
    validateServerConsistency,
    debugWebSocketLock: (options) => debugWebSocketLock({ print: true, ...options }),
    getApiBaseUrl,
    checkServerUnlockCondition: (options) => checkServerUnlockCondition({ print: true, ...options }),
    runConsistencySelfTest,
  });
}
