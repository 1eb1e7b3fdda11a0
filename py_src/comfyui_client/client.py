"""The pool client: every job on one server for its whole life.

This module is the orchestration: it owns the live state (pool health, the session lock, the
job -> server pins, one WebSocket per server in use, the jobs) and drives the pure rules in
``pool``, ``lock``, ``jobs`` and ``audit`` with the wire format of ``protocol``. It touches the
outside world only through the injected ``Transport``.

The choke point is ``_http``: every HTTP request is made *for a server* and, where it belongs
to one, *for a job*. It refuses a request whose server differs from the job's pin (or, in
session mode, from the lock), adds that server's credentials and nobody else's, and appends
the audit record that ``validate_server_consistency`` reads. A wrong-server request is thus
impossible by construction rather than detected afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import audit as audit_mod
from . import jobs as jobs_mod
from . import lock as lock_mod
from . import pool as pool_mod
from .backoff import Backoff
from .errors import (
    BadResponse,
    ComfyClientError,
    ConfigError,
    CrossOriginBlocked,
    ExecutionFailed,
    InvalidInputError,
    JobInterrupted,
    JobLost,
    ProtocolError,
    ServerLost,
    ServerMismatch,
    ServerUnreachable,
)
from .protocol import events as ev
from .protocol import requests as rq
from .protocol import responses as rs
from .protocol import workflow as wf
from .transport import HttpResponse, Socket, SocketHandlers, Transport, TransportError

SESSION_KEY = "comfyui-client:v1"
AFFINITIES = ("session", "job")
# init() options that web/comfyui.js reads when it boots Python (the first init() only)
PAGE_BOOT_OPTIONS = ("extraPackages", "bootCache", "microtaskLoop")


@dataclass
class ClientOptions:
    """Every tunable, with the defaults documented in the README ("Options")."""

    affinity: str = "session"
    request_timeout_s: float = 30.0
    upload_timeout_s: float = 120.0
    ws_connect_timeout_s: float = 10.0
    # a job whose server stays unreachable this long ends with ServerLost
    job_deadline_s: float = 600.0
    # with no WS message for this long, a running job is checked over HTTP
    stall_check_s: float = 15.0
    history_retries: int = 8
    # how often a job without a live WebSocket is polled over HTTP
    poll_interval_s: float = 1.0
    reconnect: Backoff = field(default_factory=Backoff)
    max_audit: int = 5000
    max_events_per_job: int = 500
    # a text frame above this is refused unparsed (a server cannot make the page parse and
    # hold arbitrarily large JSON); ComfyUI's own messages are far smaller
    max_message_bytes: int = ev.DEFAULT_MAX_TEXT_BYTES
    client_id: str | None = None
    persist: bool = True
    # "before-start": a processImage job whose server is lost before it started runs on
    # another server (see jobs.failover_decision); "off": it ends with ServerLost
    failover: str = "off"
    max_moves: int = 2

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ClientOptions:
        known = {
            "affinity": "affinity",
            "requestTimeout": "request_timeout_s",
            "uploadTimeout": "upload_timeout_s",
            "wsConnectTimeout": "ws_connect_timeout_s",
            "jobDeadline": "job_deadline_s",
            "stallCheck": "stall_check_s",
            "historyRetries": "history_retries",
            "pollInterval": "poll_interval_s",
            "maxAudit": "max_audit",
            "clientId": "client_id",
            "persist": "persist",
            "failover": "failover",
        }
        opts = cls()
        for key, value in raw.items():
            if key in ("servers", *PAGE_BOOT_OPTIONS) or value is None:
                continue
            if key not in known:
                raise ConfigError(
                    f"unknown option {key!r}",
                    hint="known options: " + ", ".join(
                        sorted(("servers", *PAGE_BOOT_OPTIONS, *known))),
                )
            attr = known[key]
            default = getattr(opts, attr)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"option {key} must be true or false, got {value!r}")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"option {key} must be a non-negative number, got {value!r}")
                value = type(default)(value) if isinstance(default, float) else int(value)
            setattr(opts, attr, value)
        if opts.failover not in jobs_mod.FAILOVER_POLICIES:
            raise ConfigError(
                f"failover must be 'off' or 'before-start', got {opts.failover!r}",
                hint="'before-start' moves a job whose server is lost before it started to "
                "another server; 'off' (the default) ends it with server_lost",
            )
        if opts.failover != "off" and opts.affinity != "job":
            raise ConfigError(
                f"failover {opts.failover!r} needs affinity 'job'",
                hint="in session affinity every job runs on the locked server by definition; "
                "use init({affinity: 'job', failover: 'before-start'})",
            )
        if opts.affinity not in AFFINITIES:
            raise ConfigError(
                f"affinity must be 'session' or 'job', got {opts.affinity!r}",
                hint="'session' locks the page's WebSocket server for all work (the old "
                "comfyui.js behaviour); 'job' pins each job to its own server",
            )
        return opts


@dataclass
class JobRecord:
    """Live companion of a ``jobs.Job`` value: the future a waiter awaits and callbacks."""

    job: Any
    workflow: dict[str, Any] | None = None
    # the state in which the server was done with the job (outputs awaited, failed,
    # released...), None while it is not; ``wait`` calls sleep on ``wakers`` meanwhile
    settled: str | None = None
    wakers: list[asyncio.Future] = field(default_factory=list)
    on_progress: Any = None
    on_preview: Any = None
    events: deque = field(default_factory=lambda: deque(maxlen=500))
    last_message_at: float = 0.0
    history: Any = None
    images: list[dict[str, Any]] = field(default_factory=list)
    error: ComfyClientError | None = None
    # set by processImage, which holds the input file and can re-run the job elsewhere
    can_move: bool = False
    moves: int = 0
    moved_from: list[dict[str, str]] = field(default_factory=list)
    move_target: str | None = None
    # the environment's progress sender for on_progress (see PoolClient._emit_progress),
    # with the callback and the job's fixed values it was made for
    sender: Any = None
    sender_for: Any = None
    sender_fixed: tuple = ()


class ServerChannel:
    """The WebSocket to one server, with the reconnect loop that keeps jobs alive.

    The socket is the page's one client id on that server, so a reconnect reuses it: the
    server routes a job's events to the socket whose id was the job's ``client_id``.
    """

    def __init__(self, client: PoolClient, server: str) -> None:
        self.client = client
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

    UNCLAIMED_IDS = 16
    UNCLAIMED_EVENTS = 256

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

    def submit_done(self) -> None:
        self.submits_open -= 1
        if not self.submits_open:
            self.unclaimed.clear()

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
        try:
            await asyncio.wait_for(asyncio.shield(opened), self.client.options.ws_connect_timeout_s)
        except TimeoutError:
            raise ServerUnreachable(
                f"WebSocket did not open within {self.client.options.ws_connect_timeout_s:g}s",
                server=self.server,
                hint="check the server is running and reachable from this page",
            ) from None

    async def _open_once(self) -> None:
        client = self.client
        if self.socket is not None:
            # Close and await the old socket first: some ComfyUI versions unregister the new
            # socket when the old one's close is processed after the new open.
            old, self.socket = self.socket, None
            with contextlib.suppress(Exception):
                await old.close()
        loop = asyncio.get_event_loop()
        self.opened = loop.create_future()
        self.state = "connecting" if self.reconnects == 0 else "reconnecting"
        url = client.ws_url(self.server)
        client._audit(self.server, None, "WS", audit_mod.redact_url(url), "open")
        self.socket = client.env.open_socket(
            url,
            SocketHandlers(
                on_open=self._on_open,
                # the client's own handlers, bound without a method in between: they
                # run per message (a partial is called from C)
                on_text=functools.partial(client._on_ws_text, self),
                on_binary=functools.partial(client._on_ws_binary, self),
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
        self.client._on_ws_open(self)

    def _on_close(self, code: int, reason: str) -> None:
        self.last_close = (code, reason)
        self.socket = None
        was_open = self.state == "open"
        self.state = "closed"
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(
                ServerUnreachable(
                    f"WebSocket closed before opening (code {code})",
                    server=self.server,
                    hint="the server is down, or refuses this page's origin: start ComfyUI "
                    f"with --enable-cors-header {self.client.origin_hint()}",
                )
            )
            self.opened.exception()  # mark retrieved: a reconnect loop may own this failure
        self.client._on_ws_closed(self, was_open)

    def schedule_reconnect(self) -> None:
        if self.closing or (self.reconnect_task and not self.reconnect_task.done()):
            return
        self.reconnect_task = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        client = self.client
        if self.unreachable_since is None:
            self.unreachable_since = client.env.now()
        while (not self.closing and client._needs_socket(self.server)
               and self.state != "open"):
            self.attempts += 1
            delay = client.options.reconnect.delay(self.attempts, client.env.random())
            self.state = "reconnecting"
            await client.env.sleep(delay)
            if self.closing or not client._needs_socket(self.server):
                break
            self.reconnects += 1
            try:
                await self._open_once()
                await self.connect()
            except ComfyClientError:
                client._expire_jobs_on(self.server, self.unreachable_since)
                continue
            await client._reconcile(self.server)
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


class PoolClient:
    """The client a page (or a script) uses. See ``api.PageApi`` for the JS-facing names."""

    def __init__(self, env: Transport, servers: Any, options: ClientOptions | None = None) -> None:
        self.env = env
        self.options = options or ClientOptions()
        self.pool = pool_mod.Pool.create(pool_mod.normalize_servers(servers))
        self.lock = lock_mod.LockState()
        self.pins = lock_mod.Pins()
        self.audit = audit_mod.AuditLog(maxlen=self.options.max_audit)
        self.records: dict[str, JobRecord] = {}
        self.channels: dict[str, ServerChannel] = {}
        self.uploads: dict[str, str] = {}  # uploaded file name -> server it lives on
        self.lock_log: deque[dict[str, Any]] = deque(maxlen=200)
        self.unknown_types: set[str] = set()
        # server -> kind of bad frame -> count; each kind is logged once per server
        self.protocol_errors: dict[str, dict[str, int]] = {}
        self.reprobes: dict[str, asyncio.Task] = {}
        self.background: set[asyncio.Future] = set()
        self.done_pins: dict[str, str] = {}
        self.closed = False
        self.client_id = self._load_client_id()

    # ------------------------------------------------------------------ identity, persistence

    def _load_client_id(self) -> str:
        if self.options.client_id:
            return self.options.client_id
        saved = self.env.storage_get(SESSION_KEY) if self.options.persist else None
        if saved:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                data = json.loads(saved)
                if isinstance(data.get("clientId"), str) and data["clientId"]:
                    return data["clientId"]
        # 32 hex digits, the form ComfyUI's own frontend uses (uuid4().hex); os.urandom
        # directly because importing uuid costs ~16 ms of the page's boot under Pyodide
        cid = os.urandom(16).hex()
        self._persist(cid)
        return cid

    def _persist(self, client_id: str | None = None) -> None:
        if not self.options.persist:
            return
        pins: dict[str, str] = {}
        done = dict(self.done_pins)
        for pid, rec in self.records.items():  # one pass: this runs twice per job
            (done if self._finished(rec) else pins)[pid] = rec.job.server
        if len(done) > 200:
            done = dict(list(done.items())[-200:])
        self.env.storage_set(
            SESSION_KEY,
            json.dumps({"clientId": client_id or self.client_id, "jobs": pins, "done": done}),
        )

    def _saved_state(self) -> dict[str, Any]:
        raw = self.env.storage_get(SESSION_KEY) if self.options.persist else None
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def reattach(self) -> list[str]:
        """After a page reload: re-pin the jobs the last page left in flight (and the servers
        of finished ones, so their history and images are still fetched from the right
        place), reconnect to their servers and learn what happened meanwhile."""
        saved = self._saved_state()
        done = saved.get("done") if isinstance(saved.get("done"), dict) else {}
        for pid, server in done.items():
            if isinstance(pid, str) and isinstance(server, str) and pid not in self.pins:
                self.pins = self.pins.pin(pid, server)
                self.done_pins[pid] = server
        jobs = saved.get("jobs") if isinstance(saved.get("jobs"), dict) else {}
        revived = []
        for pid, server in jobs.items():
            if not (isinstance(pid, str) and isinstance(server, str)) or pid in self.records:
                continue
            try:
                if self.options.affinity == "session":
                    await self.ensure_connection(server)
                else:
                    await self.open_channel(server)
            except ComfyClientError as exc:
                self._log(f"could not reattach job {pid} on {server}: {exc}")
                continue
            rec = self._new_record(pid, server, None, {})
            rec.job = jobs_mod.mark(rec.job, "submitting", now=self.env.wall_time())
            rec.job = jobs_mod.submitted(rec.job, now=self.env.wall_time())
            revived.append(pid)
            task = asyncio.ensure_future(self._finish_reattached(rec))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        for server in {self.records[p].job.server for p in revived}:
            await self._reconcile(server)
        return revived

    async def _finish_reattached(self, rec: JobRecord) -> None:
        """Nobody on the new page awaits a reattached job: once the server is done with it,
        release it so it stops holding the lock; its outputs stay fetchable by id."""
        with contextlib.suppress(ComfyClientError):
            await self.wait(rec.job.prompt_id)
        if not self._finished(rec):
            self.release(rec.job.prompt_id)

    def origin_hint(self) -> str:
        return self.env.page_origin() or "<this page's origin>"

    # ------------------------------------------------------------------ configuration

    def reconfigure(self, servers: Any) -> dict[str, Any]:
        """Replace the server list; servers with jobs in flight keep them until done."""
        specs = pool_mod.normalize_servers(servers)
        pinned = set(self.pins.servers_in_use())
        self.pool, removed, added = self.pool.reconfigure(specs, pinned)
        return {"removed": list(removed), "added": list(added)}

    def spec(self, server: str) -> pool_mod.ServerSpec | None:
        return self.pool.spec(server)

    def ws_url(self, server: str) -> str:
        spec = self.spec(server)
        base = server.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + rq.ws_path(self.client_id, token=spec.token if spec else None)

    # ------------------------------------------------------------------ the choke point

    def _audit(
        self, server: str, job: str | None, method: str, path: str, status: Any
    ) -> None:
        self.audit.append(
            audit_mod.AuditRecord(
                time=self.env.wall_time(),
                job=job,
                server=server,
                method=method,
                path=path,
                status=status,
            )
        )

    async def _http(
        self,
        server: str,
        req: rq.HttpRequest,
        *,
        job: str | None,
        operation: str,
        timeout: float | None = None,
        unlocked: bool = False,
    ) -> HttpResponse:
        """Send one request for ``server`` (and ``job``). Refuses a server that is not the
        job's pin; adds only this server's credentials; writes the audit record."""
        if job is not None:
            lock_mod.check_job_server(self.pins, job, operation, server)
        elif self.options.affinity == "session" and not unlocked:
            lock_mod.check_consistency(self.lock, operation, server)
        spec = self.spec(server)
        headers: dict[str, str] = {}
        if spec is not None and spec.token:
            headers["Authorization"] = f"Bearer {spec.token}"
        path = audit_mod.redact_url(req.url(""))
        started = self.env.now()
        try:
            resp = await self.env.request(
                server,
                req,
                extra_headers=headers,
                timeout=timeout or self.options.request_timeout_s,
            )
        except TransportError as exc:
            self._audit(server, job, req.method, path, f"error:{exc.kind}")
            self._mark_down(server, str(exc))
            if exc.kind == "cors":
                raise CrossOriginBlocked(
                    f"{operation}: the server refused this page's origin",
                    server=server,
                    prompt_id=job,
                    hint=f"start ComfyUI with --enable-cors-header {self.origin_hint()}",
                ) from None
            raise ServerUnreachable(
                f"{operation}: no answer ({exc})",
                server=server,
                prompt_id=job,
                hint="check the server is running; if it is, it may refuse this page's "
                f"origin: start ComfyUI with --enable-cors-header {self.origin_hint()}",
            ) from None
        self._audit(server, job, req.method, path, resp.status)
        health = self.pool.health_of(server)
        if health is not None:
            self.pool = self.pool.with_latency(server, (self.env.now() - started) * 1000.0)
        return resp

    def _parse(self, fn: Callable[..., Any], resp: HttpResponse, server: str, job: str | None,
               **kw: Any) -> Any:
        return fn(
            resp.status, resp.headers, resp.body, server=server, prompt_id=job,
            page_origin=self.env.page_origin(), **kw,
        )

    def _mark_down(self, server: str, reason: str) -> None:
        self.pool = self.pool.probe_failed(
            server, now=self.env.now(), reason=reason, backoff=self.options.reconnect,
            rand=self.env.random(),
        )
        self._schedule_reprobe(server)

    def _schedule_reprobe(self, server: str) -> None:
        """A down server is probed again when its backoff expires, so it comes back into
        selection by itself (one task per server, ended by ``close``)."""
        task = self.reprobes.get(server)
        if self.closed or (task is not None and not task.done()):
            return
        self.reprobes[server] = asyncio.ensure_future(self._reprobe_loop(server))

    async def _reprobe_loop(self, server: str) -> None:
        while not self.closed and self.spec(server) is not None:
            health = self.pool.health_of(server)
            if health is None or health.state != "down":
                return
            await self.env.sleep(max(0.0, health.next_probe_at - self.env.now()))
            if self.closed:
                return
            self.reprobes.pop(server, None)  # probe() may reschedule on failure
            await self.probe(server)
            return

    # ------------------------------------------------------------------ health

    async def probe(self, server: str) -> dict[str, Any]:
        """GET /system_stats and /prompt on one server; updates its health."""
        started = self.env.now()
        try:
            # health probes carry no job and change nothing: allowed to any server
            resp = await self._http(server, rq.system_stats(), job=None,
                                    operation="health check", unlocked=True)
            stats = self._parse(rs.parse_system_stats, resp, server, None)
            resp = await self._http(server, rq.get_prompt_queue(), job=None,
                                    operation="health check", unlocked=True)
            queue = self._parse(rs.parse_prompt_info, resp, server, None)
        except ServerMismatch:
            raise
        except ComfyClientError as exc:
            if exc.code not in ("server_unreachable", "cross_origin_blocked"):
                self._mark_down(server, exc.message)  # (_http already marked those)
            return self.server_status(server, error=exc)
        latency = (self.env.now() - started) * 1000.0
        self.pool = self.pool.probe_ok(
            server, now=self.env.now(), latency_ms=latency, version=stats.version,
            devices=[d.get("name") for d in stats.devices], queue_remaining=queue,
        )
        return self.server_status(server)

    async def check_all(self) -> list[dict[str, Any]]:
        """Probe every configured server concurrently (no lock involved: a status check is
        not job work)."""
        servers = [s.url for s in self.pool.specs]
        results = await asyncio.gather(*(self.probe(s) for s in servers))
        return list(results)

    def server_status(self, server: str, error: ComfyClientError | None = None) -> dict[str, Any]:
        spec = self.spec(server)
        health = self.pool.health_of(server)
        chan = self.channels.get(server)
        out = {
            "server": server,
            "label": spec.label if spec else None,
            "weight": spec.weight if spec else None,
            "status": health.state if health else "unknown",
            "reason": health.reason if health else None,
            "version": health.version if health else None,
            "devices": list(health.devices) if health and health.devices else [],
            "queueRemaining": health.queue_remaining if health else None,
            "latencyMs": health.last_latency_ms if health else None,
            "wsState": chan.state if chan else "closed",
            "reconnectAttempts": chan.attempts if chan else 0,
            "jobs": len(self.pins.jobs_on(server)),
        }
        if error is not None:
            out["error"] = error.to_dict()
        return out

    # ------------------------------------------------------------------ server choice / lock

    def _inflight(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rec in self.records.values():
            if not self._finished(rec):
                counts[rec.job.server] = counts.get(rec.job.server, 0) + 1
        return counts

    def select(self) -> str:
        return pool_mod.select_server(
            self.pool.specs, self.pool.healths, inflight=self._inflight()
        ).url

    def api_base(self, prompt_id: str | None = None) -> str:
        """Where a call goes: the job's server if ``prompt_id`` is known; else in session mode
        the lock (when held) or a fresh selection; in job mode a fresh selection."""
        if prompt_id:
            server = self.pins.server_of(prompt_id)
            if server is None:
                raise InvalidInputError(
                    f"unknown prompt id {prompt_id!r}",
                    hint="only jobs submitted from this page (or restored after a reload) "
                    "have a known server",
                )
            return server
        if self.options.affinity == "session":
            return lock_mod.api_base(self.lock, self.select)
        return self.select()

    async def ensure_connection(self, server: str | None = None) -> str:
        """Open (or reuse) the WebSocket. In session mode the socket's server becomes the lock."""
        if server is None:
            server = self.api_base()
        elif self.spec(server) is None:
            server = pool_mod.server_key(server)
            if self.spec(server) is None:
                raise InvalidInputError(f"{server} is not one of the configured servers")
        session = self.options.affinity == "session"
        if session and self.lock.locked_server not in (None, server):
            if lock_mod.can_unlock(self.lock).can_unlock:
                self._set_lock(lock_mod.on_ws_closed(self.lock), "lock moved")
            else:
                raise ServerMismatch(
                    f"cannot connect to {server}: the session is locked to "
                    f"{self.lock.locked_server} while tasks are pending",
                    server=server,
                    details={"lockedServer": self.lock.locked_server, "apiServer": server},
                )
        if session:
            # one WebSocket per page in session mode: idle sockets elsewhere are closed
            for other in [s for s in self.channels if s != server]:
                if not self._needs_socket(other):
                    await self._close_channel(other)
        chan = await self.open_channel(server)
        chan.locks = True
        if session and self.lock.locked_server is None:
            self._set_lock(lock_mod.on_ws_open(self.lock, server), "WebSocket open")
        return server

    async def open_channel(self, server: str, *, locks: bool = True) -> ServerChannel:
        """The WebSocket to ``server``, opened if needed, without touching the session lock
        unless ``locks`` (used for job-pinned work such as the consistency self test)."""
        chan = self.channels.get(server)
        if chan is None or chan.closing:
            chan = self.channels[server] = ServerChannel(self, server)
            chan.locks = locks
        await chan.connect()
        return chan

    async def _close_channel(self, server: str | None) -> None:
        if server and server in self.channels:
            await self.channels.pop(server).close()

    def _set_lock(self, new: Any, why: str) -> None:
        old = self.lock
        self.lock = new
        if old.locked_server != new.locked_server:
            entry = {
                "time": self.env.wall_time(),
                "event": "locked" if new.locked_server else "released",
                "server": new.locked_server or old.locked_server,
                "why": why,
            }
            self.lock_log.append(entry)
            self._log(f"lock {entry['event']}: {entry['server']} ({why})")

    def _log(self, text: str) -> None:
        line = f"[comfyui-client] {text}"
        log = getattr(self.env, "log", None)  # the page's console, if the transport has one
        if log is not None:
            log(line)
        else:
            print(line)

    def _needs_socket(self, server: str) -> bool:
        """A socket is kept (and re-opened) while any unfinished job is pinned to it, and in
        session mode while it is the lock."""
        if any(not self._finished(self.records[j]) for j in self.pins.jobs_on(server)
               if j in self.records):
            return True
        return self.options.affinity == "session" and self.lock.locked_server == server and bool(
            self.lock.pending
        )

    # ------------------------------------------------------------------ WS events

    def _on_ws_open(self, chan: ServerChannel) -> None:
        if (self.options.affinity == "session" and chan.locks
                and self.lock.locked_server in (None, chan.server)):
            self._set_lock(lock_mod.on_ws_open(self.lock, chan.server), "WebSocket opened")

    def _on_ws_closed(self, chan: ServerChannel, was_open: bool) -> None:
        if self.options.affinity == "session" and self.lock.locked_server == chan.server:
            self._set_lock(lock_mod.on_ws_closed(self.lock), "WebSocket closed, nothing pending")
        if not chan.closing and self._needs_socket(chan.server):
            chan.schedule_reconnect()

    def _on_ws_text(self, chan: ServerChannel, text: str) -> None:
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
        rec = self.records.get(pid) if pid else None
        if rec is None or rec.job.server != chan.server:
            if rec is None and pid and chan.submits_open:
                chan.keep_unclaimed(pid, event, kind)  # maybe ours, named by the server
            return  # not ours, or not from our job's server: never cross-wire jobs
        self._apply(rec, event, kind)

    def _on_other_text(self, chan: ServerChannel, event: Any, kind: str) -> bool:
        """What a message other than progress means for the server or the socket; True if
        it still goes to its job."""
        if kind == "status":
            if event.queue_remaining is not None:
                self.pool = self.pool.queue_update(chan.server, event.queue_remaining)
            return False
        if kind == "feature_flags":
            chan.feature_flags = dict(event.flags)
            return False
        if isinstance(event, ev.UnknownMessage):
            # bounded: a peer inventing a new type per message cannot grow this forever
            if event.type_name not in self.unknown_types and len(self.unknown_types) < 64:
                self.unknown_types.add(event.type_name)
                self._log(f"unknown message type {event.type_name!r} from {chan.server} "
                          "(kept, reported once)")
            return False
        pid = event.prompt_id
        if kind == "executing" and pid:
            chan.running_prompt = pid if event.node is not None else None
        if kind == "execution_start" and pid:
            chan.running_prompt = pid
        return True

    def _on_ws_binary(self, chan: ServerChannel, buf: Any) -> None:
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
        rec = self.records.get(pid) if pid else None
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
        self._emit(rec.on_preview, payload)

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
            self._log(f"{server} sent a {cause} {frame} frame ({exc.message}); ignored "
                      "(reported once per kind; counts in debugWebSocketLock().protocolErrors)")
        counts[kind] = counts.get(kind, 0) + 1

    def _emit(self, fn: Any, payload: dict[str, Any]) -> None:
        if fn is None:
            return
        call_js = getattr(self.env, "call_js", None)
        try:
            if call_js is not None:
                call_js(fn, payload)
            else:
                fn(payload)
        except Exception as exc:
            self._log(f"a progress/preview callback raised {exc!r}; the job continues")

    def _emit_progress(self, rec: JobRecord, kind: str) -> None:
        """A ``progress``/``progress_state`` callback: the short view of
        ``jobs.progress_to_dict``. An environment with ``progress_sender`` (the page) gets
        the job's fixed values once per job and then only the five that move per message,
        and builds the object itself (~1 µs a message in the page, where a dict crossing
        cost ~4 µs); otherwise the dict goes through ``_emit``."""
        job = rec.job
        send = rec.sender
        fixed = (job.job_id, job.prompt_id, job.server, job.total_nodes)
        if send is None or rec.sender_for is not rec.on_progress or rec.sender_fixed != fixed:
            make = getattr(self.env, "progress_sender", None)
            send = make(rec.on_progress, *fixed) if make is not None else None
            if send is None:
                self._emit(rec.on_progress, {"event": kind, **jobs_mod.progress_to_dict(job)})
                return
            rec.sender, rec.sender_for, rec.sender_fixed = send, rec.on_progress, fixed
        try:
            send(kind, job.state, job.progress, job.current_node, job.node_value, job.node_max)
        except Exception as exc:
            self._log(f"a progress callback raised {exc!r}; the job continues")

    def _apply(self, rec: JobRecord, event: Any, kind: str) -> None:
        rec.last_message_at = self.env.now()
        rec.events.append(kind)
        before = rec.job
        rec.job = jobs_mod.apply_event(rec.job, event, now=self.env.wall_time())
        if rec.on_progress is not None:
            if kind in jobs_mod.FREQUENT_EVENTS:
                self._emit_progress(rec, kind)
            else:
                self._emit(rec.on_progress, {"event": kind, **jobs_mod.job_to_dict(rec.job)})
        if rec.job.state != before.state:
            self._maybe_finish(rec)

    def _maybe_finish(self, rec: JobRecord) -> None:
        """Resolve the waiter once the job left the server's hands (the final
        ``executing{node: null}``, an error, or an interruption)."""
        state = rec.job.state
        if state in jobs_mod.AWAITING_OUTPUTS or jobs_mod.is_terminal(rec.job):
            self._settle(rec, state)

    @staticmethod
    def _settle(rec: JobRecord, state: str) -> None:
        """The server is done with the job (the first such state counts); every ``wait``
        call is woken in the same breath."""
        if rec.settled is None:
            rec.settled = state
        for waker in rec.wakers:
            if not waker.done():
                waker.set_result(None)

    async def _until_done(self, rec: JobRecord, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the job to leave the server's hands; True if it did.
        Why not one shared future and ``wait_for(shield(...))``: each future in that chain
        resolves the next one a loop turn later (three turns, ~1 ms in a page); a private
        future per call, resolved by ``_settle`` directly, wakes this task on the next turn,
        and a cancelled caller cancels only its own."""
        if rec.settled is not None:
            return True
        loop = asyncio.get_event_loop()
        waker = loop.create_future()
        rec.wakers.append(waker)
        timer = loop.call_later(timeout, lambda: waker.done() or waker.set_result(None))
        try:
            await waker
        finally:
            timer.cancel()
            rec.wakers.remove(waker)
        return rec.settled is not None

    # ------------------------------------------------------------------ jobs

    def _finished(self, rec: JobRecord) -> bool:
        """Terminal (outputs fetched, failed...) or released by the caller. A job being
        uploaded is not finished: it counts as load and keeps its server's socket."""
        return rec.job.released or jobs_mod.is_terminal(rec.job)

    def _new_record(
        self, prompt_id: str, server: str, workflow: Any, opts: dict[str, Any],
        *, hold_lock: bool = True, job_id: str | None = None,
    ) -> JobRecord:
        job = jobs_mod.new_job(job_id or prompt_id, server, now=self.env.wall_time(),
                               workflow=workflow, prompt_id=prompt_id)
        rec = JobRecord(job=job, workflow=workflow)
        rec.on_progress = opts.get("onProgress")
        rec.on_preview = opts.get("onPreview")
        rec.last_message_at = self.env.now()
        self.records[prompt_id] = rec
        self.pins = self.pins.pin(prompt_id, server)
        if self.options.affinity == "session" and hold_lock:
            self._set_lock(lock_mod.on_task_pending(self.lock, prompt_id), "task pending")
        self._persist()
        self._trim_records()
        return rec

    def _trim_records(self, keep: int = 1000) -> None:
        finished = [pid for pid, r in self.records.items() if self._finished(r)]
        for pid in finished[: max(0, len(self.records) - keep)]:
            self.records.pop(pid, None)
            self.pins = self.pins.unpin(pid)

    def _task_done(self, rec: JobRecord, why: str) -> None:
        """The task stops being pending: in session mode this may release the lock."""
        if self.options.affinity == "session" and rec.job.prompt_id in self.lock.pending:
            state, released = lock_mod.on_task_done(self.lock, rec.job.prompt_id)
            if not state.pending and state.locked_server is not None:
                # The last pending task ended: let go even though the socket stays open, so
                # the next job selects again (an idle socket re-locks if it is selected).
                state = lock_mod.on_ws_closed(state)
                released = True
            self._set_lock(state, f"last pending task ended ({why})" if released else why)
        self._persist()

    def _server_for_new_job(self, server: str | None, workflow: dict[str, Any] | None) -> str:
        """Session mode: the lock. Job mode: the server of files this page uploaded for the
        workflow, else the explicit ``server``, else a fresh selection."""
        if self.options.affinity == "session":
            if self.lock.locked_server is None:
                raise ServerMismatch(
                    "submitWorkflow refused: no server is locked",
                    hint="the WebSocket could not be opened; check the servers' status",
                )
            api = lock_mod.api_base(self.lock, self.select)
            lock_mod.require_lock_for_submit(self.lock, api)
            if server is not None and pool_mod.server_key(server) != self.lock.locked_server:
                raise ServerMismatch(
                    f"submitWorkflow refused: asked for {server} but the session is locked to "
                    f"{self.lock.locked_server}",
                    server=server,
                    details={"lockedServer": self.lock.locked_server, "apiServer": server},
                )
            return self.lock.locked_server
        wanted = pool_mod.server_key(server) if server else None
        for name in wf.load_image_nodes_inputs(workflow or {}):
            where = self.uploads.get(name)
            if where is None:
                continue
            if wanted is not None and wanted != where:
                raise ServerMismatch(
                    f"the workflow uses {name!r}, uploaded to {where}, but the job was asked "
                    f"to run on {wanted}",
                    server=wanted,
                    details={"lockedServer": where, "apiServer": wanted},
                )
            wanted = where
        return wanted or self.select()

    async def upload(
        self,
        file: Any,
        *,
        filename: str,
        subfolder: str = "",
        overwrite: bool = False,
        image_type: str = "input",
        content_type: str = "image/png",
        size: int | None = None,
        server: str | None = None,
        job: str | None = None,
    ) -> dict[str, Any]:
        """POST /upload/image. Always returns the server's name for the file (it may rename)."""
        if job is not None:
            target = self.pins.server_of(job)
        elif server is not None:
            target = pool_mod.server_key(server)
        else:
            target = self.api_base()
            if self.options.affinity == "session":
                await self.ensure_connection(target)
                target = self.lock.locked_server or target
        limit = self.pool.max_upload_size(target)
        if size is not None and limit and size > limit:
            raise rs.upload_too_large(target, size=size, limit=limit, prompt_id=job)
        req = rq.upload_image(
            file, filename=filename, subfolder=subfolder, image_type=image_type,
            overwrite=overwrite, content_type=content_type,
        )
        resp = await self._http(target, req, job=job, operation="upload",
                                timeout=self.options.upload_timeout_s)
        result = self._parse(rs.parse_upload, resp, target, job, max_upload_size=limit)
        self.uploads[result.name] = target
        if len(self.uploads) > 2000:
            self.uploads.pop(next(iter(self.uploads)))
        return {"name": result.name, "subfolder": result.subfolder, "type": result.type,
                "server": target}

    async def submit(
        self,
        workflow: Any,
        *,
        prompt_id: str | None = None,
        server: str | None = None,
        on_progress: Any = None,
        on_preview: Any = None,
        record: JobRecord | None = None,
    ) -> JobRecord:
        """POST /prompt with a client-chosen prompt id, recorded job -> server BEFORE the POST."""
        graph = wf.validate_workflow(workflow)
        if record is None:
            if self.options.affinity == "session":
                await self.ensure_connection()
            pid = prompt_id or rq.new_prompt_id()
            if pid in self.records and not self._finished(self.records[pid]):
                raise InvalidInputError(f"prompt id {pid} is already running on "
                                        f"{self.records[pid].job.server}")
            # choose and pin without an await in between: concurrent submits then see each
            # other as in-flight load
            target = self._server_for_new_job(server, graph)
            record = self._new_record(pid, target, graph,
                                      {"onProgress": on_progress, "onPreview": on_preview})
            if self.options.affinity == "job":
                await self.connect_for_job(record)
        pid, target = record.job.prompt_id, record.job.server
        record.workflow = graph
        record.job = jobs_mod.mark(record.job, "submitting", now=self.env.wall_time())
        chan = self.channels.get(target)
        if chan is not None:
            chan.submits_open += 1
        try:
            try:
                accepted = await self._post_prompt(target, graph, pid)
            except ComfyClientError as exc:
                self._fail(record, exc,
                           "rejected" if exc.code == "invalid_workflow" else "failed")
                raise
            if accepted.prompt_id and accepted.prompt_id != pid:
                # An older server ignored our id: adopt its id, keeping the same server,
                # and apply what it said under that id before its answer came, in order.
                record = self._adopt(record, accepted.prompt_id)
                for event, kind in (chan.unclaimed.pop(accepted.prompt_id, ())
                                    if chan is not None else ()):
                    self._apply(record, event, kind)
        finally:
            if chan is not None:
                chan.submit_done()
        record.job = jobs_mod.submitted(record.job, number=accepted.number,
                                        now=self.env.wall_time())
        self._emit(record.on_progress, {"event": "queued", **jobs_mod.job_to_dict(record.job)})
        return record

    async def connect_for_job(self, rec: JobRecord) -> None:
        """Job mode: the socket to the job's server. When the socket cannot open but HTTP
        answers (a proxy that blocks WebSockets), the job still runs: its state is polled
        and progress is reported as coarse states. Otherwise the job fails."""
        server = rec.job.server
        try:
            await self.ensure_connection(server)
            return
        except ComfyClientError as exc:
            ws_error = exc
        try:
            resp = await self._http(server, rq.get_prompt_queue(), job=rec.job.prompt_id,
                                    operation="polling fallback")
            self._parse(rs.parse_prompt_info, resp, server, rec.job.prompt_id)
        except ComfyClientError:
            self._fail(rec, ws_error, "failed")
            raise ws_error from None
        self._log(f"WebSocket to {server} unavailable ({ws_error.message}); "
                  f"job {rec.job.prompt_id} continues by polling")

    async def _post_prompt(self, target: str, graph: dict[str, Any], pid: str) -> Any:
        """POST /prompt, retried once when it may not have reached ComfyUI (no answer, or a
        proxy's 502/503/504) or its 2xx answer cannot be read (a proxy mangled the body) —
        but only after asking the server whether it already knows our client-chosen id, so a
        retry never creates a second job."""
        req = rq.post_prompt(graph, client_id=self.client_id, prompt_id=pid)
        known = rs.PromptAccepted(prompt_id=pid, number=None, node_errors={})
        for attempt in range(2):
            last = attempt == 1
            try:
                resp = await self._http(target, req, job=pid, operation="submit")
            except ServerUnreachable:
                if last:
                    raise
            else:
                if resp.status not in (502, 503, 504) or last:
                    try:
                        return self._parse(rs.parse_prompt_response, resp, target, pid)
                    except BadResponse:
                        if not 200 <= resp.status < 300:
                            raise
                        # ComfyUI may have queued it: ask, never resubmit blindly
                        if await self._server_knows(target, pid):
                            return known
                        if last:
                            raise
                        continue  # nothing queued under our id: resubmitting it is safe
            await self.env.sleep(self.options.reconnect.delay(1, self.env.random()))
            if await self._server_knows(target, pid):
                return known
        raise AssertionError("unreachable")  # pragma: no cover

    async def _server_knows(self, server: str, pid: str) -> bool:
        resp = await self._http(server, rq.get_queue(), job=pid, operation="submit check")
        if self._parse(rs.parse_queue, resp, server, pid).contains(pid):
            return True
        return await self.history(pid, retry=False) is not None

    def _adopt(self, rec: JobRecord, new_id: str) -> JobRecord:
        old = rec.job.prompt_id
        self.records.pop(old, None)
        self.pins = self.pins.unpin(old).pin(new_id, rec.job.server)
        if self.options.affinity == "session" and old in self.lock.pending:
            # pending(new) before done(old): the lock must never be released in between.
            # (A job outside the lock, like the self test's, holds nothing to hand over.)
            state = lock_mod.on_task_pending(self.lock, new_id)
            self.lock, _ = lock_mod.on_task_done(state, old)
        rec.job = jobs_mod.rename(rec.job, new_id)
        self.records[new_id] = rec
        self.audit.rename(old, new_id)
        self._persist()
        return rec

    def _failover(self, rec: JobRecord, exc: ComfyClientError) -> jobs_mod.FailoverDecision:
        """The facts for ``jobs.failover_decision``: policy, error, and the server a move
        would go to (a fresh selection without the lost server; down servers never count)."""
        if not rec.can_move:
            return jobs_mod.FailoverDecision(False, "only processImage jobs can move")
        try:
            alternative = pool_mod.select_server(
                self.pool.specs, self.pool.healths, exclude=(rec.job.server,),
                inflight=self._inflight()).url
        except ComfyClientError:
            alternative = None
        return jobs_mod.failover_decision(
            self.options.failover, rec.job, exc.code, alternative=alternative,
            moves=rec.moves, max_moves=self.options.max_moves)

    def _fail(self, rec: JobRecord, exc: ComfyClientError, state: str) -> None:
        """Every failure of a job passes here; with failover on, a job lost before it
        started is marked ``moved`` instead (its caller, processImage, re-runs it)."""
        rec.error = exc
        if exc.code in jobs_mod.LOSS_CODES:
            # whether the lost server had started it: were outputs possibly made there?
            exc.details.setdefault("started", jobs_mod.has_started(rec.job))
            decision = self._failover(rec, exc)
            if decision.move:
                rec.move_target = decision.target
                state = "moved"
                self._log(f"job {rec.job.job_id}: {decision.reason}; moving to "
                          f"{decision.target}")
        rec.job = jobs_mod.mark(rec.job, state, now=self.env.wall_time(), error=exc.to_dict())
        self._settle(rec, state)
        self._task_done(rec, state)

    def record_of(self, prompt_id: str) -> JobRecord:
        rec = self.records.get(prompt_id)
        if rec is None and prompt_id in self.done_pins:
            # a job finished before a page reload: known server, nothing in flight
            job = jobs_mod.new_job(prompt_id, self.done_pins[prompt_id],
                                   now=self.env.wall_time())
            rec = JobRecord(job=jobs_mod.released(job, now=self.env.wall_time()),
                            settled="released")
            self.records[prompt_id] = rec
        if rec is None:
            raise InvalidInputError(
                f"unknown prompt id {prompt_id!r}",
                hint="pass the promptId returned by submitWorkflow/processImage",
            )
        return rec

    async def wait(self, prompt_id: str) -> JobRecord:
        """Wait until the server is done with the job, then fetch its history (and retry an
        empty one: ``execution_success`` is sent before history is written)."""
        rec = self.record_of(prompt_id)
        while rec.settled is None:
            chan = self.channels.get(rec.job.server)
            # without a live socket nothing will tell us: poll over HTTP at a faster pace
            live = chan is not None and chan.state == "open"
            interval = self.options.stall_check_s if live else self.options.poll_interval_s
            if not await self._until_done(rec, interval):
                await self._check_stalled(rec)
        if rec.error is not None:
            raise rec.error
        state = rec.job.state
        if state == "failed":
            raise self._job_error(rec)
        if state == "interrupted":
            raise self._job_error(rec)
        if rec.history is None:
            rec.history = await self.history(prompt_id, retry=True)
        return rec

    def _job_error(self, rec: JobRecord) -> ComfyClientError:
        err = rec.job.error or {}
        pid, server = rec.job.prompt_id, rec.job.server
        if rec.job.state == "interrupted":
            exc: ComfyClientError = JobInterrupted(
                "the job was interrupted" + (f" at node {err.get('node_id')}"
                                             if err.get("node_id") else ""),
                server=server, prompt_id=pid, details=dict(err),
            )
        else:
            exc = ExecutionFailed(
                f"node {err.get('node_id')} ({err.get('node_type')}) failed: "
                f"{err.get('exception_type', 'Error')}: {err.get('exception_message', '')}".strip(),
                server=server, prompt_id=pid, details=dict(err),
                hint="fix the node's inputs or the input file and run again",
            )
        rec.error = exc
        self._task_done(rec, rec.job.state)
        return exc

    async def _check_stalled(self, rec: JobRecord) -> None:
        """No WS message for a while: ask the server over HTTP instead of guessing."""
        server, pid = rec.job.server, rec.job.prompt_id
        chan = self.channels.get(server)
        try:
            entry = await self.history(pid, retry=False)
        except ComfyClientError:
            # neither socket nor HTTP: the deadline clock runs
            if chan is not None:
                if chan.unreachable_since is None:
                    chan.unreachable_since = self.env.now()
                self._expire_jobs_on(server, chan.unreachable_since)
            return
        if chan is not None and chan.state != "open":
            # HTTP answers, only the socket is gone (a proxy blocking WebSockets): the job
            # goes on by polling and the ServerLost deadline does not run
            chan.unreachable_since = None
        if entry is not None:
            rec.history = entry
            self._finish_from_history(rec, entry)
            return
        try:
            resp = await self._http(server, rq.get_queue(), job=pid, operation="stall check")
            queue = self._parse(rs.parse_queue, resp, server, pid)
        except ComfyClientError:
            return
        if pid in queue.running and rec.job.state in ("queued", "submitting"):
            # what execution_start would have said over the socket
            rec.job = jobs_mod.apply_event(
                rec.job, ev.ExecutionStart(prompt_id=pid, timestamp=None),
                now=self.env.wall_time())
            self._emit(rec.on_progress, {"event": "polled", **jobs_mod.job_to_dict(rec.job)})
        if not queue.contains(pid):
            # Neither queued nor in history: one last history read covers the write race.
            entry = await self.history(pid, retry=True)
            if entry is not None:
                rec.history = entry
                self._finish_from_history(rec, entry)
            else:
                self._fail(rec, JobLost(
                    "the server no longer knows this job (restarted or history cleared)",
                    server=server, prompt_id=pid, hint="submit the job again",
                ), "lost")

    def _finish_from_history(self, rec: JobRecord, entry: Any) -> None:
        rec.job = jobs_mod.from_history(rec.job, entry, now=self.env.wall_time())
        self._maybe_finish(rec)

    def _expire_jobs_on(self, server: str, since: float | None) -> None:
        if since is None:
            return
        if self.env.now() - since < self.options.job_deadline_s:
            return
        for pid in list(self.pins.jobs_on(server)):
            rec = self.records.get(pid)
            if rec is not None and not self._finished(rec):
                self._fail(rec, self._server_lost(rec, server), "server_lost")

    def _server_lost(self, rec: JobRecord, server: str) -> ServerLost:
        """ServerLost carrying the outputs the server reported (``executed`` events) before
        it was lost: references only, never downloaded from anywhere but ``server``."""
        outputs = jobs_mod.job_to_dict(rec.job)["outputs"]
        count = sum(len(v) for v in outputs.values())
        hint = ("the job's outputs stay on that server; try again later" if not count else
                f"{count} output image(s) were made on {server} before it was lost "
                "(error.details.outputs); they can only be fetched from that server")
        return ServerLost(
            f"the server stayed unreachable for {self.options.job_deadline_s:g}s",
            server=server, prompt_id=rec.job.prompt_id, hint=hint,
            details={"outputs": outputs, "outputsServer": server})  # _fail adds "started"

    def move_job(self, rec: JobRecord, opts: dict[str, Any]) -> JobRecord:
        """Failover: a new attempt of the same job (same ``job_id``) under a new prompt id on
        another server, with an explicit MOVE record in the audit trail.

        A new prompt id, not the old one: the lost server may come back and still run its
        copy; with distinct ids each server's history, outputs and our pins stay
        unambiguous, and no prompt id ever has requests on two servers."""
        assert rec.job.state == "moved"
        old_server, old_pid = rec.job.server, rec.job.prompt_id
        target = rec.move_target  # chosen by the failover decision in _fail
        if target is None or rec.error is None:
            raise rec.error or ServerLost("no server to move to", server=old_server,
                                          prompt_id=old_pid)
        new_pid = rq.new_prompt_id()
        new = self._new_record(new_pid, target, rec.workflow, opts, job_id=rec.job.job_id)
        new.can_move = True
        new.moves = rec.moves + 1
        new.moved_from = [*rec.moved_from, {"server": old_server, "promptId": old_pid}]
        self._audit(target, new_pid, "MOVE",
                    f"failover of job {rec.job.job_id}: {old_server} (prompt {old_pid}) -> "
                    f"{target} (prompt {new_pid}), lost before it started", "moved")
        self._log(f"job {rec.job.job_id} moved from {old_server} to {target}")
        self._emit(new.on_progress, {"event": "moved", "fromServer": old_server,
                                     "fromPromptId": old_pid, **jobs_mod.job_to_dict(new.job)})
        return new

    async def _reconcile(self, server: str) -> None:
        """After a reconnect, learn what happened to our jobs while the socket was down:
        the server replays nothing."""
        for pid in list(self.pins.jobs_on(server)):
            rec = self.records.get(pid)
            if rec is None or self._finished(rec) or rec.settled is not None:
                continue
            with contextlib.suppress(ComfyClientError):
                entry = await self.history(pid, retry=False)
                if entry is not None:
                    rec.history = entry
                    self._finish_from_history(rec, entry)

    async def history(self, prompt_id: str, *, retry: bool = False) -> Any:
        rec = self.records.get(prompt_id)
        server = rec.job.server if rec else self.api_base(prompt_id)
        attempts = self.options.history_retries if retry else 1
        for attempt in range(attempts):
            resp = await self._http(server, rq.get_history(prompt_id), job=prompt_id,
                                    operation="history")
            last = attempt + 1 == attempts
            # a 5xx to this idempotent read is asked again like an empty history; only the
            # last one is reported (as the typed error _parse raises)
            if resp.status < 500 or last:
                entry = self._parse(rs.parse_history, resp, server, prompt_id)
                if entry is not None:
                    return entry
            if not last:
                await self.env.sleep(min(0.05 * (2 ** attempt), 2.0))
        return None

    async def fetch_outputs(self, prompt_id: str) -> list[dict[str, Any]]:
        """Download every output image of the job from the job's own server. (comfyui.js
        gives each item a ``url`` made on first read.)"""
        rec = self.record_of(prompt_id)
        if rec.history is None:
            rec.history = await self.history(prompt_id, retry=True)
        if rec.history is None:
            raise JobLost("no history for this job", server=rec.job.server, prompt_id=prompt_id)
        images = []
        for ref in rec.history.images:
            blob = await self.image(ref.filename, ref.subfolder, ref.type, job=prompt_id)
            item = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type,
                    "blob": blob, "server": rec.job.server}
            images.append(item)
        rec.images = images
        if rec.job.state in jobs_mod.AWAITING_OUTPUTS:
            rec.job = jobs_mod.outputs_fetched(rec.job, now=self.env.wall_time())
            self._task_done(rec, "outputs fetched")
            self._emit(rec.on_progress, {"event": "outputs_fetched",
                                         **jobs_mod.job_to_dict(rec.job)})
        return images

    async def image(self, filename: str, subfolder: str, image_type: str, *,
                    job: str | None = None, server: str | None = None) -> Any:
        target = self.pins.server_of(job) if job else (server or self.api_base())
        resp = await self._http(target, rq.view(filename, subfolder, image_type), job=job,
                                operation="image download")
        if not 200 <= resp.status < 300:
            self._parse(rs.check_status, resp, target, job)
        return resp.body

    async def interrupt(self, prompt_id: str) -> dict[str, Any]:
        """Stop the job on its server: ``POST /interrupt`` if it runs, out of the queue if it
        waits. The queue is asked first because servers before targeted interrupts (and the
        2024 fork on PyPI) ignore the ``prompt_id`` of ``POST /interrupt`` and stop whatever
        runs, which may be another job, another user's even."""
        rec = self.record_of(prompt_id)
        server = rec.job.server
        resp = await self._http(server, rq.get_queue(), job=prompt_id, operation="interrupt")
        queue = self._parse(rs.parse_queue, resp, server, prompt_id)
        if prompt_id in queue.running:
            resp = await self._http(server, rq.interrupt(prompt_id), job=prompt_id,
                                    operation="interrupt")
            self._parse(rs.check_status, resp, server, prompt_id)
            # the server says so (execution_interrupted) once the running node returns
        elif prompt_id in queue.pending or rec.job.state in ("queued", "submitting"):
            # A queued job never starts, so no event will tell us: it leaves the queue here.
            # One whose POST /prompt is still unanswered may not be queued yet; it ends here
            # all the same (were it to run after all, nobody waits for it).
            resp = await self._http(server, rq.delete_from_queue([prompt_id]), job=prompt_id,
                                    operation="interrupt")
            self._parse(rs.check_status, resp, server, prompt_id)
            self._fail(rec, JobInterrupted("the job was cancelled before it started",
                                           server=server, prompt_id=prompt_id), "interrupted")
        return {"promptId": prompt_id, "server": server, "interrupted": True}

    def release(self, prompt_id: str) -> None:
        rec = self.record_of(prompt_id)
        if not self._finished(rec):
            rec.job = jobs_mod.mark(rec.job, "released", now=self.env.wall_time())
            self._settle(rec, "released")
            self._task_done(rec, "released by caller")

    # ------------------------------------------------------------------ reports

    def consistency(self, operation: str | None = None) -> dict[str, Any]:
        api = None
        if self.options.affinity == "session":
            with contextlib.suppress(ComfyClientError):
                api = lock_mod.api_base(self.lock, self.select)
        return audit_mod.validate_consistency(
            self.audit, self.pins, self.lock if self.options.affinity == "session" else None,
            operation=operation, api_server=api,
        )

    def debug(self) -> dict[str, Any]:
        jobs = [jobs_mod.job_to_dict(r.job) for r in self.records.values()
                if not self._finished(r)]
        chan = self.channels.get(self.lock.locked_server or "")
        return {
            "affinity": self.options.affinity,
            "clientId": self.client_id,
            "lock": lock_mod.describe(self.lock) if self.options.affinity == "session" else None,
            "lockedServer": self.lock.locked_server,
            "heldBecause": lock_mod.why_held(self.lock),
            "wsState": chan.state if chan else "closed",
            "reconnectAttempts": chan.attempts if chan else 0,
            "pendingTasks": jobs,
            "sockets": {s: {"state": c.state, "attempts": c.attempts, "reconnects": c.reconnects}
                        for s, c in self.channels.items()},
            "servers": [self.server_status(s.url) for s in self.pool.specs],
            "rules": [list(r) for r in lock_mod.RULES],
            "lockLog": list(self.lock_log)[-20:],
            "protocolErrors": {s: dict(k) for s, k in self.protocol_errors.items()},
            "unknownMessageTypes": sorted(self.unknown_types),
        }

    def unlock_condition(self) -> dict[str, Any]:
        check = lock_mod.can_unlock(self.lock)
        return {
            "canUnlock": check.can_unlock,
            "pendingTasks": check.pending_tasks,
            "lockedServer": check.locked_server,
            "wsState": check.ws_state,
            "reason": check.reason,
        }

    async def close(self) -> None:
        self.closed = True
        for task in self.reprobes.values():
            task.cancel()
        self.reprobes.clear()
        for server in list(self.channels):
            await self._close_channel(server)


def summarize_exception(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ComfyClientError):
        return exc.to_dict()
    return BadResponse(str(exc)).to_dict()
