"""Pages written into dist/ at run time (and removed afterwards)."""

# Our module, booted the way a web client boots it. With ?boot=<json servers> it calls
# init() at once and records performance.now() (ms since navigation start) on resolution.
OURS = """<!doctype html>
<meta charset="utf-8"><title>comfyui.js bench</title>
<script type="module">
  import * as comfy from "./web/comfyui.js";
  const start = performance.now();                 // page load + module import done
  window.comfy = comfy;
  const q = new URLSearchParams(location.search);
  if (q.has("boot")) {
    comfy.init({ servers: JSON.parse(q.get("boot")), bootCache: q.get("cache") !== "0" }).then(
      () => {
        window.bootMs = performance.now();
        const b = { ...comfy.bootTimings };
        b.loadEnd = b.startedAt + b.importLoader + b.loadPyodide;  // loadPyodide resolved
        b.pageAndModule = start;                   // navigation start -> this script runs
        b.initOwn = window.bootMs - start - (b.total || 0);   // init()'s pool set-up
        window.bootBreakdown = b;
      },
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
  const startedAt = performance.now();
  loadPyodide({ indexURL: dir.href }).then(
    () => {
      window.bootMs = performance.now();
      window.bootBreakdown = { startedAt, importLoader: 0, loadEnd: window.bootMs };
    },
    (e) => { window.bootError = String(e && e.message); });
</script>
"""

