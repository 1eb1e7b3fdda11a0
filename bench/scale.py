"""Scale (issue 6, item 4): many dev-server instances in one process, many jobs from one page.

1. **Drain**: ``--scale-jobs`` jobs (default 512) started at once through ``processImage`` in
   job-affinity mode over ``--scale-servers`` instances (default 32): how many complete,
   time to drain, jobs per server, and consistency twice — the client's own audit
   (``validateServerConsistency()``) and, independently, the servers' request logs (every
   prompt_id submitted exactly once, to the server ``processImage`` reported, and its
   ``/history`` asked of that server only).
2. **Selection cost**: ``PoolClient.select()`` timed inside Python (the pure selection rule
   plus the in-flight count), idle and during the drain (20 calls every 250 ms; the sample
   with the most jobs in flight is kept, since the count is what grows); and
   ``getApiBaseUrl()`` from page JS (selection + one bridge crossing). Also single-job
   latency (15 sequential jobs) on the fresh page and again after every other job here, so a
   per-job cost that grows with the jobs the client keeps (it keeps up to 1000 finished
   records for ``getTaskHistory``) shows up.
3. **Memory**: JS heap (``performance.memory``, Chromium with ``--enable-precise-memory-info``
   and ``--js-flags=--expose-gc`` so a GC can be forced first), wasm heap (never shrinks:
   it is the high-water mark), live Python objects after ``gc.collect()``, and the client's
   own count of live PyProxies and WebSocket listeners (``debugWebSocketLock()``), before
   and after ``--leak-jobs`` more jobs (default 1000), sampled every quarter.
"""

from __future__ import annotations

import re
import time
from typing import Any

SCALE_JS = r"""
(() => {
  const B = window.bench;
  const S = (B.scale = {});
  S.snapshot = async () => {
    if (typeof window.gc === "function") { window.gc(); window.gc(); }
    const py = await window.comfy.getPyodide();
    const pyObjects = py.runPython("import gc as _gc; _gc.collect(); len(_gc.get_objects())");
    const dbg = await window.comfy.debugWebSocketLock();
    const mem = performance.memory;
    return {
      jsHeap: mem ? mem.usedJSHeapSize : null,
      wasmHeap: py._module.HEAPU8.length,
      pyObjects,
      liveProxies: dbg.liveProxies ?? null,
      wsListeners: dbg.wsListeners ?? null,
      pendingTasks: dbg.pendingTasks.length,
    };
  };
  // n jobs started together, each on an image of its own (made first, so every job runs
  // on its server); resolves with per-job {promptId, server, ok, error}
  S.drain = async (workflow, n) => {
    const blobs = [];
    for (let i = 0; i < n; i++) blobs.push(await B.fresh());
    const t = performance.now();
    const settled = await Promise.allSettled(blobs.map((blob) =>
      window.comfy.processImage(workflow, blob).then(async (r) => {
        const bytes = (await r.images[0].blob.arrayBuffer()).byteLength;
        if (!bytes) throw new Error("empty output");
        return { promptId: r.promptId, server: r.server };
      })));
    const ms = performance.now() - t;
    const jobs = settled.map((s) => s.status === "fulfilled"
      ? { ok: true, ...s.value } : { ok: false, error: String(s.reason && s.reason.message) });
    return { ms, jobs };
  };
  // n jobs, at most `width` in flight; a snapshot every `every` completed jobs
  S.leak = async (workflow, n, width, every) => {
    const snaps = [{ done: 0, ...(await S.snapshot()) }];
    let started = 0, done = 0, failed = 0;
    const t = performance.now();
    const worker = async () => {
      while (started < n) {
        started++;
        try {
          const r = await window.comfy.processImage(workflow, await B.fresh());
          await r.images[0].blob.arrayBuffer();
        } catch (e) { failed++; }
        done++;
      }
    };
    const workers = [];
    let next = every;
    for (let i = 0; i < width; i++) workers.push(worker());
    while (done < n) {
      await new Promise((r) => setTimeout(r, 50));
      if (done >= next && done < n) {
        snaps.push({ done, ...(await S.snapshot()) });
        next += every;
      }
    }
    await Promise.all(workers);
    const ms = performance.now() - t;
    await new Promise((r) => setTimeout(r, 500));    // sockets closed, proxies destroyed
    snaps.push({ done, ...(await S.snapshot()) });
    return { ms, failed, snaps };
  };
  // the selection rule itself, in Python, on the page's own client
  S.selectCost = async (n) => {
    const py = await window.comfy.getPyodide();
    return py.runPython(`
import gc as _gc, time as _t
from comfyui_client.client import PoolClient as _PC
_c = next(o for o in _gc.get_objects() if isinstance(o, _PC))
_t0 = _t.perf_counter()
for _i in range(${n}):
    _c.select()
_us = (_t.perf_counter() - _t0) / ${n} * 1e6
_inflight = sum(_c.book.inflight().values())
del _c
[_us, _inflight]`).toJs();
  };
  // the drain, sampling the selection cost while it runs; keeps the busiest sample
  S.drainSampled = async (workflow, n) => {
    let finished = false;
    const run = S.drain(workflow, n).finally(() => { finished = true; });
    let busy = [0, -1];
    while (!finished) {
      await new Promise((r) => setTimeout(r, 250));    // rare and short: <1% of the page
      if (finished) break;
      const sample = await S.selectCost(20);
      if (sample[1] > busy[1]) busy = sample;
    }
    return { ...(await run), busySelect: busy };
  };
  // sequential single-job latency (ms), to see whether it grows with the jobs kept
  S.latency = async (workflow, n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now(); await B.ours(workflow); out.push(performance.now() - t);
    }
    return out;
  };
  S.apiBaseCost = async (n) => {
    const t = performance.now();
    for (let i = 0; i < n; i++) await window.comfy.getApiBaseUrl();
    return (performance.now() - t) / n * 1000;    // us per call
  };
})();
"""

