// boot.js — the steps that start Pyodide and install the client, shared by comfyui.js (a
// page boot) and boot-cache-worker.js (the boot it snapshots), so that the worker snapshots
// the interpreter a page boot makes: same options, same install. Not part of the public API.
//
// Every step takes `dir`, the URL (a URL object ending in "/") of the folder that holds the
// Python assets: pyodide.mjs, pyodide.asm.{mjs,wasm}, python_stdlib.zip, pyodide-lock.json
// and the wheels it lists. comfyui.js chooses it once per page (see assetsDir there) and
// hands it to the worker in its message: the worker never derives it from its own URL,
// which a bundler moves (Vite puts the worker's chunk in assets/).

const PACKAGE = "comfyui-client";
export const BOOT_CACHE = "comfyui.js-boot";

// Our wheel is fetched while Pyodide boots and unpacked into site-packages once it is up,
// instead of `loadPyodide({packages: [...]})`, whose package step runs after start-up: there
// it cost 125-140 ms (loadPackage), here ~20 ms (`bootTimings.installClient`), the
// download overlapping start-up (`python3 build.py bench`: warm boot minus bare Pyodide went
// from ~330 to ~230 ms). Integrity is kept: the fetch carries the lockfile's sha256 as
// Subresource Integrity, so the browser refuses a wheel that does not match, as loadPackage
// would (describeBootFailure in comfyui.js then names the file).
export async function fetchLockEntry(dir) {
  const lockUrl = new URL("pyodide-lock.json", dir);
  const lockResp = await fetch(lockUrl);
  if (!lockResp.ok) throw new Error(`${lockUrl.href} answered HTTP ${lockResp.status}`);
  const entry = ((await lockResp.json()).packages || {})[PACKAGE];
  if (!entry || !entry.file_name || !/^[0-9a-f]{64}$/.test(entry.sha256 || "")) {
    throw new Error(`${lockUrl.href} has no usable "${PACKAGE}" entry`);
  }
  return entry;
}

export async function fetchClientWheel(dir, entry) {
  const bytes = entry.sha256.match(/../g).map((h) => parseInt(h, 16));
  const integrity = "sha256-" + btoa(String.fromCharCode(...bytes));
  const url = new URL(entry.file_name, dir);
  const resp = await fetch(url, { integrity });
  if (!resp.ok) throw new Error(`${url.href} answered HTTP ${resp.status}`);
  return resp.arrayBuffer();
}

// A runtime URL, so bundlers must leave this import alone: Pyodide is not a module of the
// app but a file beside the wasm it loads (the comments tell Vite and webpack so; esbuild
// and Rollup keep a non-literal import() as it is).
export function importLoader(dir) {
  const url = new URL("pyodide.mjs", dir).href;
  return import(/* @vite-ignore */ /* webpackIgnore: true */ url);
}

export function pyodideOptions(dir) {
  return {
    indexURL: dir.href,
    lockFileURL: new URL("pyodide-lock.json", dir).href,
    fullStdLib: false,
  };
}

// Our wheel's files into site-packages. After a boot-cache restore too: the snapshot holds
// the imported modules, not the file system (modules imported later, tracebacks' lines).
export function installClient(pyodide, wheelBytes) {
  const site = pyodide.runPython(
    "import sys; next(p for p in sys.path if p.endswith('site-packages'))");
  pyodide.unpackArchive(wheelBytes, "wheel", { extractDir: site });
}

// The boot cache's key for one build: a URL (Cache Storage keys are requests) under the
// assets folder, made of the Pyodide version and our wheel's sha256.
export function snapshotKey(dir, pyodideVersion, sha256) {
  return new URL(`boot-snapshot/${pyodideVersion}/${sha256}`, dir).href;
}
