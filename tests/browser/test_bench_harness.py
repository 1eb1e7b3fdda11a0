"""The benchmark's own instruments, run for real (a few jobs, not timed): the plain-JS
reference client, the per-part job marks, the Python busy-time hooks and the step-warmth
timer. ``build.py bench``
leaves out a table whose instrument fails rather than stopping a five-minute run, so a
change that breaks one (a renamed internal, a reshaped request) would only show as a
missing table; these tests make it a red test instead."""

from __future__ import annotations

import math

import pytest

from bench import harness as H
from bench.run import (
    INVERT,
    SEGMENTS,
    WARMTH_DELAYS_MS,
    executed_message,
    hops_lines,
    warmth_lines,
)
from conftest import ROOT

pytestmark = pytest.mark.browser

PAGE = "_bench_test_ours.html"


@pytest.fixture
def bench_page(browser, dist_server, devservers):
    (ROOT / "dist" / PAGE).write_text(H.OURS)
    context = browser.new_context()
    try:
        context.add_init_script(H.SEGMENTS_HOOK)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{dist_server.url}/{PAGE}")
        page.wait_for_function("window.harnessReady === true")
        yield page
    finally:
        context.close()
        (ROOT / "dist" / PAGE).unlink(missing_ok=True)


def test_reference_client_and_job_marks_see_every_request_in_order(bench_page, devservers):
    page = bench_page
    server = devservers.urls[0]
    page.evaluate("(src) => window.comfy.getPyodide().then((p) => p.runPython(src))", H.BUSY_PY)
    page.evaluate(H.INIT_JS, [server])
    page.evaluate(H.JOBS_JS)
    assert page.evaluate("window.bench.makeInput()") > 1000, "a textured 256x256 PNG"
    page.evaluate("(u) => window.bench.refConnect(u)", server)

    # both clients really run the workflow and bring back an image
    assert page.evaluate("(w) => window.bench.ours(w)", INVERT) > 0
    assert page.evaluate("(w) => window.bench.refJob(w)", INVERT) > 0
    lat = page.evaluate("([w, n, k]) => window.bench.sequential(w, n, k)", [INVERT, 2, 0])
    assert {k: len(v) for k, v in lat.items()} == {"ours": 2, "js": 2}

    # every job of each client has its five marks, each request once: every milestone
    # after the call and no later than the result; the reference goes strictly in order,
    # ours asks for the image before it reads the history
    runs = page.evaluate(H.SEGMENTS_JS, [INVERT, 2])
    for kind in ("ours", "js"):
        assert len(runs[kind]) == 2, f"{kind}: a job's requests did not have the usual shape"
        for at in runs[kind]:
            assert len(at) == len(SEGMENTS)
            assert min(at) >= 0 and max(at) == at[-1] > 0, (kind, at)
            # each request answered after it was sent: upload, prompt, history, view
            assert all(at[i + 1] >= at[i] for i in (0, 2, 5, 7)), (kind, at)
    ref = runs["js"][0]
    assert ref == sorted(ref), "the reference does one step after the other"
    assert all(at[SEGMENTS.index("`GET /view` sent")] < at[SEGMENTS.index("history answered")]
               for at in runs["ours"]), "ours downloads the image beside the history read"

    # the Python busy-time hooks are installed and saw both kinds of work
    busy = page.evaluate("""() => window.comfy.getPyodide().then((p) =>
        JSON.parse(p.runPython("import json; json.dumps(dict(_bench_busy))")))""")
    assert busy.get("callbacks", 0) > 0 and busy.get("ws", 0) > 0, busy


def test_step_warmth_runs_the_clients_functions_in_both_languages(bench_page, devservers):
    page = bench_page
    server = devservers.urls[0]
    page.evaluate("(src) => window.comfy.getPyodide().then((p) => p.runPython(src))", H.WARMTH_PY)
    page.evaluate(H.INIT_JS, [server])
    text = executed_message("0b7e4c1a-2d3f-4e5a-9b8c-7d6e5f4a3b21")
    out = page.evaluate(H.WARMTH_JS, [server, text, WARMTH_DELAYS_MS, 10])
    for lang in ("py", "js"):
        assert set(out[lang]) == {"hot", *map(str, WARMTH_DELAYS_MS)}, out
        assert all(v >= 0 for v in out[lang].values()), out
    # 50 runs of a decode + job-state update + audit append in Python cannot all read 0 µs
    assert sum(out["py"].values()) > 0, out
    table = "\n".join(warmth_lines(out))
    assert "| back to back |" in table and "| after 30 ms idle |" in table, table


def test_loop_hops_times_wake_ups_with_and_without_the_microtask_loop(bench_page, devservers):
    page = bench_page
    page.evaluate(H.INIT_JS, [devservers.urls[0]])
    out = page.evaluate(H.HOPS_JS, [50, 5])
    # both loops ran their awaits to the end (a broken await would raise or hang here)
    assert out["n"] == 50 and out["nIdle"] == 5
    assert all(math.isfinite(out[k]) and out[k] >= 0 for k in ("hot", "idle")), out
    table = "\n".join(hops_lines({"on": out, "off": out}))
    assert "| after 3 ms idle" in table, table


def test_event_throughput_runs_both_clients_end_to_end_and_in_replay(browser, dist_server,
                                                                      devservers):
    """The event-throughput instrument on a small flood: both clients' callbacks got every
    flooded message and frame, end to end and replayed (ours hands messages to Python in
    batches, so the replay waits for their dispatch), and preview bytes never entered the
    wasm heap."""
    import argparse

    from bench.events import bench_events, rates

    page = ROOT / "dist" / "_bench_ours.html"
    page.write_text(H.OURS)
    try:
        args = argparse.Namespace(flood=200, flood_previews=20, event_rounds=1, frame_mib=1)
        ev = bench_events(browser, dist_server.url, devservers, args, lambda _m: None,
                          INVERT, 60_000)
    finally:
        page.unlink(missing_ok=True)
    for kind in ("ours", "js"):
        [run] = ev["e2e"][kind]
        assert run["n"] >= 2 * 200 and run["frames"] == 20 and run["blobs"], (kind, run)
    assert ev["capture"]["n"] >= 2 * 200
    r = rates(ev)
    assert all(v > 0 for k in r for c in r[k].values() for v in c), r
    big = ev["replay"]["big"]
    assert big["blobBytes"] == big["frames"] * big["frameBytes"]
    assert big["heapAfter"] - big["heapBefore"] < big["frameBytes"]
