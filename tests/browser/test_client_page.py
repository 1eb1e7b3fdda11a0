"""The drop-in module in a real page: ``web/comfyui.js`` -> Pyodide -> browser fetch/WebSocket
-> two dev server instances on 127.0.0.1. Each test checks outcomes a user relies on: right
pixels, every request of a job on one server (from the servers' own logs AND the client's
audit trail), the lock's life, refusals, and errors that say what to do.
"""

from __future__ import annotations

import base64
import io

import pytest
from pagepoll import poll as _poll

pytestmark = pytest.mark.browser

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
}

# Runs N processImage calls at once; each input is a distinct solid colour so a job that got
# another job's output is caught by its pixels. Returns plain data for the host to check.
RUN_JOBS = """
async ([workflow, colours, filename]) => {
  const toPng = async (rgb) => {
    const c = new OffscreenCanvas(16, 8);
    const g = c.getContext("2d");
    g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
    g.fillRect(0, 0, 16, 8);
    return c.convertToBlob({ type: "image/png" });
  };
  // make every input first, then start all jobs in the same tick: truly concurrent
  const blobs = await Promise.all(colours.map(toPng));
  const results = await Promise.all(blobs.map(async (blob) => {
    const file = filename ? new File([blob], filename, { type: "image/png" }) : blob;
    const events = [];
    try {
      const r = await window.comfy.processImage(workflow, file, {
        onProgress: (p) => events.push(p.state),
      });
      const img = r.images[0];
      const buf = new Uint8Array(await img.blob.arrayBuffer());
      let bin = "";
      for (const b of buf) bin += String.fromCharCode(b);
      return { ok: true, promptId: r.promptId, server: r.server, png: btoa(bin),
               url: img.url.startsWith("blob:"), events,
               consistency: await window.comfy.validateServerConsistency() };
    } catch (e) {
      return { ok: false, code: e.code, message: e.message };
    }
  }));
  return results;
}
"""

# an 8x8 black PNG made in the page: a JS expression that resolves to a Blob
TINY_PNG_JS = """(async () => {
  const c = new OffscreenCanvas(8, 8);
  c.getContext("2d").fillRect(0, 0, 8, 8);
  return c.convertToBlob({ type: "image/png" });
})()"""


def _pixel(png_b64: str) -> tuple[int, int, int]:
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB")
    colours = img.getcolors()
    assert colours is not None and len(colours) == 1, "output should be one solid colour"
    return colours[0][1]


def _init(page, servers, affinity="session"):
    return page.evaluate(
        "([servers, affinity]) => window.comfy.init({servers, affinity})", [servers, affinity]
    )


def _job_requests(group, index, prompt_id):
    return [r for r in group.log(index) if r.get("prompt_id") == prompt_id]


def _wait_unlocked(page):
    _poll(page, "async () => (await window.comfy.checkServerUnlockCondition()).pendingTasks === 0")


def test_session_mode_job_stays_on_locked_server_and_lock_is_released(booted_page, devservers):
    page = booted_page
    servers = devservers.urls
    summary = _init(page, servers, "session")
    assert summary["servers"] == servers and summary["affinity"] == "session"

    [res] = page.evaluate(RUN_JOBS, [INVERT, [[10, 200, 30]], "photo.png"])
    assert res["ok"], res
    assert _pixel(res["png"]) == (245, 55, 225)
    assert res["url"] is True
    assert res["events"][-1] == "succeeded"
    assert res["consistency"]["consistent"] is True
    assert res["consistency"]["violations"] == []

    idx = servers.index(res["server"])
    mine = _job_requests(devservers, idx, res["promptId"])
    paths = {r["path"] for r in mine}
    assert {"/upload/image", "/prompt", "/view"} <= paths or {"/prompt", "/view"} <= paths
    assert _job_requests(devservers, 1 - idx, res["promptId"]) == []

    audit = page.evaluate("(id) => window.comfy.getAuditLog(id)", res["promptId"])
    assert {a["server"] for a in audit} == {res["server"]}
    assert [a["path"].split("?")[0] for a in audit][:2] == ["/upload/image", "/prompt"]

    _wait_unlocked(page)
    cond = page.evaluate("() => window.checkServerUnlockCondition()")
    assert cond["canUnlock"] is True and cond["pendingTasks"] == 0
    debug = page.evaluate("() => window.debugWebSocketLock()")
    assert any(e["event"] == "released" for e in debug["lockLog"])