# Injected into the booted OURS page: input image, our job, and a minimal reference client
# in plain JS (fetch + FormData + one WebSocket), for the same jobs on the same server.
JOBS_JS = r"""
(() => {
  const B = (window.bench = {});
  // The input: a textured 256x256 PNG. Each job of the "new image" case gets its own,
  // marked by a counter in one corner square, so no job of either client is answered from
  // the server's cache; the "repeat" case sends B.blob every time.
  B.seq = 0;
  B.input = async (k) => {
    const c = new OffscreenCanvas(256, 256);
    const g = c.getContext("2d");
    const grad = g.createLinearGradient(0, 0, 256, 256);
    grad.addColorStop(0, "rgb(200,40,10)"); grad.addColorStop(1, "rgb(10,80,220)");
    g.fillStyle = grad; g.fillRect(0, 0, 256, 256);
    for (let i = 0; i < 64; i++) {           // some texture, so the PNG is not trivial
      g.fillStyle = `rgb(${(i * 37) % 256},${(i * 91) % 256},${(i * 53) % 256})`;
      g.fillRect((i * 29) % 240, (i * 47) % 240, 16, 16);
    }
    g.fillStyle = `rgb(${k & 255},${(k >> 8) & 255},${(k >> 16) & 255})`;
    g.fillRect(240, 240, 16, 16);
    return c.convertToBlob({ type: "image/png" });
  };
  B.makeInput = async () => {
    B.blob = await B.input(0);
    return B.blob.size;
  };
  B.fresh = () => B.input(++B.seq);

  // ---- ours
  B.ours = async (workflow, blob = B.blob, opts = {}) => {
    const r = await window.comfy.processImage(workflow, blob, opts);
    const bytes = (await r.images[0].blob.arrayBuffer()).byteLength;
    if (!bytes) throw new Error("ours: empty output");
    return bytes;
  };

  // ---- reference: plain JS, one persistent WebSocket per page. It does what ours does
  // per message, in the plainest JS: parse, route by prompt_id to the job, keep its state,
  // call the job's callback; previews (type 4 frames) become Blobs of a view of the buffer.
  // Like ours it chooses the prompt_id itself (sent in POST /prompt) and registers the job
  // before submitting, and it announces supports_preview_metadata on open.
  const R = (B.ref = { base: null, clientId: null, ws: null, jobs: new Map(), seq: 0,
                      tap: null, endedUnknown: new Set() });
  const utf8 = new TextDecoder();
  B.refText = (text) => {
    let m; try { m = JSON.parse(text); } catch { return; }
    const data = m.data;
    if (!data || typeof data !== "object") return;
    const job = data.prompt_id ? R.jobs.get(data.prompt_id) : undefined;
    if (!job) {
      // a server that ignores the prompt_id we sent (older ComfyUI) names its own, which is
      // known only once POST /prompt answers: remember its end for that moment
      if (m.type === "executing" && data.node === null && data.prompt_id) {
        R.endedUnknown.add(data.prompt_id);
        if (R.endedUnknown.size > 256) R.endedUnknown.delete(R.endedUnknown.values().next().value);
      }
      return;
    }
    job.events++;
    if (m.type === "progress") { job.value = data.value; job.max = data.max; }
    if (m.type === "executing") job.node = data.node;
    if (job.onEvent) job.onEvent(m);
    if ((m.type === "executing" && data.node === null) || m.type === "execution_error" ||
        m.type === "execution_interrupted") {
      job.finished = m.type;
      if (job.resolve) job.resolve(m.type);
    }
  };
  B.refBinary = (buf) => {
    if (buf.byteLength < 8) return;
    const dv = new DataView(buf);
    if (dv.getUint32(0) !== 4) return;                  // only previews with metadata
    const n = dv.getUint32(4);
    let meta; try { meta = JSON.parse(utf8.decode(new Uint8Array(buf, 8, n))); } catch { return; }
    const job = R.jobs.get(meta.prompt_id);
    if (!job || !job.onPreview) return;
    job.onPreview({ promptId: meta.prompt_id, nodeId: meta.node_id, imageType: meta.image_type,
                    blob: new Blob([new Uint8Array(buf, 8 + n)], { type: meta.image_type }) });
  };
  B.refMessage = (ev) => {
    if (R.tap) R.tap(ev.data);                          // bench capture hook, off when timed
    if (typeof ev.data === "string") B.refText(ev.data); else B.refBinary(ev.data);
  };
  B.refConnect = (base) => new Promise((resolve, reject) => {
    R.base = base.replace(/\/+$/, "");
    R.clientId = crypto.randomUUID();
    const ws = new WebSocket(R.base.replace(/^http/, "ws") + "/ws?clientId=" + R.clientId);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      resolve(true);
    };
    ws.onerror = () => reject(new Error("reference WebSocket failed"));
    ws.onmessage = B.refMessage;
    R.ws = ws;
  });
  const ok = async (resp, what) => {
    if (!resp.ok) throw new Error(`reference ${what}: HTTP ${resp.status}`);
    return resp;
  };
  // Each job uploads under a name of its own (so concurrent jobs never share an input), or
  // under opts.name (the old module's way: the caller's file name, so the same picture
  // again meets the server's cache).
  B.refJob = async (workflow, blob = B.blob, opts = {}) => {
    const name = opts.name || `bench_ref_${R.clientId.slice(0, 8)}_${R.seq++}.png`;
    const fd = new FormData();
    fd.append("image", blob, name);
    fd.append("overwrite", "true");
    const upResp = await fetch(R.base + "/upload/image", { method: "POST", body: fd });
    const up = await (await ok(upResp, "upload")).json();
    const wf = JSON.parse(JSON.stringify(workflow));
    for (const n of Object.values(wf)) if (n.class_type === "LoadImage")
      n.inputs.image = up.subfolder ? `${up.subfolder}/${up.name}` : up.name;
    let id = crypto.randomUUID();
    const job = { events: 0, finished: null, resolve: null, onEvent: opts.onEvent,
                  onPreview: opts.onPreview };
    const finished = new Promise((res) => { job.resolve = res; });
    R.jobs.set(id, job);
    try {
      const sub = await (await ok(await fetch(R.base + "/prompt", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: wf, client_id: R.clientId, prompt_id: id }) }),
                               "prompt")).json();
      if (sub.prompt_id && sub.prompt_id !== id) {          // the server chose its own id
        R.jobs.delete(id);
        id = sub.prompt_id;
        R.jobs.set(id, job);
        if (R.endedUnknown.delete(id)) job.resolve("executing");
      }
      const how = await finished;
      if (how !== "executing") throw new Error(`reference: job ended with ${how}`);
    } finally {
      R.jobs.delete(id);
    }
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
    const out = await (await ok(await fetch(`${R.base}/view?${q}`), "view")).blob();
    const bytes = (await out.arrayBuffer()).byteLength;
    if (!bytes) throw new Error("reference: empty output");
    return bytes;
  };

  // ---- timing helpers: sequential latencies, interleaved (order alternates per job).
  // mode "new": every job of either client on an image of its own (made before its timing
  // starts); "repeat": every job on B.blob, the reference uploading it under one fixed name.
  B.sequential = async (workflow, n, warmup, mode = "new") => {
    const repeat = mode === "repeat";
    const refOpts = repeat ? { name: `bench_ref_${R.clientId.slice(0, 8)}_repeat.png` } : {};
    const next = () => (repeat ? B.blob : B.fresh());
    const run = { ours: (b) => B.ours(workflow, b), js: (b) => B.refJob(workflow, b, refOpts) };
    for (let i = 0; i < warmup; i++) { await run.ours(await next()); await run.js(await next()); }
    const lat = { ours: [], js: [] };
    for (let i = 0; i < n; i++) {
      const order = i % 2 ? ["js", "ours"] : ["ours", "js"];
      for (const k of order) {
        const blob = await next();
        const t = performance.now(); await run[k](blob); lat[k].push(performance.now() - t);
      }
    }
    return lat;
  };
  // one batch of `width` concurrent jobs of one client, each on a new image: wall time in ms
  B.batch = async (which, workflow, width) => {
    const blobs = await Promise.all(Array.from({ length: width }, () => B.fresh()));
    const f = which === "ours" ? (b) => B.ours(workflow, b) : (b) => B.refJob(workflow, b);
    const t = performance.now();
    await Promise.all(blobs.map(f));
    return performance.now() - t;
  };
})();
"""


