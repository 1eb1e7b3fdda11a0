"""comfyui.js's boot cache: the first boot in a browser leaves a memory snapshot of the
interpreter in Cache Storage (made by a worker); a reload restores it instead of starting
CPython. Each test uses its own browser context (its own Cache Storage) and checks what a
user relies on: a restored page runs real jobs, what must differ per page does differ, a
broken entry costs nothing but the speed-up, and the option turns it all off."""

from __future__ import annotations

import pytest
from test_client_page import INVERT, RUN_JOBS, _pixel
from test_demo_page import _slow

from conftest import HARNESS, ROOT

pytestmark = pytest.mark.browser

# The cache's entries as {url: byte length}
CACHE_ENTRIES = """async () => {
  const cache = await caches.open("comfyui.js-boot");
  const out = {};
  for (const req of await cache.keys()) {
    out[req.url] = (await (await cache.match(req)).arrayBuffer()).byteLength;
  }
  return out;
}"""

# What must differ between two pages restored from one snapshot
PAGE_SECRETS = """async () => {
  const py = await window.comfy.getPyodide();
  return py.runPython(
    "import random\\nfrom comfyui_client import _browser as b\\n" +
    "import json; json.dumps([random.random(), b._HANDLE_KEY])");
}"""


@pytest.fixture
def harness_page(browser, dist_server):
    (ROOT / "dist" / "_harness.html").write_text(HARNESS)
    context = browser.new_context()
    page = context.new_page()
    page.console_logs = []  # type: ignore[attr-defined]
    page.on("console", lambda msg: page.console_logs.append(f"{msg.type}: {msg.text}"))
    url = f"{dist_server.url}/_harness.html"

    def load():
        page.goto(url)
        page.wait_for_function("window.harnessReady === true", timeout=30_000)

    page.load = load  # type: ignore[attr-defined]
    load()
    yield page
    context.close()


def _boot(page, servers, **options):
    page.evaluate("(o) => window.comfy.init(o)", {"servers": servers, **options})
    return page.evaluate("window.comfy.bootTimings.bootCache")


def test_a_reload_restores_the_snapshot_and_runs_jobs(harness_page, devservers):
    page = harness_page
    assert _boot(page, devservers.urls[:1]) == "saving"
    assert page.evaluate("window.comfy.bootCacheSaved") is True
    assert page.evaluate("window.comfy.bootTimings.bootCache") == "saved"
    entries = page.evaluate(CACHE_ENTRIES)
    assert len(entries) == 1, entries
    [(key, size)] = entries.items()
    version = page.evaluate("window.comfy.getPyodide().then((p) => p.version)")
    assert f"/boot-snapshot/{version}/" in key
    assert size > 1 << 20, "a snapshot holds the interpreter's memory"
    assert page.evaluate("localStorage.getItem('comfyui.js-boot')") == key

    secrets = []
    for extra in ([], ["pyodide-http"]):
        page.load()
        assert _boot(page, devservers.urls[:1], extraPackages=extra) == "restored"
        secrets.append(page.evaluate(PAGE_SECRETS))
        [res] = page.evaluate(RUN_JOBS, [INVERT, [[10, 200, 30]], "photo.png"])
        assert res["ok"], res
        assert _pixel(res["png"]) == (245, 55, 225)
        assert res["events"][-1] == "succeeded"
        assert res["consistency"]["consistent"] is True
    # the snapshot holds memory, not files: a stdlib module it never imported still
    # imports, and the client's sources are on disk (tracebacks show their lines)
    assert page.evaluate("""window.comfy.getPyodide().then((p) => p.runPython(
        "import sys\\nnew = 'tomllib' not in sys.modules\\nimport tomllib\\n" +
        "from comfyui_client import jobs\\n" +
        "[new, tomllib.loads('a = 1')['a'], 'def apply_event' in open(jobs.__file__).read()]"
      ).toJs())""") == [True, 1, True]
    assert secrets[0] != secrets[1], "each restored page draws its own random state and key"
    assert page.evaluate("""window.comfy.getPyodide().then((p) => p.runPython(
        "import pyodide_http; pyodide_http.__name__"))""") == "pyodide_http"
    assert page.evaluate("window.comfy.bootCacheSaved") is False  # nothing new to save