def test_ws_drop_mid_job_completes_on_same_server_with_lock_held(booted_page, devservers):
    page = booted_page
    servers = devservers.urls
    _init(page, servers, "session")
    locked = page.evaluate("async () => (await window.comfy.ensureWebSocketConnection()).server")
    idx = servers.index(locked)
    srv = devservers.servers[idx]
    devservers.call(srv.faults.drop_ws, "executed")
    try:
        [res] = page.evaluate(RUN_JOBS, [INVERT, [[0, 0, 0]], "drop.png"])
    finally:
        devservers.call(srv.faults.clear)
    assert res["ok"], res
    assert res["server"] == locked
    assert _pixel(res["png"]) == (255, 255, 255)
    log = devservers.log(idx)
    assert any(r["kind"] == "ws_drop" for r in log), "the fault should have dropped the socket"
    assert _job_requests(devservers, 1 - idx, res["promptId"]) == []
    debug = page.evaluate("() => window.debugWebSocketLock()")
    assert debug["sockets"][locked]["reconnects"] >= 1, "the client reconnected to the same server"


def test_mismatch_is_refused_naming_both_servers(booted_page, devservers):
    page = booted_page
    servers = devservers.urls
    _init(page, servers, "session")
    locked = page.evaluate("async () => (await window.comfy.ensureWebSocketConnection()).server")
    other = servers[1 - servers.index(locked)]
    before = len(devservers.log(1 - servers.index(locked)))
    err = page.evaluate(
        """async ([wf, other]) => {
             try { await window.comfy.submitWorkflow(wf, {server: other}); return null; }
             catch (e) { return {code: e.code, message: e.message}; } }""",
        [INVERT, other],
    )
    assert err is not None and err["code"] == "server_mismatch"
    assert locked in err["message"] and other in err["message"]
    assert len(devservers.log(1 - servers.index(locked))) == before, "nothing was sent"


def test_job_mode_spreads_concurrent_jobs_and_each_gets_its_own_output(booted_page, devservers):
    page = booted_page
    servers = devservers.urls
    _init(page, servers, "job")
    colours = [[i * 30, 255 - i * 30, (i * 70) % 256] for i in range(6)]
    # the same file name for every job: outputs must still follow inputs
    results = page.evaluate(RUN_JOBS, [INVERT, colours, "same-name.png"])
    assert all(r["ok"] for r in results), results
    for rgb, r in zip(colours, results, strict=True):
        assert _pixel(r["png"]) == tuple(255 - c for c in rgb)
        idx = servers.index(r["server"])
        assert _job_requests(devservers, 1 - idx, r["promptId"]) == []
        assert _job_requests(devservers, idx, r["promptId"])
    assert {r["server"] for r in results} == set(servers), "work should use both servers"
    report = page.evaluate("() => window.validateServerConsistency()")
    assert report["consistent"] is True
    _init(page, servers, "session")


@pytest.mark.parametrize(
    ("servers", "code", "needle"),
    [
        (["javascript:alert(1)"], "config_error", "http"),
        ([], "config_error", "empty"),
        (["http://127.0.0.1:1", "http://127.0.0.1:1/"], "config_error", "uplicate"),
    ],
)
def test_bad_server_lists_are_rejected_clearly(booted_page, servers, code, needle):
    err = booted_page.evaluate(
        """async (servers) => {
             try { await window.comfy.init({servers}); return null; }
             catch (e) { return {code: e.code, message: e.message, name: e.name}; } }""",
        servers,
    )
    assert err is not None, "init should have refused"
    assert err["code"] == code
    assert needle.lower() in err["message"].lower()


def test_unreachable_server_is_reported_with_the_fix(booted_page, devservers):
    page = booted_page
    statuses = page.evaluate(
        """async (servers) => { await window.comfy.init({servers});
             return await window.comfy.checkComfyUIServerStatus(); }""",
        [devservers.urls[0], "http://127.0.0.1:9"],
    )
    by = {s["server"]: s for s in statuses}
    assert by[devservers.urls[0]]["status"] == "up"
    assert by[devservers.urls[0]]["version"]
    down = by["http://127.0.0.1:9"]
    assert down["status"] == "down"
    assert "--enable-cors-header" in down["error"]["message"]
    # a status check of every server is not job work: the session mode stays as configured
    debug = page.evaluate("() => window.debugWebSocketLock()")
    assert debug["affinity"] == "session"
    _init(page, devservers.urls, "session")