# Where a job's time goes, for both clients: an init script (so it wraps the sockets both
# clients open) marks when each fetch is called and when its answer arrives, and when a
# socket receives executing{node: null}. Installed only in a separate context: the timed
# comparisons never run with it.
SEGMENTS_HOOK = r"""
(() => {
  window.benchMarks = null;                    // set to [] to record one job's marks
  const mark = (what, t0, t1) => { if (window.benchMarks) window.benchMarks.push([what, t0, t1]); };
  const route = (url) => String(url).replace(/^[a-z]+:\/\/[^/]+/i, "").split("?")[0]
    .replace(/^\/history\/.*/, "/history");
  const origFetch = window.fetch;
  window.fetch = function (url, init) {
    const t0 = performance.now();
    const p = origFetch.call(this, url, init);
    p.then(() => mark(route(url), t0, performance.now()), () => {});
    return p;
  };
  const Orig = window.WebSocket;
  class MarkedSocket extends Orig {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => {
        if (typeof e.data !== "string" || !e.data.includes('"executing"')) return;
        const t = performance.now();
        let m = null;
        try { m = JSON.parse(e.data); } catch { return; }   // any JSON spacing
        if (m && m.type === "executing" && m.data && m.data.node === null) mark("ws-done", t, t);
      });
    }
  }
  window.WebSocket = MarkedSocket;
})();
"""

