"""Server health: what this client knows of each server, and where a new job may go.

``HealthMonitor`` owns the pool (``pool.Pool``: the configured servers and their health
values) and keeps it current: probes (``GET /system_stats`` and ``GET /prompt``), a failed
request marking its server down with a backoff, a re-probe when that backoff expires (so a
server comes back into selection by itself), queue counts from the WebSocket's ``status``
messages, and the latency of every request. ``select`` applies the pool's rule
(``pool.select_server``) to that state. The decisions are pure functions of ``pool.py``;
this class holds the live value and the re-probe tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import pool as pool_mod
from .errors import ComfyClientError, ServerMismatch
from .options import ClientOptions
from .protocol import requests as rq
from .protocol import responses as rs

if TYPE_CHECKING:
    from .gate import HttpGate


class HealthMonitor:
    """The pool and its health; probes go through the client's ``HttpGate`` (``bind``)."""

    def __init__(self, env: Any, options: ClientOptions, servers: Any) -> None:
        self.env = env
        self.options = options
        self.pool = pool_mod.Pool.create(pool_mod.normalize_servers(servers))
        self.reprobes: dict[str, asyncio.Task] = {}
        self.closed = False
        self._gate: HttpGate | None = None
        # what the client adds to a server's status: (WS state, reconnect attempts, jobs
        # pinned there); set by the client once its sockets exist
        self.socket_view: Callable[[str], tuple[str, int, int]] = lambda _s: ("closed", 0, 0)

    def bind(self, gate: HttpGate) -> None:
        """The choke point the probes are sent through (it also reports failures here)."""
        self._gate = gate

    # ------------------------------------------------------------------ the pool

    @property
    def servers(self) -> list[str]:
        return [s.url for s in self.pool.specs]

    def spec(self, server: str) -> pool_mod.ServerSpec | None:
        return self.pool.spec(server)

    def max_upload_size(self, server: str) -> int | None:
        return self.pool.max_upload_size(server)

    def reconfigure(self, servers: Any, pinned: Iterable[str]) -> dict[str, Any]:
        """Replace the server list; servers with jobs in flight keep them until done."""
        specs = pool_mod.normalize_servers(servers)
        self.pool, removed, added = self.pool.reconfigure(specs, set(pinned))
        return {"removed": list(removed), "added": list(added)}

    def select(self, inflight: dict[str, int], *, exclude: tuple[str, ...] = ()) -> str:
        """The server a new job goes to (``pool.select_server``), given this page's own
        unfinished jobs per server."""
        return pool_mod.select_server(self.pool.specs, self.pool.healths, exclude=exclude,
                                      inflight=inflight).url

    # ------------------------------------------------------------------ what we learn

    def queue_update(self, server: str, queue_remaining: Any) -> None:
        """A ``status`` message (or a test) says how many prompts the server has left."""
        self.pool = self.pool.queue_update(server, queue_remaining)

    def note_latency(self, server: str, latency_ms: float) -> None:
        if self.pool.health_of(server) is not None:
            self.pool = self.pool.with_latency(server, latency_ms)

    def mark_down(self, server: str, reason: str) -> None:
        """A request to ``server`` got no answer: down, with a backoff before the next
        probe, which is scheduled now."""
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

    # ------------------------------------------------------------------ probes

    async def probe(self, server: str) -> dict[str, Any]:
        """GET /system_stats and /prompt on one server; updates its health."""
        gate = self._gate
        assert gate is not None, "HealthMonitor.bind(gate) first"
        started = self.env.now()
        try:
            # health probes carry no job and change nothing: allowed to any server
            resp = await gate.send(server, rq.system_stats(), job=None,
                                   operation="health check", unlocked=True)
            stats = gate.parse(rs.parse_system_stats, resp, server, None)
            resp = await gate.send(server, rq.get_prompt_queue(), job=None,
                                   operation="health check", unlocked=True)
            queue = gate.parse(rs.parse_prompt_info, resp, server, None)
        except ServerMismatch:
            raise
        except ComfyClientError as exc:
            if exc.code not in ("server_unreachable", "cross_origin_blocked"):
                self.mark_down(server, exc.message)  # (the gate already marked those)
            return self.status(server, error=exc)
        latency = (self.env.now() - started) * 1000.0
        self.pool = self.pool.probe_ok(
            server, now=self.env.now(), latency_ms=latency, version=stats.version,
            devices=[d.get("name") for d in stats.devices], queue_remaining=queue,
        )
        return self.status(server)

    async def check_all(self) -> list[dict[str, Any]]:
        """Probe every configured server concurrently (no lock involved: a status check is
        not job work)."""
        results = await asyncio.gather(*(self.probe(s) for s in self.servers))
        return list(results)

    # ------------------------------------------------------------------ reports

    def status(self, server: str, error: ComfyClientError | None = None) -> dict[str, Any]:
        """One server as ``checkComfyUIServerStatus`` reports it."""
        spec = self.spec(server)
        health = self.pool.health_of(server)
        ws_state, attempts, jobs = self.socket_view(server)
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
            "wsState": ws_state,
            "reconnectAttempts": attempts,
            "jobs": jobs,
        }
        if error is not None:
            out["error"] = error.to_dict()
        return out

    def close(self) -> None:
        self.closed = True
        for task in self.reprobes.values():
            task.cancel()
        self.reprobes.clear()