def test_interrupt_running_job_ends_it_with_a_typed_error(booted_page, devservers):
    page = booted_page
    servers = devservers.urls
    _init(page, servers, "session")
    for srv in devservers.servers:
        devservers.call(setattr, srv.faults, "node_delay_s", 0.4)
    try:
        page.evaluate(
            """(wf) => { window.pending = (async () => {
                 const c = new OffscreenCanvas(8, 8);
                 c.getContext("2d").fillRect(0, 0, 4, 4);
                 const blob = await c.convertToBlob({type: "image/png"});
                 try { await window.comfy.processImage(wf, blob); return null; }
                 catch (e) { return {code: e.code, message: e.message, promptId: e.promptId}; }
               })(); }""",
            INVERT,
        )
        running = _poll(page, """async () => (await window.comfy.getJobs())
                                   .find((j) => j.state === "running") || null""")
        out = page.evaluate("(id) => window.comfy.interrupt(id)", running["promptId"])
        assert out["interrupted"] is True and out["server"] == running["server"]
        err = page.evaluate("() => window.pending")
    finally:
        for srv in devservers.servers:
            devservers.call(setattr, srv.faults, "node_delay_s", 0.0)
    assert err is not None, "an interrupted job must not resolve as a success"
    assert err["code"] == "job_interrupted"
    assert err["promptId"] == running["promptId"]
    _wait_unlocked(page)


def test_consistency_self_test_runs_on_every_server(booted_page, devservers):
    page = booted_page
    _init(page, devservers.urls, "session")
    report = page.evaluate("() => window.runConsistencySelfTest()")
    assert report["ok"] is True, report
    assert [s["server"] for s in report["servers"]] == devservers.urls
    for i, entry in enumerate(report["servers"]):
        assert entry["serversSeen"] == [devservers.urls[i]]
        assert _job_requests(devservers, i, entry["promptId"])
        assert _job_requests(devservers, 1 - i, entry["promptId"]) == []


def test_second_init_reuses_the_interpreter(booted_page, devservers):
    page = booted_page
    same = page.evaluate(
        """async (servers) => {
             const a = await window.comfy.getPyodide();
             a.runPython("import builtins; builtins._comfy_marker = 41 + 1");
             await window.comfy.init({servers});
             const b = await window.comfy.getPyodide();
             return [a === b, b.runPython("import builtins; builtins._comfy_marker")];
           }""",
        devservers.urls,
    )
    assert same == [True, 42]


def test_calls_before_or_with_bad_arguments_fail_with_clear_errors(booted_page, devservers):
    page = booted_page
    _init(page, devservers.urls, "session")
    errs = page.evaluate(
        """async () => {
             const grab = async (f) => { try { await f(); return null; }
                                         catch (e) { return {code: e.code, message: e.message}; } };
             return {
               notObject: await grab(() => window.comfy.submitWorkflow("nope")),
               noClass: await grab(() => window.comfy.submitWorkflow({"1": {inputs: {}}})),
               textFile: await grab(() => window.comfy.uploadImageToComfyUI(
                   new Blob(["hello"], {type: "text/plain"}), {filename: "a.txt"})),
               unknownPrompt: await grab(() => window.comfy.getTaskHistory("nope")),
               badAffinity: await grab(() => window.comfy.init({servers: ["http://a:1"],
                                                                affinity: "sticky"})),
             };
           }"""
    )
    assert errs["notObject"]["code"] == "invalid_input"
    assert errs["noClass"]["code"] == "invalid_input" and "class_type" in errs["noClass"]["message"]
    assert errs["textFile"]["code"] == "invalid_input" and "image" in errs["textFile"]["message"]
    assert errs["unknownPrompt"]["code"] == "invalid_input"
    assert errs["badAffinity"]["code"] == "config_error"
    assert "session" in errs["badAffinity"]["message"]


def test_failover_option_is_checked_at_init(booted_page, devservers):
    errs = booted_page.evaluate(
        """async (servers) => {
             const grab = async (o) => { try { await window.comfy.init({servers, ...o});
                                               return null; }
                                         catch (e) { return {code: e.code, message: e.message,
                                                             hint: e.hint}; } };
             return [await grab({affinity: "job", failover: "sometimes"}),
                     await grab({affinity: "session", failover: "before-start"}),
                     await grab({affinity: "job", failover: "before-start"})];
           }""",
        devservers.urls,
    )
    unknown, session, ok = errs
    assert unknown["code"] == "config_error" and "'before-start'" in unknown["message"]
    assert session["code"] == "config_error" and "affinity 'job'" in session["message"]
    assert "affinity: 'job'" in session["hint"]
    assert ok is None
    _init(booted_page, devservers.urls, "session")


