"""Benchmarks for comfyui.js (not tests): ``python3 build.py bench [options]``
(``--help`` lists them; ``--quick`` is a ~1 minute smoke run).

1. Boot: page load -> ``init()`` resolved, cold (new browser context per run) and warm
   (same context, reload: ours restores its boot cache; also ours with ``bootCache:
   false``), against bare ``loadPyodide()`` of the same core in the same browser; plus the
   ``bootTimings`` breakdown, with ``loadPyodide`` split where the main wasm module was
   instantiated.
2. Per-job overhead: sequential upload -> invert -> download jobs through ``processImage``
   against a minimal plain-JS reference client in the same page on the same server; then
   batches of concurrent jobs (throughput); requests per job by route from the server's log;
   what the console's lock story costs a job at each ``init({log})`` level
   (``bench/logcost.py``).
3. Event throughput (``bench/events.py``): JSON messages and preview frames per second to a
   JS callback, ours vs the reference, end to end under the dev server's flood and replayed
   in the page (client-bound); the no-copy check for preview bytes; a per-message breakdown.
4. Scale (``bench/scale.py``): 32 dev-server instances in one process, 512 jobs at once in
   job-affinity mode, consistency from the audit and from the servers' logs, selection cost,
   memory and live proxies before and after 1000 more jobs.
5. ``--servers URL,...``: item 2 against the given (real ComfyUI) servers, first URL; items
   3 and 4 need dev servers and are skipped.

Every figure is a median with min and max over repeated runs; every comparison is a ratio
measured in the same browser in the same run. Writes BENCHMARKS.md at the project root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _sub in (".", "py_src", "tests"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

from bench.events import bench_events  # noqa: E402
from bench.harness import (  # noqa: E402
    BARE,
    BUSY_PY,
    HOPS_JS,
    JOBS_JS,
    OURS,
    SEGMENTS_HOOK,
    SEGMENTS_JS,
    WARMTH_JS,
    WARMTH_PY,
    WASM_HOOK,
)
from bench.logcost import log_cost, log_cost_report  # noqa: E402
from bench.scale import bench_scale  # noqa: E402

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
}
BOOT_TIMEOUT_MS = 120_000
# bounded counts: loopback benchmarks, not load tests
MAX_RUNS, MAX_JOBS, MAX_CONC, MAX_ROUNDS = 50, 500, 16, 50


def build_parser() -> argparse.ArgumentParser:
    """The options (also listed in BENCHMARKS.md, generated from this parser)."""
    p = argparse.ArgumentParser(prog="build.py bench", description="comfyui.js benchmarks")
    p.add_argument("--servers", default=None,
                   help="comma-separated ComfyUI base URLs for the job benchmarks "
                        "(the first is used; default: a dev server on 127.0.0.1)")
    p.add_argument("--server-label", default=None,
                   help="with --servers: what the server is (its version, how it was started, "
                        "its hardware), written into the report beside its URL")
    p.add_argument("--runs", type=int, default=5, help="boot runs per variant (default 5)")
    p.add_argument("--jobs", type=int, default=20,
                   help="timed sequential jobs per client (default 20)")
    p.add_argument("--concurrency", default="4,16",
                   help="jobs in flight per concurrent batch; a comma list measures each "
                        "width (default 4,16)")
    p.add_argument("--rounds", type=int, default=5,
                   help="concurrent batches per client (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed jobs per client (default 2)")
    p.add_argument("--flood", type=int, default=5000,
                   help="event throughput: progress messages the dev server floods per job; "
                        "each comes with a progress_state message, so 2x JSON frames "
                        "(default 5000)")
    p.add_argument("--flood-previews", type=int, default=500,
                   help="event throughput: preview frames per flooded job, and 1 KiB "
                        "frames per replay round (default 500)")
    p.add_argument("--event-rounds", type=int, default=3,
                   help="event throughput: timed rounds per client (default 3)")
    p.add_argument("--frame-mib", type=int, default=16,
                   help="event throughput: size of the large preview frames used for the "
                        "no-copy check, MiB (default 16)")
    p.add_argument("--scale-servers", type=int, default=32,
                   help="scale: dev-server instances in one process (default 32)")
    p.add_argument("--scale-jobs", type=int, default=512,
                   help="scale: jobs started at once in job-affinity mode (default 512)")
    p.add_argument("--leak-jobs", type=int, default=1000,
                   help="scale: jobs between the memory snapshots (default 1000)")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions where not given explicitly (3 boot runs, 10 jobs, "
                        "3 batches, 2 event rounds, flood 2000/200, 128 scale jobs, 250 leak "
                        "jobs): a smoke run in about a minute (the full run: about 2-3)")
    p.add_argument("--skip-boot", action="store_true", help="skip the boot benchmark")
    p.add_argument("--skip-jobs", action="store_true", help="skip the per-job benchmark")
    p.add_argument("--skip-events", action="store_true",
                   help="skip the event-throughput benchmark")
    p.add_argument("--skip-scale", action="store_true", help="skip the scale benchmark")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="report path")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(argv)
    a.argv = list(argv)
    if a.quick:
        for name, value in (("runs", 3), ("jobs", 10), ("rounds", 3), ("event_rounds", 2),
                            ("scale_jobs", 128), ("leak_jobs", 250), ("flood", 2000),
                            ("flood_previews", 200)):
            if getattr(a, name) == p.get_default(name):
                setattr(a, name, value)
    try:
        a.widths = [int(w) for w in str(a.concurrency).split(",") if w.strip()]
    except ValueError:
        p.error("--concurrency takes integers, e.g. 4 or 4,16")
    if not a.widths or not all(1 <= w <= MAX_CONC for w in a.widths):
        p.error(f"--concurrency widths must be between 1 and {MAX_CONC}")
    for name, hi in (("runs", MAX_RUNS), ("jobs", MAX_JOBS),
                     ("rounds", MAX_ROUNDS), ("flood", 100_000), ("flood_previews", 10_000),
                     ("event_rounds", MAX_ROUNDS), ("frame_mib", 256), ("scale_servers", 64),
                     ("scale_jobs", 2048), ("leak_jobs", 5000)):
        v = getattr(a, name)
        if not 1 <= v <= hi:
            p.error(f"--{name.replace('_', '-')} must be between 1 and {hi}")
    if not 0 <= a.warmup <= 20:
        p.error("--warmup must be between 0 and 20")
    if a.servers is not None:
        a.servers = [u.strip().rstrip("/") for u in a.servers.split(",") if u.strip()]
        if not a.servers:
            p.error("--servers needs at least one URL")
    if a.server_label is not None:
        if a.servers is None:
            p.error("--server-label describes --servers: give both")
        a.server_label = " ".join(a.server_label.split())
        if not a.server_label or len(a.server_label) > 300:
            p.error("--server-label must be 1-300 characters")
    return a


# --------------------------------------------------------------------------- statistics


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s: dict[str, float], unit: str = "ms", digits: int = 1) -> str:
    return (f"{s['median']:.{digits}f} {unit} ({s['min']:.{digits}f} – "
            f"{s['max']:.{digits}f})").replace(" ()", "")


def ratio(a: dict[str, float], b: dict[str, float]) -> float:
    return a["median"] / b["median"]


# --------------------------------------------------------------------------- machine


def machine_info(browser) -> dict[str, str]:
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pyo = "?"
    for pj in (ROOT / "node_modules" / "pyodide" / "package.json", ROOT / "package.json"):
        try:
            data = json.loads(pj.read_text())
        except (OSError, ValueError):
            continue
        pyo = data.get("version") if pj.parent.name == "pyodide" else \
            data.get("dependencies", {}).get("pyodide", "?")
        break
    return {"nproc": str(os.cpu_count()), "ram": ram, "cpu": cpu,
            "os": f"{platform.system()} {platform.release()}",
            "chromium": browser.version, "pyodide": pyo,
            "python_host": platform.python_version()}


# --------------------------------------------------------------------------- boot


def _wait_boot(page) -> float:
    page.wait_for_function("window.bootMs !== undefined || window.bootError !== undefined",
                           timeout=BOOT_TIMEOUT_MS, polling=20)
    err = page.evaluate("window.bootError")
    if err:
        raise RuntimeError(f"boot failed: {err}")
    return float(page.evaluate("window.bootMs"))


# the boot variants: ours restores its boot cache on warm loads; "nocache" is ours with
# init({bootCache: false}), i.e. what every boot costs without the snapshot
BOOT_VARIANTS = ("ours", "nocache", "bare")


def _boot_breakdown(page) -> dict:
    """comfy.bootTimings plus the split of loadPyodide at the main wasm's instantiation."""
    b = dict(page.evaluate("window.bootBreakdown") or {})
    wasm = page.evaluate("window.wasmReadyAt")
    if wasm is not None and "startedAt" in b and "loadEnd" in b:
        load_start = b["startedAt"] + b.get("importLoader", 0)
        b["toWasmReady"] = wasm - load_start
        b["afterWasm"] = b["loadEnd"] - wasm
    return b


