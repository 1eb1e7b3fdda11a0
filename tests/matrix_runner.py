"""The fault-injection matrix: ``comfyui.js`` in headless Chromium against two dev servers,
one fault per cell, 20 concurrent ``processImage`` jobs per cell in job affinity.

Used twice: by ``tests/browser/test_fault_matrix.py`` (which asserts every cell) and by
``python3 build.py matrix`` (which runs the same cells and rewrites the README's
reliability table between its markers). Host-only: it lives under ``tests/``, outside the
page wheel.

Per cell it measures, from independent sources:

- outcome of every job (succeeded / error code), each bounded in the page by a per-job
  deadline computed from the configured client options (a job past it counts as ``hung``);
- pixels: every input is a distinct solid colour, every output must be its inverse;
- misrouting: requests of each attempt's prompt id (``/prompt``, ``/history``, ``/view``,
  uploads by their per-job file name) on any server but the attempt's own, from the dev
  servers' request logs, plus the client's audit trail (``getAuditLog``);
- duplicates: a prompt id POSTed twice to a server, or present on both servers;
- live Pyodide proxies and WebSocket listeners (``debugWebSocketLock()``) with no client
  socket open, before the cell and after it: a leak shows as a difference.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _sub in (".", "py_src", "tests"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

from comfyui_devserver import RouteFault, ServerGroup  # noqa: E402

JOBS_PER_CELL = 20
INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "m"}},
}
#: client options of every cell: short enough that a lost server ends its jobs quickly
OPTIONS: dict[str, Any] = {
    "affinity": "job", "persist": False, "jobDeadline": 3, "requestTimeout": 5,
    "wsConnectTimeout": 3, "stallCheck": 1, "pollInterval": 0.25, "historyRetries": 5,
}


def job_bound_s(options: dict[str, Any]) -> float:
    """The per-job deadline: the server-lost deadline, plus one request and one socket
    open that may be in flight when it expires, plus one poll and the history retries
    (5 s covers the latter at these settings). Derived from the options, not measured."""
    return (float(options["jobDeadline"]) + float(options["requestTimeout"])
            + float(options["wsConnectTimeout"]) + 5.0)


# Starts the jobs without awaiting them (the runner may act on the servers meanwhile);
# ``window.__matrixDone`` resolves to plain per-job data.
START_JOBS = """
([workflow, colours, boundMs]) => {
  const toPng = async (rgb) => {
    const c = new OffscreenCanvas(8, 8);
    const g = c.getContext("2d");
    g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
    g.fillRect(0, 0, 8, 8);
    return c.convertToBlob({ type: "image/png" });
  };
  window.__matrixDone = (async () => {
    const blobs = await Promise.all(colours.map(toPng));
    return Promise.all(blobs.map(async (blob, i) => {
      let timer;
      const hung = new Promise((resolve) => {
        timer = setTimeout(() => resolve({ ok: false, code: "hung", index: i }), boundMs);
      });
      const job = (async () => {
        try {
          const r = await window.comfy.processImage(workflow, blob);
          const buf = new Uint8Array(await r.images[0].blob.arrayBuffer());
          let bin = "";
          for (const b of buf) bin += String.fromCharCode(b);
          return { ok: true, index: i, promptId: r.promptId, server: r.server,
                   png: btoa(bin), movedFrom: r.movedFrom || [] };
        } catch (e) {
          return { ok: false, index: i, code: e.code || "no_code", promptId: e.promptId,
                   server: e.server, message: String(e.message),
                   started: e.details ? e.details.started ?? null : null };
        }
      })();
      const out = await Promise.race([job, hung]);
      clearTimeout(timer);
      return out;
    }));
  })();
  return true;
}
"""

COLLECT = """
async () => {
  const jobs = await window.comfy.getJobs();
  const audit = {};
  for (const j of jobs) {
    audit[j.promptId] = [...new Set((await window.comfy.getAuditLog(j.promptId))
                                      .map((a) => a.server))];
  }
  const consistency = await window.comfy.validateServerConsistency();
  return { jobs, audit, consistency };
}
"""

COUNTS = """
async () => { const d = await window.comfy.debugWebSocketLock();
              return [d.liveProxies, d.wsListeners]; }
