"""``PoolClient``: the small facade that wires the client's parts together.

Each part owns one concern behind a few public methods (``notes/design.md``: httpx's
``Client`` over its transports and pool, h11's state tables apart from its I/O):

* ``health.HealthMonitor`` — the servers, their health (probe, re-probe, backoff), selection;
* ``routing.Routing`` — the session lock, job pins, uploads' servers: where a call may go;
* ``gate.HttpGate`` — the one HTTP choke point (check, credentials, audit record);
* ``channels.Channels`` — the WebSockets, reconnects, and the dispatch of their frames;
* ``records.JobBook`` — the live jobs, their waiters and page callbacks;
* ``lifecycle.JobLifecycle`` — one job's life, upload to download (``run_job``) and its steps;
* ``completion.JobCompletion`` — the wait for a job's end, its history and its outputs;
* ``endings.JobEndings`` — failures, losses, failover decisions;
* ``persistence.SessionStore`` — the tab's client id and job map across reloads.

The facade builds them, answers the channels' callbacks (``_ChannelWiring``), and offers
what ``api.py`` (the old ``comfyui.js`` names) and scripts call: every method here is one
line into a part, or a report assembled from several. It touches the outside world only
through the injected ``Transport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from . import audit as audit_mod
from . import console as console_mod
from . import jobs as jobs_mod
from . import lock as lock_mod
from .channels import Channels, ServerChannel
from .completion import JobCompletion
from .console import Console
from .endings import JobEndings
from .errors import ComfyClientError
from .gate import HttpGate
from .health import HealthMonitor
from .lifecycle import JobLifecycle
from .options import ClientOptions
from .persistence import SessionStore
from .protocol import requests as rq
from .records import JobBook, JobRecord
from .routing import Routing
from .selftest import run_self_test
from .transport import Transport

# ClientOptions with PoolClient: what a script needs to make a client
__all__ = ["ClientOptions", "PoolClient"]


class _ChannelWiring:
    """What a socket event means for the rest of the client (``channels.ChannelOwner``)."""

    def __init__(self, client: PoolClient) -> None:
        self.client = client

    def ws_url(self, server: str) -> str:
        return self.client.ws_url(server)

    def audit_socket(self, server: str, url: str) -> None:
        self.client.gate.record(server, None, "WS", url, "open")

    def origin_hint(self) -> str:
        return self.client.gate.origin_hint()

    def socket_opened(self, chan: ServerChannel) -> None:
        self.client.routing.on_ws_open(chan)

    def socket_closed(self, chan: ServerChannel) -> None:
        self.client.routing.on_ws_closed(chan)

    def needs_socket(self, server: str) -> bool:
        return self.client.routing.needs_socket(server)

    async def reconnected(self, server: str) -> None:
        await self.client.completion.reconcile(server)

    def unreachable(self, server: str, since: float | None) -> None:
        self.client.endings.expire_jobs_on(server, since)

    def queue_update(self, server: str, queue_remaining: Any) -> None:
        self.client.health.queue_update(server, queue_remaining)


class PoolClient:
    """The client a page (or a script) uses. See ``api.PageApi`` for the JS-facing names."""

    def __init__(self, env: Transport, servers: Any, options: ClientOptions | None = None) -> None:
        self.env = env
        self.options = options = options or ClientOptions()
        self.console = log = Console(env, options.log)
        self.audit = audit_mod.AuditLog(maxlen=options.max_audit)
        self.health = HealthMonitor(env, options, servers)
        self.book = JobBook(env, log)
        self.store = SessionStore(env, options)
        self.routing = Routing(env, options, self.health, self.book, log)
        self.gate = HttpGate(env, options, self.audit, self.routing, self.health)
        self.health.bind(self.gate)
        self.channels = Channels(env, options, self.book, _ChannelWiring(self), log)
        self.routing.bind(self.channels)
        self.health.socket_view = self._socket_view
        self.endings = JobEndings(env, options, self.book, self.routing, self.health,
                                  self.store, log)
        self.completion = JobCompletion(
            env, options, gate=self.gate, routing=self.routing, channels=self.channels,
            book=self.book, store=self.store, endings=self.endings)
        self.lifecycle = JobLifecycle(
            env, options, gate=self.gate, health=self.health, routing=self.routing,
            channels=self.channels, book=self.book, store=self.store, endings=self.endings,
            completion=self.completion)
        self.background: set[asyncio.Future] = set()
        self.closed = False

    # ------------------------------------------------------------------ identity, config

    @property
    def client_id(self) -> str:
        return self.store.client_id

    @property
    def servers(self) -> list[str]:
        return self.health.servers

    def ws_url(self, server: str) -> str:
        spec = self.health.spec(server)
        base = server.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + rq.ws_path(self.client_id, token=spec.token if spec else None)

    def reconfigure(self, servers: Any, options: ClientOptions | None = None) -> dict[str, Any]:
        """Replace the server list (servers with jobs in flight keep them until done) and,
        if given, the options (the affinity cannot change: ``api.js_init`` makes a new
        client for that)."""
        if options is not None:
            if options.affinity != self.options.affinity:
                raise ValueError("the affinity of a client cannot change")
            # one options object is shared by every part: update it in place
            for f in dataclasses.fields(ClientOptions):
                setattr(self.options, f.name, getattr(options, f.name))
            self.console.set_level(self.options.log)
        return self.health.reconfigure(servers, self.routing.pins.servers_in_use())

    async def reattach(self) -> list[str]:
        """After a page reload: re-pin the jobs the last page left in flight (and the servers
        of finished ones, so their history and images are still fetched from the right
        place), reconnect to their servers and learn what happened meanwhile."""
        in_flight, done = self.store.saved()
        for pid, server in done.items():
            if pid not in self.routing.pins:
                self.routing.pins = self.routing.pins.pin(pid, server)
                self.store.remember_done(pid, server)
        revived = []
        for pid, server in in_flight.items():
            if self.book.get(pid) is not None:
                continue
            try:
                if self.options.affinity == "session":
                    await self.routing.connect(server)
                else:
                    await self.channels.open(server)
            except ComfyClientError as exc:
                self.console(f"could not reattach job {pid} on {server}: {exc}")
                continue
            rec = self.lifecycle.revive(pid, server)
            revived.append(pid)
            task = asyncio.ensure_future(self._finish_reattached(rec))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        for server in {self.book.records[p].job.server for p in revived}:
            await self.completion.reconcile(server)
        return revived

    async def _finish_reattached(self, rec: JobRecord) -> None:
        """Nobody on the new page awaits a reattached job: once the server is done with it,
        release it so it stops holding the lock; its outputs stay fetchable by id."""
        with contextlib.suppress(ComfyClientError):
            await self.completion.wait(rec.job.prompt_id)
        if not self.book.finished(rec):
            self.lifecycle.release(rec.job.prompt_id)

    # ------------------------------------------------------------------ where calls go

    def select(self) -> str:
        return self.routing.select()

    def api_base(self, prompt_id: str | None = None) -> str:
        return self.routing.api_base(prompt_id)

    async def ensure_connection(self, server: str | None = None) -> str:
        return await self.routing.connect(server)

    def ws_state(self, server: str) -> str:
        return self.channels.state_of(server)

    # ------------------------------------------------------------------ jobs

    async def run_job(self, workflow: Any, file: Any, **kw: Any) -> dict[str, Any]:
        """A job's whole life on one server (``JobLifecycle.run_job``)."""
        return await self.lifecycle.run_job(workflow, file, **kw)

    async def self_test(self) -> dict[str, Any]:
        """One tiny job per server, each checked from the audit (``selftest``)."""
        return await run_self_test(self)

    async def upload(self, file: Any, **kw: Any) -> dict[str, Any]:
        return await self.lifecycle.upload(file, **kw)

    async def submit(self, workflow: Any, **kw: Any) -> JobRecord:
        return await self.lifecycle.submit(workflow, **kw)

    async def wait(self, prompt_id: str) -> JobRecord:
        return await self.completion.wait(prompt_id)

    async def history(self, prompt_id: str, *, retry: bool = False) -> Any:
        return await self.completion.history(prompt_id, retry=retry)

    async def fetch_outputs(self, prompt_id: str) -> list[dict[str, Any]]:
        return await self.completion.fetch_outputs(prompt_id)

    async def image(self, filename: str, subfolder: str, image_type: str, *,
                    job: str | None = None, server: str | None = None) -> Any:
        return await self.completion.image(filename, subfolder, image_type, job=job,
                                           server=server)

    async def interrupt(self, prompt_id: str) -> dict[str, Any]:
        return await self.lifecycle.interrupt(prompt_id)

    def release(self, prompt_id: str) -> None:
        self.lifecycle.release(prompt_id)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job this client knows, as plain data."""
        return [jobs_mod.job_to_dict(r.job) for r in self.book.records.values()]

    def jobs_in_flight(self) -> int:
        return len(self.book.unfinished())

    # ------------------------------------------------------------------ health

    async def probe(self, server: str) -> dict[str, Any]:
        return await self.health.probe(server)

    async def check_all(self) -> list[dict[str, Any]]:
        return await self.health.check_all()

    def server_status(self, server: str) -> dict[str, Any]:
        return self.health.status(server)

    def _socket_view(self, server: str) -> tuple[str, int, int]:
        chan = self.channels.get(server)
        return (chan.state if chan else "closed", chan.attempts if chan else 0,
                len(self.routing.pins.jobs_on(server)))

    # ------------------------------------------------------------------ reports

    def audit_log(self, prompt_id: str | None = None) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.audit.records(job=prompt_id or None)]

    def consistency(self, operation: str | None = None) -> dict[str, Any]:
        session = self.options.affinity == "session"
        return audit_mod.validate_consistency(
            self.audit, self.routing.pins, self.routing.lock if session else None,
            operation=operation, api_server=self.routing.api_base_or_none(),
        )

    def debug(self) -> dict[str, Any]:
        """Everything about the lock and the sockets, as plain data; ``summary`` holds the
        few lines ``debugWebSocketLock()`` prints (locked server, why, WebSocket, tasks)."""
        lock = self.routing.lock
        jobs = [jobs_mod.job_to_dict(r.job) for r in self.book.unfinished()]
        chan = self.channels.get(lock.locked_server or "")
        out = {
            "affinity": self.options.affinity,
            "clientId": self.client_id,
            "lock": lock_mod.describe(lock) if self.options.affinity == "session" else None,
            "lockedServer": lock.locked_server,
            "heldBecause": lock_mod.why_held(lock),
            "wsState": chan.state if chan else "closed",
            "reconnectAttempts": chan.attempts if chan else 0,
            "pendingTasks": jobs,
            "sockets": {s: {"state": c.state, "attempts": c.attempts, "reconnects": c.reconnects}
                        for s, c in self.channels.by_server.items()},
            "servers": [self.health.status(s) for s in self.servers],
            "rules": [list(r) for r in lock_mod.RULES],
            "lockLog": list(self.routing.lock_log)[-20:],
            "protocolErrors": {s: dict(k) for s, k in self.channels.protocol_errors.items()},
            "unknownMessageTypes": sorted(self.channels.unknown_types),
        }
        out["summary"] = console_mod.lock_summary(out)
        return out

    def unlock_condition(self) -> dict[str, Any]:
        """May the page move to another server now; ``summary``: the line
        ``checkServerUnlockCondition()`` prints."""
        check = lock_mod.can_unlock(self.routing.lock)
        out = {
            "canUnlock": check.can_unlock,
            "pendingTasks": check.pending_tasks,
            "lockedServer": check.locked_server,
            "wsState": check.ws_state,
            "reason": check.reason,
        }
        out["summary"] = console_mod.unlock_summary(out)
        return out

    async def close(self) -> None:
        self.closed = True
        self.health.close()
        await self.channels.close_all()