def bench_boot(browser, base: str, servers: list[str], runs: int, log) -> dict:
    ours = f"{base}/_bench_ours.html?boot=" + json.dumps(servers[:1])
    urls = {"ours": ours, "nocache": ours + "&cache=0", "bare": f"{base}/_bench_bare.html"}
    out: dict = {"cold": {"ours": [], "bare": []}, "warm": {k: [] for k in BOOT_VARIANTS},
                 "breakdown": {"cold": {"ours": [], "bare": []},
                               "warm": {k: [] for k in BOOT_VARIANTS}}}

    def new_page():
        ctx = browser.new_context()
        ctx.add_init_script(WASM_HOOK)
        return ctx, ctx.new_page()

    # cold: a fresh context (empty HTTP, code and Cache Storage) per load; order alternates
    for i in range(runs):
        for kind in (("ours", "bare") if i % 2 == 0 else ("bare", "ours")):
            ctx, page = new_page()
            try:
                page.goto(urls[kind])
                out["cold"][kind].append(_wait_boot(page))
                out["breakdown"]["cold"][kind].append(_boot_breakdown(page))
            finally:
                ctx.close()
        log(f"  boot cold {i + 1}/{runs}: ours {out['cold']['ours'][-1]:.0f} ms, "
            f"bare {out['cold']['bare'][-1]:.0f} ms")
    # warm: one context per variant, primed once (ours: until its boot cache is saved),
    # then reloads, order rotating
    with ExitStack() as stack:
        pages = {}
        for kind in BOOT_VARIANTS:
            ctx, page = new_page()
            stack.callback(ctx.close)
            page.goto(urls[kind])
            _wait_boot(page)  # priming load, not counted
            if kind == "ours" and not page.evaluate("window.comfy.bootCacheSaved"):
                raise RuntimeError("the boot cache was not saved: see the page's console")
            pages[kind] = page
        for i in range(runs):
            order = BOOT_VARIANTS[i % 3:] + BOOT_VARIANTS[:i % 3]
            for kind in order:
                page = pages[kind]
                page.reload()
                out["warm"][kind].append(_wait_boot(page))
                out["breakdown"]["warm"][kind].append(_boot_breakdown(page))
            log(f"  boot warm {i + 1}/{runs}: "
                + ", ".join(f"{k} {out['warm'][k][-1]:.0f} ms" for k in BOOT_VARIANTS))
    cache_states = {b.get("bootCache") for b in out["breakdown"]["warm"]["ours"]}
    if cache_states != {"restored"}:
        raise RuntimeError(f"warm loads of ours did not restore the boot cache: {cache_states}")
    return out


# --------------------------------------------------------------------------- jobs


