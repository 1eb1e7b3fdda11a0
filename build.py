#!/usr/bin/env python3
"""Build, serve, test and benchmark the ComfyUI pool client.

    python3 build.py                 assemble dist/ (a self-contained static site)
    python3 build.py serve [--port N] [--servers URL[,URL...]] [--dev-servers N]
                                     build, serve dist/ on 127.0.0.1 and (unless --servers)
                                     start two ComfyUI-compatible dev servers for the demo
    python3 build.py test [PYTEST ARGS...]
                                     set everything up on a fresh machine and run all tests
    python3 build.py pack            build, then write the npm package
                                     dist/comfyui-pool-client-<version>.tgz (its path is the
                                     last line printed)
    python3 build.py bench [--servers URL,...] [--runs N] [--jobs N]
                                     benchmarks in headless Chromium; writes BENCHMARKS.md

Only the standard library is used at the top level, so the first command works with a bare
``python3``. Commands that need host packages (aiohttp for the dev server, Playwright and
pytest for the tests) create ``.venv`` from ``requirements-dev.txt`` and re-run themselves
inside it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zipfile
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "dist"
TEST_DIST = ROOT / "build" / "test-dist"
CACHE = ROOT / ".cache" / "wheels"
VENV = ROOT / ".venv"
PYODIDE_NPM = ROOT / "node_modules" / "pyodide"
# The core files the page needs; the npm package's .map/.d.ts/console pages are left out.
PYODIDE_CORE = (
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
)
MIME = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
CHROMIUM = "/usr/bin/chromium"
# Modules of the package that only make sense on the host (they import aiohttp).
HOST_ONLY = {"_host.py"}
# Compiles the wheel's modules with Pyodide's own CPython (see compile_pyc below).
COMPILE_PYC = ROOT / "tools" / "compile_pyc.mjs"
PYC_CACHE = ROOT / ".cache" / "pyc"
# The npm package: npm/ holds what only the package has (its package.json without a version,
# its README, the Vite plugin, the TypeScript declarations); build/package/ is where `pack`
# assembles it with the module and dist/pyodide/, for `npm pack`.
NPM_SRC = ROOT / "npm"
PACKAGE_DIR = ROOT / "build" / "package"
# The package's share of web/: the module, its boot steps and the boot-cache worker; the demo
# page's files (demo.js, demo.css, i18n.js) stay out.
PACKAGE_WEB = ("comfyui.js", "boot.js", "boot-cache-worker.js")
# The prepared console check, served at the root of dist/ (where the old module's users
# fetched it: `fetch('/test-server-consistency.js').then(r => r.text()).then(eval)`) and
# shipped at the root of the package.
CONSOLE_CHECK = "test-server-consistency.js"


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"[build] error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run(cmd: list[str], **kw) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    try:
        subprocess.run(cmd, check=True, **kw)
    except FileNotFoundError:
        fail(f"{cmd[0]} not found: install it (see README, 'Requirements')")
    except subprocess.CalledProcessError as exc:
        fail(f"command failed with exit code {exc.returncode}: {' '.join(map(str, cmd))}")


@functools.cache
def project_config() -> dict:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {"project": data["project"], "build": data["tool"]["comfyui-build"]}


# --------------------------------------------------------------------------- npm / Pyodide


def npm_pins() -> dict[str, str]:
    """Every package package.json pins (the Pyodide core; Vite and TypeScript for the tests)."""
    manifest = json.loads((ROOT / "package.json").read_text())
    return {**manifest.get("dependencies", {}), **manifest.get("devDependencies", {})}


def npm_missing() -> list[str]:
    """The pinned npm packages absent from node_modules or installed at another version."""
    missing = []
    for name, want in npm_pins().items():
        pkg = ROOT / "node_modules" / name / "package.json"
        if not pkg.exists() or json.loads(pkg.read_text()).get("version") != want:
            missing.append(f"{name}@{want}")
    return missing


def ensure_npm() -> Path:
    """Install the pinned npm packages (``npm ci``) unless they are all there already."""
    missing = npm_missing()
    if not missing:
        return PYODIDE_NPM
    if shutil.which("npm") is None:
        fail("npm is needed to fetch the Pyodide core (apt-get install -y nodejs npm)")
    log(f"npm packages to install: {', '.join(missing)}")
    run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT)
    still = npm_missing()
    if still:
        fail(f"npm ci did not install {', '.join(still)}")
    return PYODIDE_NPM


# --------------------------------------------------------------------------- wheels


def download_wheels(specs: list[str]) -> list[Path]:
    """Fetch pure wheels for the page (Python 3.14 builds) from PyPI into .cache/wheels.

    ``--python-version 3.14`` is needed because micropip declares Requires-Python >= 3.14,
    which the host interpreter would otherwise refuse.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    missing: list[str] = []
    for spec in specs:
        found = find_cached_wheel(spec)
        if found:
            out.append(found)
        else:
            missing.append(spec)
    if missing:
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--python-version", "3.14", "--no-deps", "-d", str(CACHE), *missing]
        )
        for spec in missing:
            found = find_cached_wheel(spec)
            if not found:
                fail(f"pip download did not produce a wheel for {spec}")
            out.append(found)
    return out


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def find_cached_wheel(spec: str) -> Path | None:
    name, _, version = spec.partition("==")
    for whl in CACHE.glob("*.whl"):
        wname, wversion = whl.name.split("-")[:2]
        if normalize(wname) == normalize(name) and wversion == version:
            return whl
    return None


