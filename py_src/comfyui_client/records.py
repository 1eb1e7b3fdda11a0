"""The live jobs of one client: their records, their waiters and their callbacks.

A ``jobs.Job`` is a frozen value that the table in ``jobs.py`` advances; a ``JobRecord`` is
its live companion here (the futures a ``wait`` sleeps on, the page's callbacks, the
history and outputs once fetched). ``JobBook`` holds the records by prompt id, applies a
server message to its job (``apply``: the per-message hot path) and calls the page's
progress and preview callbacks. It decides nothing about servers: which server a job is on
is ``routing.py``'s, and what a message means is ``jobs.py``'s.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import jobs as jobs_mod
from .errors import ComfyClientError


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
    # set by run_job, which holds the input file and can re-run the job elsewhere
    can_move: bool = False
    moves: int = 0
    moved_from: list[dict[str, str]] = field(default_factory=list)
    move_target: str | None = None
    # the environment's progress sender for on_progress (see JobBook.emit_progress),
    # with the callback and the job's fixed values it was made for
    sender: Any = None
    sender_for: Any = None
    sender_fixed: tuple = ()
    # run_job's jobs: each output image's download, started as soon as an ``executed``
    # message names it (``JobBook.on_output``), by ``protocol.ImageRef``; None: no early
    # downloads (step-by-step jobs fetch what their caller asks for)
    downloads: dict[Any, asyncio.Future] | None = None
    # run_job's history read, armed to go out with the job's end marker (HttpGate.arm)
    armed_history: asyncio.Future | None = None
    # outputs the job's messages named but its history does not list (reported)
    unexpected: list[dict[str, str]] = field(default_factory=list)

    def cancel_downloads(self) -> None:
        """The job ended without its outputs: stop the early downloads still running."""
        for task in (self.downloads or {}).values():
            if not task.done():
                task.cancel()


def is_finished(rec: JobRecord) -> bool:
    """Terminal (outputs fetched, failed...) or released by the caller. A job being
    uploaded is not finished: it counts as load and keeps its server's socket."""
    return rec.job.released or jobs_mod.is_terminal(rec.job)


