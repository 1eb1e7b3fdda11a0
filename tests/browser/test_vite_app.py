"""The npm package in a Vite app, the way a web developer uses it: ``npm install`` of the
packed tarball, ``plugins: [comfyui()]`` in vite.config.js, ``import * as comfy from
"comfyui-pool-client"`` (tests/vite-app/). No file is copied by hand.

Each case serves the app one way (built + ``vite preview`` under base "/" and "/app/", a
relative-base build on a plain static server under a path it was not built for, the dev
server under "/" and "/app/"), opens it in headless Chromium and checks what a user relies
on: the app's own invert job against a dev server returns the right pixels, every Python
asset arrives byte for byte with the right MIME type from where the plugin put it, the
module is not pre-bundled away from its assets, the wheels keep their sha256 checks, and
in a built app a reload restores the boot cache the first visit saved.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client_page import _pixel

import build
from viteapp import App, ViteProcess, vite_build

pytestmark = pytest.mark.browser

MIME = {".wasm": "application/wasm", ".mjs": "text/javascript", ".json": "application/json",
        ".zip": "application/zip", ".whl": "application/zip"}


class Served:
    """One way of serving the app: its page URL and where its Python assets are."""

    def __init__(self, name: str, page_url: str, assets_url: str, built: bool,
                 stop=None) -> None:
        self.name = name
        self.page_url = page_url
        self.assets_url = assets_url
        self.built = built
        self.stop = stop or (lambda: None)


@pytest.fixture(scope="module")
def served(vite_app: App) -> Iterator[dict[str, Served]]:
    """Every way of serving the app, started once for the module and stopped at its end."""
    out: dict[str, Served] = {}
    try:
        for name, base in (("preview /", "/"), ("preview /app/", "/app/")):
            vite_build(vite_app, base, f"dist-{len(out)}")
            proc = ViteProcess(vite_app, "preview", base, f"dist-{len(out)}")
            out[name] = Served(name, proc.url, f"{proc.url}comfyui-pool-client/", True,
                               proc.stop)
        # base "./": the built app works from wherever it is copied, here one folder down on
        # a plain static server that knows nothing of Vite
        vite_build(vite_app, "./", "dist-relative")
        static = build.StaticServer(vite_app.dir).__enter__()
        url = f"{static.url}/dist-relative/"
        out["static ./"] = Served("static ./", url, f"{url}comfyui-pool-client/", True,
                                  lambda: static.__exit__(None, None, None))
        for name, base in (("dev /", "/"), ("dev /app/", "/app/")):
            proc = ViteProcess(vite_app, "dev", base)
            out[name] = Served(name, proc.url, f"{proc.url}comfyui-pool-client/", False,
                               proc.stop)
        yield out
    finally:
        for s in out.values():
            s.stop()


def _open(browser, served: Served, server: str, rgb: tuple[int, int, int]):
    """A fresh browser profile with the app loaded; returns (context, page, responses)."""
    context = browser.new_context()
    page = context.new_page()
    responses: list = []
    page.on("response", lambda r: responses.append(r))
    page.console_logs = []  # type: ignore[attr-defined]
    page.on("console", lambda msg: page.console_logs.append(f"{msg.type}: {msg.text}"))
    page.goto(f"{served.page_url}?server={server}&rgb={','.join(map(str, rgb))}")
    return context, page, responses


def _result(page) -> dict:
    page.wait_for_function("window.appResult !== undefined", timeout=30_000)
    return page.evaluate("window.appResult")


CASES = ["preview /", "preview /app/", "static ./", "dev /", "dev /app/"]


def _check_assets(served: Served, package: Path, responses: list) -> None:
    """Pyodide's files came from where the plugin put them, byte for byte, with the right
    MIME types (a transformed pyodide.mjs or an HTML fallback would differ), and the module
    was not pre-bundled away from them."""
    loaded = {r.url.rsplit("/", 1)[-1]: r for r in responses
              if r.url.startswith(served.assets_url)}
    assert {"pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
            "pyodide-lock.json"} <= loaded.keys(), sorted(r.url for r in responses)
    for name, resp in loaded.items():
        assert resp.status == 200, (name, resp.status)
        ctype = resp.headers.get("content-type", "").split(";")[0]
        assert ctype == MIME[Path(name).suffix], (name, ctype)
    for path in sorted((package / "pyodide").iterdir()):
        with urllib.request.urlopen(served.assets_url + path.name, timeout=30) as resp:
            body, ctype = resp.read(), resp.headers.get("content-type", "")
        assert body == path.read_bytes(), path.name
        assert ctype.split(";")[0] == MIME[path.suffix], (path.name, ctype)

    urls = [r.url.split("?")[0] for r in responses]
    assert not [u for u in urls if "/.vite/deps/" in u], urls
    if not served.built:
        assert any(u.endswith("/node_modules/comfyui-pool-client/web/comfyui.js")
                   for u in urls), urls


@pytest.mark.parametrize("case", CASES)
def test_the_app_runs_jobs_and_a_reload_restores_the_boot_cache(
        case, served, vite_app, browser, devservers):
    s = served[case]
    context, page, responses = _open(browser, s, devservers.urls[0], (10, 200, 30))
    try:
        first = _result(page)
        assert first["ok"], first
        assert first["server"] == devservers.urls[0]
        assert _pixel(first["png"]) == (245, 55, 225)
        _check_assets(s, vite_app.package, responses)
        # the wheels keep their sha256 checks: the lockfile names the bytes shipped (and
        # a tampered wheel is refused, see below)
        lock = json.loads((vite_app.package / "pyodide" / "pyodide-lock.json").read_text())
        for entry in lock["packages"].values():
            data = (vite_app.package / "pyodide" / entry["file_name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file_name"]

        # the boot-cache worker, bundled by Vite, saved a snapshot; a reload restores it
        assert first["bootCache"] == "saving"
        assert page.evaluate("window.comfy.bootCacheSaved") is True, page.console_logs
        page.goto(f"{s.page_url}?server={devservers.urls[1]}&rgb=0,0,255")
        again = _result(page)
        assert again["ok"], again
        assert again["bootCache"] == "restored"
        assert again["server"] == devservers.urls[1]
        assert _pixel(again["png"]) == (255, 255, 0)
    finally:
        context.close()


def _with_extra_module(wheel: bytes) -> bytes:
    """The same wheel plus one module: still a valid wheel, but not the bytes locked."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(wheel)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("comfyui_client/_injected.py", "print('not shipped')\n")
    return out.getvalue()


def test_a_tampered_wheel_is_refused(served, browser, devservers):
    """The lockfile's sha256 stays a check in the built app: a wheel that unpacks fine but
    is not the one locked is never run, and the error names it."""
    s = served["preview /app/"]
    context = browser.new_context()
    try:
        def tamper(route):
            route.fulfill(status=200, headers={"content-type": "application/zip"},
                          body=_with_extra_module(route.fetch().body()))

        context.route("**/comfyui-pool-client/comfyui_client-*.whl", tamper)
        page = context.new_page()
        page.goto(f"{s.page_url}?server={devservers.urls[0]}")
        res = _result(page)
        assert res["ok"] is False and res["code"] == "boot_failed", res
        assert "comfyui_client-" in res["message"] and "sha256" in res["message"], res
    finally:
        context.close()
