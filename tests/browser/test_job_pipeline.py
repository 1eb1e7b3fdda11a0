"""A job's shape in the page: inputs named after their bytes (hashed in JS), the upload and
its ``POST /prompt`` chained in JS, WebSocket messages handed to Python in batches (and
progress nobody listens to held back), the history read and the last outputs sent the
moment the end marker arrives. Each test checks what a user relies on — right pixels, the
server's own log, the audit trail — and that the new path was the one taken.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import page_at

pytestmark = pytest.mark.browser

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "p"}},
}

# Counts, in the page's Python, the calls comfyui.js makes into the socket handlers and the
# text messages they carry, and every single request sent from Python (not chained in JS).
COUNTERS = r"""
from comfyui_client import _browser as _pb
if not hasattr(_pb, "_test_counts"):
    _pb._test_counts = {"batches": 0, "texts": 0, "single": []}
    _orig_texts = _pb.BrowserSocket._on_texts
    def _on_texts(self, batch):
        _pb._test_counts["batches"] += 1
        _pb._test_counts["texts"] += int(batch.length)
        return _orig_texts(self, batch)
    _pb.BrowserSocket._on_texts = _on_texts
    _orig_request = _pb.BrowserTransport.request
    async def _request(self, base, req, **kw):
        _pb._test_counts["single"].append(req.method + " " + req.path.split("/")[1])
        return await _orig_request(self, base, req, **kw)
    _pb.BrowserTransport.request = _request
_pb._test_counts.update(batches=0, texts=0, single=[])
"""

READ_COUNTS = """async () => {
  const py = await window.comfy.getPyodide();
  return JSON.parse(py.runPython(
    "import json; from comfyui_client import _browser as _pb; json.dumps(_pb._test_counts)"));
}"""

# One processImage on a solid-colour PNG made in the page; the Blob is kept on window so a
# second call can send the very same File.
RUN = """async ([workflow, rgb, opts, again]) => {
  if (!again) {
    const c = new OffscreenCanvas(16, 8);
    const g = c.getContext("2d");
    g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
    g.fillRect(0, 0, 16, 8);
    window.testBlob = await c.convertToBlob({ type: "image/png" });
  }
  const seen = [];
  const r = await window.comfy.processImage(workflow, window.testBlob, {
    ...opts, ...(opts.listen ? { onProgress: (p) => seen.push(p.event) } : {}) });
  const px = new Uint8Array(await r.images[0].blob.arrayBuffer());
  const bytes = new Uint8Array(await window.testBlob.arrayBuffer());
  return { promptId: r.promptId, server: r.server, upload: r.upload, seen,
           input: Array.from(bytes), output: Array.from(px),
           audit: await window.comfy.getAuditLog(r.promptId),
           consistent: (await window.comfy.validateServerConsistency()).consistent };
}"""


def _pixel(data: list[int]) -> tuple[int, int, int]:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(bytes(data))).convert("RGB")
    return img.getpixel((0, 0))


@pytest.fixture(scope="module")
def pipeline_page(browser, dist_server, booted_page, devservers):
    """A page of its own (its own interpreter), counting from before its first socket: the
    counters wrap the socket class, whose handlers are bound when a socket opens."""
    with page_at(browser, f"{dist_server.url}/_harness.html") as page:
        page.evaluate("async (src) => (await window.comfy.getPyodide()).runPython(src)",
                      COUNTERS)
        page.evaluate("(s) => window.comfy.init({servers: [s], affinity: 'job'})",
                      devservers.urls[0])
        yield page


@pytest.fixture
def page(pipeline_page):
    pipeline_page.evaluate("async (src) => (await window.comfy.getPyodide()).runPython(src)",
                           COUNTERS)
    return pipeline_page


def _server_log(devservers, since: int) -> list[dict]:
    return devservers.log(0)[since:]


def test_an_input_is_named_after_its_bytes_and_sent_once_per_server(page, devservers):
    """The name is the sha256 of the bytes (hashed in JS), the upload and the prompt went out
    as one chained pair, and the same File again is not uploaded again."""
    start = len(devservers.log(0))
    first = page.evaluate(RUN, [INVERT, [12, 34, 56], {}, False])
    again = page.evaluate(RUN, [INVERT, [12, 34, 56], {}, True])
    digest = hashlib.sha256(bytes(first["input"])).hexdigest()
    assert first["upload"]["name"] == again["upload"]["name"] == f"{digest}.png"
    assert first["upload"]["reused"] is False and again["upload"]["reused"] is True
    for res in (first, again):
        assert _pixel(res["output"]) == (243, 221, 199)
        assert res["consistent"] is True
    log = _server_log(devservers, start)
    assert [e.get("upload_name") for e in log if e["path"] == "/upload/image"] == [
        f"{digest}.png"], "one upload for two jobs"
    assert sum(1 for e in log if e["path"] == "/prompt" and e["method"] == "POST") == 2
    # the first job's upload and POST /prompt were chained in JS: no single POST from Python
    counts = page.evaluate(READ_COUNTS)
    assert counts["single"].count("POST upload") == 0
    assert counts["single"].count("POST prompt") == 1, "only the second job's, no upload"
    paths = [a["path"].split("?")[0] for a in first["audit"]]
    assert paths[:2] == ["/upload/image", "/prompt"], paths


def test_a_renamed_upload_never_submits_and_the_error_says_so(page, devservers):
    """A different file already has the content name on the server: it stores ours as
    'name (1).png', so the chained POST /prompt is held back in JS and the job fails."""
    blob_hex = page.evaluate("""async () => {
      const c = new OffscreenCanvas(16, 8);
      c.getContext("2d").fillRect(0, 0, 3, 3);
      window.testBlob = await c.convertToBlob({ type: "image/png" });
      return Array.from(new Uint8Array(await window.testBlob.arrayBuffer()));
    }""")
    name = hashlib.sha256(bytes(blob_hex)).hexdigest() + ".png"
    srv = devservers.servers[0]
    devservers.call(lambda: (srv.dirs.input / name).write_bytes(b"not the same bytes"))
    start = len(devservers.log(0))
    out = page.evaluate("""async (w) => {
      try { await window.comfy.processImage(w, window.testBlob); return null; }
      catch (e) { return { code: e.code, message: e.message, stored: e.details.stored }; }
    }""", INVERT)
    assert out["code"] == "upload_conflict"
    assert out["stored"] == name.replace(".png", " (1).png") and name in out["message"]
    log = _server_log(devservers, start)
    assert [e["path"] for e in log if e["method"] == "POST"] == ["/upload/image"]


def test_messages_reach_python_in_batches_and_unheard_progress_wakes_nothing(page, devservers):
    """A sampler-like node sends a stream of progress messages. Without an onProgress
    callback they do not wake Python by themselves; with one, every step reaches it.
    Either way the job's messages reach Python in fewer calls than there are messages."""
    srv = devservers.servers[0]
    for k, v in (("progress_steps", 12), ("progress_step_delay_s", 0.01)):
        devservers.call(setattr, srv.faults, k, v)
    try:
        page.evaluate("async (src) => (await window.comfy.getPyodide()).runPython(src)",
                      COUNTERS)
        quiet = page.evaluate(RUN, [INVERT, [90, 90, 90], {}, False])
        q = page.evaluate(READ_COUNTS)
        page.evaluate("async (src) => (await window.comfy.getPyodide()).runPython(src)",
                      COUNTERS)
        heard = page.evaluate(RUN, [INVERT, [91, 90, 90], {"listen": True}, False])
        h = page.evaluate(READ_COUNTS)
    finally:
        devservers.call(srv.faults.clear)
    assert _pixel(quiet["output"]) == (165, 165, 165)
    assert _pixel(heard["output"]) == (164, 165, 165)
    assert heard["seen"].count("progress") == 12, "every step reached the callback"
    # the 12 held-back progress steps (and their progress_state) did not each call Python
    assert q["batches"] + 12 <= h["batches"], (q, h)
    assert q["texts"] < h["texts"]
    assert q["batches"] < q["texts"] and h["batches"] <= h["texts"]


