// The app: imports the package by name, boots, and runs one invert job on the ComfyUI
// server named in the page's query (?server=URL&rgb=R,G,B). window.appResult is what the
// tests read: the output image as base64 PNG, or the error.
import * as comfy from "comfyui-pool-client";

const INVERT = {
  "1": { class_type: "LoadImage", inputs: { image: "input.png" } },
  "2": { class_type: "ImageInvert", inputs: { image: ["1", 0] } },
  "3": { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "vite" } },
};

async function solidPng([r, g, b]) {
  const canvas = new OffscreenCanvas(16, 8);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = `rgb(${r},${g},${b})`;
  ctx.fillRect(0, 0, 16, 8);
  return new File([await canvas.convertToBlob({ type: "image/png" })], "photo.png",
                  { type: "image/png" });
}

async function run() {
  const query = new URLSearchParams(location.search);
  const rgb = (query.get("rgb") || "10,200,30").split(",").map(Number);
  await comfy.init({ servers: [query.get("server")] });
  const { server, images } = await comfy.processImage(INVERT, await solidPng(rgb));
  const bytes = new Uint8Array(await images[0].blob.arrayBuffer());
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return { ok: true, server, png: btoa(bin), bootCache: comfy.bootTimings.bootCache };
}

window.comfy = comfy;
window.appResult = run().catch((e) => ({ ok: false, code: e.code, message: e.message }));
window.appResult.then((r) => {
  document.getElementById("status").textContent = r.ok ? "done" : `failed: ${r.message}`;
});
