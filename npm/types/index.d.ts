// Types of "comfyui-pool-client" (web/comfyui.js): the old comfyui.js function names, each
// a call into the Python client running under Pyodide in the page (async, but for the two
// console reports debugWebSocketLock and checkServerUnlockCondition, which answer at once).
// Every object here is plain data the client hands back (no proxies); field names are the
// client's own (camelCase). `null` means "not known / not applicable".

/** An API-format ComfyUI workflow: node id -> node ("Save (API format)" in ComfyUI). */
export interface Workflow {
  [nodeId: string]: {
    class_type: string;
    inputs: Record<string, unknown>;
    _meta?: Record<string, unknown>;
  };
}

/** A server of the pool: its base URL, or an object with a weight, a label, a token. */
export type ServerConfig =
  | string
  | {
      url: string;
      /** larger wins among equally loaded servers (default 1) */
      weight?: number;
      label?: string;
      /** sent only to this server: `Authorization: Bearer` and `?token=` on the WebSocket */
      token?: string;
    };

export type Affinity = "session" | "job";

export type LogLevel = "off" | "lock" | "verbose";

/** Options of `init()`; the README's "Options of init" table says what each does. */
export interface InitOptions {
  servers: ServerConfig[];
  affinity?: Affinity;
  /** seconds for one HTTP request (30) */
  requestTimeout?: number;
  /** seconds for one upload (120) */
  uploadTimeout?: number;
  /** seconds for the WebSocket to open (10) */
  wsConnectTimeout?: number;
  /** seconds a job's server may stay unreachable before the job ends with server_lost (600) */
  jobDeadline?: number;
  /** seconds without a message before a running job is checked over HTTP (15) */
  stallCheck?: number;
  /** seconds between HTTP polls of a job whose WebSocket is not open (1) */
  pollInterval?: number;
  /** reads of an empty history after the job ended (8) */
  historyRetries?: number;
  /** audit records kept (5000) */
  maxAudit?: number;
  /** the WebSocket client id (default: one per tab, kept in sessionStorage) */
  clientId?: string;
  /** keep the client id and job -> server map in sessionStorage (true) */
  persist?: boolean;
  /** "before-start" (needs affinity "job"): a job whose server is lost before it started moves */
  failover?: "off" | "before-start";
  /**
   * How much of the lock's story the console tells, in English and Chinese: "lock" (the
   * default) the lock taken and released; "verbose" also every consistency check that
   * passed and every submit; "off" none of it.
   */
  log?: LogLevel;
  /**
   * Where the package's Python assets are served: the URL of the folder holding
   * pyodide.mjs, pyodide.asm.wasm, python_stdlib.zip, pyodide-lock.json and the wheels
   * (the package's pyodide/ folder). Resolved against the page; a trailing "/" is added.
   * Default: where the Vite plugin serves them, else ../pyodide/ beside the module.
   * Read by the first init() only (it boots Python).
   */
  assetsURL?: string | URL;
  /** read by the first init() only: restore/save the boot cache (true) */
  bootCache?: boolean;
  /** read by the first init() only: run asyncio callbacks in microtasks (true) */
  microtaskLoop?: boolean;
  /** read by the first init() only: wheels of the pyodide/ folder to load, by lockfile name */
  extraPackages?: string[];
}

export interface InitResult {
  servers: string[];
  affinity: Affinity;
  clientId: string;
  /** first init() of a page: the jobs a previous page left in flight, picked up again */
  reattached?: string[];
  /** a later init(): servers removed from and added to the pool */
  removed?: string[];
  added?: string[];
}

/** Every `code` a ComfyUIError can carry. */
export type ComfyUIErrorCode =
  | "client_error"
  | "config_error"
  | "not_initialised"
  | "boot_failed"
  | "invalid_input"
  | "invalid_workflow"
  | "server_error"
  | "server_unreachable"
  | "cross_origin_blocked"
  | "upload_too_large"
  | "upload_conflict"
  | "bad_response"
  | "protocol_error"
  | "server_mismatch"
  | "job_error"
  | "execution_failed"
  | "job_interrupted"
  | "job_lost"
  | "server_lost";