def test_a_broken_or_unnoted_entry_means_a_normal_boot_that_saves_it_again(
        harness_page, devservers):
    page = harness_page
    assert _boot(page, devservers.urls[:1]) == "saving"
    assert page.evaluate("window.comfy.bootCacheSaved") is True
    [key] = page.evaluate(CACHE_ENTRIES)
    page.evaluate("""async (key) => {
      const cache = await caches.open("comfyui.js-boot");
      await cache.put(key, new Response(new Uint8Array(4096).fill(7)));
    }""", key)

    page.load()
    assert _boot(page, devservers.urls[:1]) == "saving", "booted normally"
    assert any("boot cache could not be restored" in line for line in page.console_logs)
    [res] = page.evaluate(RUN_JOBS, [INVERT, [[0, 0, 255]], "photo.png"])
    assert res["ok"], res
    assert _pixel(res["png"]) == (255, 255, 0)
    assert page.evaluate("window.comfy.bootCacheSaved") is True
    assert page.evaluate(CACHE_ENTRIES)[key] > 1 << 20, "replaced by a good snapshot"

    page.load()
    assert _boot(page, devservers.urls[:1]) == "restored"

    # without the note a boot does not look in Cache Storage: a normal one, noted again
    page.evaluate("localStorage.removeItem('comfyui.js-boot')")
    page.load()
    assert _boot(page, devservers.urls[:1]) == "saving"
    assert page.evaluate("window.comfy.bootCacheSaved") is True
    assert page.evaluate("localStorage.getItem('comfyui.js-boot')") == key


def test_boot_options_bootcache_false_and_extra_packages(harness_page, devservers):
    page = harness_page
    err = page.evaluate("""() => window.comfy.init({servers: ["http://127.0.0.1:9"],
                                                    bootCache: "yes"}).then(
        () => null, (e) => ({code: e.code, message: e.message}))""")
    assert err == {"code": "config_error",
                   "message": 'option bootCache must be true or false, got "yes"'}
    assert _boot(page, devservers.urls[:1], bootCache=False,
                 extraPackages=["pyodide-http"]) == "off"
    assert page.evaluate("window.comfy.bootCacheSaved") is False
    assert page.evaluate("""window.comfy.getPyodide().then((p) => p.runPython(
        "import pyodide_http; pyodide_http.__name__"))""") == "pyodide_http"
    assert page.evaluate(CACHE_ENTRIES) == {}
    assert page.evaluate("localStorage.getItem('comfyui.js-boot')") is None
    # the option belongs to the boot: a later init() accepts it and changes nothing
    assert _boot(page, devservers.urls[:1], bootCache=True) == "off"


@pytest.fixture
def slow_server(devservers):
    yield from _slow(devservers, 0.8)


def test_the_save_waits_until_no_job_is_running(harness_page, slow_server):
    """The worker costs ~2 s of CPU: it must not start while the page's first job runs."""
    page = harness_page
    workers = []
    page.on("worker", lambda w: workers.append(w.url))
    assert _boot(page, slow_server.urls[:1]) == "saving"
    page.evaluate(f"""(args) => {{
      window.jobEnded = false;
      const t0 = performance.now();
      window.jobRun = ({RUN_JOBS})(args).then((r) => {{
        window.jobEnded = true;
        return {{ r, ms: performance.now() - t0 }};
      }});
    }}""", [INVERT, [[3, 141, 59]], "photo.png"])  # an image no other test runs: it
    polls = 0                                        # must run, not come from the cache
    while not page.evaluate("window.jobEnded"):
        assert workers == [], "the save started while a job was running"
        polls += 1
        page.wait_for_timeout(100)
    done = page.evaluate("window.jobRun")
    assert done["r"][0]["ok"], done
    assert done["ms"] > 1500 and polls > 10, "the job outlasted the quiet wait"
    assert page.evaluate("window.comfy.bootCacheSaved") is True
    assert [u.rsplit("/", 1)[-1] for u in workers] == ["boot-cache-worker.js"]
