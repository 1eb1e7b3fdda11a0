"""Boot failures name the asset and the fix: a user deploying the Python assets by hand, or
a bundler's server answering in their place, meets these. A file that is missing is "not
found" whether the server says 404 or answers an HTML page (an app server's fallback, which
the browser would report as a MIME-type error); a MIME-type complaint is made only about a
body that really is the asset."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import build
from conftest import HARNESS

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


class AppFallbackHandler(build.StaticHandler):
    """Like Vite's server or most single-page-app hosts: any path that is not a file gets
    the app's HTML page, with a 200."""

    def send_head(self):
        if not Path(self.translate_path(self.path)).is_file():
            self.path = "/_harness.html"
        return super().send_head()


class JsAsTextHandler(build.StaticHandler):
    """A server that does not know .mjs: ES modules go out as text/plain."""

    extensions_map = {**build.StaticHandler.extensions_map, ".mjs": "text/plain"}  # noqa: RUF012


def _broken_dist(tmp_path: Path, breakage: str) -> Path:
    dist = tmp_path / "dist"
    shutil.copytree(ROOT / "dist", dist, copy_function=os.link)
    (dist / "_harness.html").write_text(HARNESS)
    pyo = dist / "pyodide"
    if breakage == "missing-stdlib":
        (pyo / "python_stdlib.zip").unlink()
    elif breakage == "no-pyodide-folder":
        shutil.rmtree(pyo)
    elif breakage == "wrong-hash":
        lock_path = pyo / "pyodide-lock.json"
        lock = json.loads(lock_path.read_text())
        lock_path.unlink()  # a hard link: replace, never write through to dist/
        lock["packages"]["comfyui-client"]["sha256"] = "0" * 64
        lock_path.write_text(json.dumps(lock))
    return dist


def _boot_error(browser, dist: Path, handler=build.StaticHandler) -> tuple[str, dict | None]:
    with build.StaticServer(dist, handler_class=handler) as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{server.url}/_harness.html")
            page.wait_for_function("window.harnessReady === true", timeout=30_000)
            err = page.evaluate(
                """async () => {
                     try { await window.comfy.init({servers: ["http://127.0.0.1:9"]}); }
                     catch (e) { return {code: e.code, message: String(e.message || e)}; }
                     return null; }"""
            )
        finally:
            context.close()
    return server.url, err


@pytest.mark.parametrize(
    ("breakage", "handler", "needles"),
    [
        ("missing-stdlib", build.StaticHandler,
         ["python_stdlib.zip not found at {url}/pyodide/python_stdlib.zip (HTTP 404)",
          "comfyui-pool-client/vite", "assetsURL"]),
        ("no-pyodide-folder", AppFallbackHandler,
         ["pyodide.mjs not found at {url}/pyodide/pyodide.mjs (the server answered an HTML "
          "page)", "plugins: [comfyui()]", "init({assetsURL})"]),
        ("none", JsAsTextHandler,
         ['{url}/pyodide/pyodide.mjs is served as "text/plain", expected javascript',
          ".mjs -> text/javascript"]),
        ("wrong-hash", build.StaticHandler,
         ["{url}/pyodide/comfyui_client-", "does not match the sha256 in pyodide-lock.json"]),
    ],
)
def test_boot_error_names_the_asset_and_the_fix(browser, tmp_path, breakage, handler, needles):
    url, err = _boot_error(browser, _broken_dist(tmp_path, breakage), handler)
    assert err is not None, "init() must reject when the assets are broken"
    assert err["code"] == "boot_failed", err
    for needle in needles:
        assert needle.replace("{url}", url) in err["message"], err["message"]


def test_an_html_page_is_never_blamed_on_mime_types(browser, tmp_path):
    """The issue's first symptom: every asset missing, the app server answering its page."""
    _, err = _boot_error(browser, _broken_dist(tmp_path, "no-pyodide-folder"),
                         AppFallbackHandler)
    assert err is not None and err["code"] == "boot_failed", err
    assert "MIME" not in err["message"] and "served as" not in err["message"], err