/** The error every call rejects with: `code` is stable, `hint` says what to do. */
export class ComfyUIError extends Error {
  constructor(info: {
    message: string;
    name?: string;
    code?: ComfyUIErrorCode;
    server?: string | null;
    promptId?: string | null;
    hint?: string | null;
    details?: Record<string, unknown>;
    summary?: string;
  });
  code: ComfyUIErrorCode;
  /** the server the failure is about */
  server: string | null;
  promptId: string | null;
  hint: string | null;
  /** e.g. ComfyUI's node_errors, or the outputs a lost server had already made */
  details: Record<string, unknown>;
  /** the message without the server, job and hint */
  summary: string;
}

/** The plain-data form of an error inside results (`error` fields). */
export interface ErrorInfo {
  name: string;
  code: ComfyUIErrorCode;
  message: string;
  summary: string;
  server: string | null;
  promptId: string | null;
  hint: string | null;
  details: Record<string, unknown>;
}

export type JobState =
  | "created"
  | "uploading"
  | "submitting"
  | "queued"
  | "running"
  | "finished"
  | "fetching_outputs"
  | "succeeded"
  | "failed"
  | "interrupted"
  | "lost"
  | "server_lost"
  | "rejected"
  | "moved";

export type WebSocketState = "closed" | "connecting" | "open" | "reconnecting";

export interface ImageRef {
  filename: string;
  subfolder: string;
  type: string;
}

/** An output image, fetched from the server that made it. */
export interface OutputImage extends ImageRef {
  blob: Blob;
  server: string;
  /** an object URL of `blob`, made on first read: revoke it when no longer shown */
  readonly url: string;
}

/** What a progress bar needs: every onProgress call carries it. */
export interface ProgressView {
  jobId: string;
  promptId: string | null;
  server: string;
  state: JobState;
  /** 0..1 over the workflow's nodes */
  progress: number;
  currentNode: string | null;
  nodeProgress: { value: number; max: number } | null;
  totalNodes: number | null;
}

/** A job as the client tracks it (getJobs, debugWebSocketLock().pendingTasks). */
export interface JobInfo extends ProgressView {
  number: number | null;
  cachedNodes: string[];
  executedNodes: string[];
  outputs: Record<string, ImageRef[]>;
  images: ImageRef[];
  error: ErrorInfo | null;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  eventsSeen: number;
  ignoredEvents: string[];
  historyRetries: number;
  released: boolean;
  terminal: boolean;
  pending: boolean;
}

/**
 * One onProgress call: `event` is the ComfyUI message type ("execution_start",
 * "progress", "executed", ...) or the client's own ("queued", "moved", "polled",
 * "outputs_fetched"). `progress`/`progress_state` events carry only the ProgressView.
 */
export type ProgressEvent = ProgressView & Partial<JobInfo> & {
  event: string;
  [key: string]: unknown;
};

/** One live preview frame of a running node. */
export interface PreviewFrame {
  promptId: string;
  nodeId: string | null;
  imageType: string;
  server: string;
  blob: Blob;
}

export interface JobCallbacks {
  onProgress?: (event: ProgressEvent) => void;
  onPreview?: (frame: PreviewFrame) => void;
}

export interface UploadOptions {
  filename?: string;
  subfolder?: string;
  overwrite?: boolean;
  server?: string;
  promptId?: string;
}

export interface UploadResult {
  /** the server's name for the file: always use it */
  name: string;
  subfolder: string;
  type: string;
  server: string;
}

export interface SubmitOptions extends JobCallbacks {
  promptId?: string;
  server?: string;
}

export interface SubmitResult {
  promptId: string;
  server: string;
  number: number | null;
}

export interface CompletionResult {
  promptId: string;
  server: string;
  state: JobState;
  history: Record<string, unknown> | null;
}