def wheel_metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(meta).decode())


def wheel_imports(whl: Path) -> list[str]:
    """Top-level import names of a wheel (what Pyodide's lockfile calls ``imports``)."""
    names = set()
    with zipfile.ZipFile(whl) as zf:
        for n in zf.namelist():
            top = n.split("/")[0]
            if top.endswith((".dist-info", ".data")):
                continue
            if "/" in n:
                names.add(top)
            elif n.endswith(".py"):
                names.add(n[:-3])
    return sorted(names)


def wheel_requires(whl: Path) -> list[str]:
    """Unconditional requirements of a wheel. Marker-guarded ones (Windows-only, Python <
    3.11, extras) never apply to Pyodide's 3.14 and are dropped."""
    deps = []
    for req in wheel_metadata(whl).get_all("Requires-Dist") or []:
        if ";" in req:
            continue
        name = req.split("[")[0]
        for sep in "<>=!~ (":
            name = name.split(sep)[0]
        deps.append(normalize(name.strip()))
    return deps


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_own_wheel(out_dir: Path) -> Path:
    """Zip ``py_src/comfyui_client`` into a py3-none-any wheel.

    Besides the sources (kept for tracebacks) it carries their bytecode for Pyodide's CPython
    (``__pycache__/*.cpython-314.pyc``, see ``compile_pyc``), so the page does not compile our
    modules at import. Deterministic (fixed timestamps, sorted entries, bytecode compiled with
    a fixed hash seed) so an unchanged source gives an unchanged sha256 and the browser cache
    stays valid between builds.
    """
    proj = project_config()["project"]
    pkg = project_config()["build"]["page-package"]
    name, version = proj["name"].replace("-", "_"), proj["version"]
    whl = out_dir / f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    src = ROOT / "py_src" / pkg
    files: list[tuple[str, bytes]] = []
    for path in sorted(src.rglob("*.py")):
        if "__pycache__" in path.parts or path.name in HOST_ONLY:
            continue
        files.append((path.relative_to(ROOT / "py_src").as_posix(), path.read_bytes()))
    files += compile_pyc(files)
    metadata = (
        f"Metadata-Version: 2.1\nName: {proj['name']}\nVersion: {version}\n"
        f"Summary: {proj['description']}\nRequires-Python: {proj['requires-python']}\n"
    ).encode()
    wheel = (b"Wheel-Version: 1.0\nGenerator: comfyui-client build.py\n"
             b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files += [(f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel)]
    record_lines = []
    for arc, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{arc},sha256={digest},{len(data)}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record_lines) + "\n").encode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in files:
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return whl


