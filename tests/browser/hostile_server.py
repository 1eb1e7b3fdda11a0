"""A hostile ComfyUI look-alike: it replays the recorded real traffic, but every free-text
string it sends (version, device names, file names, subfolders, node ids, node types,
exception messages, validation errors) is replaced by markup that would run script if a page
ever parsed it as HTML.

Used by the demo's injection test: the page must show these strings as text, and nothing a
server sends may execute. Bodies and WS message sequences come from
``tests/data/comfyui-traffic`` (``invert_success``, ``execution_error``, ``node_errors_400``,
``cors_enabled``), with the client's own ``prompt_id`` and client id put back in (and an
upload's stored name and subfolder are the ones sent, as ComfyUI answers a new file); only
the strings are poisoned, so the protocol is what a real ComfyUI 0.33 speaks.

The job's outcome is chosen by the workflow: a SaveImage ``filename_prefix`` of ``"fail"``
replays the execution error, ``"invalid"`` the 400 with ``node_errors``, anything else the
successful invert (its ``/view`` answers a real PNG).
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import threading
from typing import Any

from aiohttp import WSMsgType, web

import recordings

# The page sets window.__pwned if any of these is ever parsed as HTML and run.
PAYLOAD = '<img src=x onerror="window.__pwned=(window.__pwned||0)+1">'
SCRIPT = "<script>window.__pwned=(window.__pwned||0)+1</script>"

# Keys whose values are protocol structure, not text a server makes up: left alone so the
# client can follow the job (a real hostile server could poison these too; the client then
# fails the job with a typed error, which the protocol tests cover).
_STRUCTURAL = {"type", "prompt_id", "sid", "state", "status_str", "content_type", "os"}


def poison(value: Any, key: str | None = None) -> Any:
    """Every string leaf not under a structural key -> markup payload."""
    if isinstance(value, dict):
        return {k: poison(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [poison(v, key) for v in value]
    if isinstance(value, str) and key not in _STRUCTURAL:
        return PAYLOAD if len(value) % 2 else SCRIPT
    return value


def _http_body(scenario: str, method: str, path: str) -> Any:
    for e in recordings.http(scenario, method=method):
        if e["request"]["path"].split("?")[0] == path and "json" in e["response"]["body"]:
            return copy.deepcopy(e["response"]["body"]["json"])
    raise LookupError(f"no recorded {method} {path} in {scenario}")


def _swap_ids(value: Any, old: str, new: str) -> Any:
    return json.loads(json.dumps(value).replace(old, new))


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


class HostileServer:
    """``with HostileServer() as srv: srv.url`` — one instance in a background thread."""

    def __init__(self) -> None:
        self.url = ""
        self.history: dict[str, Any] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self._png = _png()
        self.system_stats = poison(_http_body("cors_enabled", "GET", "/system_stats"))

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> HostileServer:
        self._thread.start()
        if not self._ready.wait(20):
            raise TimeoutError("hostile server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.run_until_complete(self._start())
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._cors])
        r = app.router
        for prefix in ("", "/api"):
            r.add_get(prefix + "/system_stats", self._json(lambda: self.system_stats))
            r.add_get(prefix + "/features", self._json(
                lambda: _http_body("queue_history_shapes", "GET", "/features")))
            r.add_get(prefix + "/prompt", self._json(lambda: {"exec_info": {"queue_remaining": 0}}))
            r.add_get(prefix + "/queue", self._json(lambda: {"queue_running": [],
                                                             "queue_pending": []}))
            r.add_post(prefix + "/prompt", self._submit)
            r.add_post(prefix + "/upload/image", self._upload)
            r.add_get(prefix + "/history/{pid}", self._history)
            r.add_get(prefix + "/view", self._view)
            r.add_post(prefix + "/interrupt", self._json(lambda: None))
            r.add_get(prefix + "/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        for ws in list(self.sockets.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- routes ----------------------------------------------------------------------
    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "OPTIONS":
            resp: web.StreamResponse = web.Response()
        else:
            resp = await handler(request)
        resp.headers["Access-Control-Allow-Origin"] = "*"
        resp.headers["Access-Control-Allow-Methods"] = "POST, GET, DELETE, PUT, OPTIONS, PATCH"
        resp.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        return resp

    @staticmethod
    def _json(make: Any) -> Any:
        async def handler(_request: web.Request) -> web.Response:
            return web.json_response(make())
        return handler

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        body = poison(_http_body("invert_success", "POST", "/upload/image"))
        # the stored name and subfolder are the ones sent, as ComfyUI answers a new file:
        # structure the client checks before it submits a prompt reading the file
        image = form.get("image")
        body["name"] = getattr(image, "filename", None) or body["name"]
        body["subfolder"] = str(form.get("subfolder") or "")
        body["type"] = "input"
        return web.json_response(body)

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        pid, sid, prompt = body["prompt_id"], body.get("client_id", ""), body["prompt"]
        prefixes = {n.get("inputs", {}).get("filename_prefix") for n in prompt.values()}
        if "invalid" in prefixes:
            return web.json_response(poison(_http_body("node_errors_400", "POST", "/prompt")),
                                     status=400)
        scenario = "execution_error" if "fail" in prefixes else "invert_success"
        asyncio.get_running_loop().create_task(self._play(scenario, pid, sid))
        return web.json_response({"prompt_id": pid, "number": 0, "node_errors": {}})

    async def _play(self, scenario: str, pid: str, sid: str) -> None:
        old = recordings.load(scenario)["meta"].get("prompt_id") or next(
            m["data"]["prompt_id"] for m in recordings.ws_json(scenario)
            if "prompt_id" in m.get("data", {}))
        ws = self.sockets.get(sid)
        for msg in recordings.ws_json(scenario)[1:]:  # [0] is the connect-time status
            msg = poison(_swap_ids(msg, old, pid))
            if ws is not None and not ws.closed:
                await ws.send_str(json.dumps(msg))
            await asyncio.sleep(0.005)
        entry = _http_body(scenario, "GET", f"/history/{old}")
        self.history[pid] = poison(_swap_ids(entry, old, pid))

    async def _history(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        return web.json_response(self.history.get(pid, {}))

    async def _view(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._png, content_type="image/png")

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        sid = request.query.get("clientId", "")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets[sid] = ws
        await ws.send_str(json.dumps({"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}}))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                continue  # feature_flags from the client: this server stays on legacy frames
        if self.sockets.get(sid) is ws:
            del self.sockets[sid]
        return ws