# One job per client on a new image each: when each milestone of the job came, in ms since
# the call (SEGMENT_MILESTONES' order), or the job is left out if its requests differ from
# one of each (a retried history read, say). The order of the milestones is each client's
# own: ours asks for the image while the job still runs.
SEGMENTS_JS = r"""
async ([w, n]) => {
  const names = ["/upload/image", "/prompt", "ws-done", "/history", "/view"];
  const out = { ours: [], js: [] };
  for (let i = 0; i < n; i++) {
    for (const k of (i % 2 ? ["js", "ours"] : ["ours", "js"])) {
      const blob = await window.bench.fresh();
      window.benchMarks = [];
      const t = performance.now();
      await (k === "ours" ? window.bench.ours(w, blob) : window.bench.refJob(w, blob));
      const end = performance.now();
      const m = window.benchMarks;
      window.benchMarks = null;
      const by = new Map(m.map((x) => [x[0], x]));
      if (m.length !== names.length || by.size !== names.length ||
          !names.every((x) => by.has(x))) continue;
      const at = [];
      for (const x of names) {
        const [what, t0, t1] = by.get(x);
        at.push(t0 - t);
        if (what !== "ws-done") at.push(t1 - t);
      }
      at.push(end - t);
      out[k].push(at);
    }
  }
  return out;
}
"""

# Python busy time, for the "where does the per-job overhead go" line: every asyncio callback
# (task steps: the bridge's calls into the client), the first step of a bridge call (run at
# once inside Bridge.start) and every WebSocket message our socket handlers take are timed
# with perf_counter. Installed in a separate page before init(), so the timed comparisons
# above never run with it.
BUSY_PY = r"""
import asyncio as _aio, time as _time, collections as _col
from comfyui_client import _browser as _bb, channels as _bch
_bench_busy = _col.defaultdict(float)

def _bench_timed(owner, name, bucket):
    orig = getattr(owner, name)

    def timed(*args, **kwargs):
        t = _time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            _bench_busy[bucket] += _time.perf_counter() - t

    setattr(owner, name, timed)

_bench_timed(_aio.Handle, "_run", "callbacks")
_bench_timed(_bb.Bridge, "start", "callbacks")
_bench_timed(_bch.Channels, "on_text", "ws")
_bench_timed(_bch.Channels, "on_binary", "ws")
"""

# Added to every boot page's context: when Pyodide's main wasm module was instantiated
# (WebAssembly.instantiateStreaming resolved: download and compile overlap), so a boot's
# loadPyodide can be split into "wasm ready" and "after wasm" (CPython's start, its stdlib
# imports and Pyodide's bootstrap, or a snapshot's restore). Timing only: calls go through.
WASM_HOOK = """
(() => {
  const orig = WebAssembly.instantiateStreaming;
  WebAssembly.instantiateStreaming = function (...args) {
    const p = orig.apply(this, args);
    p.then(() => { window.wasmReadyAt = performance.now(); }, () => {});
    return p;
  };
})();
"""

# init() for the pages that measure jobs and events, then wait until the boot-cache worker
# (started after a page's first boot) is done, so it shares no CPU with what is measured
INIT_JS = "(s) => window.comfy.init({servers: s}).then(() => window.comfy.bootCacheSaved)"