class PycError(Exception):
    """Precompiling the wheel's modules failed; the message says why."""


def compile_pyc(sources: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Bytecode of ``sources`` (wheel paths and contents of .py files) for Pyodide's CPython,
    as (``pkg/__pycache__/mod.cpython-314.pyc``, bytes) pairs to add to the wheel.

    Compiled by Pyodide itself under Node (``tools/compile_pyc.mjs``): the host's CPython makes
    bytecode for its own version, which the page would ignore. The files are unchecked-hash
    pycs (PEP 552), used without comparing the source's mtime, which unpacking a wheel does
    not keep. In the page importing our package then skips compiling it (~140 ms of boot).

    Results are cached in .cache/pyc/ by a hash of the sources, the Pyodide version and the
    compile script. When compiling is impossible (no ``node``, a broken Pyodide install) the
    build goes on with a source-only wheel, which works but boots slower, and prints why.
    """
    try:
        return _compile_pyc(sources)
    except (PycError, OSError) as exc:
        log(f"WARNING: our wheel ships WITHOUT precompiled bytecode: {exc}")
        log("WARNING: the page still works, but compiles comfyui_client at import "
            "(~140 ms more boot); fix the cause above and rebuild")
        return []


def _compile_pyc(sources: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    node = shutil.which("node")
    if node is None:
        raise PycError("`node` is not on PATH (apt-get install -y nodejs)")
    pkg_json = PYODIDE_NPM / "package.json"
    if not pkg_json.exists():
        raise PycError(f"{pkg_json} is missing (npm ci)")
    if not COMPILE_PYC.exists():
        raise PycError(f"{COMPILE_PYC} is missing")
    key = hashlib.sha256()
    key.update(json.loads(pkg_json.read_text()).get("version", "").encode() + b"\0")
    key.update(COMPILE_PYC.read_bytes() + b"\0")
    for arc, data in sources:
        key.update(arc.encode() + b"\0" + hashlib.sha256(data).digest())
    cache = PYC_CACHE / key.hexdigest()
    if not (cache / "result.json").exists():
        _run_compile_pyc(node, sources, cache)
    result = json.loads((cache / "result.json").read_text())
    magic = bytes.fromhex(result["magic"])
    tag = result["cache_tag"]
    major, minor = result["version"].split(".")[:2]
    if tag != f"cpython-{major}{minor}":
        raise PycError(f"Pyodide reports cache tag {tag!r} for Python {result['version']}")
    out = []
    for arc, _data in sources:
        pyc_arc = result["pyc"].get(arc)
        if pyc_arc is None:
            raise PycError(f"no bytecode was produced for {arc}")
        stem = arc.rsplit("/", 1)[-1][:-3]
        want = f"{arc.rpartition('/')[0]}/__pycache__/{stem}.{tag}.pyc".lstrip("/")
        if pyc_arc != want:
            raise PycError(f"bytecode of {arc} came out as {pyc_arc}, expected {want}")
        data = (cache / pyc_arc).read_bytes()
        # PEP 552 header: magic, flags (0b01 = hash-based, source not checked), source hash
        if data[:4] != magic or int.from_bytes(data[4:8], "little") != 0b01:
            raise PycError(f"{pyc_arc} does not start with Pyodide's magic {magic.hex()} "
                           "and the unchecked-hash flag")
        out.append((pyc_arc, data))
    log(f"precompiled {len(out)} modules for Pyodide's Python {result['version']} ({tag})")
    return out


def _run_compile_pyc(node: str, sources: list[tuple[str, bytes]], cache: Path) -> None:
    """Run tools/compile_pyc.mjs on ``sources``; leave its .pyc tree and result in ``cache``."""
    PYC_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyc-", dir=PYC_CACHE) as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        for arc, data in sources:
            (src / arc).parent.mkdir(parents=True, exist_ok=True)
            (src / arc).write_bytes(data)
        cmd = [node, str(COMPILE_PYC), str(src), str(out), str(PYODIDE_NPM)]
        log("$ " + " ".join(cmd[:2]) + " ...")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PycError(f"running {COMPILE_PYC.name} failed: {exc}") from exc
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            raise PycError(f"{COMPILE_PYC.name} exited with status {proc.returncode}: {why}")
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except ValueError:
            result = None
        if not isinstance(result, dict) or not {"magic", "cache_tag", "version",
                                                  "pyc"} <= result.keys():
            raise PycError(f"{COMPILE_PYC.name} printed no result: {proc.stdout[-500:]!r}")
        (out / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True))
        if cache.exists():
            shutil.rmtree(cache)
        try:
            out.rename(cache)
        except OSError:  # another build put it there meanwhile
            if not (cache / "result.json").exists():
                raise
    # keep the few newest results (one per recent state of the sources)
    old = sorted((p for p in PYC_CACHE.iterdir() if p.is_dir() and len(p.name) == 64),
                 key=lambda p: p.stat().st_mtime, reverse=True)[8:]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


def write_lockfile(core_lock: Path, wheels: list[Path], dest: Path) -> dict:
    """Write a pyodide-lock.json listing exactly the wheels shipped beside it.

    Entries carry the shipped files' real names and sha256, so Pyodide's integrity check stays
    on (PyPI wheels differ from the hashes in the npm lockfile). Entries for packages we do not
    ship are dropped: a missing package then fails as "unknown package" instead of a 404.
    """
    lock = json.loads(core_lock.read_text())
    shipped = {normalize(wheel_metadata(w)["Name"]): w for w in wheels}
    packages = {}
    for key, whl in shipped.items():
        meta = wheel_metadata(whl)
        deps = wheel_requires(whl)
        unknown = [d for d in deps if d not in shipped]
        if unknown:
            fail(f"{whl.name} needs {unknown}, which the build does not ship: add them to "
                 "[tool.comfyui-build] in pyproject.toml")
        old = lock["packages"].get(key, {})
        packages[key] = {
            **old,
            "name": meta["Name"],
            "version": meta["Version"],
            "file_name": whl.name,
            "install_dir": "site",
            "sha256": sha256_file(whl),
            "package_type": "package",
            "imports": wheel_imports(whl),
            "depends": deps,
            "unvendored_tests": False,
            "shared_library": False,
        }
        packages[key].setdefault("tool", {})
    lock["packages"] = packages
    dest.write_text(json.dumps(lock, indent=1, sort_keys=True))
    return lock


# --------------------------------------------------------------------------- dist


def copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def assemble_pyodide_dir(target: Path, extra_specs: list[str]) -> Path:
    """Pyodide core + our wheel + page wheels + a matching lockfile, in one folder."""
    npm = ensure_npm()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in PYODIDE_CORE:
        shutil.copy2(npm / name, target / name)
    cfg = project_config()["build"]
    wheels = [build_own_wheel(target)]
    for whl in download_wheels(cfg["page-wheels"] + extra_specs):
        shutil.copy2(whl, target / whl.name)
        wheels.append(target / whl.name)
    write_lockfile(npm / "pyodide-lock.json", wheels, target / "pyodide-lock.json")
    return target


def build(dist: Path = DIST) -> Path:
    """Assemble dist/: index.html, test-server-consistency.js, web/ (ES modules, demo),
    pyodide/ (core, wheels, lock)."""
    started = time.monotonic()
    if dist.exists():
        shutil.rmtree(dist)
    dist.mkdir(parents=True)
    shutil.copy2(ROOT / "index.html", dist / "index.html")
    shutil.copy2(ROOT / CONSOLE_CHECK, dist / CONSOLE_CHECK)
    copy_tree(ROOT / "web", dist / "web")
    assemble_pyodide_dir(dist / "pyodide", [])
    log(f"dist/ ready in {time.monotonic() - started:.1f}s: {dist}")
    return dist


def package_version() -> str:
    """The version of the npm package: pyproject.toml's, which package.json must repeat."""
    version = project_config()["project"]["version"]
    manifest = json.loads((ROOT / "package.json").read_text())
    if manifest.get("version") != version:
        fail(f"package.json has version {manifest.get('version')!r} but pyproject.toml has "
             f"{version!r}: make them equal")
    return version


def tarball_path(dist: Path = DIST) -> Path:
    return dist / f"comfyui-pool-client-{package_version()}.tgz"


def assemble_package(dist: Path = DIST, target: Path = PACKAGE_DIR) -> Path:
    """Lay out the npm package in ``target`` from the sources and a built ``dist``: the
    module (web/), the Python assets exactly as dist/pyodide/ has them, the Vite plugin,
    the declarations, the package README and the license."""
    if not (dist / "pyodide" / "pyodide-lock.json").exists():
        fail(f"{dist} is not built: run `python3 build.py` first")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    manifest = json.loads((NPM_SRC / "package.json").read_text())
    manifest = {"name": manifest.pop("name"), "version": package_version(), **manifest}
    (target / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.copy2(NPM_SRC / "README.md", target / "README.md")
    shutil.copy2(ROOT / "LICENSE", target / "LICENSE")
    shutil.copy2(ROOT / CONSOLE_CHECK, target / CONSOLE_CHECK)
    for sub in ("vite", "types"):
        copy_tree(NPM_SRC / sub, target / sub)
    for name in PACKAGE_WEB:
        (target / "web").mkdir(exist_ok=True)
        shutil.copy2(ROOT / "web" / name, target / "web" / name)
    copy_tree(dist / "pyodide", target / "pyodide")
    absent = [f for f in manifest["files"] if not (target / f).exists()]
    if absent:
        fail(f"npm/package.json lists files the package does not have: {absent}")
    return target


def pack(dist: Path = DIST) -> Path:
    """``npm pack`` the package assembled from ``dist`` into dist/; returns the tarball."""
    package = assemble_package(dist)
    tarball = tarball_path(dist)
    tarball.unlink(missing_ok=True)
    cmd = ["npm", "pack", "--json", "--pack-destination", str(dist), str(package)]
    log("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        fail(f"npm pack failed: {getattr(exc, 'stderr', '') or exc}")
    [info] = json.loads(proc.stdout)
    if not tarball.exists() or (dist / info["filename"]) != tarball:
        fail(f"npm pack wrote {info['filename']}, expected {tarball.name}")
    log(f"{tarball.name}: {len(info['files'])} files, {info['size'] / 1e6:.1f} MB packed, "
        f"{info['unpackedSize'] / 1e6:.1f} MB unpacked")
    return tarball


def build_test_dist() -> Path:
    """The folder pytest-pyodide serves: our pyodide/ plus the wheels it loads into the page
    (pytest, tblib and their dependencies), with lock entries for them."""
    return assemble_pyodide_dir(TEST_DIST, project_config()["build"]["test-page-wheels"])


# --------------------------------------------------------------------------- static server


class StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves dist/ with the MIME types Pyodide needs (application/wasm for streaming
    compilation, text/javascript for ES modules) and no caching surprises."""

    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map, **MIME
    }

    def log_message(self, format: str, *args) -> None:
        if os.environ.get("COMFYUI_BUILD_VERBOSE"):
            super().log_message(format, *args)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A browser that closes a tab mid-download resets the connection: that is normal, not
    a server error worth a traceback on the console."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class StaticServer:
    """A threaded static file server on 127.0.0.1 (port 0 picks a free port); tests pass a
    subclass of StaticHandler to serve the way some other host does."""

    def __init__(self, root: Path, port: int = 0, host: str = "127.0.0.1",
                 handler_class: type[StaticHandler] = StaticHandler) -> None:
        handler = functools.partial(handler_class, directory=str(root))
        self.httpd = _QuietHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- host venv


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv_and_reexec() -> None:
    """Create .venv with the pinned host deps (once; re-done when requirements change) and
    re-run this command inside it."""
    if in_venv():
        return
    req = ROOT / "requirements-dev.txt"
    stamp = VENV / ".requirements.sha256"
    want = hashlib.sha256(req.read_bytes()).hexdigest()
    py = VENV / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    if not stamp.exists() or stamp.read_text() != want:
        run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(req)])
        stamp.write_text(want)
    os.execv(str(py), [str(py), str(ROOT / "build.py"), *sys.argv[1:]])


def ensure_chromium() -> str:
    """Debian's Chromium drives the browser tests (``playwright install`` needs internet)."""
    path = os.environ.get("CHROMIUM_PATH", CHROMIUM)
    if Path(path).exists():
        return path
    cmd = "apt-get update && apt-get install -y chromium"
    if os.geteuid() != 0:
        fail(f"Chromium not found at {path}. Install it with: sudo sh -c '{cmd}'")
    log("Chromium missing: installing Debian's chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "chromium"], env=env)
    if not Path(path).exists():
        fail(f"apt-get installed chromium but {path} does not exist")
    return path


# --------------------------------------------------------------------------- commands


def cmd_build(_args: argparse.Namespace) -> None:
    build()


def cmd_pack(_args: argparse.Namespace) -> None:
    ensure_npm()
    build()
    print(pack(), flush=True)  # the last line: scripts read the tarball's path from it


def parse_servers(value: str) -> list[str]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise argparse.ArgumentTypeError("--servers needs at least one URL")
    return urls


def host_deps_present() -> bool:
    """True when this interpreter can already run the dev server (aiohttp, Pillow)."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("aiohttp", "PIL"))


def cmd_serve(args: argparse.Namespace) -> None:
    if args.servers is None and not host_deps_present():
        ensure_venv_and_reexec()
    if args.no_build:
        if not (DIST / "pyodide" / "pyodide-lock.json").exists():
            fail("--no-build given but dist/ is not built: run `python3 build.py` first")
    else:
        build()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        static = stack.enter_context(StaticServer(DIST, port=args.port))
        page_origin = static.url
        if args.servers:
            servers = args.servers
            log("using your servers: they must be started with "
                f"--enable-cors-header {page_origin} (or '*')")
        else:
            sys.path.insert(0, str(ROOT / "py_src"))
            from comfyui_devserver import ServerGroup

            group = stack.enter_context(
                ServerGroup(count=args.dev_servers, cors_origin=page_origin,
                            node_delay_s=args.node_delay, progress_steps=args.progress_steps)
            )
            servers = group.urls
        (DIST / "demo-config.json").write_text(json.dumps({"servers": servers}, indent=1))
        print(f"\n  Demo page:  {static.url}/index.html", flush=True)
        for i, url in enumerate(servers):
            kind = "your server" if args.servers else "dev server (ComfyUI-compatible)"
            print(f"  Server {i + 1}:   {url}   [{kind}]", flush=True)
        print("\n  Ctrl-C stops everything.\n", flush=True)
        while not stop.wait(0.5):
            pass
        log("stopping")
    log("stopped")


def cmd_test(args: argparse.Namespace) -> None:
    ensure_npm()
    chromium = ensure_chromium()
    ensure_venv_and_reexec()
    run([sys.executable, "-m", "ruff", "check", "build.py", "py_src", "tests"], cwd=ROOT)
    build()
    build_test_dist()
    env = {**os.environ, "CHROMIUM_PATH": chromium, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "--runner", "playwright", "--rt", "chrome",
           "--dist-dir", str(TEST_DIST.relative_to(ROOT)), *args.pytest_args]
    log("$ " + " ".join(cmd))
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code == 5:
        fail("pytest collected no tests: that is a failure, not a pass")
    raise SystemExit(code)


def _run_browser_tool(module: str, argv: list[str]) -> None:
    """Set up what a headless-Chromium tool needs (npm, Chromium, .venv, dist/), then run
    ``module.main(argv)`` and exit with its code."""
    ensure_npm()
    chromium = ensure_chromium()
    ensure_venv_and_reexec()
    build()
    os.environ.setdefault("CHROMIUM_PATH", chromium)
    sys.path[:0] = [str(ROOT), str(ROOT / "py_src"), str(ROOT / "tests")]
    import importlib

    raise SystemExit(importlib.import_module(module).main(argv))


def cmd_bench(args: argparse.Namespace) -> None:
    """Benchmarks (not tests): headless Chromium, dev servers or --servers; writes
    BENCHMARKS.md. Everything after 'bench' goes to bench/run.py."""
    _run_browser_tool("bench.run", args.bench_args)


def cmd_matrix(args: argparse.Namespace) -> None:
    """The fault-injection matrix (tests/matrix_runner.py) in headless Chromium against two
    dev servers; rewrites README.md's reliability table. Arguments after 'matrix' go to the
    runner (--jobs N, --no-readme)."""
    _run_browser_tool("matrix_runner", args.matrix_args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build", help="assemble dist/ (the default)")
    serve = sub.add_parser("serve", help="build, then serve the demo with two dev servers")
    serve.add_argument("--port", type=int, default=8000, help="page port (default 8000)")
    serve.add_argument("--servers", type=parse_servers, default=None,
                       help="comma-separated ComfyUI base URLs; no dev servers are started")
    serve.add_argument("--no-build", action="store_true",
                       help="serve the existing dist/ as it is")
    serve.add_argument("--dev-servers", type=int, default=2,
                       help="how many dev server instances to start (default 2)")
    serve.add_argument("--node-delay", type=float, default=0.15,
                       help="dev servers: seconds each node takes, so progress is visible "
                            "(default 0.15; 0 = as fast as possible)")
    serve.add_argument("--progress-steps", type=int, default=8,
                       help="dev servers: progress steps + preview frames per image node "
                            "(default 8; 0 = none, like a bare ComfyUI)")
    sub.add_parser("pack", help="build, then write the npm package "
                                "dist/comfyui-pool-client-<version>.tgz (path printed last)")
    test = sub.add_parser("test", help="install what is missing and run every test")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest")
    bench = sub.add_parser("bench", help="run the benchmarks, write BENCHMARKS.md")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER,
                       help="passed to bench/run.py (--servers URL,URL --runs N --jobs N)")
    matrix = sub.add_parser("matrix", help="run the fault-injection matrix, update README.md")
    matrix.add_argument("matrix_args", nargs=argparse.REMAINDER,
                        help="passed to tests/matrix_runner.py (--jobs N, --no-readme)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:
        # everything after "test" goes to pytest verbatim (argparse would eat "-q", "-k"...)
        args = argparse.Namespace(command="test", pytest_args=argv[1:])
    elif argv[:1] == ["bench"]:
        args = argparse.Namespace(command="bench", bench_args=argv[1:])
    elif argv[:1] == ["matrix"]:
        args = argparse.Namespace(command="matrix", matrix_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    commands = {"build": cmd_build, None: cmd_build, "pack": cmd_pack, "serve": cmd_serve,
                "test": cmd_test, "bench": cmd_bench, "matrix": cmd_matrix}
    commands[args.command](args)


if __name__ == "__main__":
    main()
