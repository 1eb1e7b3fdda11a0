// boot-cache-worker.js — makes comfyui.js's boot cache off the page's thread.
//
// comfyui.js starts it once a page has booted without a cache entry and posts it
// {assetsURL}: where the page found the Python assets. It boots its own Pyodide from there
// in snapshot mode with the page's own boot steps (boot.js: the same options and install as
// a page boot), imports the client, takes a memory snapshot and puts it in Cache Storage,
// then answers {ok, key} or {ok: false, error} and is terminated. The page's interpreter is
// never involved (see comfyui.js).
//
// Bundlers that understand `new Worker(new URL("./boot-cache-worker.js", import.meta.url))`
// (Vite, webpack 5) bundle this file and boot.js into a chunk of their own; that is why the
// assets' URL comes in the message instead of from this file's own URL.

import * as boot from "./boot.js";

async function makeSnapshot(dir) {
  const entry = await boot.fetchLockEntry(dir);
  const wheel = boot.fetchClientWheel(dir, entry);
  wheel.catch(() => {}); // awaited below, after loadPyodide
  const loader = await boot.importLoader(dir);
  const pyodide = await loader.loadPyodide({ ...boot.pyodideOptions(dir), _makeSnapshot: true });
  boot.installClient(pyodide, await wheel);
  // what the page's create_bridge imports; nothing that holds a page object
  pyodide.runPython("import comfyui_client._browser, comfyui_client.api");
  const snapshot = pyodide.makeMemorySnapshot();
  const key = boot.snapshotKey(dir, loader.version, entry.sha256);
  const cache = await caches.open(boot.BOOT_CACHE);
  await cache.put(key, new Response(snapshot, {
    headers: { "content-type": "application/octet-stream" },
  }));
  for (const old of await cache.keys()) {
    if (old.url !== key) await cache.delete(old); // other builds' snapshots, ~30 MB each
  }
  return key;
}

self.onmessage = async (e) => {
  try {
    const dir = new URL(e.data && e.data.assetsURL);
    self.postMessage({ ok: true, key: await makeSnapshot(dir) });
  } catch (err) {
    self.postMessage({ ok: false, error: String((err && err.message) || err) });
  }
};
