"""A duplicated tab ("Duplicate tab" copies sessionStorage) in real pages: two pages of one
browser context whose sessionStorage holds the same client id and job map when comfyui.js
boots. ComfyUI sends a client id's messages to its newest socket only, so with one id the
original's jobs would hear nothing and end from the stall check; the copy must take a fresh
id and an empty job map while the original keeps both, and both tabs' jobs must end from
their own WebSocket messages."""

from __future__ import annotations

import json

import pytest
from test_client_page import INVERT

from conftest import HARNESS, ROOT

pytestmark = pytest.mark.browser

KEY = "comfyui-client:v1"  # persistence.SESSION_KEY

# n processImage jobs at once, each on an image of its own; per job its prompt id, server,
# the events its onProgress saw and its audit trail
RUN_JOBS = """async ([workflow, n]) => {
  const image = async () => {
    const c = new OffscreenCanvas(8, 8);
    const px = crypto.getRandomValues(new Uint8ClampedArray(8 * 8 * 4)).map(
      (v, i) => (i % 4 === 3 ? 255 : v));
    c.getContext("2d").putImageData(new ImageData(px, 8, 8), 0, 0);
    return c.convertToBlob({ type: "image/png" });
  };
  const blobs = await Promise.all(Array.from({ length: n }, image));
  return Promise.all(blobs.map(async (blob) => {
    const events = [];
    const r = await window.comfy.processImage(workflow, blob, {
      onProgress: (p) => events.push(p.event),
    });
    return { promptId: r.promptId, server: r.server, events,
             audit: await window.comfy.getAuditLog(r.promptId) };
  }));
}"""

# a job submitted step by step and waited for, its outputs not fetched: it stays in the
# tab's job map as in flight (it holds the lock until its outputs are fetched)
SUBMIT_AND_WAIT = """async (workflow) => {
  const c = new OffscreenCanvas(8, 8);
  c.getContext("2d").fillRect(0, 0, 8, 8);
  const up = await window.comfy.uploadImageToComfyUI(
    await c.convertToBlob({ type: "image/png" }), { filename: "tab.png" });
  const wf = { ...workflow, "1": { ...workflow["1"], inputs: { image: up.name } } };
  const { promptId } = await window.comfy.submitWorkflow(wf);
  await window.comfy.waitForCompletion(promptId);
  return promptId;
}"""


@pytest.fixture
def tabs(browser, dist_server):
    """``open_tab(storage=None, script="")``: a page of one shared browser context that
    imported comfyui.js, with ``storage`` put in its sessionStorage (and ``script`` run)
    before any of its scripts ran, as a duplicated tab starts."""
    harness = ROOT / "dist" / "_tabs_harness.html"
    harness.write_text(HARNESS)
    context = browser.new_context()

    def open_tab(storage: str | None = None, script: str = ""):
        page = context.new_page()
        if storage is not None:
            page.add_init_script(f"sessionStorage.setItem({KEY!r}, {json.dumps(storage)});"
                                 + script)
        page.goto(f"{dist_server.url}/_tabs_harness.html")
        page.wait_for_function("window.harnessReady === true", timeout=60_000)
        return page

    yield open_tab
    context.close()
    harness.unlink(missing_ok=True)


def _saved(page) -> dict:
    return json.loads(page.evaluate(f"sessionStorage.getItem({KEY!r})"))


def _ended_from_own_messages(job: dict) -> None:
    """The job's end came over its own socket (execution_success, then the end marker),
    and no stall check asked the server's queue about it."""
    assert "execution_success" in job["events"], job["events"]
    assert "executing" in job["events"], job["events"]
    assert not [a for a in job["audit"] if a["path"].startswith("/queue")], job["audit"]