def _route(path: str) -> str:
    """A request path with its ids removed, so requests group by route."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "api":
        parts = parts[1:]
    if len(parts) >= 2 and parts[0] in ("history", "api/jobs", "jobs"):
        parts = [*parts[:1], "{id}"]
    return "/" + "/".join(parts)


def request_profile(page, group, n: int = 5) -> dict[str, dict[str, float]]:
    """Requests per job by route, from the dev server's own log, for n jobs of each client
    (ours first, then the reference), each on a new image, so extra round trips of ours
    show by name."""
    out: dict[str, dict[str, float]] = {}
    for kind, js in (("ours", "async (w) => window.bench.ours(w, await window.bench.fresh())"),
                     ("js", "async (w) => window.bench.refJob(w, await window.bench.fresh())")):
        start = len(group.log(0))
        for _ in range(n):
            page.evaluate(js, INVERT)
        counts: dict[str, float] = {}
        for e in group.log(0)[start:]:
            key = f"{e.get('method', 'WS')} {_route(e.get('path', ''))}" \
                if e.get("kind") == "http" else f"WS {e.get('kind')}"
            counts[key] = counts.get(key, 0) + 1 / n
        out[kind] = counts
    return out


def _jobs_page(ctx, base: str, server: str, *, python: str | None = None,
               reference: bool = True, options: dict | None = None) -> tuple[Any, int]:
    """A page of ours in ``ctx`` ready for jobs on ``server``: booted (running ``python``
    first, before init), ``init()`` given ``options`` beside the server, the input image
    made and, with ``reference``, the plain-JS client connected. Returns the page and the
    input's size in bytes."""
    page = ctx.new_page()
    page.goto(f"{base}/_bench_ours.html")
    page.wait_for_function("window.harnessReady === true", timeout=BOOT_TIMEOUT_MS)
    if python:
        page.evaluate("async (src) => (await window.comfy.getPyodide()).runPython(src)", python)
    # as harness.INIT_JS does: measure only once a cold boot's boot-cache save (a second interpreter
    # booting in a worker, ~2 s of CPU) is over
    page.evaluate("([s, o]) => window.comfy.init({servers: s, ...o})"
                  ".then(() => window.comfy.bootCacheSaved)", [[server], options or {}])
    page.evaluate(JOBS_JS)
    size = page.evaluate("window.bench.makeInput()")
    if reference:
        page.evaluate("(u) => window.bench.refConnect(u)", server)
    return page, size


def python_busy(browser, base: str, server: str, n: int = 10) -> dict[str, float] | None:
    """Wall time and Python busy time per job (ms) in a separate, instrumented page."""
    ctx = browser.new_context()
    try:
        page, _ = _jobs_page(ctx, base, server, python=BUSY_PY, reference=False)
        for _ in range(3):
            page.evaluate("async (w) => window.bench.ours(w, await window.bench.fresh())",
                          INVERT)
        return page.evaluate("""async ([w, n]) => {
            const py = await window.comfy.getPyodide();
            const blobs = [];
            for (let i = 0; i < n; i++) blobs.push(await window.bench.fresh());
            py.runPython("_bench_busy.clear()");
            const t = performance.now();
            for (const b of blobs) await window.bench.ours(w, b);
            const wall = (performance.now() - t) / n;
            const b = JSON.parse(py.runPython("import json; json.dumps(dict(_bench_busy))"));
            return { wall, callbacks: (b.callbacks || 0) * 1000 / n, ws: (b.ws || 0) * 1000 / n };
        }""", [INVERT, n])
    except Exception as exc:  # internal names changed: the line is left out, not the run
        print(f"  python busy time not measured: {exc}")
        return None
    finally:
        ctx.close()


# SEGMENTS_JS's milestones of a job, in its order (each client reaches them in its own)
SEGMENTS = [
    "upload request sent",
    "upload answered",
    "`POST /prompt` sent",
    "`/prompt` answered",
    "`executing{node: null}` received (the server ran the job)",
    "`GET /history` sent",
    "history answered",
    "`GET /view` sent",
    "image answered",
    "result in the caller's hands",
]


def job_segments(browser, base: str, server: str, n: int = 20) -> dict | None:
    """Median ms from the call to each milestone of a job (SEGMENTS), ours and the
    reference, each job on a new image, in a separate page whose fetch and WebSocket are
    wrapped to mark each request and the job's end."""
    ctx = browser.new_context()
    try:
        ctx.add_init_script(SEGMENTS_HOOK)
        page, _ = _jobs_page(ctx, base, server)
        page.evaluate(SEGMENTS_JS, [INVERT, 3])  # warm-up
        runs = page.evaluate(SEGMENTS_JS, [INVERT, n])
        if not runs["ours"] or not runs["js"]:
            return None
        return {k: {"n": len(v), "at": [statistics.median(col) for col in zip(*v, strict=True)]}
                for k, v in runs.items()}
    except Exception as exc:  # the page changed shape: the table is left out, not the run
        print(f"  job segments not measured: {exc}")
        return None
    finally:
        ctx.close()


# the waits step_warmth times a step after: one loop turn, and the order of an answer's wait
# (1 and 4 ms: a request on loopback) and of a server's run (30 ms)
WARMTH_DELAYS_MS = [0, 1, 4, 30]


def executed_message(prompt_id: str) -> str:
    """An ``executed`` message as ComfyUI 0.33 sends it for a SaveImage node (its shape in
    the recorded traffic), for step_warmth."""
    return json.dumps({"type": "executed", "data": {
        "node": "3", "display_node": "3", "prompt_id": prompt_id,
        "output": {"images": [{"filename": "bench_00001_.png", "subfolder": "",
                               "type": "output"}]}}})


def step_warmth(browser, base: str, server: str, n: int = 100) -> dict | None:
    """µs for one small request step, ours (Python) and the reference's (JS), run back to
    back and after each of WARMTH_DELAYS_MS of idle: why a job's Python steps cost several
    times what the same code costs in a loop."""
    ctx = browser.new_context()
    try:
        page, _ = _jobs_page(ctx, base, server, python=WARMTH_PY, reference=False)
        for _ in range(3):  # the client's code has run, as in a real job
            page.evaluate("async (w) => window.bench.ours(w, await window.bench.fresh())",
                          INVERT)
        text = executed_message("3f1c2e4a-9b7d-4c1e-8a2f-6d5e4c3b2a10")
        return page.evaluate(WARMTH_JS, [server, text, WARMTH_DELAYS_MS, n])
    except Exception as exc:  # internal names changed: the table is left out, not the run
        print(f"  step warmth not measured: {exc}")
        return None
    finally:
        ctx.close()


def loop_hops(browser, base: str, server: str) -> dict | None:
    """µs from a JS promise's resolution to the awaiting Python task running, in a page as
    shipped and in one with ``init({microtaskLoop: false})`` (Pyodide's own scheduling):
    back to back, and after 3 ms idle as after a request."""
    out = {}
    try:
        for key, on in (("on", True), ("off", False)):
            ctx = browser.new_context()
            try:
                page, _ = _jobs_page(ctx, base, server, reference=False,
                                     options={"microtaskLoop": on})
                out[key] = page.evaluate(HOPS_JS, [2000, 200])
            finally:
                ctx.close()
    except Exception as exc:  # the table is left out, not the run
        print(f"  loop hops not measured: {exc}")
        return None
    return out


