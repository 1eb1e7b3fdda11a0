// boot-cache-worker.js — makes comfyui.js's boot cache off the page's thread.
//
// comfyui.js starts it once a page has booted without a cache entry. It boots its own
// Pyodide in snapshot mode with comfyui.js's own boot steps (the same options and install
// as a page boot), imports the client, takes a memory snapshot and puts it in Cache
// Storage, then answers {ok, key} or {ok: false, error} and is terminated. The page's
// interpreter is never involved (see comfyui.js).

import { _bootSteps as boot } from "./comfyui.js";

async function makeSnapshot() {
  const entry = await boot.fetchLockEntry();
  const wheel = boot.fetchClientWheel(entry);
  wheel.catch(() => {}); // awaited below, after loadPyodide
  const loader = await boot.importLoader();
  const pyodide = await loader.loadPyodide({ ...boot.pyodideOptions(), _makeSnapshot: true });
  boot.installClient(pyodide, await wheel);
  // what the page's create_bridge imports; nothing that holds a page object
  pyodide.runPython("import comfyui_client._browser, comfyui_client.api");
  const snapshot = pyodide.makeMemorySnapshot();
  const key = boot.snapshotKey(loader.version, entry.sha256);
  const cache = await caches.open(boot.BOOT_CACHE);
  await cache.put(key, new Response(snapshot, {
    headers: { "content-type": "application/octet-stream" },
  }));
  for (const old of await cache.keys()) {
    if (old.url !== key) await cache.delete(old); // other builds' snapshots, ~30 MB each
  }
  return key;
}

self.onmessage = async () => {
  try {
    self.postMessage({ ok: true, key: await makeSnapshot() });
  } catch (err) {
    self.postMessage({ ok: false, error: String((err && err.message) || err) });
  }
};
