// A TypeScript app's use of "comfyui-pool-client", type-checked by
// tests/host/test_package_types.py with `tsc --noEmit -p tsconfig.json` (never run). It
// uses every export and every error code; the @ts-expect-error lines are misuses the
// declarations must refuse (tsc fails if one is accepted, so a declaration that decays to
// `any` is caught too).
import * as comfy from "comfyui-pool-client";
import {
  ComfyUIError,
  type ComfyUIErrorCode,
  type InitOptions,
  type OutputImage,
  type ProgressEvent,
  type Workflow,
  bootCacheSaved,
  bootTimings,
  checkComfyUIServerStatus,
  checkServerUnlockCondition,
  debugWebSocketLock,
  ensureWebSocketConnection,
  getApiBaseUrl,
  getAuditLog,
  getGeneratedImage,
  getImage,
  getJobs,
  getPyodide,
  getTaskHistory,
  init,
  interrupt,
  processImage,
  releaseTask,
  runConsistencySelfTest,
  submitWorkflow,
  uploadImageToComfyUI,
  validateServerConsistency,
  waitForCompletion,
} from "comfyui-pool-client";

const workflow: Workflow = {
  "1": { class_type: "LoadImage", inputs: { image: "input.png" } },
  "2": { class_type: "ImageInvert", inputs: { image: ["1", 0] } },
  "3": { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "ts" } },
};

const codes: Record<ComfyUIErrorCode, string> = {
  client_error: "unexpected",
  config_error: "fix the options",
  not_initialised: "call init() first",
  boot_failed: "serve the Python assets",
  invalid_input: "check the arguments",
  invalid_workflow: "fix the workflow",
  server_error: "the server failed",
  server_unreachable: "start the server",
  cross_origin_blocked: "--enable-cors-header",
  upload_too_large: "a smaller image",
  upload_conflict: "another file has the input's name",
  bad_response: "an odd answer",
  protocol_error: "an odd message",
  server_mismatch: "another server than the lock",
  job_error: "the job failed",
  execution_failed: "a node failed",
  job_interrupted: "cancelled",
  job_lost: "the server forgot it",
  server_lost: "the server is gone",
};

export async function run(file: File): Promise<string> {
  const options: InitOptions = {
    servers: ["http://gpu1:8188", { url: "http://gpu2:8188", weight: 2, label: "B", token: "t" }],
    affinity: "job",
    failover: "before-start",
    requestTimeout: 30,
    uploadTimeout: 120,
    wsConnectTimeout: 10,
    jobDeadline: 600,
    stallCheck: 15,
    pollInterval: 1,
    historyRetries: 8,
    maxAudit: 5000,
    clientId: "tab-1",
    persist: true,
    log: "verbose",
    assetsURL: new URL("/static/python/", location.href),
    bootCache: true,
    microtaskLoop: true,
    extraPackages: ["pyodide-http"],
  };
  const summary = await init(options);
  await init({ servers: summary.servers, assetsURL: "/static/python" });
  const reattached: string[] = summary.reattached ?? [];

  const progress: number[] = [];
  const result = await processImage(workflow, file, {
    imageNode: "1",
    onProgress: (p: ProgressEvent) => progress.push(p.progress),
    onPreview: (frame) => URL.revokeObjectURL(URL.createObjectURL(frame.blob)),
  });
  const image: OutputImage = result.images[0];
  const pixels: Blob = image.blob;
  const sentAgain: boolean = !result.upload.reused;
  const unlisted: string[] = result.unexpectedOutputs.map((ref) => ref.filename);
  const href: string = image.url;

  const base: string = await getApiBaseUrl(result.promptId);
  const socket = await ensureWebSocketConnection(base);
  const upload = await uploadImageToComfyUI(file, { filename: "a.png", overwrite: true });
  const submitted = await submitWorkflow(
    { ...workflow, "1": { class_type: "LoadImage", inputs: { image: upload.name } } },
    { onProgress: (p) => progress.push(p.progress) },
  );
  const done = await waitForCompletion(submitted.promptId);
  const history: Record<string, unknown> = await getTaskHistory(done.promptId);
  const generated: OutputImage[] = await getGeneratedImage(done.promptId);
  const blob: Blob = await getImage(generated[0].filename, generated[0].subfolder,
                                    generated[0].type, { promptId: done.promptId });
  const statuses = await checkComfyUIServerStatus();
  const report = await validateServerConsistency("after the job");
  const lock = debugWebSocketLock({ print: true });
  const unlock = checkServerUnlockCondition();
  if (!lock.initialised || !unlock.initialised) return lock.message + unlock.summary.join();
  const stopped = await interrupt(submitted.promptId);
  const selfTest = await runConsistencySelfTest();
  const jobs = await getJobs();
  const audit = await getAuditLog(done.promptId);
  const released = await releaseTask(submitted.promptId);
  const pyodide = await getPyodide();
  const saved: boolean = await bootCacheSaved;
  const restored: boolean = bootTimings.bootCache === "restored";
  const copiedTab: boolean = bootTimings.tabClaim === "duplicate";
  const helpers: boolean = window.debugWebSocketLock === debugWebSocketLock;

  try {
    await comfy.init({ servers: [] });
  } catch (err) {
    if (err instanceof ComfyUIError) return codes[err.code] + (err.hint ?? "");
  }
  return [reattached.length, pixels.size, href, socket.wsState, history, blob.size,
          statuses[0].status, report.consistent, lock.lockedServer, unlock.canUnlock,
          stopped.interrupted, selfTest.ok, jobs[0]?.state, audit[0]?.path, released.released,
          pyodide.version, saved, restored, copiedTab, helpers, sentAgain, unlisted].join();
}

// @ts-expect-error servers is required
void init({});
// @ts-expect-error assetsURL takes a string or a URL
void init({ servers: ["http://gpu1:8188"], assetsURL: 42 });
// @ts-expect-error log is "off", "lock" or "verbose"
void init({ servers: ["http://gpu1:8188"], log: "loud" });
// @ts-expect-error debugWebSocketLock answers at once: there is no promise to wait on
void debugWebSocketLock().then(() => 0);
// @ts-expect-error before init() there is no lockedServer to read without narrowing
const unnarrowed: string | null = checkServerUnlockCondition().lockedServer;
// @ts-expect-error affinity is "session" or "job"
void init({ servers: ["http://gpu1:8188"], affinity: "server" });
// @ts-expect-error not an error code
const unknownCode: ComfyUIErrorCode = "no_such_code";
// @ts-expect-error processImage takes a Blob or File, not a URL
void processImage(workflow, "photo.png");
// @ts-expect-error a result's fields are typed, not any
const notANumber: number = (await getJobs())[0].state;
export { notANumber, unknownCode, unnarrowed };
