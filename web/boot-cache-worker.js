// boot-cache-worker.js — makes comfyui.js's boot cache off the page's thread.
//
// comfyui.js starts it once a page has booted without a cache entry. It boots its own
// Pyodide in snapshot mode, installs and imports the client exactly as a page boot does,
// takes a memory snapshot and puts it in Cache Storage, then answers {ok} or {ok: false,
// error} and is terminated. The page's interpreter is never involved (see comfyui.js).

async function makeSnapshot({ cacheName, key, pyodideDir, wheelUrl, integrity }) {
  const wheel = fetch(wheelUrl, { integrity }).then((r) => {
    if (!r.ok) throw new Error(`${wheelUrl} answered HTTP ${r.status}`);
    return r.arrayBuffer();
  });
  wheel.catch(() => {});
  const { loadPyodide } = await import(new URL("pyodide.mjs", pyodideDir).href);
  const pyodide = await loadPyodide({
    indexURL: pyodideDir,
    lockFileURL: new URL("pyodide-lock.json", pyodideDir).href,
    fullStdLib: false,
    _makeSnapshot: true,
  });
  const site = pyodide.runPython(
    "import sys; next(p for p in sys.path if p.endswith('site-packages'))");
  pyodide.unpackArchive(await wheel, "wheel", { extractDir: site });
  // what the page's create_bridge imports; nothing that holds a page object
  pyodide.runPython("import comfyui_client._browser, comfyui_client.api");
  const snapshot = pyodide.makeMemorySnapshot();
  const cache = await caches.open(cacheName);
  await cache.put(key, new Response(snapshot, {
    headers: { "content-type": "application/octet-stream" },
  }));
  for (const old of await cache.keys()) {
    if (old.url !== key) await cache.delete(old); // other builds' snapshots, ~30 MB each
  }
  return snapshot.length;
}

self.onmessage = async (e) => {
  try {
    const size = await makeSnapshot(e.data);
    self.postMessage({ ok: true, size });
  } catch (err) {
    self.postMessage({ ok: false, error: String((err && err.message) || err) });
  }
};
