"""Shared fixtures.

- ``playwright_browsers`` (overrides pytest-pyodide's): launches Debian's Chromium, because
  ``playwright install`` needs the internet; one browser for the whole run.
- ``runtime`` / ``selenium_module_scope`` (override pytest-pyodide's module scope): boot
  Pyodide once per run, not once per module.
- ``devservers``: two ComfyUI-compatible dev server instances on 127.0.0.1 for the run.
- ``dist_server`` / ``page``: dist/ served on 127.0.0.1 and one page that imported
  ``web/comfyui.js`` (plain Playwright, the way the existing web client uses the module).
- ``vite_app``: the npm package packed from dist/ and installed in a copy of
  tests/vite-app/ (see tests/viteapp.py); removed at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for sub in ("py_src", "tests", "."):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))


def _small_shm_args() -> list[str]:
    """Containers often give /dev/shm only 64 MB, and a renderer that runs out of it crashes
    ("Target crashed"): there Chromium is told to use /tmp instead. With room in /dev/shm
    (as in a user's browser) nothing changes, so benchmark figures stay comparable."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return ["--disable-dev-shm-usage"]
    return [] if st.f_bavail * st.f_frsize >= 1 << 30 else ["--disable-dev-shm-usage"]


CHROMIUM_ARGS = [
    *_small_shm_args(),
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--js-flags=--expose-gc",
]


def _chromium_path() -> str:
    return os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def playwright_browsers(request):
    if request.config.option.runner.lower() != "playwright":
        yield {}
        return
    from playwright.sync_api import sync_playwright

    path = _chromium_path()
    if not Path(path).exists():
        pytest.exit(f"Chromium not found at {path}: run `python3 build.py test`, which "
                    "installs it, or set CHROMIUM_PATH", returncode=1)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield {"chrome": browser}
        finally:
            browser.close()


@pytest.fixture(scope="session", params=["chrome"])
def runtime(request):
    return request.param


@pytest.fixture(scope="session")
def selenium_module_scope(request, runtime, web_server_main, playwright_browsers):
    from pytest_pyodide.fixture import selenium_common

    with selenium_common(request, runtime, web_server_main, browsers=playwright_browsers) as sel:
        yield sel


@pytest.fixture(scope="session")
def devservers():
    """Two dev server instances, CORS open (the test pages live on other ports)."""
    from comfyui_devserver import ServerGroup

    with ServerGroup(count=2, cors_origin="*") as group:
        yield group


@pytest.fixture(scope="session")
def dist_server():
    import build

    dist = ROOT / "dist"
    if not (dist / "pyodide" / "pyodide-lock.json").exists():
        pytest.exit("dist/ is not built: run `python3 build.py test`", returncode=1)
    with build.StaticServer(dist) as server:
        yield server


@pytest.fixture(scope="session")
def vite_app():
    import shutil

    import build
    from viteapp import install_app

    if not (ROOT / "dist" / "pyodide" / "pyodide-lock.json").exists():
        pytest.exit("dist/ is not built: run `python3 build.py test`", returncode=1)
    try:
        tarball = build.pack()
    except SystemExit:  # build.fail: its message is on stderr
        pytest.fail("python3 build.py pack failed (see the captured stderr)")
    app = install_app(tarball)
    yield app
    shutil.rmtree(app.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(playwright_browsers):
    if "chrome" not in playwright_browsers:
        pytest.skip("needs --runner playwright")
    return playwright_browsers["chrome"]


@contextlib.contextmanager
def page_at(browser, url: str):
    """A page in a context of its own at ``url``, a page that imports ``comfyui.js`` and
    sets ``window.harnessReady``; ``page.console_logs`` collects its console as
    ``"type: text"`` lines."""
    context = browser.new_context()
    try:
        page = context.new_page()
        logs: list[str] = []
        page.on("console", lambda msg: logs.append(f"{msg.type}: {msg.text}"))
        page.goto(url)
        page.wait_for_function("window.harnessReady === true", timeout=60_000)
        page.console_logs = logs  # type: ignore[attr-defined]
        yield page
    finally:
        context.close()


@contextlib.contextmanager
def harness_page(browser, dist_server, name: str = "_harness.html"):
    """A page that imported ``comfyui.js`` (``HARNESS`` written to ``dist/<name>``) and called
    nothing yet (see ``page_at``)."""
    harness = ROOT / "dist" / name
    harness.write_text(HARNESS)
    try:
        with page_at(browser, f"{dist_server.url}/{name}") as page:
            yield page
    finally:
        harness.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def booted_page(browser, dist_server):
    """One page with ``comfyui.js`` imported, shared by the page tests; each test calls
    ``init()`` with the servers it needs (the first boots Python)."""
    with harness_page(browser, dist_server) as page:
        yield page


# A bare page that imports the module exactly as an existing web client would.
HARNESS = """<!doctype html>
<meta charset="utf-8"><title>comfyui.js test harness</title>
<script type="module">
  import * as comfy from "./web/comfyui.js";
  window.comfy = comfy;
  window.harnessReady = true;
</script>
"""


def pytest_collection_modifyitems(config, items):
    """Browser tests last: Playwright's sync API keeps an event loop running in the main
    thread for the rest of the session, which would break host tests using asyncio.run."""
    items.sort(key=lambda item: "/tests/browser/" in str(item.path).replace("\\", "/"))
