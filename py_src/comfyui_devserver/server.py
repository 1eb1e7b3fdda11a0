"""One ComfyUI-compatible server instance on aiohttp: routes, queue, sockets, faults.

The HTTP surface copies ComfyUI 0.33's ``server.py`` as recorded in
``tests/data/comfyui-traffic``: every route also under ``/api``, the origin-only middleware
(or the CORS one), the plain-text 500 of a non-JSON body, ``/view`` and the upload rules.
WebSocket messages leave through one outbox drained by one task, like the real server's
``publish_loop``, so the worker never waits on a slow socket and messages keep their order.

Everything a test may want to prove is recorded: ``request_log`` (every request and socket,
with client and prompt ids where known) and ``prompt_counts`` (POSTs per prompt id).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import io
import ipaddress
import json
import logging
import mimetypes
import os
import shutil
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image

from . import files, jobs_api, wire
from .executor import CacheEntry, Execution, Job, now_ms
from .faults import Faults, match_route
from .nodes import NODES, Dirs
from .validation import INVALID_PROMPT_ID, NO_PROMPT, is_canonical_uuid, validate_prompt

log = logging.getLogger("comfyui_devserver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOG_KEY = web.RequestKey("log", dict)
SKIP_CORS = web.ResponseKey("skip_cors", bool)
CLOSED_BY_SERVER = web.ResponseKey("closed_by_server", bool)
REJECTED = web.ResponseKey("rejected", bool)
MAX_HISTORY = 10000
MAX_LOG = 100_000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
CORS_METHODS = "POST, GET, DELETE, PUT, OPTIONS, PATCH"


@dataclass
class _Out:
    """One queued outgoing WebSocket message (or a flush marker)."""

    event: str
    payload: str | bytes | None
    sid: str | None
    job: Job | None
    done: asyncio.Future[None] | None = None


def _is_loopback(host: str | None) -> bool:
    """ComfyUI only checks Origin when the Host is loopback; no DNS here (offline)."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cross_site(request: web.Request) -> bool:
    """The origin-only middleware's test: Host vs Origin, plus ``Sec-Fetch-Site``."""
    host_header = request.headers.get("Host")
    if host_header is None:
        return False
    host_domain = host_header.lower()
    host_parsed = urllib.parse.urlsplit("//" + host_domain)
    if not _is_loopback(host_parsed.hostname):
        return False
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    parsed = urllib.parse.urlparse(origin)
    origin_domain = parsed.netloc.lower()
    try:
        origin_port, host_port = parsed.port, host_parsed.port
    except ValueError:
        return True
    if origin_port is None:
        host_domain = host_parsed.hostname or ""
    if host_port is None:
        origin_domain = parsed.hostname or ""
    return bool(host_domain and origin_domain and host_domain != origin_domain)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _empty(status: int = 200) -> web.Response:
    return web.Response(status=status)