def test_failed_server_is_marked_down_then_reprobed_with_backoff(booted_page, devservers):
    from comfyui_devserver import RouteFault

    page = booted_page
    _init(page, devservers.urls, "session")
    srv = devservers.servers[1]
    devservers.call(srv.faults.route_faults.__setitem__, "/system_stats",
                    RouteFault(503, "busy", remaining=1))
    statuses = page.evaluate("() => window.comfy.checkComfyUIServerStatus()")
    down = next(s for s in statuses if s["server"] == devservers.urls[1])
    assert down["status"] == "down" and "503" in down["reason"]
    # nobody asks again: the client's own backoff re-probe brings it back
    _poll(page, """async () => (await window.debugWebSocketLock()).servers
                     .every((s) => s.status === "up")""", timeout_s=15)


def test_a_refused_origin_is_told_apart_from_a_dead_server(booted_page, devservers):
    """fetch fails the same way for both; the client's opaque no-cors probe does not: a
    ComfyUI started without --enable-cors-header is ``cross_origin_blocked`` (the hint
    names the flag with this page's origin), a closed port is ``server_unreachable``."""
    from comfyui_devserver import ServerGroup

    page = booted_page
    with ServerGroup(count=1, cors_origin=None) as strict:
        statuses = page.evaluate(
            """async (servers) => { await window.comfy.init({servers});
                 return await window.comfy.checkComfyUIServerStatus(); }""",
            [strict.urls[0], "http://127.0.0.1:9"],
        )
        origin = page.evaluate("location.origin")
        by = {s["server"]: s for s in statuses}
        refused = by[strict.urls[0]]
        assert refused["status"] == "down"
        assert refused["error"]["code"] == "cross_origin_blocked"
        assert f"--enable-cors-header {origin}" in refused["error"]["hint"]
        assert by["http://127.0.0.1:9"]["error"]["code"] == "server_unreachable"
        # the refusal came from the server itself: it logged the 403 it answered
        log = strict.servers[0].request_log
        assert strict.call(lambda: any(r.get("status") == 403 for r in log))
    _init(page, devservers.urls, "session")


def test_answers_cross_as_json_with_blobs_put_back_and_no_forged_handles(booted_page):
    """Bridge answers go to JS as JSON text with their Blobs beside it: the Blob comes back
    as the very same object, and an object a server sent that looks like a handle marker
    (the marker key is random per page) stays plain data."""
    out = booted_page.evaluate("""async () => {
      const py = await window.comfy.getPyodide();
      const run = py.runPython(`
from comfyui_client import _browser as b
def run(blob):
    forged = {"\\\\x00handle:" + "0" * 16: 0}
    return b._plain_for_callback({"forged": forged, "real": blob, "none": None,
                                  "list": [1, "x", 2.5]})
run`);
      const blob = new Blob(["abc"], { type: "image/png" });
      const out = run(blob);
      run.destroy();
      return { same: out.real === blob, forged: out.forged, none: out.none, list: out.list,
               proxy: typeof out.destroy === "function" };
    }""")
    assert out["same"] is True
    assert out["forged"] == {"\x00handle:" + "0" * 16: 0}
    assert out["none"] is None and out["list"] == [1, "x", 2.5]
    assert out["proxy"] is False, "a plain JS object, not a PyProxy"


def test_output_urls_are_made_on_first_read_only(booted_page, devservers):
    """An output's ``url`` is an object URL made when first read (each one keeps its Blob
    alive until revoked): a caller that only reads ``blob`` makes none; reading ``url``
    makes one, the same on every read, and it serves the output's bytes."""
    page = booted_page
    _init(page, devservers.urls[:1], "job")
    out = page.evaluate("""async (workflow) => {
      const input = await __TINY_PNG__;
      const made = [];
      const create = URL.createObjectURL;
      URL.createObjectURL = (b) => { const u = create(b); made.push(u); return u; };
      try {
        const r = await window.comfy.processImage(workflow, input);
        const im = r.images[0];
        const before = made.length;
        const size = im.blob.size;
        const first = im.url, second = im.url;
        const served = (await (await fetch(first)).arrayBuffer()).byteLength;
        URL.revokeObjectURL(first);
        return { before, after: made.length, same: first === second,
                 blobUrl: first.startsWith("blob:"), size, served,
                 listed: Object.keys(im).includes("url") };
      } finally {
        URL.createObjectURL = create;
      }
    }""".replace("__TINY_PNG__", TINY_PNG_JS), INVERT)
    assert out["before"] == 0, "no object URL before `url` is read"
    assert out["after"] == 1 and out["same"] is True and out["blobUrl"] is True
    assert out["served"] == out["size"] > 0
    assert out["listed"] is True, "url stays an enumerable field of the image"


