"""How a job ends when it does not succeed: every failure passes ``JobEndings.fail``.

A job can fail on its server (an ``execution_error``, an interruption), at the client (a
refused upload, a 4xx), or by losing its server (no answer until ``jobDeadline``, or a
restart that forgot it). Each ending marks the job terminal, wakes its waiters and stops it
holding the session lock (``task_done``), so no job is ever left without a terminal state.
A loss before the job started may instead *move* it (opt-in failover): ``fail`` asks
``jobs.failover_decision`` and marks it ``moved``; ``JobLifecycle.run_job`` then re-runs it
elsewhere. The errors say what failed, where, and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import jobs as jobs_mod
from .errors import ComfyClientError, ExecutionFailed, JobInterrupted, ServerLost
from .health import HealthMonitor
from .options import ClientOptions
from .persistence import SessionStore
from .records import JobBook, JobRecord
from .routing import Routing


class JobEndings:
    """Failures, losses, the failover decision and the end of a task."""

    def __init__(self, env: Any, options: ClientOptions, book: JobBook, routing: Routing,
                 health: HealthMonitor, store: SessionStore,
                 log: Callable[[str], None]) -> None:
        self.env, self.options, self.log = env, options, log
        self.book, self.routing, self.health, self.store = book, routing, health, store

    def task_done(self, rec: JobRecord, why: str) -> None:
        """The task stops being pending (it may release the session lock); its early
        downloads still running stop, requests armed for its end marker never go out, its
        progress stops being asked for, and the tab's job map is saved."""
        disarm = getattr(self.env, "disarm", None)
        if rec.downloads is not None:  # run_job's: early downloads, reads armed for its end
            rec.cancel_downloads()
            if disarm is not None:
                disarm(rec.job.prompt_id)
        self.book.quiet(rec)
        self.routing.task_done(rec.job.prompt_id, why)
        self.store.save(self.book)

    def fail(self, rec: JobRecord, exc: ComfyClientError, state: str) -> None:
        """Every failure of a job passes here; with failover on, a job lost before it
        started is marked ``moved`` instead (its caller, run_job, re-runs it)."""
        rec.error = exc
        if exc.code in jobs_mod.LOSS_CODES:
            # whether the lost server had started it: were outputs possibly made there?
            exc.details.setdefault("started", jobs_mod.has_started(rec.job))
            decision = self._failover(rec, exc)
            if decision.move:
                rec.move_target = decision.target
                state = "moved"
                self.log(f"job {rec.job.job_id}: {decision.reason}; moving to "
                         f"{decision.target}")
        rec.job = jobs_mod.mark(rec.job, state, now=self.env.wall_time(), error=exc.to_dict())
        self.book.settle(rec, state)
        self.task_done(rec, state)

    def _failover(self, rec: JobRecord, exc: ComfyClientError) -> jobs_mod.FailoverDecision:
        """The facts for ``jobs.failover_decision``: policy, error, and the server a move
        would go to (a fresh selection without the lost server; down servers never count)."""
        if not rec.can_move:
            return jobs_mod.FailoverDecision(False, "only processImage jobs can move")
        try:
            alternative: str | None = self.health.select(
                self.book.inflight(), exclude=(rec.job.server,))
        except ComfyClientError:
            alternative = None
        return jobs_mod.failover_decision(
            self.options.failover, rec.job, exc.code, alternative=alternative,
            moves=rec.moves, max_moves=self.options.max_moves)

    def job_error(self, rec: JobRecord) -> ComfyClientError:
        """The typed error of a job the server failed or interrupted (its task ends)."""
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
        self.task_done(rec, rec.job.state)
        return exc

    def expire_jobs_on(self, server: str, since: float | None) -> None:
        """``server`` has answered neither socket nor HTTP since ``since``: past the
        deadline, its unfinished jobs end with ``ServerLost``."""
        if since is None:
            return
        if self.env.now() - since < self.options.job_deadline_s:
            return
        for pid in list(self.routing.pins.jobs_on(server)):
            rec = self.book.get(pid)
            if rec is not None and not self.book.finished(rec):
                self.fail(rec, self.server_lost(rec, server), "server_lost")

    def server_lost(self, rec: JobRecord, server: str) -> ServerLost:
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
            details={"outputs": outputs, "outputsServer": server})  # fail adds "started"
