"""Benchmarks for comfyui.js (not tests): ``python3 build.py bench [--servers URL,URL]
[--runs N] [--jobs N] [--concurrency N] [--rounds N]``.

1. Boot: page load -> ``init()`` resolved, cold (new browser context per run) and warm
   (same context, reload), against bare ``loadPyodide()`` of the same core in the same
   browser; plus the ``bootTimings`` breakdown.
2. Per-job overhead: sequential upload -> invert -> download jobs through ``processImage``
   against a minimal plain-JS reference client in the same page on the same server; then
   batches of concurrent jobs (throughput).
3. ``--servers``: item 2 against the given servers instead of dev servers (first URL).

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

ROOT = Path(__file__).resolve().parents[1]
for _sub in (".", "py_src", "tests"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

from bench.harness import BARE, JOBS_JS, OURS  # noqa: E402

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}},
}
BOOT_TIMEOUT_MS = 120_000
# bounded counts: loopback benchmarks, not load tests
MAX_RUNS, MAX_JOBS, MAX_CONC, MAX_ROUNDS = 50, 500, 16, 50


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="build.py bench", description="comfyui.js benchmarks")
    p.add_argument("--servers", default=None,
                   help="comma-separated ComfyUI base URLs for the job benchmarks "
                        "(the first is used; default: a dev server on 127.0.0.1)")
    p.add_argument("--runs", type=int, default=5, help="boot runs per variant (default 5)")
    p.add_argument("--jobs", type=int, default=20,
                   help="timed sequential jobs per client (default 20)")
    p.add_argument("--concurrency", type=int, default=4,
                   help="jobs in flight per concurrent batch (default 4)")
    p.add_argument("--rounds", type=int, default=5,
                   help="concurrent batches per client (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed jobs per client (default 2)")
    p.add_argument("--skip-boot", action="store_true", help="only the job benchmarks")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="report path")
    a = p.parse_args(argv)
    for name, hi in (("runs", MAX_RUNS), ("jobs", MAX_JOBS), ("concurrency", MAX_CONC),
                     ("rounds", MAX_ROUNDS)):
        v = getattr(a, name)
        if not 1 <= v <= hi:
            p.error(f"--{name} must be between 1 and {hi}")
    if not 0 <= a.warmup <= 20:
        p.error("--warmup must be between 0 and 20")
    if a.servers is not None:
        a.servers = [u.strip().rstrip("/") for u in a.servers.split(",") if u.strip()]
        if not a.servers:
            p.error("--servers needs at least one URL")
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


def bench_boot(browser, base: str, servers: list[str], runs: int, log) -> dict:
    urls = {"ours": f"{base}/_bench_ours.html?boot=" + json.dumps(servers[:1]),
            "bare": f"{base}/_bench_bare.html"}
    out = {"cold": {"ours": [], "bare": []}, "warm": {"ours": [], "bare": []},
           "breakdown": {"cold": [], "warm": []}}

    def breakdown(page, mode):
        out["breakdown"][mode].append(page.evaluate("window.bootBreakdown"))

    # cold: a fresh context (empty HTTP and code caches) per load; order alternates
    for i in range(runs):
        for kind in (("ours", "bare") if i % 2 == 0 else ("bare", "ours")):
            ctx = browser.new_context()
            try:
                page = ctx.new_page()
                page.goto(urls[kind])
                out["cold"][kind].append(_wait_boot(page))
                if kind == "ours":
                    breakdown(page, "cold")
            finally:
                ctx.close()
        log(f"  boot cold {i + 1}/{runs}: ours {out['cold']['ours'][-1]:.0f} ms, "
            f"bare {out['cold']['bare'][-1]:.0f} ms")
    # warm: one context per variant, primed once, then reloads
    with ExitStack() as stack:
        pages = {}
        for kind in ("ours", "bare"):
            ctx = browser.new_context()
            stack.callback(ctx.close)
            page = ctx.new_page()
            page.goto(urls[kind])
            _wait_boot(page)  # priming load, not counted
            pages[kind] = page
        for i in range(runs):
            for kind in (("ours", "bare") if i % 2 == 0 else ("bare", "ours")):
                page = pages[kind]
                page.reload()
                out["warm"][kind].append(_wait_boot(page))
                if kind == "ours":
                    breakdown(page, "warm")
            log(f"  boot warm {i + 1}/{runs}: ours {out['warm']['ours'][-1]:.0f} ms, "
                f"bare {out['warm']['bare'][-1]:.0f} ms")
    return out


# --------------------------------------------------------------------------- jobs


def bench_jobs(browser, base: str, server: str, a: argparse.Namespace, log) -> dict:
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(f"{base}/_bench_ours.html")
        page.wait_for_function("window.harnessReady === true", timeout=BOOT_TIMEOUT_MS)
        page.evaluate("(s) => window.comfy.init({servers: s})", [server])
        page.evaluate(JOBS_JS)
        size = page.evaluate("window.bench.makeInput()")
        page.evaluate("(u) => window.bench.refConnect(u)", server)
        log(f"  input PNG 256x256: {size} bytes; server {server}")
        lat = page.evaluate("([w, n, k]) => window.bench.sequential(w, n, k)",
                            [INVERT, a.jobs, a.warmup])
        log(f"  sequential: ours median {statistics.median(lat['ours']):.1f} ms, "
            f"js median {statistics.median(lat['js']):.1f} ms")
        conc = {"ours": [], "js": []}
        for i in range(a.rounds):
            for kind in (("ours", "js") if i % 2 == 0 else ("js", "ours")):
                wall = page.evaluate("([k, w, n]) => window.bench.batch(k, w, n)",
                                     [kind, INVERT, a.concurrency])
                conc[kind].append(a.concurrency / (wall / 1000.0))  # jobs per second
        log(f"  concurrent x{a.concurrency}: ours median {statistics.median(conc['ours']):.2f} "
            f"jobs/s, js median {statistics.median(conc['js']):.2f} jobs/s")
        return {"lat": lat, "conc": conc, "input_bytes": size}
    finally:
        ctx.close()


# --------------------------------------------------------------------------- report


def report(a, info, boot, jobs, server_kind, server_url, elapsed) -> tuple[str, list[str]]:
    L: list[str] = []
    heads: list[str] = []
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
          "(the static server sends `Cache-Control: no-cache`, so warm loads revalidate). "
          "Breakdown from `comfy.bootTimings`.",
          "- **Jobs**: workflow LoadImage -> ImageInvert -> SaveImage on a 256x256 PNG made "
          "in the page with OffscreenCanvas. *Ours*: `processImage(workflow, blob)` then "
          "reading the output blob. *JS reference*: plain JS in the same page — FormData "
          "`POST /upload/image`, `POST /prompt` with `client_id`, one persistent WebSocket "
          "`/ws?clientId=` waiting for `executing{node:null}` of the prompt_id, "
          "`GET /history/{id}` (retried every 5 ms while empty), `GET /view`. Both use the "
          f"same server. {a.warmup} untimed warm-up jobs per client, then {a.jobs} timed "
          "sequential jobs per client, interleaved with alternating order. Concurrent: "
          f"{a.rounds} batches of {a.concurrency} jobs started together per client "
          "(alternating), throughput = jobs / batch wall time.",
          f"- **Server**: {server_kind} `{server_url}`.", ""]
    if boot:
        c = {k: stats(v) for k, v in boot["cold"].items()}
        w = {k: stats(v) for k, v in boot["warm"].items()}
        rc, rw = ratio(c["ours"], c["bare"]), ratio(w["ours"], w["bare"])
        L += ["## Boot (page load -> ready)", "",
              "| | ours: comfyui.js `init()` | bare `loadPyodide()` | ours / bare |",
              "|---|---|---|---|",
              f"| cold (new context) | {fmt(c['ours'])} | {fmt(c['bare'])} | {rc:.2f}× |",
              f"| warm (reload) | {fmt(w['ours'])} | {fmt(w['bare'])} | {rw:.2f}× |", "",
              "Breakdown of ours (`comfy.bootTimings`, ms since the module started booting; "
              "`total` excludes page load and module import, and `init()`'s own pool set-up):", "",
              "| phase | cold | warm |", "|---|---|---|"]
        for key in ("importLoader", "loadPyodide", "importClient", "total"):
            cv = [b[key] for b in boot["breakdown"]["cold"] if b and key in b]
            wv = [b[key] for b in boot["breakdown"]["warm"] if b and key in b]
            if cv and wv:
                L.append(f"| {key} | {fmt(stats(cv))} | {fmt(stats(wv))} |")
        L.append("")
        heads += [f"Boot cold: ours/bare = {rc:.2f}× ({c['ours']['median']:.0f} ms vs "
                  f"{c['bare']['median']:.0f} ms)",
                  f"Boot warm: ours/bare = {rw:.2f}× ({w['ours']['median']:.0f} ms vs "
                  f"{w['bare']['median']:.0f} ms)"]
    if jobs:
        lo, lj = stats(jobs["lat"]["ours"]), stats(jobs["lat"]["js"])
        to, tj = stats(jobs["conc"]["ours"]), stats(jobs["conc"]["js"])
        rl, rt = ratio(lo, lj), ratio(to, tj)
        L += ["## Jobs (upload -> invert -> download)", "",
              f"Input PNG: {jobs['input_bytes']} bytes.", "",
              "| | ours: `processImage` | JS reference | ours / JS |", "|---|---|---|---|",
              f"| sequential latency ({a.jobs} jobs) | {fmt(lo)} | {fmt(lj)} | {rl:.2f}× |",
              "| overhead per job (median difference) | "
              f"{lo['median'] - lj['median']:+.1f} ms | | |",
              f"| throughput, {a.concurrency} concurrent ({a.rounds} batches) | "
              f"{fmt(to, 'jobs/s', 2)} | {fmt(tj, 'jobs/s', 2)} | {rt:.2f}× |", ""]
        heads += [f"Job latency: ours/JS = {rl:.2f}× ({lo['median']:.1f} ms vs "
                  f"{lj['median']:.1f} ms, {lo['median'] - lj['median']:+.1f} ms per job)",
                  f"Throughput x{a.concurrency}: ours/JS = {rt:.2f}× ({to['median']:.2f} vs "
                  f"{tj['median']:.2f} jobs/s)"]
    L[L.index("## Machine"):L.index("## Machine")] = (
        ["## Headline", ""] + [f"- {h}" for h in heads] + [""])
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
    try:
        from conftest import CHROMIUM_ARGS
    except ImportError:
        CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync"]

    pages = {dist / "_bench_ours.html": OURS, dist / "_bench_bare.html": BARE}
    with ExitStack() as stack:
        for path, text in pages.items():
            path.write_text(text)
            stack.callback(path.unlink, missing_ok=True)
        static = stack.enter_context(build.StaticServer(dist))
        if a.servers:
            servers, server_kind = a.servers, "given server"
        else:
            from comfyui_devserver import ServerGroup

            group = stack.enter_context(ServerGroup(count=1, cors_origin="*"))
            servers, server_kind = group.urls, "dev server (comfyui_devserver, defaults)"
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        info = machine_info(browser)
        log(f"bench: Chromium {info['chromium']}, Pyodide {info['pyodide']}, "
            f"nproc {info['nproc']}, RAM {info['ram']}; page {static.url}")
        boot = None
        if not a.skip_boot:
            log("bench: boot")
            boot = bench_boot(browser, static.url, servers, a.runs, log)
        log("bench: jobs")
        jobs = bench_jobs(browser, static.url, servers[0], a, log)
        elapsed = time.monotonic() - t_start
        text, _heads = report(a, info, boot, jobs, server_kind, servers[0], elapsed)
    Path(a.out).write_text(text)
    print("\n" + text)
    log(f"bench: wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
