"""Event throughput (issue 6, item 3): JSON messages and preview frames per second, decoded
and dispatched to a JS callback, ours (``processImage`` callbacks) vs the plain-JS reference
handler of ``harness.JOBS_JS``, in the same page.

Two measurements, because the dev server is itself Python and may be slower at *sending*
than a browser is at *receiving*:

- **end to end**: the dev server's ``flood_progress``/``flood_previews`` knobs make one job
  emit M ``progress`` + M ``progress_state`` messages and K small preview frames as fast as
  it can; the rate is counted in the callbacks over the flood window. If the reference
  keeps up with the server, its figure is the server's send rate (a lower bound).
- **replay (client-bound)**: the flood's own text frames, captured by the reference, are fed
  synchronously to the ``message`` listener our client put on its socket (found through a
  ``WebSocket.prototype.addEventListener`` hook installed before the page's scripts) while
  a job of ours is running, then to the reference's handler; the same for synthetic type-4
  preview frames. No network, no server: this is the client's own decode + dispatch cost.

Large preview frames (``--frame-mib``) go through our client while the wasm heap size is
read before and after: a copy of the image bytes into Python would have to grow it. For
contrast the same frame is then copied into Python once (``ArrayBuffer.to_bytes()``).
"""

from __future__ import annotations

from typing import Any

# Installed with page.add_init_script, so it runs before comfyui.js opens any socket.
WS_HOOK = """
(() => {
  const socks = (window.__benchSockets = []);
  const orig = WebSocket.prototype.addEventListener;
  WebSocket.prototype.addEventListener = function (type, fn, opts) {
    if (type === "message") socks.push({ ws: this, fn });
    return orig.call(this, type, fn, opts);
  };
})();
"""