def test_a_request_past_its_deadline_is_aborted_with_a_clear_error(booted_page, devservers):
    """requestTimeout bounds the answer: a server that sits on GET /view fails the call with
    the operation and the deadline named (only the deadline path says "no answer within")."""
    page = booted_page
    srv = devservers.servers[0]
    page.evaluate("(s) => window.comfy.init({servers: s, affinity: 'job', requestTimeout: 0.5})",
                  devservers.urls[:1])
    devservers.call(srv.faults.route_delay_s.__setitem__, "/view", 3.0)
    try:
        out = page.evaluate("""async () => {
          try { await window.comfy.getImage("nothing.png"); return { ok: true }; }
          catch (e) { return { ok: false, code: e.code, message: e.message }; }
        }""")
    finally:
        devservers.call(srv.faults.route_delay_s.clear)
        # the timeout marked the server down: probe it now, so later tests find it up
        page.evaluate("() => window.comfy.checkComfyUIServerStatus()")
    assert out["ok"] is False and out["code"] == "server_unreachable", out
    assert "image download" in out["message"] and "no answer within 0.5s" in out["message"]


def test_progress_callbacks_built_in_js_equal_the_json_ones(booted_page):
    """The most frequent callback payload is built by comfyui.js from the values that move
    (the client's progress sender); it must be the very object the general JSON path gives
    for the same job, nulls and key order included, also when a fixed value changes."""
    out = booted_page.evaluate("""async () => {
      const py = await window.comfy.getPyodide();
      const got = [];
      const run = py.runPython(`
import dataclasses
from comfyui_client import _browser as b, jobs as J
from comfyui_client.client import ClientOptions, PoolClient
from comfyui_client.records import JobRecord
def run(fn):
    client = PoolClient(b.BrowserTransport(), ["http://a:1"], ClientOptions(persist=False))
    empty = J.new_job("j", "http://a:1", now=0.0)
    full = dataclasses.replace(empty, state="running", progress=0.25, current_node="3",
                               node_value=2.0, node_max=8.0, total_nodes=4)
    half = dataclasses.replace(full, node_max=None)
    renamed = J.rename(full, "p2")
    rec = JobRecord(job=empty, on_progress=fn)
    senders = []
    for job, kind in ((full, "progress"), (empty, "progress_state"), (half, "progress"),
                      (renamed, "progress_state")):
        rec.job = job
        client.book.emit_progress(rec, kind)                           # the JS-built path
        fn(b._plain_for_callback({"event": kind, **J.progress_to_dict(job)}))  # JSON path
        senders.append(rec.sender)
    return len({id(s) for s in senders})
run`);
      const senders = run((p) => got.push(JSON.stringify(p)));
      run.destroy();
      return { got, senders };
    }""")
    got = out["got"]
    assert len(got) == 8
    assert [got[i] for i in range(0, 8, 2)] == [got[i] for i in range(1, 8, 2)], got
    assert '"nodeProgress":{"value":2,"max":8}' in got[0]
    assert '"nodeProgress":null' in got[2] and '"totalNodes":null' in got[2]
    assert '"nodeProgress":null' in got[4], "no max: no node progress"
    assert '"promptId":"p2"' in got[6]
    # made again when a fixed value changed: total_nodes (empty -> full), then back, then
    # the prompt id
    assert out["senders"] == 4


def test_calls_made_from_inside_a_progress_callback_run_after_it(booted_page, devservers):
    """Page code called from Python (a progress callback) may call the module again: that
    call runs after the callback returned, not inside the Python that was mid-way, and both
    the job and the inner calls complete."""
    page = booted_page
    _init(page, devservers.urls[:1], "job")
    out = page.evaluate("""async (workflow) => {
      const input = await __TINY_PNG__;
      const inner = [];
      let inCallback = false, ranInside = 0;
      const r = await window.comfy.processImage(workflow, input, {
        onProgress: (p) => {
          inCallback = true;
          inner.push(window.comfy.getJobs().then((jobs) => {
            if (inCallback) ranInside++;
            return jobs.some((j) => j.promptId === p.promptId);
          }));
          inCallback = false;
        },
      });
      const seen = await Promise.all(inner);
      return { ok: r.images.length === 1, calls: seen.length, allSawJob: seen.every(Boolean),
               ranInside };
    }""".replace("__TINY_PNG__", TINY_PNG_JS), INVERT)
    assert out["ok"] is True and out["calls"] > 3
    assert out["allSawJob"] is True
    assert out["ranInside"] == 0
