// comfyui-pool-client/vite — the Vite plugin: serves and ships the package's Python assets,
// so a Vite app only adds `plugins: [comfyui()]` and imports "comfyui-pool-client".
//
// The Python side of the package (Pyodide's core, our wheel, the lockfile: pyodide/ in the
// package) is not made of modules Vite could bundle: Pyodide loads them itself, by URL, from
// one folder (its indexURL), and checks the wheels against the lockfile's sha256. So, as
// Pyodide's own notes for bundlers say, they must stay out of Vite's pipeline and be served
// as they are. This plugin:
// - keeps the module out of dependency pre-bundling (optimizeDeps.exclude): pre-bundled into
//   node_modules/.vite/deps it would lose its place beside its worker;
// - dev (`vite`): serves pyodide/ byte for byte with the right MIME types under
//   <base><assetsPath>/, from a middleware that runs before Vite's own (which would
//   transform pyodide.mjs and answer a missing file with index.html);
// - build: emits every pyodide/ file as an asset under <outDir>/<assetsPath>/ with its own
//   name (Pyodide and the lockfile refer to them by name, so no hash);
// - preview (`vite preview`): serves that built folder the same way as dev;
// - tells the module where they are: its transform swaps the marked default in
//   web/comfyui.js for the URL of the lockfile there. In a build that URL is
//   import.meta.ROLLUP_FILE_URL_<ref> of the emitted lockfile, which Vite renders for the
//   chunk that holds the module: "/app/comfyui-pool-client/pyodide-lock.json" for an
//   absolute base, a URL relative to the chunk for a relative one (base "./"), and whatever
//   experimental.renderBuiltUrl says.
// The boot-cache worker needs nothing here: Vite bundles
// `new Worker(new URL("./boot-cache-worker.js", import.meta.url), {type: "module"})` itself,
// and the module hands the worker the assets' URL.

import { createReadStream, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE = "comfyui-pool-client";
const PACKAGE_DIR = fileURLToPath(new URL("../", import.meta.url));
const ASSETS = path.join(PACKAGE_DIR, "pyodide");
const LOCKFILE = "pyodide-lock.json";
// written in web/comfyui.js as the default of its INJECTED_LOCKFILE_URL
const MARKER = "/* comfyui-pool-client:assets */ null";
const MIME = {
  ".wasm": "application/wasm",
  ".mjs": "text/javascript",
  ".js": "text/javascript",
  ".json": "application/json",
  ".zip": "application/zip",
  ".whl": "application/zip",
};

function checkAssetsPath(value) {
  if (typeof value !== "string" || !/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(value) ||
      value.split("/").some((part) => part === "." || part === "..")) {
    throw new Error(`${PACKAGE}/vite: assetsPath must be a relative folder path like ` +
      `"comfyui-pool-client" or "static/python" (no leading or trailing "/"), got ` +
      JSON.stringify(value));
  }
  return value;
}

// The files of a folder, by name (pyodide/ is flat: Pyodide looks up everything by name).
function listFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name);
}

// A connect middleware serving the files of `dir` at `prefix()` + name, untouched: no
// transform, no compression, no index.html for a name it does not have (a 404 instead).
// prefix is read per request: it depends on the resolved config.
function serveFolder(prefix, dir) {
  let names = null;
  return (req, res, next) => {
    if (req.method !== "GET" && req.method !== "HEAD") return next();
    const url = (req.url || "").split("?")[0];
    const base = prefix();
    if (!url.startsWith(base)) return next();
    let name;
    try {
      name = decodeURIComponent(url.slice(base.length));
    } catch {
      return next();
    }
    names ??= new Set(listFiles(dir));
    if (!names.has(name)) {
      res.statusCode = 404;
      res.setHeader("Content-Type", "text/plain; charset=utf-8");
      res.end(`${name} is not one of ${PACKAGE}'s Python assets\n`);
      return;
    }
    const file = path.join(dir, name);
    res.statusCode = 200;
    res.setHeader("Content-Type", MIME[path.extname(name)] || "application/octet-stream");
    res.setHeader("Content-Length", String(statSync(file).size));
    res.setHeader("Cache-Control", "no-cache");
    if (req.method === "HEAD") return res.end();
    createReadStream(file).on("error", next).pipe(res);
  };
}

/**
 * The plugin. Options: `assetsPath` — the folder, under the app's base in dev and under
 * build.outDir in a build, that holds the Python assets (default "comfyui-pool-client").
 */
export default function comfyui(options = {}) {
  const assetsPath = checkAssetsPath(options.assetsPath ?? PACKAGE);
  let config = null;
  let lockRef = null;
  const isClient = (ctx) => !ctx.environment || ctx.environment.config.consumer === "client";
  return {
    name: PACKAGE,
    config() {
      return { optimizeDeps: { exclude: [PACKAGE] } };
    },
    configResolved(resolved) {
      config = resolved;
    },
    configureServer(server) {
      // used directly (not from a returned function): runs before Vite's own middlewares
      server.middlewares.use(serveFolder(() => `${config.base}${assetsPath}/`, ASSETS));
    },
    configurePreviewServer(server) {
      const built = path.resolve(config.root, config.build.outDir, assetsPath);
      server.middlewares.use(serveFolder(() => `${config.base}${assetsPath}/`, built));
    },
    buildStart() {
      lockRef = null;
      if (config.command !== "build" || !isClient(this)) return;
      for (const name of listFiles(ASSETS)) {
        const ref = this.emitFile({
          type: "asset",
          fileName: `${assetsPath}/${name}`,
          source: readFileSync(path.join(ASSETS, name)),
        });
        if (name === LOCKFILE) lockRef = ref;
      }
    },
    transform(code) {
      if (!code.includes(MARKER) || !isClient(this)) return null;
      let url;
      if (config.command === "serve") url = JSON.stringify(`${config.base}${assetsPath}/${LOCKFILE}`);
      else if (lockRef) url = `import.meta.ROLLUP_FILE_URL_${lockRef}`;
      else return null;
      return { code: code.replace(MARKER, url), map: null };
    },
  };
}
