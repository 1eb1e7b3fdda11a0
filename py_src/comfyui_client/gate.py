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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import audit as audit_mod
from .errors import CrossOriginBlocked, ServerUnreachable
from .options import ClientOptions
from .protocol import requests as rq
from .transport import HttpResponse, TransportError

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
        spec = self.health.spec(server)
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
            self.record(server, job, req.method, path, f"error:{exc.kind}")
            self.health.mark_down(server, str(exc))
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
        self.record(server, job, req.method, path, resp.status)
        self.health.note_latency(server, (self.env.now() - started) * 1000.0)
        return resp

    def parse(self, fn: Callable[..., Any], resp: HttpResponse, server: str, job: str | None,
              **kw: Any) -> Any:
        """``fn`` (a ``protocol.responses`` parser) on the answer, with what its errors
        name: the server, the job and this page's origin."""
        return fn(
            resp.status, resp.headers, resp.body, server=server, prompt_id=job,
            page_origin=self.env.page_origin(), **kw,
        )
