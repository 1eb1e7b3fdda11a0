// Compile Python sources to bytecode with Pyodide's own CPython, for shipping in our wheel.
//
//   node tools/compile_pyc.mjs SRC_DIR OUT_DIR [PYODIDE_DIR]
//
// Every *.py under SRC_DIR (paths relative to it, e.g. comfyui_client/client.py) is written
// into Pyodide's in-memory file system at the site-packages path the page unpacks the wheel to,
// and compiled there with py_compile, invalidation_mode=UNCHECKED_HASH (PEP 552: the importer
// uses the .pyc without comparing the source's mtime, which unpacking a wheel does not keep).
// The .pyc files are written to OUT_DIR under the same relative paths
// (comfyui_client/__pycache__/client.cpython-314.pyc). The host's CPython cannot do this: its
// bytecode is for another version.
//
// On success the last line on stdout is one JSON object:
//   {"cache_tag": "cpython-314", "magic": "<hex of importlib.util.MAGIC_NUMBER>",
//    "version": "<sys.version>", "pyc": {"<src rel path>": "<pyc rel path>", ...}}
// On any failure it prints why on stderr and exits with status 1.
//
// PYTHONHASHSEED=0 keeps the output byte-identical between runs (constant frozensets are
// marshalled in hash order), so an unchanged source still gives an unchanged wheel sha256.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));

function die(msg) {
  process.stderr.write(`compile_pyc: ${msg}\n`);
  process.exit(1);
}

function listPy(root, rel = "") {
  const out = [];
  for (const ent of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${ent.name}` : ent.name;
    if (ent.isDirectory()) {
      if (ent.name !== "__pycache__") out.push(...listPy(root, r));
    } else if (ent.name.endsWith(".py")) {
      out.push(r);
    }
  }
  return out.sort();
}

const [srcDir, outDir, pyodideArg] = process.argv.slice(2);
if (!srcDir || !outDir) die("usage: node tools/compile_pyc.mjs SRC_DIR OUT_DIR [PYODIDE_DIR]");
const pyodideDir = path.resolve(pyodideArg || path.join(HERE, "..", "node_modules", "pyodide"));
if (!fs.existsSync(srcDir) || !fs.statSync(srcDir).isDirectory()) die(`no directory ${srcDir}`);
const sources = listPy(path.resolve(srcDir));
if (!sources.length) die(`no .py files under ${srcDir}`);

let loadPyodide;
try {
  ({ loadPyodide } = await import(pathToFileURL(path.join(pyodideDir, "pyodide.mjs")).href));
} catch (err) {
  die(`cannot import ${pyodideDir}/pyodide.mjs (run npm ci): ${err.message}`);
}

const output = [];
let pyodide;
try {
  pyodide = await loadPyodide({
    indexURL: pyodideDir + path.sep,
    env: { PYTHONHASHSEED: "0" },
    stdout: (line) => output.push(line),
    stderr: (line) => output.push(line),
  });
} catch (err) {
  die(`loadPyodide() failed: ${err.message}`);
}

let result;
try {
  const site = pyodide.runPython(
    "import sys; next(p for p in sys.path if p.endswith('site-packages'))");
  const root = `/tmp/compile_pyc/${site.replace(/^\/+/, "")}`;
  for (const rel of sources) {
    const dest = `${root}/${rel}`;
    pyodide.FS.mkdirTree(dest.slice(0, dest.lastIndexOf("/")));
    pyodide.FS.writeFile(dest, fs.readFileSync(path.join(srcDir, rel)));
  }
  pyodide.globals.set("_root", root);
  pyodide.globals.set("_site", site);
  pyodide.globals.set("_sources", pyodide.toPy(sources));
  result = JSON.parse(pyodide.runPython(`
import importlib.util, json, os, py_compile, sys

def _compile(root, site, sources):
    pyc = {}
    for rel in sources:
        src = f"{root}/{rel}"
        cfile = importlib.util.cache_from_source(src)
        # dfile: the path the module has in the page, for tracebacks and co_filename
        py_compile.compile(src, cfile=cfile, dfile=f"{site}/{rel}", doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        pyc[rel] = os.path.relpath(cfile, root)
    return json.dumps({
        "cache_tag": sys.implementation.cache_tag,
        "magic": importlib.util.MAGIC_NUMBER.hex(),
        "version": sys.version.split()[0],
        "pyc": pyc,
    })

_compile(_root, _site, _sources)
`));
  for (const [, pycRel] of Object.entries(result.pyc)) {
    const dest = path.join(outDir, pycRel);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(dest, pyodide.FS.readFile(`${root}/${pycRel}`));
  }
} catch (err) {
  const extra = output.length ? `\n${output.join("\n")}` : "";
  die(`compiling with Pyodide's Python failed: ${err.message}${extra}`);
}
process.stdout.write(JSON.stringify(result) + "\n");
