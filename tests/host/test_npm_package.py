"""The npm package (``python3 build.py pack``) as a web developer receives it: what the
tarball holds, and TypeScript declarations that type-check a consumer and cover every
export. The package is installed in a copy of tests/vite-app/ (the ``vite_app`` fixture),
so these checks see what ``npm install`` gives a user, resolved through its ``exports``."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

import build
from viteapp import TSC, App, run

ROOT = Path(__file__).resolve().parents[2]


def test_the_tarball_holds_the_module_the_python_assets_the_plugin_and_types(vite_app: App):
    with tarfile.open(vite_app.tarball) as tar:
        files = {m.name.removeprefix("package/"): tar.extractfile(m).read()
                 for m in tar.getmembers() if m.isfile()}
    pyodide = {p.name: p.read_bytes() for p in (ROOT / "dist" / "pyodide").iterdir()}
    assert set(files) == {
        "package.json", "README.md", "LICENSE", "test-server-consistency.js",
        "web/comfyui.js", "web/boot.js", "web/boot-cache-worker.js",
        "vite/index.js", "types/index.d.ts", "types/vite.d.ts",
        *(f"pyodide/{name}" for name in pyodide),
    }
    # the Python assets exactly as dist/ has them: the lockfile's sha256 name these bytes
    assert {n: files[f"pyodide/{n}"] for n in pyodide} == pyodide
    assert files["web/comfyui.js"] == (ROOT / "web" / "comfyui.js").read_bytes()
    # the prepared console check, at the package's root as at dist/'s
    assert files["test-server-consistency.js"] == \
        (ROOT / "test-server-consistency.js").read_bytes()
    assert b"MIT License" in files["LICENSE"]

    manifest = json.loads(files["package.json"])
    assert manifest["name"] == "comfyui-pool-client"
    assert manifest["version"] == build.project_config()["project"]["version"]
    assert manifest["type"] == "module" and manifest["license"] == "MIT"
    assert manifest["exports"]["."] == {"types": "./types/index.d.ts",
                                        "default": "./web/comfyui.js"}
    assert manifest["exports"]["./vite"] == {"types": "./types/vite.d.ts",
                                             "default": "./vite/index.js"}
    assert manifest["types"] == "./types/index.d.ts"
    assert not manifest.get("dependencies"), "the Pyodide core ships inside, nothing to fetch"
    assert vite_app.tarball.name == f"comfyui-pool-client-{manifest['version']}.tgz"


def test_pack_prints_the_tarball_path_as_its_last_line(monkeypatch, capsys, tmp_path):
    tarball = tmp_path / "comfyui-pool-client-0.1.0.tgz"
    monkeypatch.setattr(build, "ensure_npm", lambda: None)
    monkeypatch.setattr(build, "build", lambda: None)
    monkeypatch.setattr(build, "pack", lambda: tarball)
    build.main(["pack"])
    assert capsys.readouterr().out.splitlines()[-1] == str(tarball)


def test_the_declarations_type_check_a_consumer(vite_app: App):
    """tests/vite-app/consumer.ts uses every export, option and error code of the module,
    vite.config.check.ts the plugin; both refuse the misuses they mark."""
    for config in ("tsconfig.json", "tsconfig.vite.json"):
        run(["node", str(TSC), "--noEmit", "-p", config], vite_app.dir, 120)


def test_every_export_of_the_installed_package_is_declared(vite_app: App):
    """The runtime's own list of exports, each read through the declarations: a function
    added to comfyui.js without a declaration fails here."""
    script = ("const m = await import('comfyui-pool-client'); const v = await import("
              "'comfyui-pool-client/vite'); console.log(JSON.stringify([Object.keys(m), "
              "Object.keys(v)]))")
    names, vite_names = json.loads(run(["node", "--input-type=module", "-e", script],
                                       vite_app.dir, 60))
    assert {"init", "processImage", "ComfyUIError", "bootCacheSaved"} <= set(names)
    assert vite_names == ["default"]
    check = io.StringIO()
    check.write('import * as comfy from "comfyui-pool-client";\n'
                'import comfyui from "comfyui-pool-client/vite";\n'
                "export const all = [comfyui, ")
    check.write(", ".join(f"comfy.{name}" for name in names) + "];\n")
    (vite_app.dir / "exports.check.ts").write_text(check.getvalue())
    (vite_app.dir / "tsconfig.exports.json").write_text(json.dumps({
        "extends": "./tsconfig.json",
        "compilerOptions": {"skipLibCheck": True},  # vite's own .d.ts need @types/node
        "files": ["exports.check.ts"],
    }))
    run(["node", str(TSC), "--noEmit", "-p", "tsconfig.exports.json"], vite_app.dir, 120)


@pytest.mark.parametrize("bad", ["/abs", "trailing/", "../up", "", "a b"])
def test_the_plugin_refuses_an_assets_path_it_could_not_serve(vite_app: App, bad: str):
    script = ("import comfyui from 'comfyui-pool-client/vite'; "
              "try { comfyui({assetsPath: process.argv[1]}); console.log('accepted'); } "
              "catch (e) { console.log(e.message); }")
    out = subprocess.run(["node", "--input-type=module", "-e", script, bad],
                         cwd=vite_app.dir, capture_output=True, text=True, timeout=60).stdout
    assert "assetsPath must be a relative folder path" in out, out
