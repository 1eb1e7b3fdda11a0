"""The browser seam: the ONLY module that imports ``js`` / ``pyodide``.

It implements ``transport.Transport`` with the page's own ``fetch``, ``FormData``,
``WebSocket``, timers and ``sessionStorage``, and exposes the client to ``web/comfyui.js``
through one object, ``Bridge``, whose entry point ``start(method, args, resolve)`` always
answers a plain JS object ``{ok, value}`` / ``{ok: false, error}`` (and ``call_sync`` the same,
at once, for the two synchronous reports): page code never receives a PyProxy, so it has
nothing to destroy and nothing leaks.

The per-call hot paths run on the JS side through comfyui.js's helpers (``_PageHelpers``):
each crossing between Python and JS costs microseconds, and a browser call that starts async
work costs ~0.5 ms more when made under Python's frames, so an HTTP exchange, a WebSocket
listener or a callback payload is one crossing with plain values.

FFI habits (Pyodide's docs): handlers JS keeps are ``create_proxy`` objects we keep and
``destroy()`` after the socket closed (never from inside their own call), their listeners
removed first; JS ``null`` arrives as ``jsnull``; values handed to JS are JSON text, plain
values, or ``to_js`` with ``dict_converter=Object.fromEntries`` so JS gets plain objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import deque
from typing import Any

import js  # type: ignore[import-not-found]
from pyodide.ffi import (  # type: ignore[import-not-found]
    JsException,
    JsProxy,
    create_proxy,
    jsnull,
    to_js,
)

from .errors import ComfyClientError, InvalidInputError
from .protocol.requests import HttpRequest
from .transport import HttpResponse, SocketHandlers, TransportError, request_in_turn

_WS_STATES = ("connecting", "open", "closing", "closed")


class ProxyLedger:
    """Counts what this module lends to JavaScript: ``create_proxy`` objects alive (created
    minus destroyed) and event listeners attached to WebSockets.

    Why: a PyProxy handed to JS lives until ``destroy()`` is called (Pyodide's
    FinalizationRegistry is only a fallback, and a listener still attached keeps it
    reachable), so a socket whose handlers were not removed and destroyed leaks a little
    Python memory per reconnect, for the page's lifetime. Pyodide's own test suite checks
    leaks the same way, by counting before and after. Every proxy of this module goes
    through ``proxy``/``destroy``; ``debugWebSocketLock()`` reports the counts, and the
    fault-matrix test asserts they return to their baseline after each cell.
    """

    def __init__(self) -> None:
        self.created = 0
        self.destroyed = 0
        self.listeners = 0

    def proxy(self, fn: Any) -> Any:
        made = create_proxy(fn)
        self.created += 1
        return made

    def destroy(self, proxy: Any) -> None:
        proxy.destroy()
        self.destroyed += 1

    def counts(self) -> dict[str, int]:
        return {"liveProxies": self.created - self.destroyed, "wsListeners": self.listeners,
                "proxiesCreated": self.created, "proxiesDestroyed": self.destroyed}


LEDGER = ProxyLedger()


def to_plain_js(value: Any) -> Any:
    """Python data -> plain JS data (Objects, Arrays), leaving JS handles (Blobs) as they are."""
    return to_js(value, dict_converter=js.Object.fromEntries, create_pyproxies=False)


def from_js(value: Any) -> Any:
    """JS data -> Python data. Plain objects/arrays become dicts/lists; functions, Blobs and
    Files stay JS handles; ``null``/``undefined`` become None."""
    if value is None or value is jsnull:
        return None
    if isinstance(value, JsProxy):
        tag = js.Object.prototype.toString.call(value)
        if tag in ("[object Object]", "[object Array]"):
            return value.to_py(default_converter=_keep_handles)
        return value
    return value


# Marks where a JS handle (a Blob) sits in a payload sent as JSON. Random per page, so no
# server-sent object can pose as one; drawn again by create_bridge (see _fresh_page).
_HANDLE_KEY = ""


def _fresh_page() -> None:
    """What must differ per page load, drawn again when the page creates its bridge: a
    page restored from comfyui.js's boot cache (a memory snapshot of this interpreter)
    would otherwise share them with every page restored from the same snapshot, e.g. the
    reconnect jitter of ``random.random()``, whose whole point is to differ between tabs."""
    global _HANDLE_KEY
    _HANDLE_KEY = "\x00handle:" + os.urandom(8).hex()
    random.seed(os.urandom(32))


_fresh_page()


class _PageHelpers:
    """The JS side of the hot paths, from ``web/comfyui.js`` (``create_bridge(helpers)``):
    ``revive(text, key, handles)`` (JSON.parse putting Blobs back), ``deliver(fn, text[,
    key, handles])`` (parse and call a page callback in JS, catching what it throws),
    ``listen(ws, onOpen, onTexts, onBinary, onClose)`` (WebSocket listeners handing over
    the text messages of each browser task as one batch, and binary ones as they come),
    ``request(url, initJson, body, controller, expect, timeoutMs)`` (one HTTP exchange
    started from a plain JS stack, with its deadline), ``requestPair(...)`` (two chained,
    the second sent only if the first answered what Python expects), ``armOnEnd(...)`` /
    ``disarm(promptId)`` (requests sent the moment a job's end marker arrives, before
    Python hears of it), ``digest(blob)`` (a
    Blob's sha256 hex, remembered per Blob), ``wantProgress(promptId, on)`` (whose progress
    messages wake Python by themselves), ``log(text)``
    (console output), ``store(key, value)`` (a sessionStorage write once Python's call
    returned) and ``progressSender(fn, jobId, promptId, server, totalNodes)``
    (a function building a progress callback's payload in JS from the values that move).
    Without them (Pyodide driven directly, without comfyui.js) this module does the same
    through plain FFI calls, only slower."""

    revive: Any = None
    deliver: Any = None
    listen: Any = None
    request: Any = None
    requestPair: Any = None  # the JS names
    armOnEnd: Any = None
    disarm: Any = None
    digest: Any = None
    wantProgress: Any = None
    log: Any = None
    store: Any = None
    progressSender: Any = None
    soon: Any = None


_JS = _PageHelpers()

# > 0 while a page callback runs (called from Python): a bridge call it makes must not
# run its Python at once, inside the Python code that called the callback
_in_page_code = 0

# the handles met by the encoder during one ``_encode`` call (the page has one thread)
_met: list[Any] = []


def _mark_handle(obj: Any) -> Any:
    if isinstance(obj, JsProxy) and _JS.revive is not None:
        _met.append(obj)
        return {_HANDLE_KEY: len(_met) - 1}
    raise TypeError(type(obj).__name__)


def _make_encoder() -> Any:
    """Compact, strict JSON text (NaN refused), Blobs marked by ``_mark_handle``. The C
    encoder is built once instead of per call as ``json.dumps`` does: 3 µs instead of 6 µs
    for a progress payload, which is sent per WebSocket message. Its constructor is not a
    public API, so any surprise falls back to a ``JSONEncoder``."""
    try:
        from json.encoder import c_make_encoder, encode_basestring_ascii

        encode_c = c_make_encoder(None, _mark_handle, encode_basestring_ascii, None, ":", ",",
                                  False, False, False)
        if "".join(encode_c({"a": [1, 2.5, None, "é"]}, 0)) != '{"a":[1,2.5,null,"\\u00e9"]}':
            raise ValueError("unexpected output")
        return lambda value: "".join(encode_c(value, 0))
    except Exception:
        return json.JSONEncoder(allow_nan=False, separators=(",", ":"),
                                default=_mark_handle).encode


_encode_json = _make_encoder()


def _encode(payload: Any) -> tuple[str, list[Any]] | None:
    """``payload`` as JSON text plus the JS handles it holds, or None if JSON cannot carry
    it (NaN, a non-string key, a foreign object...)."""
    _met.clear()
    try:
        text = _encode_json(payload)
    except (TypeError, ValueError, RecursionError):
        return None
    finally:
        handles = _met[:]
        _met.clear()
    return text, handles


def _plain_for_callback(payload: Any) -> Any:
    """Plain JS data for a bridge answer, sent as one JSON string the browser parses: ~5 µs
    for a progress message, where ``to_js`` walks the dict through the FFI for ~30 µs (and
    milliseconds for a job's result with its history). JS handles in it (Blobs) travel
    beside the text and are put back by comfyui.js's ``revive``. ``None`` arrives as
    ``null`` (``to_js`` gives ``undefined``); page code reads both alike with ``??`` and
    ``==``. Anything JSON cannot carry falls back to ``to_js``."""
    encoded = _encode(payload)
    if encoded is None:
        return to_plain_js(payload)
    text, handles = encoded
    if not handles:
        return js.JSON.parse(text)
    return _JS.revive(text, _HANDLE_KEY, to_js(handles))


def _keep_handles(value: Any, _convert: Any, _cache: Any) -> Any:
    # Called by to_py for JS objects it does not convert by itself (Blob, File, functions...)
    return value


def is_blob(value: Any) -> bool:
    return isinstance(value, JsProxy) and bool(js.Blob) and js.Blob.prototype.isPrototypeOf(value)


class BrowserSocket:
    """A browser ``WebSocket`` with proxies we own and release on close."""

    def __init__(self, url: str, handlers: SocketHandlers) -> None:
        self.url = url
        self._handlers = handlers
        self._closed = asyncio.get_event_loop().create_future()
        self._ws = js.WebSocket.new(url)
        self._ws.binaryType = "arraybuffer"
        self._listening: Any = None  # comfyui.js's AbortController for its listeners
        if _JS.listen is not None:
            self._proxies = {
                "open": LEDGER.proxy(self._on_open),
                "texts": LEDGER.proxy(self._on_texts),
                "binary": LEDGER.proxy(handlers.on_binary),
                "close": LEDGER.proxy(self._on_close_code),
            }
            px = self._proxies
            self._listening = _JS.listen(self._ws, px["open"], px["texts"], px["binary"],
                                         px["close"])
            LEDGER.listeners += 3
        else:
            self._proxies = {
                "open": LEDGER.proxy(self._on_open),
                "message": LEDGER.proxy(self._on_message),
                "close": LEDGER.proxy(self._on_close),
            }
            for name, proxy in self._proxies.items():
                self._ws.addEventListener(name, proxy)
                LEDGER.listeners += 1

    @property
    def ready_state(self) -> str:
        if self._ws is None:
            return "closed"
        return _WS_STATES[int(self._ws.readyState)]

    def send_text(self, text: str) -> None:
        if self._ws is not None and int(self._ws.readyState) == 1:
            self._ws.send(text)

    def _on_open(self, _event: Any = None) -> None:
        self._handlers.on_open()

    def _on_texts(self, batch: Any) -> None:
        """The text messages comfyui.js gathered in one browser task, in order: one call
        into Python for all of them instead of one each."""
        on_text = self._handlers.on_text
        for text in batch.to_py():
            on_text(text)

    def _on_message(self, event: Any) -> None:
        data = event.data
        if isinstance(data, str):
            self._handlers.on_text(data)
        else:
            self._handlers.on_binary(data)

    def _on_close(self, event: Any) -> None:
        self._on_close_code(event.code, event.reason)

    def _on_close_code(self, code: Any, reason: Any) -> None:
        # (an "error" event always comes before "close"; the close carries the outcome)
        code, reason = int(code), str(reason or "")
        self._release()
        if not self._closed.done():
            self._closed.set_result((code, reason))
        self._handlers.on_close(code, reason)

    def _release(self) -> None:
        ws, proxies, listening = self._ws, self._proxies, self._listening
        if ws is None:
            return
        self._ws, self._proxies, self._listening = None, {}, None
        if listening is not None:
            listening.abort()
            LEDGER.listeners -= 3
        else:
            for name, proxy in proxies.items():
                ws.removeEventListener(name, proxy)
                LEDGER.listeners -= 1

        def destroy() -> None:
            for proxy in proxies.values():
                LEDGER.destroy(proxy)

        # Not from inside the listener's own call: destroy on the next loop turn.
        asyncio.get_event_loop().call_soon(destroy)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._ws is not None and int(self._ws.readyState) < 2:
            self._ws.close(code, reason)
        if self._ws is not None or not self._closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._closed), 5.0)
            except TimeoutError:
                # The browser never reported the close (network gone): stop listening anyway.
                self._release()
                if not self._closed.done():
                    self._closed.set_result((1006, "close timed out"))


class BrowserTransport:
    """``Transport`` over the page's ``fetch``/``WebSocket``/``sessionStorage``."""

    live_sockets = 0

    def __init__(self) -> None:
        self._stored: dict[str, str] = {}  # what storage_set wrote, read back first

    def resource_counts(self) -> dict[str, int]:
        """Proxies and WebSocket listeners this page's client holds (``ProxyLedger``)."""
        return LEDGER.counts()

    def _prepare(self, base: str, req: HttpRequest, extra_headers: dict[str, str]
                 ) -> tuple[str, dict[str, Any], Any]:
        """``(url, init, body)`` of one request: ``init`` is the fetch options but the body,
        the body as the browser sends it. With comfyui.js an upload's body is the Blob
        itself and ``init["form"]`` names its fields: the FormData is assembled in JS, not
        through one FFI call per part from here."""
        headers = dict(req.headers)
        headers.update(extra_headers)
        init: dict[str, Any] = {"method": req.method, "headers": headers}
        body: Any = None
        if req.json is not None:
            headers.setdefault("Content-Type", "application/json")
            body = json.dumps(req.json)
        elif req.form is not None:
            form = req.form
            if _JS.request is not None and is_blob(form.file):
                init["form"] = {"fields": [[k, str(v)] for k, v in form.fields],
                                "file": [form.file_field, form.filename]}
                body = form.file
            else:
                body = self._form_data(req)
        return req.url(base), init, body

    @staticmethod
    def _response(url: str, expect: str, status: Any, headers: Any, data: Any) -> HttpResponse:
        status, hdrs = int(status), json.loads(str(headers))
        if expect == "blob" and 200 <= status < 300:
            return HttpResponse(status, hdrs, data, int(data.size), url)
        if data is None or data is jsnull:
            return HttpResponse(status, hdrs, b"", 0, url)
        raw = data.to_bytes()
        return HttpResponse(status, hdrs, raw, len(raw), url)

    async def _failure(self, base: str, exc: JsException, timeout: float) -> TransportError:
        """What a rejected fetch means: a timeout, a refused origin or no answer at all."""
        if getattr(exc, "name", None) == "TimeoutError":
            return TransportError(f"no answer within {timeout:g}s", kind="timeout")
        # fetch rejects with the same TypeError for a refused connection and for a CORS
        # refusal; a second, opaque request tells them apart.
        if await self._answers_opaquely(base):
            return TransportError(
                "the server answered, but the browser did not let this page read the "
                "answer (no CORS headers for this origin)", kind="cors")
        return TransportError(str(exc), kind="network")

    async def request(
        self, base: str, req: HttpRequest, *, extra_headers: dict[str, str], timeout: float
    ) -> HttpResponse:
        url, init, body = self._prepare(base, req, extra_headers)
        controller = js.AbortController.new()
        expect = req.expect

        async def exchange() -> tuple[Any, Any, Any]:
            # without comfyui.js: the same exchange through plain FFI calls
            init_js = {**init, "signal": controller.signal}
            if body is not None:
                init_js["body"] = body
            resp = await _await_js(js.fetch(url, to_plain_js(init_js)))
            ok = 200 <= int(resp.status) < 300
            data = None
            if expect == "blob" and ok:
                data = await _await_js(resp.blob())
            elif expect != "none" or not ok:
                data = await _await_js(resp.arrayBuffer())
            return resp.status, js.JSON.stringify(js.Object.fromEntries(resp.headers)), data

        try:
            if _JS.request is not None:
                # comfyui.js runs fetch + body read in JS with the deadline: one await here,
                # no Python timer, no browser call under Python's frames (see its comment)
                out = await _await_js(_JS.request(url, json.dumps(init), body, controller,
                                                  expect, max(1, round(timeout * 1000))))
                return self._response(url, expect, out.status, out.headers, out.body)
            # one deadline for the answer and its body: one timer task per request
            return self._response(url, expect, *await asyncio.wait_for(exchange(), timeout))
        except TimeoutError:
            controller.abort()
            raise TransportError(f"no answer within {timeout:g}s", kind="timeout") from None
        except asyncio.CancelledError:
            controller.abort()  # nobody waits for the answer any more
            raise
        except JsException as exc:
            raise await self._failure(base, exc, timeout) from None

    async def request_pair(
        self, base: str, first: HttpRequest, second: HttpRequest, *, expect: dict[str, Any],
        extra_headers: dict[str, str], timeouts: tuple[float, float],
    ) -> tuple[HttpResponse, HttpResponse | TransportError | None]:
        """``first``, then ``second`` the moment ``first`` answers a JSON object with every
        field of ``expect``: comfyui.js's ``requestPair`` chains them in JS, so no Python
        step (and no wake-up of this task) lies between the two. Without comfyui.js they go
        one after the other from here. ``second`` comes back as its answer, its
        ``TransportError``, or None when it was held back."""
        if _JS.requestPair is None:
            return await request_in_turn(self, base, first, second, expect=expect,
                                         extra_headers=extra_headers, timeouts=timeouts)
        url1, init1, body1 = self._prepare(base, first, extra_headers)
        url2, init2, body2 = self._prepare(base, second, extra_headers)
        controllers = (js.AbortController.new(), js.AbortController.new())
        try:
            out = await _await_js(_JS.requestPair(
                url1, json.dumps(init1), body1, controllers[0], max(1, round(timeouts[0] * 1000)),
                url2, json.dumps(init2), body2,
                controllers[1], max(1, round(timeouts[1] * 1000)), json.dumps(expect)))
        except asyncio.CancelledError:
            for controller in controllers:
                controller.abort()
            raise
        except JsException as exc:
            raise await self._failure(base, exc, timeouts[0]) from None
        a = out.first
        resp = self._response(url1, first.expect, a.status, a.headers, a.body)
        b = out.second
        if b is None or b is jsnull:
            return resp, None
        failed = getattr(b, "failed", None)
        if failed is not None and failed is not jsnull:
            if str(failed) == "TimeoutError":
                return resp, TransportError(f"no answer within {timeouts[1]:g}s",
                                            kind="timeout")
            return resp, TransportError(str(b.message), kind="network")
        return resp, self._response(url2, second.expect, b.status, b.headers, b.body)

    def arm_on_end(self, prompt_id: str, base: str, req: HttpRequest, *,
                   extra_headers: dict[str, str], timeout: float) -> Any:
        """Have comfyui.js send ``req`` the moment ``prompt_id``'s end marker
        (``executing{node: null}``) reaches a socket listener, before Python hears of it.
        Returns an awaitable of the answer, of a ``TransportError``, or of None when it
        was disarmed before it went out; None without comfyui.js."""
        if _JS.armOnEnd is None:
            return None  # without comfyui.js nothing listens for the marker before Python
        url, init, body = self._prepare(base, req, extra_headers)
        controller = js.AbortController.new()
        fired = _JS.armOnEnd(prompt_id, url, json.dumps(init), body, controller, req.expect,
                             max(1, round(timeout * 1000)))

        async def answer() -> HttpResponse | TransportError | None:
            try:
                out = await _await_js(fired)
            except asyncio.CancelledError:
                controller.abort()
                raise
            if out is None or out is jsnull:
                return None
            failed = getattr(out, "failed", None)
            if failed is not None and failed is not jsnull:
                if str(failed) == "TimeoutError":
                    return TransportError(f"no answer within {timeout:g}s", kind="timeout")
                return TransportError(str(out.message), kind="network")
            return self._response(url, req.expect, out.status, out.headers, out.body)

        return answer()

    def disarm(self, prompt_id: str) -> None:
        """``prompt_id``'s armed requests that have not gone out never will."""
        if _JS.disarm is not None:
            _JS.disarm(prompt_id)

    async def content_digest(self, file: Any) -> str:
        """The sha256 (hex) of an upload's bytes, for its content name: comfyui.js hashes a
        Blob with ``crypto.subtle`` and remembers it per Blob, so its bytes never enter
        Python. Without it (no comfyui.js, or an insecure origin, which has no
        ``crypto.subtle``) the bytes are read and hashed here."""
        try:
            if _JS.digest is not None:
                hexdigest = await _await_js(_JS.digest(file))
                if hexdigest is not None and hexdigest is not jsnull:
                    return str(hexdigest)
            data = await _await_js(file.arrayBuffer())
        except JsException as exc:
            raise InvalidInputError(f"the file to upload could not be read ({exc})",
                                    hint="pick the file again") from None
        import hashlib

        return hashlib.sha256(data.to_bytes()).hexdigest()

    def want_progress(self, prompt_id: str, wanted: bool) -> None:
        """Whether someone listens to this job's progress. Progress messages of jobs nobody
        listens to wait in comfyui.js's batch for the next other message instead of waking
        Python by themselves (the latest per job and kind is kept)."""
        if _JS.wantProgress is not None:
            _JS.wantProgress(prompt_id, wanted)

    @staticmethod
    async def _answers_opaquely(base: str) -> bool:
        """Does anything answer HTTP at ``base``? A ``no-cors`` GET resolves (with an opaque
        response the page cannot read) from a server that is up but refuses this origin —
        ComfyUI without ``--enable-cors-header``, or a proxy's error page without CORS
        headers — and rejects when nothing answers. It reads nothing and sends no
        credentials, so it is safe to send to any configured server."""
        init = to_plain_js({"mode": "no-cors", "cache": "no-store", "credentials": "omit"})
        try:
            await asyncio.wait_for(_await_js(js.fetch(base.rstrip("/") + "/", init)), 3.0)
        except (TimeoutError, JsException):
            return False
        return True

    @staticmethod
    def _form_data(req: HttpRequest) -> Any:
        form = req.form
        fd = js.FormData.new()
        for name, value in form.fields:
            fd.append(name, str(value))
        file = form.file
        if is_blob(file):
            blob = file
        elif isinstance(file, (bytes, bytearray, memoryview)):
            u8 = to_js(bytes(file))
            blob = js.Blob.new(to_js([u8]), to_plain_js({"type": form.content_type}))
        else:
            raise InvalidInputError(
                f"cannot upload a {type(file).__name__}: pass a File, a Blob or bytes"
            )
        fd.append(form.file_field, blob, form.filename)
        return fd

    def open_socket(self, url: str, handlers: SocketHandlers) -> BrowserSocket:
        return BrowserSocket(url, handlers)

    def buffer_prefix(self, buf: Any, n: int) -> bytes:
        n = min(n, int(buf.byteLength))
        return js.Uint8Array.new(buf, 0, n).to_bytes()

    def buffer_length(self, buf: Any) -> int:
        return int(buf.byteLength)

    def buffer_view(self, buf: Any, offset: int) -> Any:
        """A JS view of the frame from ``offset`` on: no copy into Python."""
        return js.Uint8Array.new(buf, offset)

    # Emscripten's CLOCK_MONOTONIC is performance.now(); time.monotonic() reads it without
    # a JS call through the FFI (0.4 µs vs 2.6 µs). Both clocks are read per WS message:
    # the C functions themselves, no Python method around them.
    now = staticmethod(time.monotonic)
    wall_time = staticmethod(time.time)

    def sleep(self, seconds: float) -> Any:
        return asyncio.sleep(seconds)

    def random(self) -> float:
        return random.random()

    def storage_get(self, key: str) -> str | None:
        if key in self._stored:  # written by this page, maybe not in sessionStorage yet
            return self._stored[key]
        try:
            value = js.sessionStorage.getItem(key)
        except Exception:  # storage disabled (privacy mode, sandboxed iframe)
            return None
        return None if value is None or value is jsnull else str(value)

    def storage_set(self, key: str, value: str) -> None:
        """Best effort (quota, disabled storage: never fatal). With comfyui.js the write is
        made by ``store`` once Python's call returned, the last value per key: a
        sessionStorage call made under Python's frames cost ~0.25 ms, and the client
        saves its job map twice per job."""
        self._stored[key] = value
        if _JS.store is not None:
            _JS.store(key, value)
            return
        with contextlib.suppress(Exception):
            js.sessionStorage.setItem(key, value)

    _origin: str | None = None

    def page_origin(self) -> str | None:
        # read once: it cannot change for the page's life, and error hints ask for it often
        if self._origin is None:
            try:
                self._origin = str(js.location.origin)
            except Exception:
                return None
        return self._origin

    def log(self, text: str) -> None:
        """A line for the page's console (comfyui.js writes it once Python's call returned,
        where ``console.log`` is cheap)."""
        if _JS.log is not None:
            _JS.log(text)
        else:
            js.console.log(text)

    def make_blob(self, data: bytes, content_type: str) -> Any:
        return js.Blob.new(to_js([to_js(data)]), to_plain_js({"type": content_type}))

    def make_blob_from_view(self, view: Any, content_type: str) -> Any:
        """A Blob from a JS view of a preview frame: the image bytes stay in JS, never copied
        into the wasm heap (the Blob constructor copies inside JS only)."""
        return js.Blob.new(to_js([view]), to_plain_js({"type": content_type}))

    def progress_sender(self, fn: Any, job_id: str, prompt_id: str | None, server: str,
                        total_nodes: int | None) -> Any:
        """``send(event, state, progress, current_node, node_value, node_max)`` for one
        job's progress callback (see ``PoolClient._emit_progress``), or None without
        comfyui.js's helpers. The job's fixed values cross once, into a JS closure that
        builds ``jobs.progress_to_dict``'s object plus ``event`` from the moving ones: per
        message ~1 µs in the page, where the dict through ``call_js`` cost ~4 µs."""
        if _JS.progressSender is None or fn is None or fn is jsnull:
            return None
        send_js = _JS.progressSender(fn, job_id, prompt_id, server, total_nodes)

        def send(event: str, state: str, progress: float, current_node: str | None,
                 node_value: float | None, node_max: float | None) -> None:
            global _in_page_code
            _in_page_code += 1  # a bridge call the callback makes runs after it
            try:
                send_js(event, state, progress, current_node, node_value, node_max)
            finally:
                _in_page_code -= 1

        return send

    def call_js(self, fn: Any, payload: Any) -> None:
        """Invoke a page callback with plain JS data; a throwing callback never breaks a job.
        With comfyui.js's helpers the object is made in JS from one JSON string (JS handles
        beside it), so it never comes back into Python as a proxy."""
        global _in_page_code
        if fn is None or fn is jsnull:
            return
        _in_page_code += 1
        try:
            encoded = _encode(payload) if _JS.deliver is not None else None
            if encoded is None:
                fn(_plain_for_callback(payload))
            elif encoded[1]:
                _JS.deliver(fn, encoded[0], _HANDLE_KEY, to_js(encoded[1]))
            else:
                _JS.deliver(fn, encoded[0])
        except Exception as exc:  # JsException from page code
            js.console.warn(f"comfyui.js: a callback threw: {exc}")
        finally:
            _in_page_code -= 1


async def _await_js(promise: Any) -> Any:
    return await promise


class MicrotaskSoon:
    """``loop.call_soon`` for the page's asyncio loop that runs callbacks in a microtask.

    Why: Pyodide's WebLoop runs every ``call_soon`` callback in a browser task of its own
    (a MessageChannel message) through a callable made for it, and each await of a JS
    promise wakes its task that way. So every step of a job waited for a task turn after
    its answer came, and the Python that then ran found its code and data out of the CPU's
    caches (BENCHMARKS.md, step warmth: a step's Python took 3× its back-to-back time after
    a single turn). Queued here, the callbacks run in FIFO order from one persistent
    function, in a microtask right after the JS that scheduled them (a promise's
    resolution, a message listener), before the page's next task. Measured by
    ``python3 build.py bench``: a wake-up on a resolved promise ~27 µs instead of ~135 µs,
    and after a 3 ms wait 138-181 µs instead of 210-291 µs; ~0.35-0.55 ms per job over its
    five waits.

    A page must still get its turns: comfyui.js's ``soon`` queues a microtask only while the
    run of microtask-driven callbacks started less than 4 ms ago, then a task, so Python
    code that keeps scheduling (``await asyncio.sleep(0)`` in a loop) cannot freeze the page.

    Not for code that syncifies (``pyodide.ffi.run_sync``): the callbacks run from a plain
    proxy, not one allowed to suspend. comfyui.js's ``init({microtaskLoop: false})`` keeps
    Pyodide's own scheduling for a page whose own Python needs that.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, schedule: Any) -> None:
        self.loop = loop
        self._schedule = schedule
        self._queue: deque[asyncio.Handle] = deque()
        self._pending = False
        self._flush_js = LEDGER.proxy(self.flush)
        self._enter = [getattr(loop, name) for name in
                       ("_install_running_loop", "_install_asyncgen_hooks")
                       if callable(getattr(loop, name, None))]

    def install(self) -> None:
        """Route the loop's ``call_soon`` (and so its futures' and tasks' wake-ups) here."""
        self.loop.call_soon = self.call_soon  # type: ignore[method-assign]

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self.loop, context=context)
        self._queue.append(handle)
        if not self._pending:
            self._pending = True
            self._schedule(self._flush_js)
        return handle

    def flush(self) -> None:
        """Run the callbacks queued before this call, oldest first; those they queue run in
        the next flush, so one flush never runs unboundedly."""
        self._pending = False
        for enter in self._enter:  # as WebLoop does before each callback
            enter()
        queue = self._queue
        try:
            for _ in range(len(queue)):
                handle = queue.popleft()
                if not handle._cancelled:
                    handle._run()  # catches Exception and reports it to the loop's handler
        finally:
            if queue and not self._pending:  # a BaseException went through: keep the rest
                self._pending = True
                self._schedule(self._flush_js)


class Bridge:
    """The object ``web/comfyui.js`` talks to: ``start(method, args, resolve)`` (or the
    awaitable ``call(method, args)``), and ``call_sync(method, args)`` for the two reports
    answered at once; the answer is always ``{ok, value}`` or ``{ok: false, error}`` as
    plain JS data."""

    def __init__(self) -> None:
        from .api import PageApi

        self.transport = BrowserTransport()
        self.api = PageApi(self.transport, convert_in=from_js, is_blob=is_blob)
        self._running: set[asyncio.Task] = set()

    def start(self, method: str, args: Any, resolve: Any) -> None:
        """Run ``call`` as a task that hands its answer to ``resolve`` (comfyui.js's
        promise) in its own last step. Why not return the coroutine to JS: Pyodide's
        promise for it settles from the task's done callback, one more turn of the event
        loop later (~0.3-1 ms a call, measured by ``python3 build.py bench``)."""
        coro = self._answer(method, args, resolve)
        loop = asyncio.get_event_loop()
        if _in_page_code or asyncio.current_task(loop) is not None:
            # called back from page code that Python itself is calling (a progress
            # callback...): run later, never inside the Python code that is mid-way
            task = loop.create_task(coro)
        else:
            # the common case, a call from the page's own code: start at once, up to the
            # first await (the request), instead of one loop turn later (~0.3 ms a call)
            task = asyncio.Task(coro, loop=loop, eager_start=True)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, method: str, args: Any, resolve: Any) -> None:
        try:
            answer = await self.call(method, args)
        except asyncio.CancelledError:  # the loop shut down under the call: still answer
            resolve(to_plain_js({"ok": False, "error": {
                "name": "ComfyUIError", "code": "cancelled",
                "message": f"{method} was cancelled before it finished"}}))
            raise
        resolve(answer)

    async def call(self, method: str, args: Any) -> Any:
        try:
            value = await self.api.exported(method)(*_args_in(args))
            return _plain_for_callback({"ok": True, "value": value})
        except Exception as exc:
            return _error_answer(method, exc)

    def call_sync(self, method: str, args: Any) -> Any:
        """One of ``api.SYNC_EXPORTS`` (the two reports the old console session calls
        without ``await``), answered at once with the same plain JS ``{ok, value}`` /
        ``{ok: false, error}`` as ``call``, never a PyProxy. Why not ``start``: its answer
        comes through a promise, and the console then shows ``Promise {<pending>}``."""
        try:
            value = self.api.exported_sync(method)(*_args_in(args))
            return _plain_for_callback({"ok": True, "value": value})
        except Exception as exc:
            return _error_answer(method, exc)


