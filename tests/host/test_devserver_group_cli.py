"""ServerGroup and the ``python -m comfyui_devserver`` CLI start and stop cleanly."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from comfyui_devserver import DevServer, ServerGroup

ROOT = Path(__file__).resolve().parents[2]


def _port_open(url: str) -> bool:
    host, port = url.split("//", 1)[1].split(":")
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, int(port))) == 0


def _read_lines(proc: subprocess.Popen[str], n: int, timeout: float = 20.0) -> list[str]:
    """Up to ``n`` stdout lines, never blocking past ``timeout`` (a hung CLI fails, not hangs)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for _ in range(n):
            line = proc.stdout.readline()
            if not line:
                break
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            out.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            break
    return out


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, dict(resp.headers), resp.read()


def test_group_starts_separate_instances_and_cleans_up() -> None:
    with ServerGroup(count=2, cors_origin="http://127.0.0.1:8000", node_delay_s=0.05) as g:
        urls = list(g.urls)
        assert len(set(urls)) == 2 and all(re.fullmatch(r"http://127\.0\.0\.1:\d+", u)
                                           for u in urls)
        status, headers, _ = _get(urls[0] + "/system_stats",
                                  {"Origin": "http://127.0.0.1:8000"})
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8000"
        dirs = [g.servers[i].dirs.input for i in range(2)]
        assert dirs[0] != dirs[1] and all(d.is_dir() for d in dirs)
        assert g.call(lambda: g.servers[1].faults.node_delay_s) == 0.05  # kwargs reach
        assert g.call(lambda x: x * 2, 21) == 42

        async def queue_len() -> int:
            return g.servers[0].queue_remaining()

        assert g.call(queue_len) == 0
        snapshot = g.log(0)
        snapshot.append({"fake": True})
        assert g.log(0)[-1].get("fake") is None  # log() is a copy
        assert snapshot[0]["path"] == "/system_stats" and snapshot[0]["status"] == 200
    assert not any(_port_open(u) for u in urls)
    assert not any(d.exists() for d in dirs)
    with pytest.raises(RuntimeError):
        g.call(lambda: None)


def test_group_start_failure_is_reported() -> None:
    with ServerGroup(count=1) as first:
        port = int(first.urls[0].rsplit(":", 1)[1])
        clash = ServerGroup(count=1, port=port)
        with pytest.raises(RuntimeError, match="failed to start"):
            clash.start()


def test_devserver_restart_requires_start() -> None:
    import asyncio

    with pytest.raises(RuntimeError):
        asyncio.run(DevServer().restart())


def test_cli_prints_urls_serves_and_exits_zero_on_sigint() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "py_src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfyui_devserver", "--instances", "2", "--port", "0",
         "--cors-origin", "*", "--node-delay", "0.01", "--progress-steps", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        lines = _read_lines(proc, 2)
        assert len(lines) == 2, (lines, proc.stderr.read() if proc.poll() is not None else "")
        found = [re.fullmatch(r"comfyui-devserver ([ab]): (http://127\.0\.0\.1:\d+)", x)
                 for x in lines]
        assert all(found) and [m.group(1) for m in found if m] == ["a", "b"]
        urls = [m.group(2) for m in found if m]
        for url in urls:
            status, headers, _ = _get(url + "/api/features")
            assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert not any(_port_open(u) for u in urls)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_cli_stops_on_sigterm_too() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py_src")}
    proc = subprocess.Popen([sys.executable, "-m", "comfyui_devserver"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=ROOT)
    try:
        (line,) = _read_lines(proc, 1) or [""]
        assert line.startswith("comfyui-devserver a: http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
