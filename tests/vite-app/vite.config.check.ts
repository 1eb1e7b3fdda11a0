// vite.config.js in TypeScript, type-checked by tests/host/test_package_types.py with
// `tsc --noEmit -p tsconfig.vite.json` (never run): the plugin's declarations fit Vite's
// own types, and misuses are refused.
import { defineConfig } from "vite";
import comfyui, { type ComfyUIPluginOptions } from "comfyui-pool-client/vite";

const options: ComfyUIPluginOptions = { assetsPath: "static/python" };
const plugin = comfyui(options);
const name: string = plugin.name;

export default defineConfig({
  base: "/app/",
  plugins: [comfyui(), plugin],
});

// @ts-expect-error assetsPath is a string
comfyui({ assetsPath: 42 });
// @ts-expect-error no such option
comfyui({ assetsDir: "x" });
export { name };