"""
CREATED = """
async () => (await window.comfy.debugWebSocketLock()).proxiesCreated
"""


@dataclass
class Cell:
    """One fault. ``arm`` runs before the jobs start; ``during`` while they run; the
    expectations are checked by the test (and shown in the README)."""

    name: str
    arm: Callable[[ServerGroup], None] = lambda group: None
    during: Callable[[ServerGroup], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: error codes a failed job of this cell may have (anything else is a finding)
    allowed_errors: frozenset[str] = frozenset()
    min_succeeded: int = JOBS_PER_CELL
    #: codes that must appear at least once (the fault really happened)
    required_errors: frozenset[str] = frozenset()
    min_moved: int = 0
    #: failover on: a job may end server_lost only if its server had started it
    lost_must_have_started: bool = False
    restart_killed: bool = False


@dataclass
class CellResult:
    name: str
    jobs: int
    succeeded: int
    failed: dict[str, int]
    moved: int
    wrong_pixels: int
    misrouted_log: int
    misrouted_audit: int
    duplicates: int
    proxies_before: tuple[int, int]
    proxies_after: tuple[int, int]
    #: proxies created during the cell (4 per socket opened): the count above saw real work
    proxies_created: int
    inconsistent: bool
    faults_fired: int
    problems: list[str] = field(default_factory=list)


def _on_all(group: ServerGroup, fn: Callable[[Any], None]) -> None:
    for srv in group.servers:
        group.call(fn, srv)


def _route(path: str, fault_factory: Callable[[], RouteFault]) -> Callable[[ServerGroup], None]:
    def arm(group: ServerGroup) -> None:
        _on_all(group, lambda s: s.faults.route_faults.__setitem__(path, fault_factory()))
    return arm


def _faults(**values: Any) -> Callable[[ServerGroup], None]:
    def arm(group: ServerGroup) -> None:
        def apply(srv: Any) -> None:
            for key, value in values.items():
                if key == "drop_ws":
                    srv.faults.drop_ws(*value)
                else:
                    setattr(srv.faults, key, value)
        _on_all(group, apply)
    return arm


def _kill_first_when_busy(group: ServerGroup) -> None:
    """Stop server 0 once its running job is past its first node (so the client has seen
    it start: no failover for it) with more jobs queued behind it (not started: they
    move when failover is on)."""
    srv = group.servers[0]

    def busy() -> bool:
        return srv.running_node not in (None, "1") and srv.queue_remaining() >= 3

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if group.call(busy):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("server 0 never had a running job with others queued")
    time.sleep(0.05)  # the node's `executing` event reaches the page
    group.call(srv.stop)


def _slow_first(group: ServerGroup) -> None:
    group.call(setattr, group.servers[0].faults, "node_delay_s", 0.25)


CELLS: tuple[Cell, ...] = (
    Cell("WS drop before submit", _faults(drop_ws_on_request="/upload/image")),
    Cell("WS drop after submit (execution_start lost)", _faults(drop_ws=("execution_start", 1))),
    Cell("WS drop mid-progress", _faults(progress_steps=3, drop_ws=("progress", 2))),
    Cell("WS drop at success, before history is written", _faults(history_gap_s=0.3,
                                                        drop_ws=("execution_success", 1))),
    Cell("history 500 x3, then OK", _route("/history/*", lambda: RouteFault(
        500, "Internal Server Error", remaining=3))),
    Cell("restart (history wiped) after success",
         _faults(history_gap_s=0.2, restart_after_event="execution_success",
                 restart_after_nth=5),
         allowed_errors=frozenset({"job_lost"}), min_succeeded=1,
         required_errors=frozenset({"job_lost"})),
    Cell("restart (history and queue wiped) after success, failover on",
         _faults(history_gap_s=0.2, restart_after_event="execution_success",
                 restart_after_nth=5),
         options={"failover": "before-start"},
         # the queued jobs the restart forgot move; only jobs that had started may be lost
         allowed_errors=frozenset({"job_lost"}), min_succeeded=1, min_moved=1,
         lost_must_have_started=True),
    Cell("server killed before start, failover off", _slow_first, _kill_first_when_busy,
         allowed_errors=frozenset({"server_lost", "server_unreachable"}), min_succeeded=1,
         required_errors=frozenset({"server_lost"}), restart_killed=True),
    Cell("server killed before start, failover on", _slow_first, _kill_first_when_busy,
         options={"failover": "before-start"},
         # only the job that had started may end lost; the queued ones move
         allowed_errors=frozenset({"server_lost"}), min_succeeded=JOBS_PER_CELL - 1,
         required_errors=frozenset({"server_lost"}), min_moved=1,
         lost_must_have_started=True, restart_killed=True),
    Cell("413 on upload", _route("/upload/image", lambda: RouteFault(
        413, "413: Request Entity Too Large")),
         allowed_errors=frozenset({"upload_too_large"}), min_succeeded=0,
         required_errors=frozenset({"upload_too_large"})),
    # what a ComfyUI without --enable-cors-header answers: an empty 403 and no CORS headers,
    # so fetch fails opaquely; the client's no-cors probe tells it from a dead server
    Cell("403 cross-origin (empty 403, no CORS headers)",
         _route("/upload/image", lambda: RouteFault(403, "", cors=False)),
         allowed_errors=frozenset({"cross_origin_blocked"}), min_succeeded=0,
         required_errors=frozenset({"cross_origin_blocked"})),
    # A cut-off 200 to POST /prompt: the client asks the server whether it knows the id
    # before resubmitting. Queued: nothing is resent. Not queued: resent once with the same
    # id; only a job whose retry is mangled too may fail (6 faults -> at most 3 such jobs).
    Cell("cut-off JSON answer to POST /prompt x3, job queued", _route("/prompt", lambda:
        RouteFault(200, '{"prompt_id": ', content_type="application/json", remaining=3,
                   after_handler=True)),
         allowed_errors=frozenset()),
    Cell("cut-off JSON answer to POST /prompt x3, nothing queued", _route("/prompt", lambda:
        RouteFault(200, '{"prompt_id": ', content_type="application/json", remaining=3)),
         allowed_errors=frozenset({"bad_response"}), min_succeeded=JOBS_PER_CELL - 3),
)


def _pixel(png_b64: str) -> tuple[int, int, int] | None:
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB")
    colours = img.getcolors()
    return colours[0][1] if colours is not None and len(colours) == 1 else None


def _counts(page: Any, want: tuple[int, int] | None = None) -> tuple[int, int]:
    """Proxies/listeners now; with ``want``, wait (bounded) for proxy destruction, which is
    deferred to the next event-loop turn after a socket closes."""
    value = tuple(page.evaluate(COUNTS))
    for _ in range(100):
        if want is None or value == want:
            break
        page.wait_for_timeout(50)
        value = tuple(page.evaluate(COUNTS))
    return value  # type: ignore[return-value]


def _init(page: Any, urls: list[str], options: dict[str, Any]) -> None:
    page.evaluate("(o) => window.comfy.init(o)", {"servers": urls, **options})


def _close_client(page: Any, urls: list[str]) -> None:
    """Release anything still tracked, then switch affinity: the job-mode client closes
    every socket it opened (a fresh session client opens none)."""
    page.evaluate("""async () => {
      for (const j of await window.comfy.getJobs())
        if (!j.terminal) await window.comfy.releaseTask(j.promptId);
    }""")
    _init(page, urls, {**OPTIONS, "affinity": "session"})


def run_cell(page: Any, group: ServerGroup, cell: Cell, jobs: int = JOBS_PER_CELL,
             cell_index: int = 0) -> CellResult:
    urls = group.urls
    options = {**OPTIONS, **cell.options}
    _close_client(page, urls)
    _init(page, urls, options)
    before = _counts(page)
    created_before = page.evaluate(CREATED)
    logs_before = [len(group.log(i)) for i in range(len(urls))]
    cell.arm(group)
    colours = [[(cell_index * 23 + i * 11) % 256, (i * 37 + 40) % 256, (200 - i * 9) % 256]
               for i in range(jobs)]
    try:
        page.evaluate(START_JOBS, [INVERT, colours, int(job_bound_s(options) * 1000)])
        if cell.during is not None:
            cell.during(group)
        results = page.evaluate("() => window.__matrixDone")
        seen = page.evaluate(COLLECT)
    finally:
        _on_all(group, lambda s: s.faults.clear())
        if cell.restart_killed:
            srv = group.servers[0]
            if group.call(lambda: not srv.started):
                group.call(srv.start, srv.host, srv.port)
    logs = [group.log(i)[logs_before[i]:] for i in range(len(urls))]
    counts = [group.call(lambda s=s: dict(s.prompt_counts)) for s in group.servers]
    _close_client(page, urls)
    after = _counts(page, want=before)
    created = page.evaluate(CREATED) - created_before
    return _judge(cell, results, seen, logs, counts, colours, urls, before, after, created)


def _judge(cell: Cell, results: list[dict[str, Any]], seen: dict[str, Any],
           logs: list[list[dict[str, Any]]], counts: list[dict[str, int]],
           colours: list[list[int]], urls: list[str], before: tuple[int, int],
           after: tuple[int, int], created: int) -> CellResult:
    problems: list[str] = []
    failed: Counter[str] = Counter()
    succeeded = wrong = moved = 0
    for r in results:
        if r["ok"]:
            succeeded += 1
            moved += bool(r["movedFrom"])
            want = tuple(255 - c for c in colours[r["index"]])
            if _pixel(r["png"]) != want:
                wrong += 1
                problems.append(f"job {r['index']}: wrong pixels (wanted {want})")
        else:
            failed[r["code"]] += 1
            if r["code"] not in cell.allowed_errors:
                problems.append(f"job {r['index']}: {r['code']}: {r.get('message')}")
            elif (cell.lost_must_have_started and r["code"] in ("server_lost", "job_lost")
                  and r.get("started") is not True):
                problems.append(f"job {r['index']}: lost before it started, yet not moved")
    # every attempt (moved ones included) and the server it was pinned to
    attempts = {j["promptId"]: j["server"] for j in seen["jobs"]}
    misrouted_log = 0
    for i, url in enumerate(urls):
        for entry in logs[i]:
            pid = entry.get("prompt_id")
            if pid is None:
                name = entry.get("upload_name") or ""
                found = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                  r"[0-9a-f]{12}", name)
                pid = found.group(0) if found else None
            if pid in attempts and attempts[pid] != url:
                misrouted_log += 1
                problems.append(f"{entry['method']} {entry['path']} of {pid} reached {url}, "
                                f"its server is {attempts[pid]}")
    misrouted_audit = sum(1 for pid, servers in seen["audit"].items()
                          if pid in attempts and set(servers) - {attempts[pid]})
    if misrouted_audit:
        problems.append(f"{misrouted_audit} attempt(s) with audit records on another server")
    duplicates = 0
    for pid in attempts:
        per = [c.get(pid, 0) for c in counts]
        if max(per) > 1 or sum(1 for n in per if n) > 1:
            duplicates += 1
            problems.append(f"prompt {pid} submitted {per} times (per server)")
    hung = failed.get("hung", 0)
    if hung:
        problems.append(f"{hung} job(s) did not reach a terminal state within their deadline")
    if succeeded < cell.min_succeeded:
        problems.append(f"{succeeded} succeeded, expected at least {cell.min_succeeded}")
    missing = [c for c in cell.required_errors if not failed.get(c)]
    if missing:
        problems.append(f"the fault did not show: no {', '.join(missing)}")
    if moved < cell.min_moved:
        problems.append(f"{moved} job(s) moved, expected at least {cell.min_moved}")
    if created < 4:
        problems.append(f"only {created} proxies created: no socket was opened?")
    if tuple(after) != tuple(before):
        problems.append(f"live proxies/WS listeners {after} after the cell, {before} before")
    if not seen["consistency"]["consistent"]:
        problems.append("validateServerConsistency: " + seen["consistency"]["reason"])
    fired = sum(1 for log in logs for e in log
                if e.get("kind") in ("ws_drop", "restart") or e.get("fault"))
    return CellResult(cell.name, len(results), succeeded, dict(failed), moved, wrong,
                      misrouted_log, misrouted_audit, duplicates, before, after, created,
                      not seen["consistency"]["consistent"], fired, problems)


def run_matrix(page: Any, group: ServerGroup, cells: tuple[Cell, ...] = CELLS,
               jobs: int = JOBS_PER_CELL) -> list[CellResult]:
    return [run_cell(page, group, cell, jobs, i) for i, cell in enumerate(cells)]


# --------------------------------------------------------------------------- README

START, END = "<!-- reliability-matrix:start -->", "<!-- reliability-matrix:end -->"


def render(results: list[CellResult]) -> str:
    lines = [
        f"Generated by `python3 build.py matrix`: headless Chromium, 2 dev servers, "
        f"{results[0].jobs if results else JOBS_PER_CELL} concurrent `processImage` jobs per "
        "cell in job affinity (`jobDeadline` 3 s). Misrouted: requests of a job's prompt id "
        "on another server (servers' logs + audit trail). Duplicates: a prompt id submitted "
        "twice. Proxies: live Pyodide proxies / WS listeners once the cell's sockets are closed, "
        "after/before the cell, and how many proxies the cell created (4 per socket).",
        "",
        "| cell | jobs | succeeded | failed (by type) | moved | misrouted requests | "
        "duplicates | proxies after/before (created) | listeners after/before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        failed = ", ".join(f"{code} {n}" for code, n in sorted(r.failed.items())) or "—"
        lines.append(
            f"| {r.name} | {r.jobs} | {r.succeeded} | {failed} | {r.moved} | "
            f"{r.misrouted_log + r.misrouted_audit} | {r.duplicates} | "
            f"{r.proxies_after[0]}/{r.proxies_before[0]} ({r.proxies_created}) | "
            f"{r.proxies_after[1]}/{r.proxies_before[1]} |")
    bad = [r for r in results if r.problems]
    lines += ["", "All cells passed their checks." if not bad else
              "Cells with findings: " + "; ".join(f"{r.name}: {r.problems[0]}" for r in bad)]
    return "\n".join(lines)


def write_readme(results: list[CellResult], readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render(results)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    """``python3 build.py matrix``: boot the page, run every cell, rewrite the README."""
    from playwright.sync_api import sync_playwright

    import build
    from conftest import CHROMIUM_ARGS, HARNESS, _chromium_path

    p = argparse.ArgumentParser(prog="build.py matrix", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=JOBS_PER_CELL, help="jobs per cell (1-100)")
    p.add_argument("--no-readme", action="store_true", help="print the table only")
    args = p.parse_args(argv or [])
    if not 1 <= args.jobs <= 100:
        p.error("--jobs must be between 1 and 100")
    harness = ROOT / "dist" / "_matrix.html"
    harness.write_text(HARNESS)
    try:
        with (build.StaticServer(ROOT / "dist") as site,
              ServerGroup(count=2, cors_origin="*") as group,
              sync_playwright() as pw):
            browser = pw.chromium.launch(executable_path=_chromium_path(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{site.url}/_matrix.html")
                page.wait_for_function("window.harnessReady === true", timeout=120_000)
                _init(page, group.urls, {**OPTIONS, "affinity": "session"})
                results = run_matrix(page, group, jobs=args.jobs)
            finally:
                browser.close()
    finally:
        harness.unlink(missing_ok=True)
    table = render(results)
    print(table)
    if not args.no_readme:
        write_readme(results)
        print("README.md: reliability table rewritten")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