export interface ProcessImageOptions extends JobCallbacks {
  /** the LoadImage node to feed (optional when the workflow has one) */
  imageNode?: string;
  filename?: string;
  promptId?: string;
}

export interface ProcessImageResult {
  promptId: string;
  server: string;
  images: OutputImage[];
  history: Record<string, unknown> | null;
  /** the input, named after its bytes (sha256 hex + extension); `reused`: the server held
   * it from an earlier job of this page, so it was not sent again */
  upload: UploadResult & { reused: boolean };
  /** outputs the job's messages named but its history does not list (not in `images`) */
  unexpectedOutputs: ImageRef[];
  /** the attempts a failover moved the job away from (their server and prompt id) */
  movedFrom: { server: string; promptId: string }[];
}

export interface ServerStatus {
  server: string;
  label: string | null;
  weight: number | null;
  status: "unknown" | "up" | "down";
  reason: string | null;
  version: string | null;
  devices: unknown[];
  queueRemaining: number | null;
  latencyMs: number | null;
  wsState: WebSocketState;
  reconnectAttempts: number;
  jobs: number;
  error?: ErrorInfo;
}

export interface ConsistencyViolation {
  promptId: string;
  expected: string;
  actual: string;
  method: string | null;
  path: string | null;
  time: number | null;
}

export interface ConsistencyReport {
  consistent: boolean;
  server: string | null;
  lockedServer: string | null;
  apiServer: string | null;
  reason: string;
  violations: ConsistencyViolation[];
  operation: string | null;
  checkedJobs: number;
  droppedRecords: number;
}

export interface LockDescription {
  lockedServer: string | null;
  wsState: WebSocketState;
  pendingTasks: string[];
  heldBecause: string;
  reconnectAttempts: number;
  held: boolean;
}

/** What the two synchronous reports answer before an init() succeeded. */
export interface NotInitialised {
  initialised: false;
  /** what to do, in one plain sentence */
  message: string;
  /** the line printed (English | Chinese) */
  summary: string[];
}

/** Options of the two synchronous reports. */
export interface ReportOptions {
  /** write the report's summary lines to the console (the window.* helpers pass true) */
  print?: boolean;
}

export interface LockDebugInfo {
  initialised: true;
  /** the lines printed with {print: true}: the locked server, why it is held, the
   * WebSocket's state, the pending tasks (English | Chinese) */
  summary: string[];
  affinity: Affinity;
  clientId: string;
  /** null in job affinity */
  lock: LockDescription | null;
  lockedServer: string | null;
  heldBecause: string;
  wsState: WebSocketState;
  reconnectAttempts: number;
  pendingTasks: JobInfo[];
  sockets: Record<string, { state: WebSocketState; attempts: number; reconnects: number }>;
  servers: ServerStatus[];
  /** the lock's rule table, one row per rule */
  rules: string[][];
  lockLog: { time: number; event: "locked" | "released"; server: string; why: string }[];
  protocolErrors: Record<string, Record<string, number>>;
  unknownMessageTypes: string[];
  /** live Pyodide proxies the page lent to JS (leak check) */
  liveProxies?: number;
  wsListeners?: number;
  [key: string]: unknown;
}

export interface UnlockCondition {
  initialised: true;
  /** the line printed with {print: true} (English | Chinese) */
  summary: string[];
  canUnlock: boolean;
  pendingTasks: number;
  lockedServer: string | null;
  wsState: WebSocketState;
  reason: string;
}

export interface InterruptResult {
  promptId: string;
  server: string;
  interrupted: true;
}

export interface SelfTestResult {
  ok: boolean;
  servers: {
    server: string;
    ok: boolean;
    promptId?: string;
    requests?: number;
    serversSeen?: string[];
    error?: ErrorInfo;
  }[];
}

export interface AuditRecord {
  time: number;
  promptId: string | null;
  server: string;
  method: string;
  path: string;
  status: number | null;
}

