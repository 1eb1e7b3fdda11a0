"""Boot failures name the asset and the fix: a user deploying dist/ by hand meets these."""

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


def _broken_dist(tmp_path: Path, breakage: str) -> Path:
    dist = tmp_path / "dist"
    shutil.copytree(ROOT / "dist", dist, copy_function=os.link)
    (dist / "_harness.html").write_text(HARNESS)
    pyo = dist / "pyodide"
    if breakage == "missing-stdlib":
        (pyo / "python_stdlib.zip").unlink()
    elif breakage == "wrong-hash":
        lock_path = pyo / "pyodide-lock.json"
        lock = json.loads(lock_path.read_text())
        lock_path.unlink()  # a hard link: replace, never write through to dist/
        lock["packages"]["comfyui-client"]["sha256"] = "0" * 64
        lock_path.write_text(json.dumps(lock))
    return dist


@pytest.mark.parametrize(
    ("breakage", "needles"),
    [
        ("missing-stdlib", ["python_stdlib.zip", "404", "build.py"]),
        ("wrong-hash", ["comfyui_client-", "sha256", "build.py"]),
    ],
)
def test_boot_error_names_the_asset_and_the_fix(browser, tmp_path, breakage, needles):
    dist = _broken_dist(tmp_path, breakage)
    with build.StaticServer(dist) as server:
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
    assert err is not None, "init() must reject when the dist is broken"
    assert err["code"] == "boot_failed", err
    for needle in needles:
        assert needle in err["message"], err["message"]