def test_the_history_read_goes_out_at_the_end_marker_without_python(page, devservers):
    """The history read is armed in JS for the job's end marker: no GET /history is sent
    from Python, the server sees exactly one, and the job's audit trail records it. The
    server takes 50 ms between success and the end marker here, so the last node's output,
    named before, is armed too (when both come in one batch it is sent from Python)."""
    srv = devservers.servers[0]
    devservers.call(setattr, srv.faults, "history_gap_s", 0.05)
    start = len(devservers.log(0))
    try:
        res = page.evaluate(RUN, [INVERT, [200, 10, 10], {}, False])
    finally:
        devservers.call(srv.faults.clear)
    assert _pixel(res["output"]) == (55, 245, 245)
    counts = page.evaluate(READ_COUNTS)
    assert "GET history" not in counts["single"], counts
    assert "GET view" not in counts["single"], "the last node's output went with it"
    log = _server_log(devservers, start)
    assert [e["path"] for e in log if e["path"].startswith("/history/")] == [
        f"/history/{res['promptId']}"]
    assert [a["path"] for a in res["audit"] if a["path"].startswith("/history/")] == [
        f"/history/{res['promptId']}"]
    assert res["consistent"] is True


def test_a_job_that_ends_before_its_reads_are_armed_still_completes(page, devservers):
    """A cached job whose POST /prompt answer comes late ends before the history read could
    be armed: nothing armed ever fires, and the reads go out from Python instead."""
    srv = devservers.servers[0]
    page.evaluate(RUN, [INVERT, [1, 2, 3], {}, False])  # now the server has it cached
    devservers.call(srv.faults.answer_delay_s.__setitem__, "/prompt", 0.3)
    try:
        page.evaluate("async (src) => (await window.comfy.getPyodide()).runPython(src)",
                      COUNTERS)
        res = page.evaluate(RUN, [INVERT, [1, 2, 3], {}, True])
    finally:
        devservers.call(srv.faults.clear)
    assert _pixel(res["output"]) == (254, 253, 252)
    counts = page.evaluate(READ_COUNTS)
    assert "GET history" in counts["single"], "sent from Python once nothing fired"
    dbg = page.evaluate("() => window.comfy.debugWebSocketLock()")
    assert dbg["pendingTasks"] == []
    assert json.dumps(res["audit"]).count("/history/") == 1