class JobBook:
    """The records of this client's jobs, by prompt id, in creation order."""

    def __init__(self, env: Any, log: Callable[[str], None]) -> None:
        self.env = env
        self.log = log
        self.records: dict[str, JobRecord] = {}
        # called with (record, executed event) for jobs that download outputs early
        self.on_output: Callable[[JobRecord, Any], None] | None = None
        # the environment's progress filter (the page): messages of jobs nobody listens to
        # need not wake Python one by one
        self._want_progress = getattr(env, "want_progress", None)

    finished = staticmethod(is_finished)

    def get(self, prompt_id: str) -> JobRecord | None:
        return self.records.get(prompt_id)

    def add(self, rec: JobRecord) -> None:
        self.records[rec.job.prompt_id] = rec
        if rec.on_progress is not None and self._want_progress is not None:
            self._want_progress(rec.job.prompt_id, True)

    def pop(self, prompt_id: str) -> JobRecord | None:
        rec = self.records.pop(prompt_id, None)
        if rec is not None:
            self.quiet(rec)
        return rec

    def quiet(self, rec: JobRecord) -> None:
        """Nobody waits for this job's progress any more (it ended, or was renamed)."""
        if rec.on_progress is not None and self._want_progress is not None:
            self._want_progress(rec.job.prompt_id, False)

    def unfinished(self) -> list[JobRecord]:
        return [r for r in self.records.values() if not is_finished(r)]

    def any_unfinished(self, prompt_ids: Iterable[str]) -> bool:
        """Is any of these jobs (known here) still unfinished?"""
        records = self.records
        return any(not is_finished(records[p]) for p in prompt_ids if p in records)

    def inflight(self) -> dict[str, int]:
        """Unfinished jobs per server: this page's own share of each server's load."""
        counts: dict[str, int] = {}
        for rec in self.records.values():
            if not is_finished(rec):
                counts[rec.job.server] = counts.get(rec.job.server, 0) + 1
        return counts

    def trim(self, keep: int = 1000) -> list[str]:
        """Forget the oldest finished records beyond ``keep``; returns their prompt ids
        (the caller unpins them)."""
        finished = [pid for pid, r in self.records.items() if is_finished(r)]
        dropped = finished[: max(0, len(self.records) - keep)]
        for pid in dropped:
            self.records.pop(pid, None)
        return dropped

    # ------------------------------------------------------------------ messages

    def apply(self, rec: JobRecord, event: Any, kind: str) -> None:
        """One server message for the job: advance its state, tell its callback, and wake
        its waiters when the server is done with it."""
        rec.last_message_at = self.env.now()
        rec.events.append(kind)
        before = rec.job
        rec.job = jobs_mod.apply_event(rec.job, event, now=self.env.wall_time())
        if rec.on_progress is not None:
            if kind in jobs_mod.FREQUENT_EVENTS:
                self.emit_progress(rec, kind)
            else:
                self.emit(rec.on_progress, {"event": kind, **jobs_mod.job_to_dict(rec.job)})
        if kind == "executed" and rec.downloads is not None and self.on_output is not None:
            self.on_output(rec, event)
        if rec.job.state != before.state:
            self.maybe_finish(rec)

    def maybe_finish(self, rec: JobRecord) -> None:
        """Resolve the waiter once the job left the server's hands (the final
        ``executing{node: null}``, an error, or an interruption)."""
        state = rec.job.state
        if state in jobs_mod.AWAITING_OUTPUTS or jobs_mod.is_terminal(rec.job):
            self.settle(rec, state)

    @staticmethod
    def settle(rec: JobRecord, state: str) -> None:
        """The server is done with the job (the first such state counts); every ``wait``
        call is woken in the same breath."""
        if rec.settled is None:
            rec.settled = state
        for waker in rec.wakers:
            if not waker.done():
                waker.set_result(None)

    @staticmethod
    async def until_done(rec: JobRecord, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the job to leave the server's hands; True if it did.
        Why not one shared future and ``wait_for(shield(...))``: each future in that chain
        resolves the next one a loop turn later (three turns, ~1 ms in a page); a private
        future per call, resolved by ``settle`` directly, wakes this task on the next turn,
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

    # ------------------------------------------------------------------ page callbacks

    def emit(self, fn: Any, payload: dict[str, Any]) -> None:
        """Call a page callback with plain data; one that raises never breaks the job."""
        if fn is None:
            return
        call_js = getattr(self.env, "call_js", None)
        try:
            if call_js is not None:
                call_js(fn, payload)
            else:
                fn(payload)
        except Exception as exc:
            self.log(f"a progress/preview callback raised {exc!r}; the job continues")

    def emit_job(self, rec: JobRecord, event: str, **extra: Any) -> None:
        """The job's whole view to its progress callback, as ``event``."""
        if rec.on_progress is not None:
            self.emit(rec.on_progress, {"event": event, **extra,
                                        **jobs_mod.job_to_dict(rec.job)})

    def emit_progress(self, rec: JobRecord, kind: str) -> None:
        """A ``progress``/``progress_state`` callback: the short view of
        ``jobs.progress_to_dict``. An environment with ``progress_sender`` (the page) gets
        the job's fixed values once per job and then only the five that move per message,
        and builds the object itself (~1 µs a message in the page, where a dict crossing
        cost ~4 µs); otherwise the dict goes through ``emit``."""
        job = rec.job
        send = rec.sender
        fixed = (job.job_id, job.prompt_id, job.server, job.total_nodes)
        if send is None or rec.sender_for is not rec.on_progress or rec.sender_fixed != fixed:
            make = getattr(self.env, "progress_sender", None)
            send = make(rec.on_progress, *fixed) if make is not None else None
            if send is None:
                self.emit(rec.on_progress, {"event": kind, **jobs_mod.progress_to_dict(job)})
                return
            rec.sender, rec.sender_for, rec.sender_fixed = send, rec.on_progress, fixed
        try:
            send(kind, job.state, job.progress, job.current_node, job.node_value, job.node_max)
        except Exception as exc:
            self.log(f"a progress callback raised {exc!r}; the job continues")
