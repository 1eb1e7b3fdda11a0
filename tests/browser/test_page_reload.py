"""A page reloaded while its job runs: the next page's ``init()`` finds the job in
``sessionStorage`` (written by comfyui.js for the client, once each Python call returned),
reconnects to the same server with the same client id, and the job ends there."""

from __future__ import annotations

import pytest
from test_client_page import INVERT, _pixel

from conftest import HARNESS, ROOT

pytestmark = pytest.mark.browser

# Starts a processImage of a solid colour and resolves with its prompt id once queued; the
# job itself is left running.
START_JOB = """async ([workflow, rgb]) => {
  const c = new OffscreenCanvas(16, 8);
  const g = c.getContext("2d");
  g.fillStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
  g.fillRect(0, 0, 16, 8);
  const blob = await c.convertToBlob({ type: "image/png" });
  return new Promise((resolve, reject) => {
    window.comfy.processImage(workflow, blob, {
      onProgress: (p) => { if (p.promptId) resolve(p.promptId); },
    }).catch(reject);
  });
}"""

FINISH = """async (pid) => {
  await window.comfy.waitForCompletion(pid);
  const [img] = await window.comfy.getGeneratedImage(pid);
  const buf = new Uint8Array(await img.blob.arrayBuffer());
  let bin = "";
  for (const b of buf) bin += String.fromCharCode(b);
  return { png: btoa(bin), consistency: await window.comfy.validateServerConsistency() };
}"""


@pytest.fixture
def slow_server(devservers):
    server = devservers.servers[0]
    old = devservers.call(getattr, server.faults, "node_delay_s")
    devservers.call(setattr, server.faults, "node_delay_s", 1.5)
    yield devservers.urls[0]
    devservers.call(setattr, server.faults, "node_delay_s", old)


def test_a_job_survives_a_reload_and_ends_on_its_server(browser, dist_server, devservers,
                                                        slow_server):
    (ROOT / "dist" / "_harness.html").write_text(HARNESS)
    context = browser.new_context()
    try:
        page = context.new_page()
        url = f"{dist_server.url}/_harness.html"
        page.goto(url)
        page.wait_for_function("window.harnessReady === true", timeout=30_000)
        first = page.evaluate("(s) => window.comfy.init({servers: s})", [slow_server])
        pid = page.evaluate(START_JOB, [INVERT, [0, 128, 255]])
        saved = page.evaluate("sessionStorage.getItem('comfyui-client:v1')")
        assert pid in saved, "the job map is in sessionStorage as soon as the call returned"

        page.reload()
        page.wait_for_function("window.harnessReady === true", timeout=30_000)
        again = page.evaluate("(s) => window.comfy.init({servers: s})", [slow_server])
        assert again["clientId"] == first["clientId"]
        # the page before the reload is gone: nobody holds the id, so it is no duplicate
        assert page.evaluate("() => window.comfy.bootTimings.tabClaim") == "kept"
        assert pid in again["reattached"]
        out = page.evaluate(FINISH, pid)
        assert _pixel(out["png"]) == (255, 127, 0)
        assert out["consistency"]["consistent"] is True
        requests = [r for r in devservers.log(0) if r.get("prompt_id") == pid]
        assert {r["path"] for r in requests} >= {"/prompt", "/view"}
        assert all(r.get("prompt_id") != pid for r in devservers.log(1))
    finally:
        context.close()
