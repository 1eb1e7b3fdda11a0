"""The WebSockets: one per server in use, kept alive while jobs need it, and their messages.

``ServerChannel`` is the socket to one server under the page's one client id (the server
routes a job's messages to the socket whose id was the job's ``client_id``), with the
reconnect loop that keeps jobs alive through drops: same server, same client id, capped
exponential backoff with jitter, then a reconcile over HTTP (the server replays nothing).

``Channels`` holds them and dispatches what they receive: a text frame is decoded
(``protocol.events``) and goes to its job (``JobBook.apply``) only if that job is on this
socket's server — never cross-wired; a binary preview frame goes to the job's preview
callback without its image bytes being copied into Python. Frames that cannot be decoded
are counted and logged once per kind, never fatal; unknown message types are reported once.

What a socket event means for the rest of the client (the lock, reconnect or not, jobs
whose server stays unreachable) is asked of a ``ChannelOwner``: a small callback protocol
the ``PoolClient`` implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any, Protocol

from . import audit as audit_mod
from . import jobs as jobs_mod
from .errors import ComfyClientError, ProtocolError, ServerUnreachable
from .options import ClientOptions
from .protocol import events as ev
from .protocol import requests as rq
from .records import JobBook, JobRecord
from .transport import Socket, SocketHandlers


class ChannelOwner(Protocol):
    """What the channels ask of the rest of the client."""

    def ws_url(self, server: str) -> str:
        """The socket URL for ``server`` (client id, credentials)."""
        ...

    def audit_socket(self, server: str, url: str) -> None:
        """A socket to ``server`` is being opened (an audit record)."""
        ...

    def origin_hint(self) -> str: ...

    def socket_opened(self, chan: ServerChannel) -> None: ...

    def socket_closed(self, chan: ServerChannel) -> None:
        """The socket closed (after ``ServerChannel.state`` became ``closed``)."""
        ...

    def needs_socket(self, server: str) -> bool:
        """Must the socket to ``server`` stay open (be reopened)?"""
        ...

    async def reconnected(self, server: str) -> None:
        """The socket reopened after a drop: learn what was missed."""
        ...

    def unreachable(self, server: str, since: float | None) -> None:
        """Neither socket nor HTTP answers since ``since``: jobs past the deadline end."""
        ...

    def queue_update(self, server: str, queue_remaining: Any) -> None: ...


class ServerChannel:
    """The WebSocket to one server, with the reconnect loop that keeps jobs alive.

    The socket is the page's one client id on that server, so a reconnect reuses it: the
    server routes a job's events to the socket whose id was the job's ``client_id``.
    """

    UNCLAIMED_IDS = 16
    UNCLAIMED_EVENTS = 256

    def __init__(self, hub: Channels, server: str) -> None:
        self.hub = hub
        self.server = server
        self.socket: Socket | None = None
        self.state = "closed"  # closed | connecting | open | reconnecting
        self.attempts = 0
        self.reconnects = 0
        self.opened: asyncio.Future | None = None
        self.reconnect_task: asyncio.Task | None = None
        self.last_close: tuple[int, str] | None = None
        self.unreachable_since: float | None = None
        self.feature_flags: dict[str, Any] = {}
        self.running_prompt: str | None = None
        self.closing = False
        # Messages naming a job nobody here knows yet, kept while a POST /prompt to this
        # server is unanswered: a server that names jobs itself (older ComfyUI) may run and
        # end one before its answer says the name. Bounded; dropped once no POST is open.
        self.submits_open = 0
        self.unclaimed: dict[str, list[tuple[Any, str]]] = {}
        # False for sockets opened for job-pinned work outside the session lock (self test)
        self.locks = True

    # ------------------------------------------------------------------ unclaimed messages

    def keep_unclaimed(self, pid: str, event: Any, kind: str) -> None:
        """Keep a message for a job not known yet (see ``unclaimed``). A run of progress
        messages keeps only its latest, which says all the earlier ones did."""
        kept = self.unclaimed.get(pid)
        if kept is None:
            if len(self.unclaimed) >= self.UNCLAIMED_IDS:
                return  # other clients' jobs broadcast to every socket must not grow this
            kept = self.unclaimed[pid] = []
        if kept and kind in jobs_mod.FREQUENT_EVENTS and kept[-1][1] == kind:
            kept[-1] = (event, kind)
        elif len(kept) < self.UNCLAIMED_EVENTS:
            kept.append((event, kind))

    def submit_started(self) -> None:
        """A ``POST /prompt`` to this server is out: keep messages for unknown jobs."""
        self.submits_open += 1

    def claim(self, pid: str) -> list[tuple[Any, str]]:
        """The messages kept for ``pid`` (now known: the server named our job so), in
        order, handed over once."""
        return self.unclaimed.pop(pid, [])

    def submit_done(self) -> None:
        self.submits_open -= 1
        if not self.submits_open:
            self.unclaimed.clear()

    # ------------------------------------------------------------------ the socket

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    async def connect(self) -> None:
        """Open the socket (if not open) and wait for it, within the connect timeout."""
        if self.state == "open":
            return
        if self.opened is None or self.opened.done():
            await self._open_once()
        opened = self.opened
        assert opened is not None
        timeout = self.hub.options.ws_connect_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(opened), timeout)
        except TimeoutError:
            raise ServerUnreachable(
                f"WebSocket did not open within {timeout:g}s",
                server=self.server,
                hint="check the server is running and reachable from this page",
            ) from None

    async def _open_once(self) -> None:
        hub = self.hub
        if self.socket is not None:
            # Close and await the old socket first: some ComfyUI versions unregister the new
            # socket when the old one's close is processed after the new open.
            old, self.socket = self.socket, None
            with contextlib.suppress(Exception):
                await old.close()
        loop = asyncio.get_event_loop()
        self.opened = loop.create_future()
        self.state = "connecting" if self.reconnects == 0 else "reconnecting"
        url = hub.owner.ws_url(self.server)
        hub.owner.audit_socket(self.server, audit_mod.redact_url(url))
        self.socket = hub.env.open_socket(
            url,
            SocketHandlers(
                on_open=self._on_open,
                # the dispatch's own handlers, bound without a method in between: they
                # run per message (a partial is called from C)
                on_text=functools.partial(hub.on_text, self),
                on_binary=functools.partial(hub.on_binary, self),
                on_close=self._on_close,
            ),
        )

    def _on_open(self) -> None:
        self.state = "open"
        self.attempts = 0
        self.unreachable_since = None
        if self.socket is not None:
            self.socket.send_text(rq.feature_flags_message())
        if self.opened is not None and not self.opened.done():
            self.opened.set_result(True)
        self.hub.owner.socket_opened(self)

    def _on_close(self, code: int, reason: str) -> None:
        owner = self.hub.owner
        self.last_close = (code, reason)
        self.socket = None
        self.state = "closed"
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(
                ServerUnreachable(
                    f"WebSocket closed before opening (code {code})",
                    server=self.server,
                    hint="the server is down, or refuses this page's origin: start ComfyUI "
                    f"with --enable-cors-header {owner.origin_hint()}",
                )
            )
            self.opened.exception()  # mark retrieved: a reconnect loop may own this failure
        owner.socket_closed(self)
        if not self.closing and owner.needs_socket(self.server):
            self.schedule_reconnect()

    def schedule_reconnect(self) -> None:
        if self.closing or (self.reconnect_task and not self.reconnect_task.done()):
            return
        self.reconnect_task = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        hub, owner = self.hub, self.hub.owner
        env, options = hub.env, hub.options
        if self.unreachable_since is None:
            self.unreachable_since = env.now()
        while (not self.closing and owner.needs_socket(self.server)
               and self.state != "open"):
            self.attempts += 1
            delay = options.reconnect.delay(self.attempts, env.random())
            self.state = "reconnecting"
            await env.sleep(delay)
            if self.closing or not owner.needs_socket(self.server):
                break
            self.reconnects += 1
            try:
                await self._open_once()
                await self.connect()
            except ComfyClientError:
                owner.unreachable(self.server, self.unreachable_since)
                continue
            await owner.reconnected(self.server)
            # the loop condition looks again: a socket the server closed right after
            # opening (some versions do, once) is reopened too
        if self.state != "open":
            self.state = "closed"

    async def close(self) -> None:
        self.closing = True
        if self.reconnect_task and not self.reconnect_task.done():
            self.reconnect_task.cancel()
        if self.socket is not None:
            sock, self.socket = self.socket, None
            with contextlib.suppress(Exception):
                await sock.close()
        self.state = "closed"


class Channels:
    """The client's sockets by server, and the dispatch of what they receive."""

    def __init__(self, env: Any, options: ClientOptions, book: JobBook,
                 owner: ChannelOwner, log: Callable[[str], None]) -> None:
        self.env, self.options, self.log = env, options, log
        self.book, self.owner = book, owner
        self.by_server: dict[str, ServerChannel] = {}
        self.unknown_types: set[str] = set()
        # server -> kind of bad frame -> count; each kind is logged once per server
        self.protocol_errors: dict[str, dict[str, int]] = {}

    def get(self, server: str) -> ServerChannel | None:
        return self.by_server.get(server)

    def servers(self) -> list[str]:
        return list(self.by_server)

    def is_open(self, server: str) -> bool:
        chan = self.by_server.get(server)
        return chan is not None and chan.state == "open"

    def state_of(self, server: str) -> str:
        chan = self.by_server.get(server)
        return chan.state if chan else "closed"

    async def open(self, server: str, *, locks: bool = True) -> ServerChannel:
        """The WebSocket to ``server``, opened if needed, without touching the session lock
        unless ``locks`` (False for job-pinned work such as the consistency self test)."""
        chan = self.by_server.get(server)
        if chan is None or chan.closing:
            chan = self.by_server[server] = ServerChannel(self, server)
            chan.locks = locks
        await chan.connect()
        return chan

    async def close(self, server: str | None) -> None:
        if server and server in self.by_server:
            await self.by_server.pop(server).close()

    async def close_all(self) -> None:
        for server in list(self.by_server):
            await self.close(server)

    # ------------------------------------------------------------------ dispatch

    def on_text(self, chan: ServerChannel, text: str) -> None:
        try:
            event = ev.decode_text(text, max_bytes=self.options.max_message_bytes)
        except ProtocolError as exc:
            self._protocol_error(chan.server, "text", exc)
            return
        kind = event.type
        # a sampler's progress messages come by the hundred: straight to their job; the
        # other kinds may concern the server or the socket first
        if kind not in jobs_mod.FREQUENT_EVENTS and not self._on_other_text(chan, event, kind):
            return
        pid = event.prompt_id
        rec = self.book.records.get(pid) if pid else None
        if rec is None or rec.job.server != chan.server:
            if rec is None and pid and chan.submits_open:
                chan.keep_unclaimed(pid, event, kind)  # maybe ours, named by the server
            return  # not ours, or not from our job's server: never cross-wire jobs
        self.book.apply(rec, event, kind)

    def _on_other_text(self, chan: ServerChannel, event: Any, kind: str) -> bool:
        """What a message other than progress means for the server or the socket; True if
        it still goes to its job."""
        if kind == "status":
            if event.queue_remaining is not None:
                self.owner.queue_update(chan.server, event.queue_remaining)
            return False
        if kind == "feature_flags":
            chan.feature_flags = dict(event.flags)
            return False
        if isinstance(event, ev.UnknownMessage):
            # bounded: a peer inventing a new type per message cannot grow this forever
            if event.type_name not in self.unknown_types and len(self.unknown_types) < 64:
                self.unknown_types.add(event.type_name)
                self.log(f"unknown message type {event.type_name!r} from {chan.server} "
                         "(kept, reported once)")
            return False
        pid = event.prompt_id
        if kind == "executing" and pid:
            chan.running_prompt = pid if event.node is not None else None
        if kind == "execution_start" and pid:
            chan.running_prompt = pid
        return True

    def on_binary(self, chan: ServerChannel, buf: Any) -> None:
        env = self.env
        try:
            head = env.buffer_prefix(buf, 8)
            _etype, need = ev.binary_header(head)
            if need is None:
                # not a preview: small frame (progress text...), decode it whole
                frame = ev.decode_binary(env.buffer_prefix(buf, env.buffer_length(buf)))
            else:
                if need > len(head):
                    head = env.buffer_prefix(buf, need)
                frame = ev.decode_binary_header(head)
        except ProtocolError as exc:
            self._protocol_error(chan.server, "binary", exc)
            return
        if not isinstance(frame, ev.PreviewImage):
            return
        pid = frame.prompt_id or chan.running_prompt
        rec: JobRecord | None = self.book.records.get(pid) if pid else None
        if rec is None or rec.job.server != chan.server or rec.on_preview is None:
            return
        view_fn = getattr(env, "buffer_view", None)
        make_blob = getattr(env, "make_blob_from_view", None)
        payload = {
            "promptId": pid,
            "nodeId": frame.node_id,
            "imageType": frame.image_type,
            "server": chan.server,
        }
        if view_fn is not None and make_blob is not None:
            payload["blob"] = make_blob(view_fn(buf, frame.image_offset), frame.image_type)
        self.book.emit(rec.on_preview, payload)

    def _protocol_error(self, server: str, frame: str, exc: ProtocolError) -> None:
        """A frame that could not be decoded is dropped, never fatal: the job's state comes
        from the frames that do decode (and from history). Counted per server and kind, and
        logged once per kind, so a hostile or broken peer cannot flood the console."""
        details = exc.details
        cause = ("oversized" if "limit" in details else
                 "truncated" if "needed" in details else "malformed")
        kind = f"{cause}_{frame}"
        counts = self.protocol_errors.setdefault(server, {})
        if kind not in counts:
            self.log(f"{server} sent a {cause} {frame} frame ({exc.message}); ignored "
                     "(reported once per kind; counts in debugWebSocketLock().protocolErrors)")
        counts[kind] = counts.get(kind, 0) + 1
