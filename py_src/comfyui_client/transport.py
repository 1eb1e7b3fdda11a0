"""The one seam between the client's logic and its environment.

Everything the client needs from the outside world is listed here as a protocol: an HTTP
request, a WebSocket, a clock, sleep, randomness, and a small key/value store (the page's
``sessionStorage``). ``_browser.py`` implements it with the browser's own ``fetch`` and
``WebSocket`` (the only module that imports ``js``/``pyodide``); tests and scripts can pass any
other implementation. The logic receives a ``Transport`` as a parameter and never imports one
(the pattern of micropip's ``_compat`` layer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .protocol.requests import HttpRequest
from .protocol.responses import answer_matches


@dataclass(frozen=True)
class HttpResponse:
    """What came back. ``body`` is bytes for ``expect`` json/bytes/none; for ``blob`` it is an
    opaque handle the environment understands (a browser ``Blob``) and ``size`` its length."""

    status: int
    headers: dict[str, str]
    body: Any = b""
    size: int = 0
    url: str = ""


@dataclass
class SocketHandlers:
    """Callbacks a socket drives. ``on_binary`` receives an environment buffer object and
    must decode it through ``Socket.read_prefix``/``Socket.view`` so large payloads never get
    copied into Python unless asked."""

    on_open: Callable[[], None]
    on_text: Callable[[str], None]
    on_binary: Callable[[Any], None]
    on_close: Callable[[int, str], None]


class Socket(Protocol):
    """An open (or opening) WebSocket."""

    url: str

    def send_text(self, text: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close and wait until the environment reports the socket closed."""
        ...

    @property
    def ready_state(self) -> str:
        """``connecting`` | ``open`` | ``closing`` | ``closed``."""
        ...


class Transport(Protocol):
    """Every primitive the client uses. Implementations must not raise on HTTP error
    statuses (the protocol layer reads them); network failures raise ``OSError``-like
    ``TransportError``."""

    async def request(
        self, base: str, req: HttpRequest, *, extra_headers: dict[str, str], timeout: float
    ) -> HttpResponse: ...

    def open_socket(self, url: str, handlers: SocketHandlers) -> Socket: ...

    def buffer_prefix(self, buf: Any, n: int) -> bytes:
        """The first ``n`` bytes of a binary frame, as Python bytes."""
        ...

    def buffer_length(self, buf: Any) -> int: ...

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall_time(self) -> float:
        """Epoch seconds (for audit records)."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]: ...

    def random(self) -> float: ...

    def storage_get(self, key: str) -> str | None: ...

    def storage_set(self, key: str, value: str) -> None: ...

    def page_origin(self) -> str | None: ...


class TransportError(Exception):
    """The request never produced an HTTP response (refused, DNS, CORS, aborted, timeout).

    ``kind`` is ``network`` | ``timeout`` | ``cors``; browsers report a CORS refusal and a
    refused connection identically, so ``cors`` is only used when the environment can tell.
    """

    def __init__(self, message: str, *, kind: str = "network") -> None:
        super().__init__(message)
        self.kind = kind


async def request_in_turn(
    env: Any, base: str, first: HttpRequest, second: HttpRequest, *, expect: dict[str, Any],
    extra_headers: dict[str, str], timeouts: tuple[float, float],
) -> tuple[HttpResponse, HttpResponse | TransportError | None]:
    """``first``, then ``second`` only if ``first`` answered a JSON object with every field of
    ``expect``, one after the other through ``env.request``: a ``request_pair`` for an
    environment that cannot chain them without a Python step between (the host; the page
    without comfyui.js). ``second`` comes back as its answer, its ``TransportError``, or
    None when it was held back; no answer to ``first`` raises."""
    resp = await env.request(base, first, extra_headers=extra_headers, timeout=timeouts[0])
    if not answer_matches(resp.status, resp.body, expect):
        return resp, None
    try:
        return resp, await env.request(base, second, extra_headers=extra_headers,
                                       timeout=timeouts[1])
    except TransportError as exc:
        return resp, exc


def retrieve_failure(task: asyncio.Future) -> None:
    """A done callback for a task nobody may await (an early download, an armed request of
    a job that ended otherwise): its failure is not reported as an unretrieved exception."""
    if not task.cancelled():
        task.exception()


@dataclass
class MemoryStorage:
    """A dict-backed stand-in for ``sessionStorage`` (tests, scripts)."""

    data: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value