EVENTS_JS = r"""
(() => {
  const B = window.bench, R = B.ref;
  const EV = (B.ev = {});
  const FLOOD = new Set(["progress", "progress_state"]);
  const heap = async () => (await window.comfy.getPyodide())._module.HEAPU8.length;
  EV.heap = heap;

  // One job under the server's flood: rates over the flood window, counted in the callbacks.
  EV.e2e = async (which, workflow) => {
    const c = { n: 0, t0: 0, t1: 0, frames: 0, p0: 0, p1: 0, bytes: 0, blobs: true };
    const onMsg = (type) => {
      if (!FLOOD.has(type)) return;
      const t = performance.now(); if (!c.n++) c.t0 = t; c.t1 = t;
    };
    const onPrev = (blob) => {
      const t = performance.now(); if (!c.frames++) c.p0 = t; c.p1 = t;
      if (!(blob instanceof Blob)) c.blobs = false; else c.bytes += blob.size;
    };
    const blob = await B.fresh();          // a new image: the server runs (and floods) it
    if (which === "ours") {
      await B.ours(workflow, blob,
                   { onProgress: (p) => onMsg(p.event), onPreview: (p) => onPrev(p.blob) });
    } else {
      await B.refJob(workflow, blob,
                     { onEvent: (m) => onMsg(m.type), onPreview: (p) => onPrev(p.blob) });
    }
    return c;
  };

  // The flood's text frames as the server sent them (untimed run of the reference).
  EV.capture = async (workflow) => {
    const texts = [];
    let pid = null;
    R.tap = (d) => {
      if (typeof d !== "string") return;
      const m = JSON.parse(d);
      if (FLOOD.has(m.type) && m.data && m.data.prompt_id) {
        pid = m.data.prompt_id; texts.push(d);
      }
    };
    try { await B.refJob(workflow, await B.fresh()); } finally { R.tap = null; }
    EV.texts = texts; EV.pid = pid;
    return { n: texts.length, bytes: texts.reduce((a, s) => a + s.length, 0) };
  };

  // Where one message's time goes inside ours: each step of the per-message path timed
  // alone in Python over the captured frames (internal APIs: n/a if they change).
  EV.breakdown = async () => {
    const py = await window.comfy.getPyodide();
    py.globals.set("_bench_texts", EV.texts);
    py.globals.set("_bench_noop", () => 0);
    try {
      return JSON.parse(py.runPython(window.BREAKDOWN_PY));
    } catch (e) {
      return { error: String(e && e.message).split("\n").slice(-2).join(" ") };
    } finally {
      py.runPython("del _bench_texts, _bench_noop");
    }
  };

  EV.frame = (pid, node, size) => {
    const meta = new TextEncoder().encode(JSON.stringify({
      image_type: "image/png", prompt_id: pid, node_id: node, display_node_id: node,
      parent_node_id: null, real_node_id: node }));
    const buf = new ArrayBuffer(8 + meta.length + size);
    const dv = new DataView(buf);
    dv.setUint32(0, 4); dv.setUint32(4, meta.length);
    new Uint8Array(buf, 8).set(meta);
    const png = [137, 80, 78, 71, 13, 10, 26, 10].slice(0, size);     // a PNG signature
    new Uint8Array(buf, 8 + meta.length, png.length).set(png);
    return buf;
  };

  const oursListener = () => {
    const url = R.base.replace(/^http/, "ws");
    const hits = window.__benchSockets.filter(
      (s) => s.ws.url.startsWith(url) && s.ws.readyState === 1 && s.ws !== R.ws);
    if (!hits.length) throw new Error("bench: no open socket of ours to " + R.base);
    return hits[hits.length - 1].fn;
  };

  // Replay while a job of ours runs (the server paces its nodes so it stays running; the
  // loops are synchronous, so no real frame interleaves). Order alternates per round.
  EV.replay = async (workflow, cfg) => {
    let live = null, go;
    const running = new Promise((res) => { go = res; });
    const got = { ours: { text: 0, frames: 0, bytes: 0, blobs: true },
                  js: { text: 0, frames: 0, bytes: 0, blobs: true } };
    const prev = (k) => (p) => {
      const g = got[k]; g.frames++;
      if (p.blob instanceof Blob) g.bytes += p.blob.size; else g.blobs = false;
    };
    const job = B.ours(workflow, await B.fresh(), {
      onProgress: (p) => {
        if (p.event === "executing" && !live) { live = p.promptId; go(); }
        if (FLOOD.has(p.event)) got.ours.text++;
      },
      onPreview: prev("ours"),
    });
    await running;
    await new Promise((r) => setTimeout(r, 0));           // out of our client's call stack
    const ours = oursListener();
    const js = B.refMessage;
    R.jobs.set(live, { events: 0, onEvent: (m) => { if (FLOOD.has(m.type)) got.js.text++; },
                       onPreview: prev("js") });
    const msgs = EV.texts.map((s) => s.split(EV.pid).join(live));
    const node = JSON.parse(msgs[msgs.length - 1]).data.node || "1";
    const small = Array.from({ length: cfg.frames }, () => EV.frame(live, node, cfg.frameBytes));
    const out = { text: { ours: [], js: [] }, frames: { ours: [], js: [] }, n: msgs.length,
                  bytesPerFrame: cfg.frameBytes, framesPerRound: cfg.frames };
    // Ours hands text messages to Python in batches, after the browser task that received
    // them (comfyui.js's TextBatch): its time runs until the last one was dispatched.
    const feed = async (fn, items, count) => {
      const want = count() + items.length;
      const t = performance.now();
      for (let i = 0; i < items.length; i++) fn({ data: items[i] });
      while (count() < want && performance.now() - t < 10_000) {
        await new Promise((r) => {           // one task turn, no timer clamp
          const c = new MessageChannel();
          c.port1.onmessage = () => r();
          c.port2.postMessage(0);
        });
      }
      return performance.now() - t;
    };
    try {
      for (let r = 0; r < cfg.rounds; r++) {
        for (const k of (r % 2 ? ["js", "ours"] : ["ours", "js"])) {
          const fn = k === "ours" ? ours : js;
          const t0 = got[k].text, f0 = got[k].frames;
          const dt = await feed(fn, msgs, () => got[k].text);
          if (got[k].text - t0 !== msgs.length)
            throw new Error(`bench: ${k} dispatched ${got[k].text - t0} of ${msgs.length}`);
          out.text[k].push(msgs.length / (dt / 1000));
          const df = await feed(fn, small, () => got[k].frames);
          if (got[k].frames - f0 !== small.length)
            throw new Error(`bench: ${k} passed ${got[k].frames - f0} of ${small.length} frames`);
          out.frames[k].push(small.length / (df / 1000));
        }
      }
      // big frames through ours: the wasm heap must not grow by the frame size
      const big = EV.frame(live, node, cfg.bigBytes);
      const h0 = await heap();
      const b0 = got.ours.bytes;
      for (let i = 0; i < cfg.bigFrames; i++) ours({ data: big });
      const h1 = await heap();
      out.big = { frameBytes: cfg.bigBytes, frames: cfg.bigFrames, heapBefore: h0, heapAfter: h1,
                  blobBytes: got.ours.bytes - b0 };
      // contrast: one copy of the same frame into Python
      const py = await window.comfy.getPyodide();
      const copy = py.runPython("lambda b: len(b.to_bytes())");
      const n = copy(big); copy.destroy();
      out.big.copiedBytes = n; out.big.heapAfterCopy = await heap();
    } finally {
      R.jobs.delete(live);
    }
    out.blobs = got.ours.blobs && got.js.blobs;
    await job;
    return out;
  };
})();
"""