def test_a_duplicated_tab_gets_its_own_client_id_and_both_tabs_jobs_run(tabs, devservers):
    server = devservers.urls[0]
    original = tabs()
    first = original.evaluate("(s) => window.comfy.init({servers: s, bootCache: false})",
                              [server])
    done = original.evaluate(RUN_JOBS, [INVERT, 2])
    pending = original.evaluate(SUBMIT_AND_WAIT, INVERT)
    copied = original.evaluate(f"sessionStorage.getItem({KEY!r})")
    before = _saved(original)
    assert before["clientId"] == first["clientId"] and pending in before["jobs"]

    duplicate = tabs(storage=copied)
    assert _saved(duplicate) == before, "the copy starts with the original's storage"
    second = duplicate.evaluate("(s) => window.comfy.init({servers: s, bootCache: false})",
                                [server])
    timings = duplicate.evaluate("() => window.comfy.bootTimings")
    assert timings["tabClaim"] == "duplicate"
    assert second["clientId"] != first["clientId"], "the copy takes a fresh client id"
    assert second["reattached"] == [], "nor does it take over the original's job in flight"
    assert _saved(duplicate)["jobs"] == {} and _saved(duplicate)["done"] == {}
    assert _saved(duplicate)["clientId"] == second["clientId"]

    # the original keeps its id and its jobs
    assert _saved(original)["clientId"] == first["clientId"]
    assert pending in _saved(original)["jobs"]
    assert {j["promptId"] for j in done} <= set(_saved(original)["done"])
    jobs = original.evaluate("() => window.comfy.getJobs()")
    assert {j["promptId"] for j in jobs} >= {pending, *(j["promptId"] for j in done)}
    original.evaluate("(pid) => window.comfy.getGeneratedImage(pid)", pending)

    # four jobs in each tab at once, on the one server
    original.evaluate("([wf, n]) => { window.running = (" + RUN_JOBS + ")([wf, n]); }",
                      [INVERT, 4])
    theirs = duplicate.evaluate(RUN_JOBS, [INVERT, 4])
    mine = original.evaluate("() => window.running")
    for job in mine + theirs:
        assert job["server"] == server
        _ended_from_own_messages(job)
    # each POST /prompt carried its own tab's client id
    posted = {e["prompt_id"]: e.get("client_id") for e in devservers.log(0)
              if e.get("path") == "/prompt" and e.get("method") == "POST"}
    assert {posted[j["promptId"]] for j in mine} == {first["clientId"]}
    assert {posted[j["promptId"]] for j in theirs} == {second["clientId"]}


def test_a_tab_alone_keeps_its_client_id_and_tabs_booting_together_split(tabs, devservers):
    """A page that finds a saved id no open page holds (a reload, a restored tab) keeps it;
    two pages booting at once with the same saved id end with one id each."""
    server = devservers.urls[0]
    saved = json.dumps({"clientId": "0123456789abcdef0123456789abcdef", "jobs": {},
                        "done": {}})
    pages = [tabs(storage=saved) for _ in range(2)]
    for page in pages:  # both start booting; whichever claims first, one keeps the id
        page.evaluate("(s) => { window.initDone = window.comfy.init({servers: s, "
                      "bootCache: false}); }", [server])
    summaries = [page.evaluate("() => window.initDone") for page in pages]
    claims = sorted(page.evaluate("() => window.comfy.bootTimings.tabClaim") for page in pages)
    assert claims == ["duplicate", "kept"]
    ids = {s["clientId"] for s in summaries}
    assert len(ids) == 2 and "0123456789abcdef0123456789abcdef" in ids
    for page in pages:
        [job] = page.evaluate(RUN_JOBS, [INVERT, 1])
        _ended_from_own_messages(job)


def test_without_broadcastchannel_nothing_is_claimed_and_the_saved_id_is_kept(tabs, devservers):
    """Where BroadcastChannel does not exist nothing is claimed and nothing waited for: the
    page keeps the saved id, as every page did before."""
    saved = json.dumps({"clientId": "fedcba9876543210fedcba9876543210", "jobs": {},
                        "done": {}})
    page = tabs(storage=saved, script="delete window.BroadcastChannel;")
    summary = page.evaluate("(s) => window.comfy.init({servers: s, bootCache: false})",
                            devservers.urls[:1])
    assert summary["clientId"] == "fedcba9876543210fedcba9876543210"
    assert page.evaluate("() => window.comfy.bootTimings.tabClaim") == "unsupported"