def _args_in(args: Any) -> list[Any]:
    """A call's JS arguments as Python values."""
    return [from_js(a) for a in args] if args is not None else []


def _error_answer(method: str, exc: Exception) -> Any:
    """``{ok: false, error}`` for a failed call: a typed error as it is, a bug of ours still
    as a typed, plain error for the page."""
    if isinstance(exc, ComfyClientError):
        return _plain_for_callback({"ok": False, "error": exc.to_dict()})
    js.console.error(f"comfyui.js internal error in {method}: {exc!r}")
    return to_plain_js(
        {
            "ok": False,
            "error": {
                "name": "InternalError",
                "code": "internal_error",
                "message": f"internal error in {method}: {type(exc).__name__}: {exc}",
            },
        }
    )


_soon: MicrotaskSoon | None = None


def create_bridge(helpers: Any = None, microtask_loop: bool = True) -> Bridge:
    """The page's bridge. ``helpers`` is comfyui.js's object of JS hot paths (see
    ``_PageHelpers``); without it everything goes through plain FFI calls. With its
    ``soon`` and ``microtask_loop``, the loop's callbacks run in microtasks
    (``MicrotaskSoon``)."""
    global _soon
    _fresh_page()
    if helpers is not None and helpers is not jsnull:
        for name in ("revive", "deliver", "listen", "request", "requestPair", "armOnEnd",
                     "disarm", "digest", "wantProgress", "log", "store", "progressSender",
                     "soon"):
            fn = getattr(helpers, name, None)
            if fn is not None and fn is not jsnull:
                setattr(_JS, name, fn)
    if microtask_loop and _JS.soon is not None and _soon is None:
        _soon = MicrotaskSoon(asyncio.get_event_loop(), _JS.soon)
        _soon.install()
    return Bridge()
