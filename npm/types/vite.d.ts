// Types of "comfyui-pool-client/vite": the Vite plugin that serves (dev, preview) and emits
// (build) the package's Python assets and tells the module where they are.
import type { Plugin } from "vite";

export interface ComfyUIPluginOptions {
  /**
   * The folder, under the app's base in dev and preview and under build.outDir in a
   * build, that holds the Python assets (default "comfyui-pool-client"). A relative path
   * without a leading or trailing "/", e.g. "static/python".
   */
  assetsPath?: string;
}

/** `plugins: [comfyui()]` in vite.config.js. */
export default function comfyui(options?: ComfyUIPluginOptions): Plugin;
