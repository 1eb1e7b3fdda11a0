"""The npm package installed in a Vite app, as a web developer would use it (shared by
tests/host/test_package_types.py and tests/browser/test_vite_app.py).

``install_app`` packs the package once (``build.pack`` from the dist/ that ``build.py test``
built), copies tests/vite-app/ to a scratch folder under build/ (inside the repo, so
``import "vite"`` in its config resolves to the repo's pinned Vite) and runs ``npm install``
there: the tarball has no dependencies, so that needs no registry. ``ViteProcess`` runs
``vite``, ``vite build`` and ``vite preview`` of that app on loopback ports, bounded in time
and always stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_SRC = ROOT / "tests" / "vite-app"
VITE = ROOT / "node_modules" / "vite" / "bin" / "vite.js"
TSC = ROOT / "node_modules" / "typescript" / "bin" / "tsc"
PACKAGE = "comfyui-pool-client"


@dataclass
class App:
    """The scratch app: its folder and the installed package inside it."""

    dir: Path
    tarball: Path

    @property
    def package(self) -> Path:
        return self.dir / "node_modules" / PACKAGE


def run(cmd: list[str], cwd: Path, timeout_s: float, env: dict | None = None) -> str:
    """Run a command to its end; its output goes into the assertion when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def install_app(tarball: Path) -> App:
    """A copy of tests/vite-app/ under build/ with the tarball npm-installed in it."""
    (ROOT / "build").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="vite-app-", dir=ROOT / "build"))
    shutil.copytree(APP_SRC, folder, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("node_modules", "dist*"))
    manifest = json.loads((folder / "package.json").read_text())
    manifest["dependencies"][PACKAGE] = f"file:{tarball}"
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    run(["npm", "install", "--no-audit", "--no-fund", "--no-update-notifier"], folder, 300)
    return App(folder, tarball)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ViteProcess:
    """``vite`` (dev) or ``vite preview`` of the app on 127.0.0.1, until ``stop()``.

    ``base`` is the app's base (the config reads APP_BASE), ``out_dir`` the build folder
    preview serves (APP_OUT_DIR)."""

    def __init__(self, app: App, command: str, base: str, out_dir: str = "dist") -> None:
        self.port = free_port()
        self.base = base
        self.url = f"http://127.0.0.1:{self.port}{base}"
        args = [] if command == "dev" else [command]
        # --bypass-lock: Vite 8 refuses a second preview (or dev) process of one project,
        # and the tests run several of this app at once, one per base
        cmd = ["node", str(VITE), *args, "--host", "127.0.0.1", "--port", str(self.port),
               "--strictPort", "--bypass-lock"]
        # closed by stop(): the process writes to it for the fixture's whole life
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=app.dir, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "APP_BASE": base, "APP_OUT_DIR": out_dir, "NO_COLOR": "1"},
            start_new_session=True)
        try:
            self._wait_up(60)
        except BaseException:
            self.stop()
            raise

    def _wait_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vite exited with {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"vite did not answer {self.url} within {timeout_s}s: "
                             f"{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: vite and any child
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def vite_build(app: App, base: str, out_dir: str) -> Path:
    run(["node", str(VITE), "build", "--logLevel", "warn"], app.dir, 180,
        env={"APP_BASE": base, "APP_OUT_DIR": out_dir, "NO_COLOR": "1"})
    return app.dir / out_dir
