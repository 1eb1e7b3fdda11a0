// UI strings for the demo page (English, 简体中文). t(key, vars) fills {name} placeholders.
const STRINGS = {
  en: {
    title: "ComfyUI pool client — every job stays on one server",
    h1: "ComfyUI pool client",
    tagline: "Python in your browser (Pyodide) keeps each job on one ComfyUI server: upload, submit, progress, history and download.",
    lang_label: "Language", booting: "Starting Python…", ready: "Python ready in {s} s.",
    ready_cached: "Python ready in {s} s (restored from this browser's boot cache).",
    servers: "Servers", add_server: "Add server", add: "Add", check: "Check connectivity",
    lock: "Lock", locked_server: "Locked server", held_because: "Held because", websocket: "WebSocket",
    affinity: "Affinity", aff_session: "session (one locked server)", aff_job: "job (each job pinned to its own server)",
    run_h: "Run", image: "Image", drop_help: "…or drop an image here (or press Enter to choose one). Without one, a generated test image is used.",
    selected: "Selected: {name}", workflow: "Workflow", wf_invert: "Invert colours", wf_blur: "Gaussian blur",
    wf_scale: "Scale to 50%", wf_custom: "Paste or upload API-format JSON…", image_node: "LoadImage node",
    custom_json: "API-format workflow JSON", custom_file: "Upload workflow JSON", jobs_count: "Jobs",
    run: "Run", selftest: "Consistency self-test", jobs: "Jobs", cancel: "Cancel", audit: "Audit trail",
    preview_alt: "live preview", add_first: "Add a ComfyUI server to start.", remove: "Remove",
    remove_label: "Remove {url}", job: "Job {n} · {wf}", starting: "starting", done: "done", failed: "failed",
    per_job: "per job", none: "none", up_meta: "up · {version} · queue {queue} · {ms} ms", version_unknown: "version not reported",
    download: "Download {name}", result_alt: "result {name}", paste_wf: "Paste an API-format workflow (File → Export (API) in ComfyUI).",
    selftest_running: "Running one small job on every server…",
    selftest_ok: "Self-test passed on {n} server(s): every request stayed on its server.",
    selftest_bad: "Self-test found problems: {list}",
    lock_free: "not held: the next job selects a server",
    progress_label: "Progress of {job}", cancel_label: "Cancel {job}",
    node_progress: "node {node}{step}",
    lock_ws: "the WebSocket to it is open",
    lock_pending: "{n} task(s) pending (WebSocket {ws})",
    reconnects: "{ws}, reconnect attempt {n}",
    "ws.open": "open", "ws.closed": "closed", "ws.connecting": "connecting", "ws.reconnecting": "reconnecting",
    "state.created": "created", "state.uploading": "uploading", "state.submitting": "submitting",
    "state.queued": "queued", "state.running": "running", "state.finished": "finished",
    "state.fetching_outputs": "fetching images", "state.moved": "moved to another server",
    "err.config_error": "The configuration is not valid.",
    "err.not_initialised": "The client is not initialised yet.",
    "err.invalid_input": "An input is not valid.",
    "err.invalid_workflow": "The server rejected the workflow.",
    "err.server_unreachable": "The server could not be reached.",
    "err.cross_origin_blocked": "The browser blocked the request (CORS): start ComfyUI with --enable-cors-header.",
    "err.upload_too_large": "The image is too large for the server.",
    "err.upload_conflict": "The server holds another file under this image's name, so the job was not run.",
    "err.server_mismatch": "A request went to a different server than its job.",
    "err.execution_failed": "The workflow failed on the server.",
    "err.job_interrupted": "The job was cancelled.",
    "err.job_lost": "The server no longer knows this job.",
    "err.server_lost": "The server went away during the job.",
    "err.boot_failed": "Python could not start in this page.",
    "err.internal_error": "Something went wrong inside the client.",
    "err.unknown": "Something went wrong.",
  },
  zh: {
    title: "ComfyUI 服务器池客户端 — 每个任务始终在同一台服务器上",
    h1: "ComfyUI 服务器池客户端",
    tagline: "浏览器中的 Python（Pyodide）让每个任务始终在同一台 ComfyUI 服务器上：上传、提交、进度、历史和下载。",
    lang_label: "语言", booting: "正在启动 Python…", ready: "Python 已就绪，用时 {s} 秒。",
    ready_cached: "Python 已就绪，用时 {s} 秒（从本浏览器的启动缓存恢复）。",
    servers: "服务器", add_server: "添加服务器", add: "添加", check: "检查连接",
    lock: "锁定", locked_server: "锁定的服务器", held_because: "锁定原因", websocket: "WebSocket",
    affinity: "亲和性", aff_session: "会话（锁定一台服务器）", aff_job: "任务（每个任务固定在各自的服务器）",
    run_h: "运行", image: "图片", drop_help: "…或将图片拖放到这里（或按回车键选择）。未选择时使用生成的测试图片。",
    selected: "已选择：{name}", workflow: "工作流", wf_invert: "反转颜色", wf_blur: "高斯模糊",
    wf_scale: "缩放到 50%", wf_custom: "粘贴或上传 API 格式 JSON…", image_node: "LoadImage 节点",
    custom_json: "API 格式工作流 JSON", custom_file: "上传工作流 JSON", jobs_count: "任务数",
    run: "运行", selftest: "一致性自检", jobs: "任务", cancel: "取消", audit: "审计记录",
    preview_alt: "实时预览", add_first: "请添加一台 ComfyUI 服务器以开始。", remove: "移除",
    remove_label: "移除 {url}", job: "任务 {n} · {wf}", starting: "启动中", done: "完成", failed: "失败",
    per_job: "按任务", none: "无", up_meta: "在线 · {version} · 队列 {queue} · {ms} 毫秒", version_unknown: "未报告版本",
    download: "下载 {name}", result_alt: "结果 {name}", paste_wf: "请粘贴 API 格式的工作流（ComfyUI 中 文件 → 导出 (API)）。",
    selftest_running: "正在每台服务器上运行一个小任务…",
    selftest_ok: "自检通过，共 {n} 台服务器：每个请求都留在了它的服务器上。",
    selftest_bad: "自检发现问题：{list}",
    lock_free: "未锁定：下一个任务将重新选择服务器",
    progress_label: "{job} 的进度", cancel_label: "取消 {job}",
    node_progress: "节点 {node}{step}",
    lock_ws: "到该服务器的 WebSocket 已连接",
    lock_pending: "{n} 个任务未完成（WebSocket {ws}）",
    reconnects: "{ws}，第 {n} 次重连",
    "ws.open": "已连接", "ws.closed": "已关闭", "ws.connecting": "连接中", "ws.reconnecting": "重连中",
    "state.created": "已创建", "state.uploading": "上传中", "state.submitting": "提交中",
    "state.queued": "排队中", "state.running": "运行中", "state.finished": "已完成",
    "state.fetching_outputs": "获取图片中", "state.moved": "已转到另一台服务器",
    "err.config_error": "配置无效。",
    "err.not_initialised": "客户端尚未初始化。",
    "err.invalid_input": "输入无效。",
    "err.invalid_workflow": "服务器拒绝了该工作流。",
    "err.server_unreachable": "无法连接到服务器。",
    "err.cross_origin_blocked": "浏览器拦截了请求（CORS）：请使用 --enable-cors-header 启动 ComfyUI。",
    "err.upload_too_large": "图片超出服务器允许的大小。",
    "err.upload_conflict": "服务器上已有另一个同名文件，任务未运行。",
    "err.server_mismatch": "请求被发送到了与任务不同的服务器。",
    "err.execution_failed": "工作流在服务器上执行失败。",
    "err.job_interrupted": "任务已取消。",
    "err.job_lost": "服务器已不再知道此任务。",
    "err.server_lost": "任务进行中服务器断开了。",
    "err.boot_failed": "无法在此页面中启动 Python。",
    "err.internal_error": "客户端内部出错。",
    "err.unknown": "出错了。",
  },
};

export const LANGS = { en: "English", zh: "简体中文" };
const KEY = "comfyui-demo-lang";
let lang = (() => {
  try { const v = localStorage.getItem(KEY); if (v in STRINGS) return v; } catch (_) { /* no storage */ }
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
})();

export function getLang() { return lang; }

export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] == null ? "" : String(vars[k])));
}

/** A short translated sentence for an error, then the error's own (English) technical message. */
export function errorText(err) {
  if (!err) return "";
  const key = `err.${err.code}`;
  const head = (key in STRINGS.en) ? t(key) : t("err.unknown");
  return err.message ? `${head} ${err.message}` : head;
}

/** Fill every [data-i18n] (textContent) and [data-i18n-attr="attr:key;..."] element. */
export function applyStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr, t(key));
    }
  }
}

export function setLang(next) {
  if (!(next in STRINGS)) return;
  lang = next;
  try { localStorage.setItem(KEY, next); } catch (_) { /* no storage */ }
  document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  applyStatic(document);
  document.dispatchEvent(new CustomEvent("langchange", { detail: next }));
}