def bench_jobs(browser, base: str, server: str, a: argparse.Namespace, log,
               group=None) -> dict:
    ctx = browser.new_context()
    try:
        page, size = _jobs_page(ctx, base, server)
        log(f"  input PNG 256x256: {size} bytes; server {server}")
        lat = page.evaluate("([w, n, k]) => window.bench.sequential(w, n, k, 'new')",
                            [INVERT, a.jobs, a.warmup])
        log(f"  sequential, new image per job: ours median "
            f"{statistics.median(lat['ours']):.1f} ms, js median "
            f"{statistics.median(lat['js']):.1f} ms")
        repeat = page.evaluate("([w, n, k]) => window.bench.sequential(w, n, k, 'repeat')",
                               [INVERT, a.jobs, a.warmup])
        log(f"  sequential, same image again: ours median "
            f"{statistics.median(repeat['ours']):.1f} ms, js median "
            f"{statistics.median(repeat['js']):.1f} ms")
        conc: dict[int, dict[str, list[float]]] = {}
        for width in a.widths:
            conc[width] = {"ours": [], "js": []}
            for i in range(a.rounds):
                for kind in (("ours", "js") if i % 2 == 0 else ("js", "ours")):
                    wall = page.evaluate("([k, w, n]) => window.bench.batch(k, w, n)",
                                         [kind, INVERT, width])
                    conc[width][kind].append(width / (wall / 1000.0))  # jobs per second
            log(f"  concurrent x{width}: ours median "
                f"{statistics.median(conc[width]['ours']):.2f} jobs/s, js median "
                f"{statistics.median(conc[width]['js']):.2f} jobs/s")
        reqs = request_profile(page, group) if group is not None else None
    finally:
        ctx.close()
    busy = python_busy(browser, base, server)
    if busy:
        log(f"  python busy per job: {busy['callbacks'] + busy['ws']:.1f} ms of "
            f"{busy['wall']:.1f} ms wall")
    segments = job_segments(browser, base, server)
    warmth = step_warmth(browser, base, server)
    if warmth:
        log(f"  one step: Python {warmth['py']['hot']:.1f} µs hot, "
            f"{warmth['py'][str(WARMTH_DELAYS_MS[-1])]:.1f} µs after "
            f"{WARMTH_DELAYS_MS[-1]} ms idle")
    hops = loop_hops(browser, base, server)
    if hops:
        log(f"  asyncio wake-up after a JS answer: {hops['on']['idle']:.0f} µs, "
            f"{hops['off']['idle']:.0f} µs with microtaskLoop false")
    return {"lat": lat, "repeat": repeat, "conc": conc, "input_bytes": size,
            "requests": reqs, "busy": busy, "segments": segments, "warmth": warmth,
            "hops": hops}


# --------------------------------------------------------------------------- report


def hops_lines(h: dict) -> list[str]:
    """The asyncio wake-up table, for BENCHMARKS.md."""
    on, off = h["on"], h["off"]
    return ["Waking a Python task when a JS promise resolves (each step of a job does it once "
            "its answer is in), mean µs, as shipped (asyncio callbacks in a microtask, "
            "`MicrotaskSoon`) and with `init({microtaskLoop: false})` (Pyodide's own "
            "scheduling: a browser task per callback), each in a page of its own:", "",
            "| wake-up | as shipped | `microtaskLoop: false` |", "|---|---|---|",
            f"| back to back (`await` of a resolved promise, {on['n']} times) | "
            f"{on['hot']:.1f} | {off['hot']:.1f} |",
            f"| after 3 ms idle (as after a request; {on['nIdle']} times) | "
            f"{on['idle']:.1f} | {off['idle']:.1f} |", ""]


def warmth_lines(w: dict) -> list[str]:
    """The step-warmth table and what it means, for BENCHMARKS.md."""
    py, js = w["py"], w["js"]
    L = ["Why each of those steps costs more than its code does in a loop: one small piece of "
         "a step (decode an `executed` message, apply it to the job's state, append an audit "
         "record, build the next URL), run back to back and then once after each wait, as a "
         "job's steps run after the page waited for an answer. Ours runs the client's own "
         "functions in Python (its cyclic GC off while measured); the reference's is the same "
         "work in JS. Mean µs per step, 100 runs per row (back to back: the median of 5 "
         "batches of 100 for Python):", "",
         "| run | ours (Python) | × back to back | JS reference | × back to back |",
         "|---|---|---|---|---|",
         f"| back to back | {py['hot']:.1f} | 1.0× | {js['hot']:.2f} | 1.0× |"]
    for d in WARMTH_DELAYS_MS:
        k = str(d)
        label = "after one loop turn" if d == 0 else f"after {d} ms idle"
        L.append(f"| {label} | {py[k]:.1f} | {py[k] / py['hot']:.1f}× | {js[k]:.2f} | "
                 f"{js[k] / max(js['hot'], 1e-9):.1f}× |")
    last = str(WARMTH_DELAYS_MS[-1])
    L += ["", f"After {last} ms idle the same Python code took {py[last] / py['hot']:.1f}× its "
          f"back-to-back time (+{py[last] - py['hot']:.0f} µs), the JS reference's "
          f"+{js[last] - js['hot']:.0f} µs on its far smaller code. Most likely the code and "
          "data a step touches left the CPU's caches while the page waited; the wasm "
          "interpreter touches much more of both than JIT-compiled JS does. Every step of a "
          "job comes after such a wait, which is why a job's Python time (above) is several "
          "times the sum of its functions timed in a loop, and why it follows how much code "
          "a step touches more than how much it computes.", ""]
    return L


