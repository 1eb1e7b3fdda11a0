"""The host twin of ``_browser.py``: ``Transport`` over aiohttp, for CPython tests and scripts.

Not shipped in the page wheel (``build.py`` leaves it out) and never imported by the rest of
the package: logic receives a transport, it does not pick one. With it the whole client —
lock, reconnects, job lifecycle — runs in plain CPython against the dev server or a real
ComfyUI, in milliseconds and without a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

import aiohttp

from .protocol.requests import HttpRequest
from .transport import HttpResponse, MemoryStorage, SocketHandlers, TransportError


class HostSocket:
    def __init__(self, session: aiohttp.ClientSession, url: str, handlers: SocketHandlers):
        self.url = url
        self._session = session
        self._handlers = handlers
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._state = "connecting"
        self._sends: set[asyncio.Future] = set()
        self._task = asyncio.ensure_future(self._run())

    @property
    def ready_state(self) -> str:
        return self._state

    async def _run(self) -> None:
        code, reason = 1006, "connection failed"
        try:
            self._ws = await self._session.ws_connect(self.url, autoping=True)
            self._state = "open"
            self._handlers.on_open()
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._handlers.on_text(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._handlers.on_binary(msg.data)
                else:
                    break
            code = self._ws.close_code or 1006
            reason = "closed"
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc)
        finally:
            self._state = "closed"
        self._handlers.on_close(int(code), reason)

    def send_text(self, text: str) -> None:
        if self._ws is not None and self._state == "open":
            # keep a reference until sent: a bare task may be garbage-collected mid-flight
            task = asyncio.ensure_future(self._ws.send_str(text))
            self._sends.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future) -> None:
        self._sends.discard(task)
        if not task.cancelled():
            task.exception()  # a send racing a close is not an error worth reporting

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._state = "closing" if self._state == "open" else self._state
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close(code=code, message=reason.encode())
        else:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 5.0)


class HostTransport:
    """``Transport`` for CPython. Use as ``async with HostTransport() as env``."""

    def __init__(self, *, origin: str | None = None) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.storage = MemoryStorage()
        self.origin = origin

    async def __aenter__(self) -> HostTransport:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.session is not None:
            await self.session.close()

    async def request(
        self, base: str, req: HttpRequest, *, extra_headers: dict[str, str], timeout: float
    ) -> HttpResponse:
        assert self.session is not None, "use HostTransport as an async context manager"
        headers = dict(req.headers)
        headers.update(extra_headers)
        if self.origin:
            headers["Origin"] = self.origin
        data: Any = None
        if req.json is not None:
            headers.setdefault("Content-Type", "application/json")
            data = json.dumps(req.json)
        elif req.form is not None:
            form = aiohttp.FormData()
            for name, value in req.form.fields:
                form.add_field(name, str(value))
            form.add_field(req.form.file_field, bytes(req.form.file),
                           filename=req.form.filename, content_type=req.form.content_type)
            data = form
        url = req.url(base)
        try:
            async with self.session.request(
                req.method, url, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                body = await resp.read()
                hdrs = {k.lower(): v for k, v in resp.headers.items()}
                return HttpResponse(resp.status, hdrs, body, len(body), url)
        except TimeoutError:
            raise TransportError(f"no answer within {timeout:g}s", kind="timeout") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(str(exc) or type(exc).__name__, kind="network") from None

    def open_socket(self, url: str, handlers: SocketHandlers) -> HostSocket:
        assert self.session is not None, "use HostTransport as an async context manager"
        return HostSocket(self.session, url, handlers)

    def buffer_prefix(self, buf: Any, n: int) -> bytes:
        return bytes(memoryview(buf)[:n])

    def buffer_length(self, buf: Any) -> int:
        return len(buf)

    def now(self) -> float:
        return time.monotonic()

    def wall_time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> Any:
        return asyncio.sleep(seconds)

    def random(self) -> float:
        return random.random()

    def storage_get(self, key: str) -> str | None:
        return self.storage.get(key)

    def storage_set(self, key: str, value: str) -> None:
        self.storage.set(key, value)

    def page_origin(self) -> str | None:
        return self.origin