# Step warmth: the same small piece of a request step (decode one `executed` message, apply
# it to a job's state, append an audit record, build the next request's URL) timed back to
# back ("hot") and once after each of several waits, the way a job's steps run: each comes
# after the page went idle waiting for the network or the server. Python runs the client's
# own pure-core functions; JS runs what the reference client does for a message. Means over
# n runs: the page's clock is coarse (100 µs steps with jitter) without cross-origin
# isolation, and a mean of many such differences is still right where a median is not.
# Back to back is the median of 5 batches; Python's cyclic GC is off while it measures.
WARMTH_PY = r"""
import asyncio as _wa, gc as _wgc, json as _wj, time as _wt
from comfyui_client import audit as _wau, jobs as _wjb
from comfyui_client.protocol import events as _wev, requests as _wrq

async def _bench_warmth(server, text, delays_ms, n):
    data = _wj.loads(text)["data"]
    pid = data["prompt_id"]
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
             "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}}}
    job = _wjb.new_job(pid, server, now=0.0, workflow=graph, prompt_id=pid)
    job = _wjb.submitted(_wjb.mark(job, "submitting", now=0.0), number=1, now=0.0)
    log = _wau.AuditLog(maxlen=1000)

    def step():
        _wjb.apply_event(job, _wev.decode_text(text), now=1.0)
        log.append(_wau.AuditRecord(time=_wt.time(), job=pid, server=server, method="GET",
                                    path="/history/" + pid, status=200))
        return _wrq.get_history(pid).url(server)

    out = {}
    _wgc.disable()  # a collection landing in one row would blur it; the step frees by refcount
    try:
        batches = []
        for _ in range(5):
            t = _wt.perf_counter()
            for _ in range(n):
                step()
            batches.append((_wt.perf_counter() - t) / n * 1e6)
        out["hot"] = sorted(batches)[2]  # median of 5 batches
        for d in delays_ms:
            total = 0.0
            for _ in range(n):
                await _wa.sleep(d / 1000)   # 0: one loop turn
                t = _wt.perf_counter()
                step()
                total += _wt.perf_counter() - t
            out[str(d)] = total / n * 1e6
    finally:
        _wgc.enable()
    return _wj.dumps(out)
"""

WARMTH_JS = r"""
async ([server, text, delays, n]) => {
  const state = new Map();
  const log = [];
  const step = () => {
    const m = JSON.parse(text), d = m.data;
    state.set(d.prompt_id, { ...(state.get(d.prompt_id) || {}), state: "running",
                             node: d.node, outputs: d.output });
    log.push({ time: Date.now(), job: d.prompt_id, server, method: "GET",
               path: `/history/${d.prompt_id}`, status: 200 });
    if (log.length > 1000) log.shift();
    return `${server}/history/${encodeURIComponent(d.prompt_id)}`;
  };
  const mc = new MessageChannel();
  let wake = null;
  mc.port1.onmessage = () => wake();
  const wait = (ms) => new Promise((r) => {
    if (ms === 0) { wake = r; mc.port2.postMessage(0); } else setTimeout(r, ms);
  });
  const out = {};
  let t = performance.now();
  for (let i = 0; i < n; i++) step();
  out.hot = (performance.now() - t) / n * 1000;
  for (const d of delays) {
    let total = 0;
    for (let i = 0; i < n; i++) {
      await wait(d);
      t = performance.now();
      step();
      total += performance.now() - t;
    }
    out[String(d)] = total / n * 1000;
  }
  mc.port1.close();
  const py = await window.comfy.getPyodide();
  const runPy = py.globals.get("_bench_warmth");
  try {
    return { js: out, py: JSON.parse(await runPy(server, text, py.toPy(delays), n)) };
  } finally {
    runPy.destroy();
  }
}
"""

# The cost of one asyncio wake-up on a JS promise: n awaits of an already resolved promise,
# then n_idle awaits of a promise a timer resolves after 3 ms, timed from the timer's
# callback (which reads the clock and resolves) to the task running again.
HOPS_JS = r"""
async ([n, nIdle]) => {
  const py = await window.comfy.getPyodide();
  const out = await py.runPythonAsync(`
import js, time, json
from pyodide.ffi import create_once_callable

async def _bench_hops(n, n_idle):
    t = time.perf_counter()
    for _ in range(n):
        await js.Promise.resolve(1)
    hot = (time.perf_counter() - t) / n * 1e6
    total = 0.0
    for _ in range(n_idle):
        def start(resolve, reject):
            js.setTimeout(create_once_callable(lambda: resolve(time.perf_counter())), 3)
        t0 = await js.Promise.new(create_once_callable(start))
        total += time.perf_counter() - t0
    return json.dumps({"hot": hot, "idle": total / n_idle * 1e6, "n": n, "nIdle": n_idle})

await _bench_hops(${n}, ${nIdle})`);
  return JSON.parse(out);
}
"""