BREAKDOWN_PY = r"""
import json as _json, time as _time
from comfyui_client.protocol import events as _ev
from comfyui_client import jobs as _J
from comfyui_client._browser import BrowserTransport as _BT

def _bench_breakdown():
    texts = _bench_texts.to_py()
    pid = _json.loads(texts[0])["data"]["prompt_id"]
    job = _J.new_job(pid, "http://a", now=0.0, prompt_id=pid,
                     workflow={"1": {"class_type": "LoadImage", "inputs": {"image": "x"}}})
    job = _J.submitted(_J.submit_started(job, now=0.0), now=0.0)
    for m in ({"type": "execution_start", "data": {"prompt_id": pid}},
              {"type": "executing", "data": {"prompt_id": pid, "node": "1"}}):
        job = _J.apply_event(job, _ev.decode_text(_json.dumps(m)), now=0.0)
    events = [_ev.decode_text(t) for t in texts]
    bt = _BT()
    send = bt.progress_sender(_bench_noop, job.job_id, job.prompt_id, job.server,
                              job.total_nodes)
    n = len(texts)

    def per(fn):
        best = None
        for _ in range(3):
            t0 = _time.perf_counter()
            fn()
            dt = (_time.perf_counter() - t0) / n * 1e6
            best = dt if best is None else min(best, dt)
        return round(best, 2)

    def apply_all():
        j = job
        for e in events:
            j = _J.apply_event(j, e, now=1.0)

    return {
        "decode_text": per(lambda: [_ev.decode_text(t) for t in texts]),
        "jobs.apply_event": per(apply_all),
        "progress sender (callback)": per(lambda: [send("progress", job.state, job.progress,
                                                       job.current_node, job.node_value,
                                                       job.node_max) for _ in events]),
        "JS callback call": per(lambda: [_bench_noop(None) for _ in events]),
        "env.now()": per(lambda: [bt.now() for _ in events]),
    }

_json.dumps(_bench_breakdown())
"""


def _set_faults(group: Any, **values: Any) -> None:
    """Set dev-server knobs in the servers' own loop (see faults.py's thread rules)."""
    def apply() -> None:
        for name, value in values.items():
            setattr(group.servers[0].faults, name, value)
    group.call(apply)


def bench_events(browser: Any, base: str, group: Any, a: Any, log: Any,
                 workflow: dict, boot_timeout_ms: int) -> dict:
    """Both measurements on the first dev server of ``group`` (a fresh browser context)."""
    server = group.urls[0]
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.add_init_script(WS_HOOK)
        page.goto(f"{base}/_bench_ours.html")
        page.wait_for_function("window.harnessReady === true", timeout=boot_timeout_ms)
        from bench.harness import INIT_JS, JOBS_JS

        page.evaluate(INIT_JS, [server])

        page.evaluate(JOBS_JS)
        page.evaluate("(src) => { window.BREAKDOWN_PY = src; }", BREAKDOWN_PY)
        page.evaluate(EVENTS_JS)
        page.evaluate("window.bench.makeInput()")
        page.evaluate("(u) => window.bench.refConnect(u)", server)
        _set_faults(group, flood_progress=a.flood, flood_previews=a.flood_previews)
        e2e: dict[str, list[dict]] = {"ours": [], "js": []}
        try:
            for kind in ("ours", "js"):  # warm-up, untimed
                page.evaluate("([k, w]) => window.bench.ev.e2e(k, w)", [kind, workflow])
            for i in range(a.event_rounds):
                for kind in (("ours", "js") if i % 2 == 0 else ("js", "ours")):
                    e2e[kind].append(page.evaluate("([k, w]) => window.bench.ev.e2e(k, w)",
                                                   [kind, workflow]))
            cap = page.evaluate("(w) => window.bench.ev.capture(w)", workflow)
        finally:
            _set_faults(group, flood_progress=0, flood_previews=0)
        breakdown = page.evaluate("() => window.bench.ev.breakdown()")
        log(f"  per-message breakdown (µs): {breakdown}")
        log(f"  end to end: ours {_rate(e2e['ours'][-1]):.0f} msg/s, "
            f"js {_rate(e2e['js'][-1]):.0f} msg/s; captured {cap['n']} frames")
        _set_faults(group, node_delay_s=1.0)
        try:
            rep = page.evaluate("([w, c]) => window.bench.ev.replay(w, c)", [workflow, {
                "rounds": a.event_rounds, "frames": a.flood_previews,
                "frameBytes": 1024, "bigFrames": 2, "bigBytes": a.frame_mib * 1024 * 1024}])
        finally:
            _set_faults(group, node_delay_s=0.0)
        log(f"  replay: ours {max(rep['text']['ours']):.0f} msg/s, "
            f"js {max(rep['text']['js']):.0f} msg/s")
        return {"e2e": e2e, "capture": cap, "replay": rep, "flood": a.flood,
                "breakdown": breakdown,
                "flood_previews": a.flood_previews, "server": server}
    finally:
        ctx.close()


def _rate(c: dict) -> float:
    """Messages per second over the window from the first to the last flood message."""
    span = (c["t1"] - c["t0"]) / 1000.0
    return (c["n"] - 1) / span if span > 0 and c["n"] > 1 else 0.0


def _frame_rate(c: dict) -> float:
    span = (c["p1"] - c["p0"]) / 1000.0
    return (c["frames"] - 1) / span if span > 0 and c["frames"] > 1 else 0.0


def rates(ev: dict) -> dict[str, dict[str, list[float]]]:
    """Per-round rates: {"e2e_text"|"e2e_frames"|"replay_text"|"replay_frames": {ours, js}}."""
    return {
        "e2e_text": {k: [_rate(c) for c in v] for k, v in ev["e2e"].items()},
        "e2e_frames": {k: [_frame_rate(c) for c in v] for k, v in ev["e2e"].items()},
        "replay_text": ev["replay"]["text"],
        "replay_frames": ev["replay"]["frames"],
    }
