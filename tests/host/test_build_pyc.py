"""Our wheel ships bytecode for Pyodide's CPython (build.py ``compile_pyc``), so the page does
not compile our modules at import. Checked against Pyodide itself, run under Node: its magic
number and cache tag, and its importer accepting every .pyc without compiling the source."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

import build

ROOT = Path(__file__).resolve().parents[2]
WHEEL_DIR = ROOT / "dist" / "pyodide"
PYODIDE = ROOT / "node_modules" / "pyodide"

# Unpacks the wheel into site-packages the way web/comfyui.js does, then asks the importer
# for every module's code object with compiling from source made impossible.
NODE_CHECK = r"""
import fs from "node:fs";
import { pathToFileURL } from "node:url";
process.on("uncaughtException", (err) => {  // a short reason, not the minified source line
  process.stderr.write(`${err && err.message}\n`);
  process.exit(1);
});
const [pyodideDir, wheelPath] = process.argv.slice(1);  // node -e SCRIPT PYODIDE_DIR WHEEL
const { loadPyodide } = await import(pathToFileURL(pyodideDir + "/pyodide.mjs").href);
const py = await loadPyodide({ indexURL: pyodideDir + "/", stdout: () => {}, stderr: () => {} });
const site = py.runPython("import sys; next(p for p in sys.path if p.endswith('site-packages'))");
py.unpackArchive(new Uint8Array(fs.readFileSync(wheelPath)), "wheel", { extractDir: site });
process.stdout.write(py.runPython(String.raw`
import importlib.util, importlib._bootstrap_external as be, json, pkgutil, sys
import comfyui_client

def refuse(*args, **kwargs):
    raise RuntimeError("compiled from source")

names = ["comfyui_client"] + [  # (walk_packages imports subpackages: list them first)
    info.name for info in pkgutil.walk_packages(comfyui_client.__path__, "comfyui_client.")]
be.SourceLoader.source_to_code = refuse
loaded, hashes = {}, {}
for name in names:
    spec = importlib.util.find_spec(name)
    try:
        spec.loader.get_code(name)
        loaded[name] = "pyc"
    except RuntimeError as exc:
        loaded[name] = str(exc)
    with open(spec.origin, "rb") as fh:
        hashes[name] = importlib.util.source_hash(fh.read()).hex()
json.dumps({
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "cache_tag": sys.implementation.cache_tag,
    "loaded": loaded,
    "source_hashes": hashes,
})
`) + "\n");
"""


def _wheel() -> Path:
    wheels = sorted(WHEEL_DIR.glob("comfyui_client-*.whl"))
    if not wheels:
        pytest.skip("dist/ not built (python3 build.py test builds it first)")
    return wheels[0]


@pytest.fixture(scope="module")
def pyodide_view() -> dict:
    node = shutil.which("node")
    if node is None or not (PYODIDE / "pyodide.mjs").exists():
        pytest.skip("node or node_modules/pyodide missing (python3 build.py test installs them)")
    proc = subprocess.run([node, "--input-type=module", "-e", NODE_CHECK, str(PYODIDE),
                           str(_wheel())], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_wheel_has_unchecked_hash_pyc_for_every_module_in_pyodides_format(pyodide_view):
    whl = _wheel()
    magic, tag = bytes.fromhex(pyodide_view["magic"]), pyodide_view["cache_tag"]
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
        record = zf.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
        sources = sorted(n for n in names if n.endswith(".py"))
        assert "comfyui_client/client.py" in sources
        recorded = {line.split(",")[0]: line.split(",")[1] for line in record.splitlines()}
        for src in sources:
            folder, _, stem = src[:-3].rpartition("/")
            pyc = f"{folder}/__pycache__/{stem}.{tag}.pyc"
            assert pyc in names, f"{whl.name} has no {pyc} for {src}"
            data = zf.read(pyc)
            assert data[:4] == magic, f"{pyc}: magic {data[:4].hex()}, Pyodide's is {magic.hex()}"
            # PEP 552 flags word: bit 0 = hash-based, bit 1 = check_source; 0b01 = unchecked
            assert int.from_bytes(data[4:8], "little") == 0b01, f"{pyc} is not unchecked-hash"
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert recorded.get(pyc) == "sha256=" + digest.decode(), f"RECORD entry of {pyc}"
        pycs = sorted(n for n in names if n.endswith(".pyc"))
        assert len(pycs) == len(sources), "a .pyc without its source in the wheel"
    lock = json.loads((WHEEL_DIR / "pyodide-lock.json").read_text())
    assert lock["packages"]["comfyui-client"]["sha256"] == build.sha256_file(whl)


def test_pyodide_imports_every_module_from_the_shipped_pyc_of_the_shipped_source(pyodide_view):
    loaded = pyodide_view["loaded"]
    assert "comfyui_client.client" in loaded
    assert {name: how for name, how in loaded.items() if how != "pyc"} == {}
    # An unchecked pyc is trusted blindly: it must be the bytecode of the source beside it.
    whl = _wheel()
    with zipfile.ZipFile(whl) as zf:
        for name, want in pyodide_view["source_hashes"].items():
            rel = name.replace(".", "/")
            folder, _, stem = rel.rpartition("/")
            pyc = f"{folder}/__pycache__/{stem}.{pyodide_view['cache_tag']}.pyc"
            if pyc not in zf.namelist():  # a package: its __init__
                pyc = f"{rel}/__pycache__/__init__.{pyodide_view['cache_tag']}.pyc"
            assert zf.read(pyc)[8:16].hex() == want, f"{pyc} is stale against its source"


def test_build_falls_back_to_a_source_only_wheel_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.compile_pyc([("comfyui_client/x.py", b"x = 1\n")]) == []
    out = capsys.readouterr().out
    assert "WITHOUT precompiled bytecode" in out and "`node` is not on PATH" in out