_HISTORY = re.compile(r"^(?:/api)?/history/([0-9a-f-]{36})$")


def server_log_check(group: Any, jobs: list[dict]) -> dict[str, Any]:
    """Independent of the client: the servers' own request logs agree with every job."""
    where = {j["promptId"]: j["server"] for j in jobs if j.get("ok")}
    submitted: dict[str, list[str]] = {}
    history: dict[str, set[str]] = {}
    for i, url in enumerate(group.urls):
        for e in group.log(i):
            if e.get("kind") != "http":
                continue
            if e.get("method") == "POST" and e.get("path", "").endswith("/prompt") \
                    and e.get("prompt_id"):
                submitted.setdefault(e["prompt_id"], []).append(url)
            m = _HISTORY.match(e.get("path", ""))
            if m:
                history.setdefault(m.group(1), set()).add(url)
    bad = [pid for pid, server in where.items()
           if submitted.get(pid) != [server] or history.get(pid, {server}) != {server}]
    return {"checked": len(where), "mismatched": len(bad), "examples": bad[:3]}


def bench_scale(browser: Any, base: str, a: Any, log: Any, workflow: dict,
                boot_timeout_ms: int) -> dict:
    from bench.harness import JOBS_JS
    from comfyui_devserver import ServerGroup

    t0 = time.monotonic()
    with ServerGroup(count=a.scale_servers, cors_origin="*") as group:
        log(f"  {a.scale_servers} dev servers up in {time.monotonic() - t0:.1f} s")
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(f"{base}/_bench_ours.html")
            page.wait_for_function("window.harnessReady === true", timeout=boot_timeout_ms)
            page.evaluate("(s) => window.comfy.init({servers: s, affinity: 'job'})"
                          ".then(() => window.comfy.bootCacheSaved)", group.urls)
            page.evaluate(JOBS_JS)
            page.evaluate(SCALE_JS)
            page.evaluate("window.bench.makeInput()")
            page.evaluate("(w) => window.bench.ours(w)", workflow)  # warm-up
            lat_fresh = page.evaluate("([w, n]) => window.bench.scale.latency(w, n)",
                                      [workflow, 15])
            idle_select = page.evaluate("(n) => window.bench.scale.selectCost(n)", 2000)
            idle_api = page.evaluate("(n) => window.bench.scale.apiBaseCost(n)", 200)
            # drain, with the selection cost sampled while every job is in flight
            drain = page.evaluate("([w, n]) => window.bench.scale.drainSampled(w, n)",
                                  [workflow, a.scale_jobs])
            busy_select = drain["busySelect"]
            ok = [j for j in drain["jobs"] if j["ok"]]
            per_server: dict[str, int] = {}
            for j in ok:
                per_server[j["server"]] = per_server.get(j["server"], 0) + 1
            consistency = page.evaluate("() => window.comfy.validateServerConsistency()")
            logs = server_log_check(group, drain["jobs"])
            log(f"  drain: {len(ok)}/{a.scale_jobs} ok in {drain['ms']:.0f} ms; consistent "
                f"{consistency['consistent']}; server logs mismatched {logs['mismatched']}")
            leak = page.evaluate("([w, n, k, e]) => window.bench.scale.leak(w, n, k, e)",
                                 [workflow, a.leak_jobs, min(a.scale_servers * 2, 64),
                                  max(1, a.leak_jobs // 4)])
            lat_full = page.evaluate("([w, n]) => window.bench.scale.latency(w, n)",
                                     [workflow, 15])
            late_select = page.evaluate("(n) => window.bench.scale.selectCost(n)", 2000)
            first, last = leak["snaps"][0], leak["snaps"][-1]
            log(f"  {a.leak_jobs} more jobs in {leak['ms']:.0f} ms, {leak['failed']} failed; "
                f"wasm heap {first['wasmHeap'] / 2**20:.1f} -> {last['wasmHeap'] / 2**20:.1f} MiB, "
                f"live proxies {first['liveProxies']} -> {last['liveProxies']}")
            return {"servers": a.scale_servers, "jobs": a.scale_jobs, "drain_ms": drain["ms"],
                    "ok": len(ok), "errors": [j["error"] for j in drain["jobs"]
                                               if not j["ok"]][:3],
                    "per_server": per_server, "consistency": {
                        k: consistency.get(k) for k in ("consistent", "reason", "checkedJobs",
                                                        "droppedRecords")},
                    "violations": len(consistency.get("violations") or []),
                    "server_logs": logs,
                    "select_idle_us": idle_select[0], "select_busy_us": busy_select[0],
                    "busy_inflight": busy_select[1], "api_base_idle_us": idle_api,
                    "select_late_us": late_select[0],
                    "lat_fresh": lat_fresh, "lat_full": lat_full,
                    "leak": leak, "leak_jobs": a.leak_jobs}
        finally:
            ctx.close()
