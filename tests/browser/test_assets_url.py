"""init({assetsURL}): the Python assets served from a folder of the host's choosing, as a
webpack, esbuild or Rollup app, or a plain static site, does it (README, "Any other host").
Here the page and the module live under /app/ and the assets under /static/python/, where
nothing relative to the module would find them: the page boots, runs jobs, and the
boot-cache worker (which used to derive the folder from its own URL) saves a snapshot that a
reload restores."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_client_page import INVERT, RUN_JOBS, _pixel

import build
from conftest import HARNESS, ROOT, page_at

pytestmark = pytest.mark.browser


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(ROOT / "dist" / "web", site / "app" / "web")
    shutil.copytree(ROOT / "dist" / "pyodide", site / "static" / "python",
                    copy_function=os.link)
    (site / "app" / "index.html").write_text(HARNESS)
    return site


def test_assets_url_names_where_the_python_assets_are(browser, site, devservers):
    with build.StaticServer(site) as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            fetched: list[str] = []
            page.on("request", lambda r: fetched.append(r.url))
            page.goto(f"{server.url}/app/index.html")
            page.wait_for_function("window.harnessReady === true", timeout=30_000)

            for bad, why in ((42, "must be a non-empty string or a URL"),
                             ("", "must be a non-empty string or a URL"),
                             ("http://[::1", "is not a URL")):
                err = page.evaluate("""(o) => window.comfy.init(o).then(
                    () => null, (e) => ({code: e.code, message: e.message}))""",
                                    {"servers": devservers.urls[:1], "assetsURL": bad})
                assert err["code"] == "config_error" and why in err["message"], err

            # relative to the page, without the trailing slash: both are fixed up
            page.evaluate("(o) => window.comfy.init(o)",
                          {"servers": devservers.urls[:1], "assetsURL": "../static/python"})
            assert page.evaluate("window.comfy.bootTimings.bootCache") == "saving"
            [res] = page.evaluate(RUN_JOBS, [INVERT, [[10, 200, 30]], "photo.png"])
            assert res["ok"], res
            assert _pixel(res["png"]) == (245, 55, 225)
            python = [u for u in fetched if u.endswith((".mjs", ".wasm", ".zip", ".whl",
                                                        "pyodide-lock.json"))]
            assert python and all(u.startswith(f"{server.url}/static/python/")
                                  for u in python), python
            assert page.evaluate("window.comfy.bootCacheSaved") is True

            page.reload()
            page.wait_for_function("window.harnessReady === true", timeout=30_000)
            page.evaluate("""(servers) => window.comfy.init({
                servers, assetsURL: new URL("/static/python/", location.href)})""",
                          devservers.urls[:1])
            assert page.evaluate("window.comfy.bootTimings.bootCache") == "restored"
            [res] = page.evaluate(RUN_JOBS, [INVERT, [[0, 0, 255]], "photo.png"])
            assert res["ok"], res
            assert _pixel(res["png"]) == (255, 255, 0)
        finally:
            context.close()


def test_without_the_worker_beside_the_module_boots_still_work(browser, site, devservers):
    """What a bundler that leaves workers out (esbuild, plain Rollup) amounts to: no
    boot-cache-worker.js beside the module. The boot cache is not saved, one console line
    says so, and the page boots and runs jobs as before."""
    (site / "app" / "web" / "boot-cache-worker.js").unlink()
    with (build.StaticServer(site) as server,
          page_at(browser, f"{server.url}/app/index.html") as page):
        page.evaluate("(o) => window.comfy.init(o)",
                      {"servers": devservers.urls[:1], "assetsURL": "/static/python/"})
        assert page.evaluate("window.comfy.bootCacheSaved") is False
        assert page.evaluate("window.comfy.bootTimings.bootCache") == "failed"
        logs = page.console_logs
        notes = [line for line in logs if "boot cache not saved" in line]
        assert len(notes) == 1 and notes[0].startswith("info: "), logs
        [res] = page.evaluate(RUN_JOBS, [INVERT, [[10, 200, 30]], "photo.png"])
        assert res["ok"], res
        assert _pixel(res["png"]) == (245, 55, 225)