class DevServer:
    """A ComfyUI look-alike with real Pillow execution, fault hooks and a request log.

    ``cors_origin=None`` serves like ComfyUI without ``--enable-cors-header`` (cross-site
    requests get an empty 403); ``"*"`` or an origin adds the four ``Access-Control-*``
    headers everywhere. The pacing keyword arguments initialise the matching
    :class:`Faults` fields, which stay changeable at run time through ``srv.faults``.
    """

    def __init__(
        self,
        name: str = "devserver",
        cors_origin: str | None = None,
        max_upload_size: int = 100 * 1024 * 1024,
        faults: Faults | None = None,
        *,
        node_delay_s: float | None = None,
        progress_steps: int | None = None,
        progress_text: bool | None = None,
        history_gap_s: float | None = None,
        flood_progress: int | None = None,
        flood_previews: int | None = None,
        root_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.cors_origin = cors_origin
        self.max_upload_size = int(max_upload_size)
        self.faults = faults if faults is not None else Faults()
        for field_name, value in (
            ("node_delay_s", node_delay_s), ("progress_steps", progress_steps),
            ("progress_text", progress_text), ("history_gap_s", history_gap_s),
            ("flood_progress", flood_progress), ("flood_previews", flood_previews),
        ):
            if value is not None:
                setattr(self.faults, field_name, value)
        self.request_log: list[dict[str, Any]] = []
        self.prompt_counts: dict[str, int] = {}
        self._root_parent = Path(root_dir) if root_dir is not None else None
        self._root: Path | None = None
        self.dirs: Dirs = Dirs(Path(), Path(), Path())
        self.cache: dict[str, CacheEntry] = {}
        self.node_state: dict[tuple[str, str], dict[str, Any]] = {}
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._reset_state()
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._socket_flags: dict[str, dict[str, Any]] = {}
        self._open_ws: dict[int, web.WebSocketResponse] = {}
        self._outbox: asyncio.Queue[_Out] | None = None
        self._wakeup: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._stopping = False

    def _reset_state(self) -> None:
        self._number = 0
        self._seq = 0
        self._heap: list[tuple[Any, str, int, Job]] = []
        self._running: Job | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._known_sids: set[str] = set()
        self._last_create_ms = 0
        self._file_owner: dict[tuple[str, str, str], str] = {}
        self.cache = {}
        self.node_state = {}

    # ================================================================== lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind (port 0 = a free port), create the instance's folders, start the worker."""
        if self._runner is not None:
            raise RuntimeError(f"dev server {self.name} already started")
        self._stopping = False
        root = tempfile.mkdtemp(prefix=f"comfyui-devserver-{self.name}-",
                                dir=self._root_parent)
        self._root = Path(os.path.realpath(root))
        self.dirs = Dirs(self._root / "input", self._root / "output", self._root / "temp")
        for d in (self.dirs.input, self.dirs.output, self.dirs.temp):
            d.mkdir()
        files.write_example_png(self.dirs.input / "example.png")
        self._outbox = asyncio.Queue()
        self._wakeup = asyncio.Event()
        app = web.Application(client_max_size=self.max_upload_size,
                              middlewares=self._middlewares())
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            shutil.rmtree(self._root, ignore_errors=True)
            raise
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1]) if runner.addresses else port
        self._publisher = asyncio.create_task(self._publish_loop(), name=f"{self.name}-publish")
        self._worker = asyncio.create_task(self._worker_loop(), name=f"{self.name}-worker")
        log.info("comfyui-devserver %s on %s (%s)", self.name, self.url, self._root)

    async def stop(self) -> None:
        """Close sockets, stop tasks and the listener, delete the instance's folders."""
        if self._runner is None:
            return
        self._stopping = True
        await self._close_all_sockets(WSCloseCode.GOING_AWAY, b"server shutdown")
        for task in (self._worker, self._publisher, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._worker, self._publisher, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()
        runner, self._runner = self._runner, None
        await runner.cleanup()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        log.info("comfyui-devserver %s stopped", self.name)

    async def restart(self) -> None:
        """What a real restart loses: queue, running job, history, cache, sockets, temp/.

        The port, the input/output files and the request log stay (a restarted ComfyUI
        keeps its folders; the log is the test's, not the server's).
        """
        if self._runner is None:
            raise RuntimeError("not started")
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        await self._close_all_sockets(WSCloseCode.SERVICE_RESTART, b"server restart")
        self._reset_state()
        self._socket_flags.clear()
        if self._outbox is not None:
            while not self._outbox.empty():
                item = self._outbox.get_nowait()
                if item.done is not None and not item.done.done():
                    item.done.set_result(None)
        for child in self.dirs.temp.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        self._worker = asyncio.create_task(self._worker_loop(), name=f"{self.name}-worker")

    async def _close_all_sockets(self, code: int, message: bytes) -> None:
        sockets = list(self._open_ws.values())
        self._sockets.clear()
        for ws in sockets:
            ws[CLOSED_BY_SERVER] = True
        if sockets:
            await asyncio.gather(*(self._close_ws(ws, code, message) for ws in sockets),
                                 return_exceptions=True)

    @staticmethod
    async def _close_ws(ws: web.WebSocketResponse, code: int, message: bytes) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code=code, message=message), 2.0)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log(self, entry: dict[str, Any]) -> None:
        """Append to ``request_log``; a long-running demo drops the oldest 10k at 100k."""
        self.request_log.append(entry)
        if len(self.request_log) > MAX_LOG:
            del self.request_log[:10_000]

    async def _unstalled(self) -> None:
        while self.faults.stall and not self._stopping:
            await asyncio.sleep(0.01)

    # ================================================================== middlewares

    def _middlewares(self) -> list[Any]:
        mws: list[Any] = [self._mw_log, self._mw_stall]
        mws.append(self._mw_cors if self.cors_origin else self._mw_origin_only)
        mws.append(self._mw_faults)
        return mws

    @web.middleware
    async def _mw_log(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        entry: dict[str, Any] = {
            "time": time.time(), "kind": "http", "method": request.method,
            "path": request.path, "query": dict(request.query), "status": None,
            "client_id": request.query.get("clientId"), "prompt_id": None,
        }
        self._log(entry)
        request[LOG_KEY] = entry
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            entry["status"] = exc.status
            raise
        except asyncio.CancelledError:
            entry["status"] = "cancelled"
            raise
        except Exception:
            entry["status"] = 500
            raise
        if entry["status"] is None:
            entry["status"] = response.status
        return response

    @web.middleware
    async def _mw_stall(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        await self._unstalled()
        return await handler(request)

    @web.middleware
    async def _mw_cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = web.Response() if request.method == "OPTIONS" else await handler(request)
        if not response.prepared and not response.get(SKIP_CORS):
            response.headers["Access-Control-Allow-Origin"] = str(self.cors_origin)
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
            response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    @web.middleware
    async def _mw_origin_only(self, request: web.Request, handler: Handler
                              ) -> web.StreamResponse:
        if _cross_site(request):
            log.warning("%s: cross-site request %s %s refused (403)", self.name,
                        request.method, request.path)
            return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response()
        return await handler(request)

    @web.middleware
    async def _mw_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        faults = self.faults
        if faults.drop_ws_on_request is not None and match_route(
                {faults.drop_ws_on_request: None}, request.path) is not None:
            faults.drop_ws_on_request = None
            for sid in list(self._sockets):
                self._log({"time": time.time(), "kind": "ws_drop", "method": "GET",
                           "path": "/ws", "query": {"clientId": sid}, "status": None,
                           "client_id": sid, "prompt_id": None,
                           "event": f"request {request.path}"})
            await self._close_all_sockets(WSCloseCode.GOING_AWAY,
                                          b"devserver fault: drop_ws_on_request")
        key = match_route(faults.route_delay_s, request.path)
        if key is not None:
            await asyncio.sleep(float(faults.route_delay_s.get(key, 0.0)))
        key = match_route(faults.route_faults, request.path)
        fault = faults.route_faults.get(key) if key is not None else None
        if fault is not None and key is not None:
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    faults.route_faults.pop(key, None)
                if fault.remaining < 0:
                    return await handler(request)
            if fault.after_handler:
                await handler(request)
            response = web.Response(status=fault.status, text=fault.body,
                                    content_type=fault.content_type)
            if not fault.cors:
                response[SKIP_CORS] = True
            request[LOG_KEY]["fault"] = key
            return response
        key = match_route(faults.answer_delay_s, request.path)
        if key is not None:
            response = await handler(request)
            await asyncio.sleep(float(faults.answer_delay_s.get(key, 0.0)))
            return response
        return await handler(request)

    # ================================================================== routes

    def _add_routes(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ws", self._ws_handler),
            ("GET", "/prompt", self._get_prompt),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_item),
            ("POST", "/history", self._post_history),
            ("GET", "/view", self._view),
            ("POST", "/upload/image", self._upload_image),
            ("POST", "/upload/mask", self._upload_mask),
            ("POST", "/interrupt", self._interrupt),
            ("POST", "/free", self._free),
            ("GET", "/system_stats", self._system_stats),
            ("GET", "/features", self._features),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_node),
            ("GET", "/embeddings", self._embeddings),
            ("GET", "/models", self._models),
            ("GET", "/models/{folder}", self._models_folder),
            ("GET", "/jobs", self._jobs),
            ("GET", "/jobs/{job_id}", self._job),
            ("POST", "/jobs/{job_id}/cancel", self._job_cancel),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, "/api" + path, handler)
            app.router.add_route(method, path, handler)
        app.router.add_route("GET", "/", self._index)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=f"comfyui-devserver {self.name}: a ComfyUI-compatible test "
                            "server (no web frontend).\n")

    # ------------------------------------------------------------------ queue helpers

    def queue_remaining(self) -> int:
        return len(self._heap) + (1 if self._running is not None else 0)

    def _status_payload(self, sid: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining":
                                                         self.queue_remaining()}}}
        if sid is not None:
            data["sid"] = sid
        return data

    def _queue_updated(self, job: Job | None = None) -> None:
        self.emit("status", self._status_payload(), None, job)

    def _pending(self) -> list[Job]:
        return [item[3] for item in self._heap]

    def _dequeue(self, prompt_id: str) -> bool:
        for i, item in enumerate(self._heap):
            if item[1] == prompt_id:
                self._heap.pop(i)
                heapq.heapify(self._heap)
                self._queue_updated()
                return True
        return False

    # ------------------------------------------------------------------ /prompt

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return _json({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def _post_prompt(self, request: web.Request) -> web.Response:
        json_data = await request.json()  # not JSON -> aiohttp's plain-text 500, like ComfyUI
        entry = request[LOG_KEY]
        if isinstance(json_data, dict):
            entry["client_id"] = json_data.get("client_id")
        if "number" in json_data:
            number: int | float = float(json_data["number"])
        else:
            number = self._number
            if json_data.get("front"):
                number = -number
            self._number += 1
        if "prompt" not in json_data:
            return _json({"error": NO_PROMPT, "node_errors": {}}, 400)
        prompt = json_data["prompt"]
        prompt_id = None if self.faults.ignore_prompt_id else json_data.get("prompt_id")
        if prompt_id is not None:
            entry["prompt_id"] = prompt_id if isinstance(prompt_id, str) else None
            if isinstance(prompt_id, str):
                self.prompt_counts[prompt_id] = self.prompt_counts.get(prompt_id, 0) + 1
            if not is_canonical_uuid(prompt_id):
                return _json({"error": INVALID_PROMPT_ID, "node_errors": {}}, 400)
        else:
            prompt_id = str(uuid.uuid4())
            entry["prompt_id"] = prompt_id
            self.prompt_counts[prompt_id] = self.prompt_counts.get(prompt_id, 0) + 1
        partial = json_data.get("partial_execution_targets")
        ok, error, outputs, node_errors = validate_prompt(prompt, self.dirs, partial)
        extra_data = json_data.get("extra_data", {})
        if not isinstance(extra_data, dict):
            extra_data = {}
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not ok:
            return _json({"error": error, "node_errors": node_errors}, 400)
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        # strictly increasing so the jobs API's create_time order is the submission order
        self._last_create_ms = max(now_ms(), self._last_create_ms + 1)
        extra_data["create_time"] = self._last_create_ms
        job = Job(number, prompt_id, prompt, extra_data, outputs, sensitive)
        heapq.heappush(self._heap, (number, prompt_id, self._seq, job))
        self._seq += 1
        self._queue_updated()
        assert self._wakeup is not None
        self._wakeup.set()
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    # ------------------------------------------------------------------ worker

    async def _worker_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
            job = heapq.heappop(self._heap)[3]
            self._running = job
            self._queue_updated(job)
            try:
                await self._run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: job %s crashed the dev server worker", self.name,
                              job.prompt_id)
            finally:
                if self._running is job:
                    self._running = None

    async def _run_job(self, job: Job) -> None:
        outcome = await Execution(self, job).run()
        await self.flush()  # execution_success/error is on the wire before the history gap
        if self.faults.history_gap_s > 0:
            await asyncio.sleep(self.faults.history_gap_s)
        status = {"status_str": "success" if outcome.success else "error",
                  "completed": outcome.success, "messages": outcome.messages}
        if len(self._history) >= MAX_HISTORY:
            self._history.pop(next(iter(self._history)))
        self._history[job.prompt_id] = {
            "prompt": job.queue_item(), "outputs": outcome.outputs, "status": status,
            "meta": outcome.meta,
        }
        self._running = None
        self._queue_updated(job)
        if job.client_id is not None:
            self.emit("executing", {"node": None, "prompt_id": job.prompt_id}, job.client_id,
                      job)

    # ------------------------------------------------------------------ outbox

    def emit(self, event: str, data: dict[str, Any], sid: str | None, job: Job | None) -> None:
        """Queue a JSON message for ``sid`` (``None`` = every socket)."""
        if self._outbox is None:
            return
        payload = json.dumps({"type": event, "data": data})
        self._outbox.put_nowait(_Out(event, payload, sid, job))

    def emit_bytes(self, frame: bytes, sid: str | None, job: Job | None, event: str) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(_Out(event, frame, sid, job))

    async def flush(self) -> None:
        """Wait until everything queued so far has been written to the sockets."""
        if self._outbox is None or self._publisher is None or self._publisher.done():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.put_nowait(_Out("flush", None, None, None, done))
        await done

    def supports_preview_metadata(self, sid: str | None) -> bool:
        return sid is not None and bool(
            self._socket_flags.get(sid, {}).get("supports_preview_metadata"))

    def record_output(self, ui: dict[str, Any], prompt_id: str) -> None:
        for image in ui.get("images", []):
            key = (image.get("type", ""), image.get("subfolder", ""), image.get("filename", ""))
            self._file_owner[key] = prompt_id

    async def _publish_loop(self) -> None:
        assert self._outbox is not None
        while True:
            item = await self._outbox.get()
            if item.done is not None:
                if not item.done.done():
                    item.done.set_result(None)
                continue
            await self._unstalled()
            try:
                await self._publish(item)
            except Exception:  # never let one bad message silence every socket
                log.exception("%s: publishing %s failed", self.name, item.event)

    async def _publish(self, item: _Out) -> None:
        if item.job is not None and item.event == "executing" and self.faults.ws_junk:
            await self._send_junk(item.job)
        if item.job is not None:
            self._maybe_drop(item.event, item.job)
        try:
            await self._send(item)
        finally:
            faults = self.faults
            if (item.job is not None and faults.restart_after_event is not None
                    and item.event == faults.restart_after_event):
                faults.restart_seen += 1
            if (item.job is not None and faults.restart_after_event is not None
                    and faults.restart_seen >= faults.restart_after_nth):
                faults.restart_after_event = None
                faults.restart_seen = 0
                self._log({"time": time.time(), "kind": "restart", "method": None,
                           "path": None, "query": {}, "status": None,
                           "client_id": item.job.client_id, "prompt_id": item.job.prompt_id,
                           "event": item.event})
                self._spawn(self.restart())

    async def _send(self, item: _Out) -> None:
        if item.sid is None:
            targets = list(self._sockets.values())
        else:
            ws = self._sockets.get(item.sid)
            targets = [ws] if ws is not None else []
        for ws in targets:
            if ws.closed:
                continue
            try:
                if isinstance(item.payload, bytes):
                    await ws.send_bytes(item.payload)
                elif item.payload is not None:
                    await ws.send_str(item.payload)
            except Exception as exc:  # a socket going away mid-send is normal here
                log.debug("%s: send %s failed: %s", self.name, item.event, exc)

    async def _send_junk(self, job: Job) -> None:
        junk, self.faults.ws_junk = list(self.faults.ws_junk), []
        ws = self._sockets.get(job.client_id) if job.client_id else None
        if ws is None or ws.closed:
            return
        self._log({"time": time.time(), "kind": "ws_junk", "method": "GET", "path": "/ws",
                   "query": {}, "status": None, "client_id": job.client_id,
                   "prompt_id": job.prompt_id, "frames": len(junk)})
        for frame in junk:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)

    def _maybe_drop(self, event: str, job: Job) -> None:
        faults = self.faults
        if faults.drop_ws_at_event is None or event != faults.drop_ws_at_event:
            return
        client = job.client_id
        if client is None:
            return
        faults.drop_ws_seen += 1
        if faults.drop_ws_seen < faults.drop_ws_nth:
            return
        faults.drop_ws_at_event = None
        faults.drop_ws_seen = 0
        ws = self._sockets.pop(client, None)
        self._socket_flags.pop(client, None)
        if ws is not None:
            ws[CLOSED_BY_SERVER] = True
            self._log({
                "time": time.time(), "kind": "ws_drop", "method": "GET", "path": "/ws",
                "query": {"clientId": client}, "status": None, "client_id": client,
                "prompt_id": job.prompt_id, "event": event})
            self._spawn(self._close_ws(ws, WSCloseCode.GOING_AWAY,
                                       b"devserver fault: drop_ws_at_event"))

    # ------------------------------------------------------------------ /ws

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        entry = request[LOG_KEY]
        entry["kind"] = "ws"
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=self.max_upload_size)
        await ws.prepare(request)
        entry["status"] = 101
        sid = request.query.get("clientId", "")
        known = bool(sid) and sid in self._known_sids
        if not sid:
            sid = uuid.uuid4().hex
        entry["client_id"] = sid
        self._known_sids.add(sid)
        self._open_ws[id(ws)] = ws
        try:
            if self.faults.reject_ws_reopen_once and known:
                self.faults.reject_ws_reopen_once = False
                ws[REJECTED] = True
                entry["rejected"] = True
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER,
                               message=b"devserver fault: reject_ws_reopen_once")
                return ws
            self._sockets.pop(sid, None)  # reusing a session: the new socket takes over
            self._sockets[sid] = ws
            self._socket_flags[sid] = {}
            await self._unstalled()
            await ws.send_str(json.dumps({"type": "status",
                                          "data": self._status_payload(sid)}))
            running = self._running
            if running is not None and running.client_id == sid and running.current_node:
                await ws.send_str(json.dumps({"type": "executing",
                                              "data": {"node": running.current_node}}))
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        data = None
                    if (first and isinstance(data, dict)
                            and data.get("type") == "feature_flags"):
                        flags = data.get("data")
                        self._socket_flags[sid] = flags if isinstance(flags, dict) else {}
                        await self._unstalled()
                        await ws.send_str(json.dumps({
                            "type": "feature_flags",
                            "data": wire.server_features(self.max_upload_size)}))
                    first = False
                elif msg.type == WSMsgType.BINARY:
                    first = False
        finally:
            self._open_ws.pop(id(ws), None)
            mine = self._sockets.get(sid) is ws
            stale_pop = (self.faults.stale_close_unregisters and not ws.get(REJECTED)
                         and not ws.get(CLOSED_BY_SERVER))
            if mine or stale_pop:
                self._sockets.pop(sid, None)
                self._socket_flags.pop(sid, None)
            self._log({
                "time": time.time(), "kind": "ws_close", "method": "GET",
                "path": request.path, "query": dict(request.query), "status": ws.close_code,
                "client_id": sid, "prompt_id": None,
                "unregistered_other": bool(stale_pop and not mine and sid in self._sockets)})
        return ws

    # ------------------------------------------------------------------ queue/history

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._running.queue_item()] if self._running is not None else []
        pending = [job.queue_item() for job in self._pending()]
        return _json(copy.deepcopy({"queue_running": running, "queue_pending": pending}))

    async def _post_queue(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("clear"):
            self._heap.clear()
            self._queue_updated()
        for prompt_id in data.get("delete", []) or []:
            self._dequeue(prompt_id)
        return _empty()

    def history_view(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        out: dict[str, Any] = {}
        for i, (key, value) in enumerate(self._history.items()):
            if i >= offset:
                out[key] = value
                if max_items is not None and len(out) >= max_items:
                    break
        return copy.deepcopy(out)

    async def _get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = request.query.get("offset")
        return _json(self.history_view(int(max_items) if max_items is not None else None,
                                       int(offset) if offset is not None else -1))

    async def _get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        request[LOG_KEY]["prompt_id"] = prompt_id
        if prompt_id in self._history:
            return _json({prompt_id: copy.deepcopy(self._history[prompt_id])})
        return _json({})

    async def _post_history(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("clear"):
            self._history.clear()
        for prompt_id in data.get("delete", []) or []:
            self._history.pop(prompt_id, None)
        return _empty()

    # ------------------------------------------------------------------ interrupt/free

    async def _interrupt(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        request[LOG_KEY]["prompt_id"] = prompt_id
        running = self._running
        if running is not None and (not prompt_id or running.prompt_id == prompt_id
                                    or self.faults.untargeted_interrupt):
            running.interrupt = True
        return _empty()

    async def _free(self, request: web.Request) -> web.Response:
        await request.json()
        return _empty()

    # ------------------------------------------------------------------ files

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" not in query:
            return _empty(404)
        status, file, kind, filename = files.view_target(
            self.dirs, query["filename"], query.get("type", "output"), query.get("subfolder"))
        request[LOG_KEY]["prompt_id"] = self._file_owner.get(
            (kind, query.get("subfolder", ""), filename))
        if status != 200 or file is None:
            return _empty(status)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if "preview" in query:
            body, ctype = await asyncio.to_thread(files.preview_bytes, file, query["preview"],
                                                  query.get("channel", ""))
            return web.Response(body=body, content_type=ctype, headers=disposition)
        channel = query.get("channel", "rgba")
        if channel in ("rgb", "a"):
            body = await asyncio.to_thread(files.channel_png, file, channel)
            return web.Response(body=body, content_type="image/png", headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml",
                            "text/javascript", "text/css"}:
            content_type = "application/octet-stream"  # never let /view render a page
        return web.FileResponse(file, headers={
            "X-Content-Type-Options": "nosniff", **disposition, "Content-Type": content_type})

    async def _upload(self, request: web.Request,
                      save: Callable[[bytes, Any, Path], None] | None = None) -> web.Response:
        post = await request.post()  # over client_max_size -> aiohttp's plain-text 413
        image = post.get("image")
        overwrite = post.get("overwrite")
        kind = post.get("type") or "input"
        base = self.dirs.by_type(str(kind))
        if base is None or kind not in ("input", "output", "temp"):
            raise ValueError(f"unknown upload type {kind!r}")  # real server: 500
        if not isinstance(image, web.FileField) or image.file is None:
            return _empty(400)
        filename = image.filename
        if not filename:
            return _empty(400)
        subfolder = str(post.get("subfolder", ""))
        data = image.file.read()
        target = files.upload_target(base, subfolder, filename, data,
                                     overwrite in ("true", "1"))
        if target is None:
            return _empty(400)
        path, filename, duplicate = target
        # the stored name: clients that name uploads per job can be traced in the log
        request[LOG_KEY]["upload_name"] = filename
        if not duplicate:
            if save is not None:
                save(data, post, path)
            else:
                path.write_bytes(data)
        return _json({"name": filename, "subfolder": subfolder, "type": str(kind)})

    async def _upload_image(self, request: web.Request) -> web.Response:
        return await self._upload(request)

    async def _upload_mask(self, request: web.Request) -> web.Response:
        dirs = self.dirs

        def save(data: bytes, post: Any, target: Path) -> None:
            ref = json.loads(post.get("original_ref"))
            name = str(ref["filename"])
            if name.startswith("/") or ".." in name:
                raise ValueError("bad original_ref")
            base = dirs.by_type(ref.get("type", "output"))
            if base is None:
                raise ValueError("bad original_ref type")
            if ref.get("subfolder"):
                base = base / ref["subfolder"]
            source = base / name
            if source.is_file():
                with Image.open(source) as original:
                    rgba = original.convert("RGBA")
                mask = Image.open(io.BytesIO(data)).convert("RGBA")
                rgba.putalpha(mask.getchannel("A"))
                rgba.save(target, compress_level=4)

        return await self._upload(request, save)

    # ------------------------------------------------------------------ info routes

    async def _system_stats(self, request: web.Request) -> web.Response:
        return _json(wire.system_stats(self.name))

    async def _features(self, request: web.Request) -> web.Response:
        return _json(wire.server_features(self.max_upload_size))

    async def _object_info(self, request: web.Request) -> web.Response:
        return _json({name: node.object_info(self.dirs) for name, node in NODES.items()})

    async def _object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        node = NODES.get(name)
        return _json({name: node.object_info(self.dirs)} if node is not None else {})

    async def _embeddings(self, request: web.Request) -> web.Response:
        return _json([])

    async def _models(self, request: web.Request) -> web.Response:
        return _json(wire.MODEL_FOLDERS)

    async def _models_folder(self, request: web.Request) -> web.Response:
        if request.match_info["folder"] not in wire.MODEL_FOLDERS:
            return _empty(404)
        return _json([])

    # ------------------------------------------------------------------ jobs API

    async def _jobs(self, request: web.Request) -> web.Response:
        jobs = jobs_api.all_jobs(self._running, self._pending(), self._history)
        status, body = jobs_api.list_jobs(jobs, request.query)
        return _json(body, status)

    async def _job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        request[LOG_KEY]["prompt_id"] = job_id
        job = jobs_api.find_job(job_id, self._running, self._pending(), self._history)
        return _json(job) if job is not None else _json({"error": "Job not found"}, 404)

    async def _job_cancel(self, request: web.Request) -> web.Response:
        """Running: interrupt (lands at the next node); pending: dequeue; else false."""
        job_id = request.match_info["job_id"]
        request[LOG_KEY]["prompt_id"] = job_id
        running = self._running
        if running is not None and running.prompt_id == job_id:
            running.interrupt = True
            return _json({"cancelled": True})
        return _json({"cancelled": self._dequeue(job_id)})

    # ------------------------------------------------------------------ introspection

    def history(self) -> dict[str, Any]:
        """A copy of the history (what ``GET /history`` would answer)."""
        return self.history_view()

    @property
    def running_prompt_id(self) -> str | None:
        return self._running.prompt_id if self._running is not None else None

    @property
    def started(self) -> bool:
        """Listening (between ``start`` and ``stop``)."""
        return self._runner is not None

    @property
    def running_node(self) -> str | None:
        """The node the running job is executing (None when idle or between nodes)."""
        return self._running.current_node if self._running is not None else None

    def connected_clients(self) -> list[str]:
        """The client ids that currently receive events (registered sockets)."""
        return list(self._sockets)