/** The boot's phases in ms; `bootCache` says what the boot cache did. */
export interface BootTimings {
  startedAt?: number;
  importLoader?: number;
  loadPyodide?: number;
  installClient?: number;
  importClient?: number;
  total?: number;
  bootCache?: "off" | "restored" | "saving" | "saved" | "failed";
  /** what the first init()'s claim of the saved client id found (a duplicated tab takes a
   * fresh one): "none" (nothing saved, persist false or a clientId given), "unsupported"
   * (no BroadcastChannel), "kept", "duplicate" */
  tabClaim?: "none" | "unsupported" | "kept" | "duplicate";
  /** ms the claim took (it runs beside the boot) */
  tabClaimMs?: number;
  /** ms init() waited for the claim once Python had booted */
  tabClaimWaitMs?: number;
}

/** The part of Pyodide's API most callers of getPyodide() use. */
export interface PyodideInterface {
  version: string;
  runPython(code: string, options?: { globals?: unknown; locals?: unknown }): any;
  runPythonAsync(code: string, options?: { globals?: unknown; locals?: unknown }): Promise<any>;
  pyimport(name: string): any;
  loadPackage(names: string | string[]): Promise<unknown>;
  [key: string]: any;
}

/** Boot Python (once per page) and (re)configure the pool. */
export function init(options: InitOptions): Promise<InitResult>;
/** The job's server, or the locked server, or a fresh selection. */
export function getApiBaseUrl(promptId?: string | null): Promise<string>;
export function ensureWebSocketConnection(
  server?: string | null,
): Promise<{ server: string; clientId: string; wsState: WebSocketState }>;
export function uploadImageToComfyUI(file: Blob, options?: UploadOptions): Promise<UploadResult>;
export function submitWorkflow(workflow: Workflow, options?: SubmitOptions): Promise<SubmitResult>;
export function waitForCompletion(promptId: string, options?: object): Promise<CompletionResult>;
/** The server's /history/{id} answer, `{[promptId]: entry}` (`{}` when not finished). */
export function getTaskHistory(promptId: string): Promise<Record<string, unknown>>;
export function getGeneratedImage(promptId: string): Promise<OutputImage[]>;
export function getImage(
  filename: string,
  subfolder?: string,
  type?: string,
  options?: { promptId?: string; server?: string },
): Promise<Blob>;
export function checkComfyUIServerStatus(): Promise<ServerStatus[]>;
export function validateServerConsistency(operation?: string | null): Promise<ConsistencyReport>;
/** Synchronous: the lock's whole state (the window.* helper also prints its summary). */
export function debugWebSocketLock(options?: ReportOptions): LockDebugInfo | NotInitialised;
/** Synchronous: may the page move to another server now (the window.* helper prints it). */
export function checkServerUnlockCondition(
  options?: ReportOptions,
): UnlockCondition | NotInitialised;
export function interrupt(promptId: string): Promise<InterruptResult>;
/** The whole job on one server: upload, submit, wait, fetch the outputs. */
export function processImage(
  workflow: Workflow,
  file: Blob,
  options?: ProcessImageOptions,
): Promise<ProcessImageResult>;
export function runConsistencySelfTest(options?: object): Promise<SelfTestResult>;
export function getJobs(): Promise<JobInfo[]>;
export function getAuditLog(promptId?: string | null): Promise<AuditRecord[]>;
export function releaseTask(promptId: string): Promise<{ promptId: string; released: true }>;
/** The Pyodide instance (boots it if needed). */
export function getPyodide(): Promise<PyodideInterface>;

export const bootTimings: BootTimings;
/** Whether this page saved the boot cache (false when it restored one or has none). */
export let bootCacheSaved: Promise<boolean>;

declare global {
  /** The console helpers the old module set on window, for DevTools. */
  interface Window {
    validateServerConsistency: typeof validateServerConsistency;
    debugWebSocketLock: typeof debugWebSocketLock;
    getApiBaseUrl: typeof getApiBaseUrl;
    checkServerUnlockCondition: typeof checkServerUnlockCondition;
    runConsistencySelfTest: typeof runConsistencySelfTest;
  }
}
