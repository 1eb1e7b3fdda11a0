"""`python3 build.py serve`, the README's first command: it serves the page, starts two dev
servers preconfigured for it, and stops everything on SIGINT."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / "dist" / "pyodide" / "pyodide-lock.json").exists(),
                    reason="dist/ not built (python3 build.py test builds it first)")
def test_serve_starts_page_and_two_dev_servers_and_stops_on_sigint():
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "build.py"), "serve", "--port", "0", "--no-build",
         "--node-delay", "0", "--progress-steps", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        out = "".join(lines)
        page = re.search(r"Demo page:\s+(http://127\.0\.0\.1:\d+)/index\.html", out)
        servers = re.findall(r"Server \d:\s+(http://127\.0\.0\.1:\d+)", out)
        assert page, out
        assert len(servers) == 2 and len(set(servers)) == 2, out

        html = urllib.request.urlopen(page.group(1) + "/index.html", timeout=10).read()
        assert b"web/demo.js" in html
        config = json.loads(urllib.request.urlopen(page.group(1) + "/demo-config.json",
                                                   timeout=10).read())
        assert config["servers"] == servers
        wasm = urllib.request.urlopen(page.group(1) + "/pyodide/pyodide.asm.wasm", timeout=10)
        assert wasm.headers["Content-Type"] == "application/wasm"
        # the dev servers accept the page's origin (they were started for it)
        req = urllib.request.Request(servers[0] + "/system_stats",
                                     headers={"Origin": page.group(1)})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] in (page.group(1), "*")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    for url in servers:
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/system_stats", timeout=2)
