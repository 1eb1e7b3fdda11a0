// What a Vite app adds to use comfyui-pool-client: the plugin, nothing else. The tests
// build and serve it under several bases (APP_BASE) into several folders (APP_OUT_DIR).
import { defineConfig } from "vite";
import comfyui from "comfyui-pool-client/vite";

export default defineConfig({
  base: process.env.APP_BASE || "/",
  build: { outDir: process.env.APP_OUT_DIR || "dist" },
  plugins: [comfyui()],
});
