"""The page's asyncio loop with ``MicrotaskSoon`` (``init({microtaskLoop})``, default on):
callbacks keep asyncio's order, run in a microtask after the JS that scheduled them, cannot
freeze the page, and a failing one stops nothing else; ``microtaskLoop: false`` keeps
Pyodide's scheduling and jobs run the same. Real Chromium, real Pyodide, dev servers."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "m"}},
}

RUN_PY = "async (src) => (await window.comfy.getPyodide()).runPythonAsync(src)"

# Python schedules a callback; a JS microtask queued right after it looks whether it ran.
# Under Pyodide's own scheduling the callback waits for a task turn, so it has not.
RAN_BY_NEXT_MICROTASK = """async () => {
  const py = await window.comfy.getPyodide();
  py.runPython(`
import asyncio
_mt_ran = []
asyncio.get_event_loop().call_soon(_mt_ran.append, 1)`);
  const seen = await new Promise((resolve) =>
    queueMicrotask(() => resolve(py.runPython("len(_mt_ran)"))));
  await new Promise((r) => setTimeout(r, 20));
  return [seen, py.runPython("len(_mt_ran)")];
}"""


@pytest.fixture
def fresh_page(browser, dist_server, booted_page):
    """A page of its own (its own interpreter) on the shared harness file."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{dist_server.url}/_harness.html")
    page.wait_for_function("window.harnessReady === true", timeout=60_000)
    yield page
    context.close()


def _init(page, devservers, **options):
    page.evaluate("(o) => window.comfy.init(o)", {"servers": devservers.urls[:1], **options})


def test_callbacks_run_in_fifo_order_in_the_microtask_after_their_js(booted_page, devservers):
    page = booted_page
    _init(page, devservers, affinity="job")
    assert page.evaluate(RAN_BY_NEXT_MICROTASK) == [1, 1]
    order = page.evaluate(RUN_PY, """
import asyncio, js
order = []
loop = asyncio.get_event_loop()
def first():
    order.append("a")
    loop.call_soon(order.append, "d")      # queued by a callback: after everything before it
loop.call_soon(first)
loop.call_soon(order.append, "b")
loop.call_soon(order.append, "x").cancel()  # a cancelled handle never runs
loop.call_soon(order.append, "c")
async def task(name):
    order.append(name)
    await asyncio.sleep(0)
    order.append(name + "2")
t1, t2 = loop.create_task(task("t")), loop.create_task(task("u"))
await asyncio.gather(t1, t2)
await js.Promise.new(lambda res, rej: js.setTimeout(res, 0))
",".join(order)
""")
    assert order == "a,b,c,t,u,d,t2,u2"


def test_python_that_keeps_scheduling_still_lets_the_page_take_its_turns(booted_page, devservers):
    page = booted_page
    _init(page, devservers, affinity="job")
    ticks, rounds = page.evaluate("""async () => {
      const py = await window.comfy.getPyodide();
      let ticks = 0;
      const timer = setInterval(() => { ticks++; }, 5);
      // 300 ms of `await asyncio.sleep(0)`: every wake-up is a call_soon callback
      const rounds = await py.runPythonAsync(`
import asyncio, time
end, n = time.monotonic() + 0.3, 0
while time.monotonic() < end:
    await asyncio.sleep(0)
    n += 1
n`);
      clearInterval(timer);
      return [ticks, rounds];
    }""")
    assert rounds > 0
    # without the run budget the loop above would hold the page in microtasks throughout
    # and the interval would never have fired before clearInterval
    assert ticks > 0, "the page got no task turn during 300 ms of Python scheduling"


def test_a_failing_callback_is_reported_and_the_others_still_run(booted_page, devservers):
    page = booted_page
    _init(page, devservers, affinity="job")
    out = page.evaluate("""async () => {
      const py = await window.comfy.getPyodide();
      await py.runPythonAsync(`
import asyncio, js
loop = asyncio.get_event_loop()
_mt_seen, _mt_reported = [], []
_mt_old = loop.get_exception_handler()
loop.set_exception_handler(lambda lp, ctx: _mt_reported.append(repr(ctx.get("exception"))))
try:
    def boom():
        raise ValueError("callback failed")
    loop.call_soon(_mt_seen.append, 1)
    loop.call_soon(boom)
    loop.call_soon(_mt_seen.append, 2)
    await js.Promise.new(lambda res, rej: js.setTimeout(res, 0))
finally:
    loop.set_exception_handler(_mt_old)`);
      return JSON.parse(py.runPython("import json; json.dumps([_mt_seen, _mt_reported])"));
    }""")
    assert out == [[1, 2], ["ValueError('callback failed')"]]


def test_microtask_loop_false_keeps_pyodides_scheduling_and_jobs_run(fresh_page, devservers):
    page = fresh_page
    _init(page, devservers, affinity="job", microtaskLoop=False)
    # Pyodide's own loop: the callback waits for a task turn
    assert page.evaluate(RAN_BY_NEXT_MICROTASK) == [0, 1]
    assert page.evaluate("""async (w) => {
      const c = new OffscreenCanvas(8, 8);
      c.getContext("2d").fillRect(0, 0, 8, 8);
      const r = await window.comfy.processImage(w, await c.convertToBlob({type: "image/png"}));
      return (await r.images[0].blob.arrayBuffer()).byteLength;
    }""", INVERT) > 0


def test_microtask_loop_option_is_validated(fresh_page):
    err = fresh_page.evaluate("""() => window.comfy.init({servers: ["http://127.0.0.1:9"],
        microtaskLoop: "yes"}).then(() => null, (e) => [e.code, e.message])""")
    assert err is not None and err[0] == "config_error"
    assert "microtaskLoop must be true or false" in err[1]
