"""The one HTTP choke point: every request of the client passes ``HttpGate.send``.

Every request is made *for a server* and, where it belongs to one, *for a job*. The gate
refuses a request whose server differs from the job's pin (or, in session mode, from the
lock: ``Routing.check``), adds that server's credentials and nobody else's, and appends the
audit record that ``validateServerConsistency`` reads. A wrong-server request is thus
impossible by construction rather than detected afterwards. A request that gets no answer
marks its server down (``HealthMonitor.mark_down``) and becomes a typed error naming the
server and, for a refused origin, the ``--enable-cors-header`` flag to fix it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import audit as audit_mod
from .errors import ComfyClientError, CrossOriginBlocked, ServerUnreachable
from .options import ClientOptions
from .protocol import requests as rq
from .transport import HttpResponse, TransportError, request_in_turn, retrieve_failure

if TYPE_CHECKING:
    from .health import HealthMonitor
    from .routing import Routing


class HttpGate:
    """``send`` (check, credentials, audit, health) and ``parse`` (the typed reading)."""

    def __init__(self, env: Any, options: ClientOptions, audit: audit_mod.AuditLog,
                 routing: Routing, health: HealthMonitor) -> None:
        self.env, self.options = env, options
        self.audit, self.routing, self.health = audit, routing, health

    def origin_hint(self) -> str:
        """This page's origin, for the ``--enable-cors-header`` hint of errors."""
        return self.env.page_origin() or "<this page's origin>"

    def record(self, server: str, job: str | None, method: str, path: str,
               status: Any) -> None:
        """One audit record (requests; also WebSocket opens and failover moves)."""
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

    async def send(
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
        job's pin (nothing is sent); adds only this server's credentials; writes the audit
        record. ``unlocked``: a request that is no job's work (a health probe) may go to
        any configured server, even while the session is locked elsewhere."""
        self.routing.check(server, job, operation, unlocked=unlocked)
        started = self.env.now()
        try:
            resp = await self.env.request(
                server, req, extra_headers=self._credentials(server),
                timeout=timeout or self.options.request_timeout_s,
            )
        except TransportError as exc:
            raise self._no_answer(server, job, req, operation, exc) from None
        self.record(server, job, req.method, audit_mod.redact_url(req.url("")), resp.status)
        self.health.note_latency(server, (self.env.now() - started) * 1000.0)
        return resp

    async def send_pair(
        self,
        server: str,
        first: rq.HttpRequest,
        second: rq.HttpRequest,
        *,
        job: str,
        operations: tuple[str, str],
        expect: dict[str, Any],
        timeouts: tuple[float, float],
    ) -> tuple[HttpResponse, HttpResponse | ComfyClientError | None]:
        """``first``, then ``second`` only if ``first``'s answer is a JSON object with every
        field of ``expect`` (``responses.answer_matches``): for an upload and the
        ``POST /prompt`` whose workflow reads the uploaded name. An environment with
        ``request_pair`` (the page) sends ``second`` the moment ``first`` answers, with no
        Python step between them; elsewhere this sends them one after the other.

        Both are checked before anything is sent and audited as if sent one by one, so the
        lock and ``validateServerConsistency`` see them as any other request. No answer to
        ``first`` raises like ``send``; ``second`` comes back as its answer, its typed
        error (no answer), or None when it was not sent."""
        self.routing.check(server, job, operations[0])
        self.routing.check(server, job, operations[1])
        headers = self._credentials(server)
        started = self.env.now()
        pair = getattr(self.env, "request_pair", None)
        try:
            if pair is not None:
                resp, then = await pair(server, first, second, expect=expect,
                                        extra_headers=headers, timeouts=timeouts)
            else:
                resp, then = await request_in_turn(self.env, server, first, second,
                                                   expect=expect, extra_headers=headers,
                                                   timeouts=timeouts)
        except TransportError as exc:
            raise self._no_answer(server, job, first, operations[0], exc) from None
        self.record(server, job, first.method, audit_mod.redact_url(first.url("")), resp.status)
        second_out: HttpResponse | ComfyClientError | None = None
        if isinstance(then, TransportError):
            second_out = self._no_answer(server, job, second, operations[1], then)
        elif then is not None:
            self.record(server, job, second.method, audit_mod.redact_url(second.url("")),
                        then.status)
            second_out = then
        self.health.note_latency(server, (self.env.now() - started) * 1000.0)
        return resp, second_out

    def arm(self, server: str, req: rq.HttpRequest, *, job: str, operation: str,
            timeout: float | None = None) -> asyncio.Future | None:
        """Prepare ``req`` to go out the moment ``job``'s end marker
        (``executing{node: null}``) reaches the page, with no Python step between (the
        environment's ``arm_on_end``: comfyui.js fires it from its socket listener). The
        request is checked now and audited when it is answered, as any other. Returns a
        future of its answer, or of None if it never went out (``disarm``); None when the
        environment cannot arm requests. A request that got no answer raises like
        ``send``."""
        arm_on_end = getattr(self.env, "arm_on_end", None)
        if arm_on_end is None:
            return None
        self.routing.check(server, job, operation)
        fired = arm_on_end(job, server, req, extra_headers=self._credentials(server),
                           timeout=timeout or self.options.request_timeout_s)
        if fired is None:
            return None
        task = asyncio.ensure_future(self._armed(server, req, job, operation, fired))
        task.add_done_callback(retrieve_failure)
        return task

    def disarm(self, job: str) -> None:
        """``job``'s armed requests that have not gone out never will (their futures give
        None); those that went out are answered and audited as usual."""
        disarm = getattr(self.env, "disarm", None)
        if disarm is not None:
            disarm(job)

    async def _armed(self, server: str, req: rq.HttpRequest, job: str, operation: str,
                     fired: Any) -> HttpResponse | None:
        out = await fired
        if out is None:
            return None
        if isinstance(out, TransportError):
            raise self._no_answer(server, job, req, operation, out)
        self.record(server, job, req.method, audit_mod.redact_url(req.url("")), out.status)
        return out

    def _credentials(self, server: str) -> dict[str, str]:
        """This server's own credentials, and nobody else's."""
        spec = self.health.spec(server)
        if spec is not None and spec.token:
            return {"Authorization": f"Bearer {spec.token}"}
        return {}

    def _no_answer(self, server: str, job: str | None, req: rq.HttpRequest, operation: str,
                   exc: TransportError) -> ComfyClientError:
        """A request that got no answer: audited as such, its server marked down, and the
        typed error to raise (a refused origin names the flag that fixes it)."""
        self.record(server, job, req.method, audit_mod.redact_url(req.url("")),
                    f"error:{exc.kind}")
        self.health.mark_down(server, str(exc))
        if exc.kind == "cors":
            return CrossOriginBlocked(
                f"{operation}: the server refused this page's origin",
                server=server,
                prompt_id=job,
                hint=f"start ComfyUI with --enable-cors-header {self.origin_hint()}",
            )
        return ServerUnreachable(
            f"{operation}: no answer ({exc})",
            server=server,
            prompt_id=job,
            hint="check the server is running; if it is, it may refuse this page's "
            f"origin: start ComfyUI with --enable-cors-header {self.origin_hint()}",
        )

    def parse(self, fn: Callable[..., Any], resp: HttpResponse, server: str, job: str | None,
              **kw: Any) -> Any:
        """``fn`` (a ``protocol.responses`` parser) on the answer, with what its errors
        name: the server, the job and this page's origin."""
        return fn(
            resp.status, resp.headers, resp.body, server=server, prompt_id=job,
            page_origin=self.env.page_origin(), **kw,
        )