def report(a, info, boot, jobs, events, scale, server_kind, server_url,
           elapsed) -> tuple[str, list[str]]:
    L: list[str] = []
    heads: list[tuple[str, str, str]] = []  # (what, ours / reference, the figures)
    L += ["# Benchmarks", "",
          "Generated by `python3 build.py bench` (`bench/run.py`). Benchmarks, not tests: "
          "figures are **median (min – max)** over repeated runs; every comparison is a "
          "ratio of medians measured in the same headless Chromium in the same run, over "
          "loopback only.", "",
          "## Machine", "",
          "| | |", "|---|---|",
          f"| CPU | {info['cpu']} |", f"| nproc | {info['nproc']} |", f"| RAM | {info['ram']} |",
          f"| OS | {info['os']} |", f"| Chromium | {info['chromium']} (headless) |",
          f"| Pyodide | {info['pyodide']} (package.json) |",
          f"| Host Python | {info['python_host']} |",
          f"| Run | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s total |",
          ""]
    L += ["## Method", "",
          "- **Boot**: time from navigation start to `init({servers})` resolved "
          "(`performance.now()` in the page), for a page that imports `web/comfyui.js`; "
          "the bare reference is a page that imports the same `dist/pyodide/pyodide.mjs` and "
          "awaits `loadPyodide({indexURL})` with the same indexURL and no packages. "
          f"*Cold*: a new browser context per load ({a.runs} runs each, order alternating). "
          f"*Warm*: one context per variant, primed once, then {a.runs} `reload()`s each "
          "(the static server sends `Cache-Control: no-cache`, so warm loads revalidate); "
          "three variants: ours, ours with `bootCache: false`, bare. "
          "Breakdown from `comfy.bootTimings` and a hook on "
          "`WebAssembly.instantiateStreaming`.",
          "- **Jobs**: workflow LoadImage -> ImageInvert -> SaveImage on a 256x256 PNG made "
          "in the page with OffscreenCanvas. Two cases: *new image* (every job of either "
          "client on an image of its own, made before its timing starts, so the server "
          "runs every node) and *same image again* (every job on one image: ours names its "
          "upload after the bytes, the reference uploads it under one fixed name with "
          "`overwrite`, as the old module did with the caller's file name; both then meet "
          "ComfyUI's cache). Concurrent batches and every other table use new images. "
          "*Ours*: `processImage(workflow, blob)` then "
          "reading the output blob. *JS reference*: plain JS in the same page — FormData "
          "`POST /upload/image`, `POST /prompt` with `client_id` and a `prompt_id` it chose "
          "(registered before the POST, as ours does), one persistent WebSocket "
          "`/ws?clientId=` (announcing `supports_preview_metadata`) whose handler parses "
          "every message, routes it by prompt_id and keeps the job's state, waiting for "
          "`executing{node:null}` of the prompt_id, "
          "`GET /history/{id}` (retried every 5 ms while empty), `GET /view`. Both use the "
          f"same server. {a.warmup} untimed warm-up jobs per client, then {a.jobs} timed "
          "sequential jobs per client, interleaved with alternating order. Concurrent: "
          f"{a.rounds} batches of {' and of '.join(map(str, a.widths))} jobs started "
          "together per client "
          "(alternating), throughput = jobs / batch wall time. *Ours* runs as shipped "
          "(asyncio callbacks in microtasks, `MicrotaskSoon`).",
          "- **Event throughput** and **Scale**: see their sections (dev servers only: "
          "they need the dev server's flood knobs and many instances).",
          f"- **Server**: {server_kind} `{server_url}`.",
          f"- **Command**: `{('python3 build.py bench ' + ' '.join(a.argv)).strip()}`", ""]
    L += ["## Options", "", "`python3 build.py bench [options]`; this run's values:", "",
          "| option | this run | meaning |", "|---|---|---|"]
    for act in build_parser()._actions:
        if not act.option_strings or act.dest in ("help", "out"):
            continue
        value = getattr(a, act.dest, None)
        shown = ",".join(value) if isinstance(value, list) else value
        L.append(f"| `{act.option_strings[0]}` | {shown} | {act.help} |")
    L.append("")
    if boot:
        c = {k: stats(v) for k, v in boot["cold"].items()}
        w = {k: stats(v) for k, v in boot["warm"].items()}
        rc, rw = ratio(c["ours"], c["bare"]), ratio(w["ours"], w["bare"])
        rn = ratio(w["nocache"], w["bare"])
        L += ["## Boot (page load -> ready)", "",
              "*Ours* is comfyui.js as shipped: a warm load restores the boot cache (a memory "
              "snapshot of the interpreter with the client imported, made by a worker after "
              "the first boot and kept in Cache Storage); a cold load (new context: empty "
              "caches) boots normally and starts that worker once the page is quiet after "
              "`init()` (no call into Python for 1 s). "
              "*Ours, no boot cache* is `init({bootCache: false})`.", "",
              "| | ours: comfyui.js `init()` | bare `loadPyodide()` | ours / bare |",
              "|---|---|---|---|",
              f"| cold (new context) | {fmt(c['ours'])} | {fmt(c['bare'])} | {rc:.2f}× |",
              f"| warm (reload) | {fmt(w['ours'])} | {fmt(w['bare'])} | {rw:.2f}× |",
              f"| warm, ours without the boot cache | {fmt(w['nocache'])} | {fmt(w['bare'])} "
              f"| {rn:.2f}× |", "",
              "Where the time goes (median ms). `comfy.bootTimings`: `importLoader` -> "
              "`importClient` are the boot's phases and `total` their sum; `pageAndModule` is "
              "navigation start -> the page's script runs (page load and importing "
              "comfyui.js), `initOwn` is what `init()` adds after the boot (configuring the "
              "pool). `loadPyodide` is split where Pyodide's main wasm module was "
              "instantiated (`WebAssembly.instantiateStreaming` resolved, timed by a hook "
              "the bench adds): `toWasmReady` is fetching `pyodide.asm.mjs` and the wasm "
              "with its compile, overlapping the stdlib's download; `afterWasm` is CPython's "
              "start, its stdlib imports and Pyodide's bootstrap (or, restored, the "
              "snapshot's copy into memory):", "",
              "| phase | cold, ours | cold, bare | warm, ours (restored) | "
              "warm, ours, no boot cache | warm, bare |", "|---|---|---|---|---|---|"]
        cols = [("cold", "ours"), ("cold", "bare"), ("warm", "ours"), ("warm", "nocache"),
                ("warm", "bare")]
        for key in ("pageAndModule", "importLoader", "loadPyodide", "toWasmReady",
                    "afterWasm", "installClient", "importClient", "total", "initOwn"):
            cells = []
            for mode, kind in cols:
                vals = [b[key] for b in boot["breakdown"][mode][kind] if key in b]
                cells.append(f"{stats(vals)['median']:.0f}" if vals else "—")
            if any(cell != "—" for cell in cells):
                label = f"&nbsp;&nbsp;{key}" if key in ("toWasmReady", "afterWasm") else key
                L.append(f"| {label} | " + " | ".join(cells) + " |")
        L.append("")
        heads += [("Boot, cold (page load -> `init()` resolved)", f"{rc:.2f}× bare Pyodide",
                   f"{c['ours']['median']:.0f} ms vs {c['bare']['median']:.0f} ms"),
                  ("Boot, warm (reload; restores the boot cache)", f"{rw:.2f}× bare Pyodide",
                   f"{w['ours']['median']:.0f} ms vs {w['bare']['median']:.0f} ms"),
                  ("Boot, warm, without the boot cache", f"{rn:.2f}× bare Pyodide",
                   f"{w['nocache']['median']:.0f} ms vs {w['bare']['median']:.0f} ms")]
    if jobs:
        lo, lj = stats(jobs["lat"]["ours"]), stats(jobs["lat"]["js"])
        rl = ratio(lo, lj)
        L += ["## Jobs (upload -> invert -> download)", "",
              f"Input PNG: {jobs['input_bytes']} bytes.", "",
              "| | ours: `processImage` | JS reference | ours / JS |", "|---|---|---|---|",
              f"| sequential latency, new image per job ({a.jobs} jobs) | {fmt(lo)} | "
              f"{fmt(lj)} | {rl:.2f}× |",
              "| difference per job (medians) | "
              f"{lo['median'] - lj['median']:+.1f} ms | | |",
              ]
        heads += [("Job latency, new image (upload -> invert -> download)",
                   f"{rl:.2f}× plain JS", f"{lo['median']:.1f} ms vs {lj['median']:.1f} ms "
                   f"({lo['median'] - lj['median']:+.1f} ms per job)")]
        if jobs.get("repeat"):
            po, pj = stats(jobs["repeat"]["ours"]), stats(jobs["repeat"]["js"])
            rp = ratio(po, pj)
            L += [f"| sequential latency, same image again ({a.jobs} jobs) | {fmt(po)} | "
                  f"{fmt(pj)} | {rp:.2f}× |",
                  "| difference per job (medians) | "
                  f"{po['median'] - pj['median']:+.1f} ms | | |"]
            heads += [("Job latency, same image again (server's cache)", f"{rp:.2f}× plain JS",
                       f"{po['median']:.1f} ms vs {pj['median']:.1f} ms "
                       f"({po['median'] - pj['median']:+.1f} ms per job)")]
        for width, cw in jobs["conc"].items():
            to, tj = stats(cw["ours"]), stats(cw["js"])
            rt = ratio(to, tj)
            L.append(f"| throughput, {width} concurrent ({a.rounds} batches) | "
                     f"{fmt(to, 'jobs/s', 2)} | {fmt(tj, 'jobs/s', 2)} | {rt:.2f}× |")
            heads.append((f"Throughput, {width} concurrent jobs", f"{rt:.2f}× plain JS",
                          f"{to['median']:.2f} vs {tj['median']:.2f} jobs/s"))
        L.append("")
    if jobs and jobs.get("busy"):
        bz = jobs["busy"]
        L += [f"Where the overhead goes: in a separate page with every asyncio callback and "
              f"WebSocket message of ours timed, a job took {bz['wall']:.1f} ms wall and "
              f"{bz['callbacks'] + bz['ws']:.1f} ms of it were spent inside Python code "
              "(including the browser calls it makes: fetch, FormData, Blob, conversions): "
              f"{bz['callbacks']:.1f} ms in the bridge's calls and other callbacks (requests, "
              f"parsing, job state, audit) and {bz['ws']:.1f} ms "
              "handling WebSocket messages (mostly while the server executes, so partly "
              "hidden). The request count is the same as the reference's (below): the "
              "overhead is Python CPU time, not extra round trips.", ""]
    if jobs and jobs.get("segments"):
        sg = jobs["segments"]
        L += [f"Where in a job the time goes (median ms from the call to each milestone, "
              f"{sg['ours']['n']} / {sg['js']['n']} jobs on new images, in a separate page "
              "whose `fetch` and `WebSocket` are wrapped to mark when each request is sent "
              "and answered and when `executing{node: null}` arrives). Each client reaches "
              "the milestones in its own order: ours sends `POST /prompt` the moment the "
              "upload answers (no Python step between them) and asks for the image as soon "
              "as an `executed` message names it, while the job still runs, with "
              "`GET /history` beside that download; the step column is the time since the "
              "milestone before it in that client's own order:", "",
              "| milestone | ours | step | JS reference | step | difference |",
              "|---|---|---|---|---|---|"]

        def steps(at: list[float]) -> list[float]:
            order = sorted(range(len(at)), key=lambda i: at[i])
            out = [0.0] * len(at)
            for before, i in zip([None, *order], order, strict=False):
                out[i] = at[i] - (at[before] if before is not None else 0.0)
            return out

        so, sj = steps(sg["ours"]["at"]), steps(sg["js"]["at"])
        for i, name in enumerate(SEGMENTS):
            o, j = sg["ours"]["at"][i], sg["js"]["at"][i]
            L.append(f"| {name} | {o:.1f} | {so[i]:.1f} | {j:.1f} | {sj[i]:.1f} | "
                     f"{o - j:+.1f} |")
        L.append("")
    if jobs and jobs.get("warmth"):
        L += warmth_lines(jobs["warmth"])
    if jobs and jobs.get("hops"):
        L += hops_lines(jobs["hops"])
    if jobs and jobs.get("requests"):
        rq = jobs["requests"]
        keys = sorted(set(rq["ours"]) | set(rq["js"]))
        L += ["Requests per job by route (dev server's own log, 5 jobs each):", "",
              "| route | ours | JS reference |", "|---|---|---|"]
        L += [f"| `{k}` | {rq['ours'].get(k, 0):.1f} | {rq['js'].get(k, 0):.1f} |" for k in keys]
        L += [f"| **total** | {sum(rq['ours'].values()):.1f} | {sum(rq['js'].values()):.1f} |", ""]
    if jobs and jobs.get("log_cost"):
        lines, head = log_cost_report(jobs["log_cost"], fmt, stats)
        L += lines
        heads.append(head)
    if events:
        from bench.events import rates

        r = rates(events)
        L += ["## Event throughput (JSON messages and preview frames to a JS callback)", "",
              f"Dev server flood: {events['flood']} `progress` + {events['flood']} "
              f"`progress_state` messages and {events['flood_previews']} 8x8 PNG preview "
              f"frames per job; {a.event_rounds} timed rounds per client. Replay: the "
              f"{events['replay']['n']} text frames the server sent "
              f"({events['capture']['bytes']} bytes), then {events['replay']['framesPerRound']} "
              "type-4 preview frames of 1 KiB, fed synchronously to each client's socket "
              "handler while a job of ours runs.", "",
              "| | ours | JS reference | ours / JS |", "|---|---|---|---|"]
        rows = (("end to end: JSON msg/s (server-bound)", "e2e_text"),
                ("end to end: preview frames/s", "e2e_frames"),
                ("replay: JSON msg/s (client-bound)", "replay_text"),
                ("replay: preview frames/s (client-bound)", "replay_frames"))
        for label, key in rows:
            so, sj = stats(r[key]["ours"]), stats(r[key]["js"])
            L.append(f"| {label} | {fmt(so, '/s', 0)} | {fmt(sj, '/s', 0)} | "
                     f"{ratio(so, sj):.3f}× |")
        big = events["replay"]["big"]
        mib = 2 ** 20
        L += ["", f"No copy into Python: {big['frames']} preview frames of "
              f"{big['frameBytes'] / mib:.0f} MiB went through our client and reached the "
              f"callback as Blobs ({big['blobBytes'] / mib:.0f} MiB in total); the wasm heap "
              f"was {big['heapBefore'] / mib:.1f} MiB before and {big['heapAfter'] / mib:.1f} "
              f"MiB after (growth {(big['heapAfter'] - big['heapBefore']) / mib:+.1f} MiB). "
              "For contrast, copying the same frame into Python once "
              f"(`ArrayBuffer.to_bytes()`, {big['copiedBytes'] / mib:.0f} MiB) grew it to "
              f"{big['heapAfterCopy'] / mib:.1f} MiB. Every preview callback got a `Blob`: "
              f"{'yes' if events['replay']['blobs'] else 'NO'}.", ""]
        bd = events.get("breakdown") or {}
        if bd and "error" not in bd:
            per_msg = 1e6 / stats(r["replay_text"]["ours"])["median"]
            L += ["Where one JSON message's time goes in ours (each step timed alone in the "
                  f"page's Python over the same frames, µs; the whole path measured "
                  f"{per_msg:.0f} µs per message in the replay above):", "",
                  "| step | µs per message |", "|---|---|"]
            L += [f"| `{k}` | {v:.1f} |" for k, v in bd.items()]
            L += ["", "The progress sender is the client's own callback path for these "
                  "messages: the job's fixed values went to a JS closure once, and per message "
                  "only the five that move cross (`JobBook.emit_progress`); comfyui.js builds "
                  "the object. Not in the table: the crossing from the socket's JS listener into "
                  "Python (one call per batch of messages: comfyui.js reads each message in JS "
                  "and hands Python the batch of a browser task) and the client's routing "
                  "between the steps.", ""]
        elif bd:
            L += [f"Per-message breakdown not available: {bd['error']}", ""]
        so, sj = stats(r["replay_text"]["ours"]), stats(r["replay_text"]["js"])
        fo, fj = stats(r["replay_frames"]["ours"]), stats(r["replay_frames"]["js"])
        heads += [("JSON progress messages to a JS callback (client-bound)",
                   f"{ratio(so, sj):.3f}× plain JS",
                   f"{so['median']:.0f} vs {sj['median']:.0f} msg/s"),
                  ("Preview frames to JS as Blobs (client-bound)",
                   f"{ratio(fo, fj):.2f}× plain JS",
                   f"{fo['median']:.0f} vs {fj['median']:.0f} frames/s; image bytes never "
                   f"copied into Python (wasm heap "
                   f"{(big['heapAfter'] - big['heapBefore']) / mib:+.0f} MiB over "
                   f"{big['frames']} x {big['frameBytes'] / mib:.0f} MiB frames)")]
    if scale:
        sc = scale
        ps = sorted(sc["per_server"].values()) or [0]
        L += [f"## Scale ({sc['servers']} dev servers in one process, job affinity, one page)",
              "",
              "| | |", "|---|---|",
              f"| jobs started at once | {sc['jobs']} |",
              f"| completed | {sc['ok']} ({sc['jobs'] - sc['ok']} failed"
              + (f": {sc['errors']}" if sc["errors"] else "") + ") |",
              f"| time to drain | {sc['drain_ms'] / 1000:.2f} s "
              f"({sc['ok'] / (sc['drain_ms'] / 1000):.1f} jobs/s) |",
              f"| jobs per server | min {ps[0]}, median {statistics.median(ps):g}, max {ps[-1]} "
              f"over {len(sc['per_server'])} servers |",
              f"| `validateServerConsistency()` | consistent={sc['consistency']['consistent']}, "
              f"{sc['consistency']['checkedJobs']} jobs checked, {sc['violations']} violations, "
              f"{sc['consistency']['droppedRecords']} audit records dropped |",
              f"| servers' own request logs | {sc['server_logs']['checked']} jobs checked, "
              f"{sc['server_logs']['mismatched']} submitted or queried elsewhere |",
              f"| selection `PoolClient.select()` (in Python) | {sc['select_idle_us']:.0f} µs "
              f"idle; {sc['select_busy_us']:.0f} µs with {sc['busy_inflight']} jobs in flight |",
              f"| `getApiBaseUrl()` from page JS (selection + bridge) | "
              f"{sc['api_base_idle_us']:.0f} µs idle |",
              f"| selection after all {sc['jobs'] + sc['leak_jobs'] + 1} jobs (records kept) | "
              f"{sc['select_late_us']:.0f} µs |",
              f"| single-job latency, fresh page (15 jobs) | {fmt(stats(sc['lat_fresh']))} |",
              f"| single-job latency after all jobs (15 jobs) | {fmt(stats(sc['lat_full']))} "
              f"({ratio(stats(sc['lat_full']), stats(sc['lat_fresh'])):.2f}× fresh) |", ""]
        lk = sc["leak"]
        L += [f"Memory over {sc['leak_jobs']} more jobs ({lk['failed']} failed, "
              f"{lk['ms'] / 1000:.1f} s; JS heap after a forced GC, Python objects after "
              "`gc.collect()`, proxies and listeners from `debugWebSocketLock()`):", "",
              "| after jobs | JS heap | wasm heap | Python objects | live PyProxies | "
              "WS listeners | pending tasks |", "|---|---|---|---|---|---|---|"]
        for sn in lk["snaps"]:
            js_heap = f"{sn['jsHeap'] / 2**20:.1f} MiB" if sn["jsHeap"] else "n/a"
            L.append(f"| {sn['done']} | {js_heap} | {sn['wasmHeap'] / 2**20:.1f} MiB | "
                     f"{sn['pyObjects']} | {sn['liveProxies']} | {sn['wsListeners']} | "
                     f"{sn['pendingTasks']} |")
        f0, f1 = lk["snaps"][0], lk["snaps"][-1]
        L += ["", "Python objects grow while the client fills its retention caps (the last "
              "1000 finished jobs are kept for `getTaskHistory()` and reloads, the audit log "
              "keeps 5000 records) and then stay flat; the wasm heap is a high-water mark that "
              "never shrinks; live PyProxies are the 4 handlers (open, text, binary, close) of "
              "each open socket (one per server) plus the asyncio loop's one flush function "
              "(`MicrotaskSoon`), and WebSocket listeners the 3 listeners (open, message, "
              "close) of each open socket.", ""]
        heads += [(f"Scale: {sc['jobs']} jobs at once over {sc['servers']} servers, "
                   "job affinity", "—",
                   f"{sc['ok']}/{sc['jobs']} done in {sc['drain_ms'] / 1000:.1f} s, "
                   f"audit consistent={sc['consistency']['consistent']}, server logs "
                   f"{sc['server_logs']['mismatched']} mismatches, selection "
                   f"{sc['select_busy_us']:.0f} µs/job with {sc['busy_inflight']} in flight"),
                  (f"Memory over {sc['leak_jobs']} more jobs", "—",
                   f"live PyProxies {f0['liveProxies']} -> {f1['liveProxies']}, WS listeners "
                   f"{f0['wsListeners']} -> {f1['wsListeners']}, wasm heap "
                   f"{f0['wasmHeap'] / 2**20:.0f} -> {f1['wasmHeap'] / 2**20:.0f} MiB, "
                   f"Python objects {f0['pyObjects']} -> {f1['pyObjects']} (flat once the "
                   "client's retention caps are full: "
                   + " / ".join(str(sn["pyObjects"]) for sn in lk["snaps"][-3:])
                   + " over the last snapshots)")]
    at = L.index("## Machine")
    L[at:at] = (["## Headline", "",
                 "Quotable: every ratio is ours / the reference, medians, same browser, same run.",
                 "", "| measure | ours / reference | figures (ours vs reference) |",
                 "|---|---|---|"]
                + [f"| {what} | {r} | {fig} |" for what, r, fig in heads] + [""])
    return "\n".join(L) + "\n", heads


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    a = parse_args(list(argv))
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(msg, flush=True)

    from playwright.sync_api import sync_playwright

    import build

    dist = ROOT / "dist"
    if not (dist / "pyodide" / "pyodide-lock.json").exists():
        log("bench: dist/ not built, building")
        build.build()
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    # the tests' flags, one list: the bench's browser is launched like theirs
    from conftest import CHROMIUM_ARGS

    pages = {dist / "_bench_ours.html": OURS, dist / "_bench_bare.html": BARE}
    with ExitStack() as stack:
        for path, text in pages.items():
            path.write_text(text)
            stack.callback(path.unlink, missing_ok=True)
        static = stack.enter_context(build.StaticServer(dist))
        group = None
        if a.servers:
            servers, server_kind = a.servers, "given server"
            if a.server_label:
                server_kind = f"given server ({a.server_label})"
        else:
            from comfyui_devserver import ServerGroup

            group = stack.enter_context(ServerGroup(count=1, cors_origin="*"))
            servers, server_kind = group.urls, "dev server (comfyui_devserver, defaults)"
        pw = stack.enter_context(sync_playwright())
        # precise performance.memory and window.gc() for the scale benchmark's snapshots
        browser = pw.chromium.launch(executable_path=chromium, args=[
            *CHROMIUM_ARGS, "--enable-precise-memory-info", "--js-flags=--expose-gc"])
        stack.callback(browser.close)
        info = machine_info(browser)
        log(f"bench: Chromium {info['chromium']}, Pyodide {info['pyodide']}, "
            f"nproc {info['nproc']}, RAM {info['ram']}; page {static.url}")
        boot = None
        if not a.skip_boot:
            log("bench: boot")
            boot = bench_boot(browser, static.url, servers, a.runs, log)
        jobs = events = None
        if not a.skip_jobs:
            log("bench: jobs")
            jobs = bench_jobs(browser, static.url, servers[0], a, log, group)
            log("bench: console logging cost")
            jobs["log_cost"] = log_cost(browser, static.url, servers[0], INVERT, _jobs_page,
                                        rounds=a.rounds, per_block=max(2, a.jobs // a.rounds))
        if group is not None and not a.skip_events:
            log("bench: event throughput")
            events = bench_events(browser, static.url, group, a, log, INVERT, BOOT_TIMEOUT_MS)
        elif a.servers:
            log("bench: event throughput needs the dev server's flood knobs: skipped")
        scale = None
        if not a.skip_scale and not a.servers:
            log(f"bench: scale ({a.scale_servers} servers, {a.scale_jobs} jobs)")
            scale = bench_scale(browser, static.url, a, log, INVERT, BOOT_TIMEOUT_MS)
        elapsed = time.monotonic() - t_start
        text, _heads = report(a, info, boot, jobs, events, scale, server_kind, servers[0], elapsed)
    Path(a.out).write_text(text)
    print("\n" + text)
    log(f"bench: wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
