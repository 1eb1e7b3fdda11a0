"""The end of a job's life: waiting for the server to be done with it, and what it made.

``JobCompletion`` owns everything after a job's ``POST /prompt``: ``wait`` until the server is
done with it (its end marker, an error, or — when the socket went quiet or away — what the
server says over HTTP: ``check_stalled``, and ``reconcile`` after a reconnect), the history
read (retried while not written yet), and the outputs: downloaded as soon as an ``executed``
message names them while the job's other nodes run (``prefetch``), the last node's armed for
the end marker with the history read, and checked against the history (``fetch_outputs``).
Every request goes through ``HttpGate`` for the job; every failure ends through
``JobEndings``. ``JobLifecycle`` (``lifecycle.py``) runs a job up to here and calls this.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from . import jobs as jobs_mod
from .channels import Channels
from .endings import JobEndings
from .errors import ComfyClientError, InvalidInputError, JobLost
from .gate import HttpGate
from .options import ClientOptions
from .persistence import SessionStore
from .protocol import events as ev
from .protocol import requests as rq
from .protocol import responses as rs
from .records import JobBook, JobRecord
from .routing import Routing
from .transport import retrieve_failure


class JobCompletion:
    """A job's wait, history and outputs (see the module doc)."""

    def __init__(self, env: Any, options: ClientOptions, *, gate: HttpGate, routing: Routing,
                 channels: Channels, book: JobBook, store: SessionStore,
                 endings: JobEndings) -> None:
        self.env, self.options, self.log = env, options, endings.log
        self.gate, self.routing, self.channels = gate, routing, channels
        self.book, self.store, self.endings = book, store, endings
        book.on_output = self.prefetch

    def record_of(self, prompt_id: str) -> JobRecord:
        """The job's record; a job finished before a page reload gets one (its server is
        known, nothing is in flight). Unknown ids are refused."""
        rec = self.book.get(prompt_id)
        done_on = self.store.done_server(prompt_id) if rec is None else None
        if done_on is not None:
            job = jobs_mod.new_job(prompt_id, done_on, now=self.env.wall_time())
            rec = JobRecord(job=jobs_mod.released(job, now=self.env.wall_time()),
                            settled="released")
            self.book.add(rec)
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
            # without a live socket nothing will tell us: poll over HTTP at a faster pace
            live = self.channels.is_open(rec.job.server)
            interval = self.options.stall_check_s if live else self.options.poll_interval_s
            if not await self.book.until_done(rec, interval):
                await self.check_stalled(rec)
        # what was armed for the end marker (run_job's jobs only) and has not gone out (the
        # job ended otherwise, or before it was armed) is sent from here instead
        if rec.downloads is not None:
            self.gate.disarm(rec.job.prompt_id)
        armed, rec.armed_history = rec.armed_history, None
        if rec.error is not None:
            raise rec.error
        if rec.job.state in ("failed", "interrupted"):
            raise self.endings.job_error(rec)
        if rec.history is None:
            rec.history = await self.history(prompt_id, retry=True, first=armed)
        return rec

    async def check_stalled(self, rec: JobRecord) -> None:
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
                self.endings.expire_jobs_on(server, chan.unreachable_since)
            return
        if chan is not None and chan.state != "open":
            # HTTP answers, only the socket is gone (a proxy blocking WebSockets): the job
            # goes on by polling and the ServerLost deadline does not run
            chan.unreachable_since = None
        if entry is not None:
            self._finish_from_history(rec, entry)
            return
        try:
            resp = await self.gate.send(server, rq.get_queue(), job=pid, operation="stall check")
            queue = self.gate.parse(rs.parse_queue, resp, server, pid)
        except ComfyClientError:
            return
        if pid in queue.running and rec.job.state in ("queued", "submitting"):
            # what execution_start would have said over the socket
            rec.job = jobs_mod.apply_event(
                rec.job, ev.ExecutionStart(prompt_id=pid, timestamp=None),
                now=self.env.wall_time())
            self.book.emit_job(rec, "polled")
        if not queue.contains(pid):
            # Neither queued nor in history: one last history read covers the write race.
            entry = await self.history(pid, retry=True)
            if entry is not None:
                self._finish_from_history(rec, entry)
            else:
                self.endings.fail(rec, JobLost(
                    "the server no longer knows this job (restarted or history cleared)",
                    server=server, prompt_id=pid, hint="submit the job again",
                ), "lost")

    def _finish_from_history(self, rec: JobRecord, entry: Any) -> None:
        rec.history = entry
        rec.job = jobs_mod.from_history(rec.job, entry, now=self.env.wall_time())
        self.book.maybe_finish(rec)

    async def reconcile(self, server: str) -> None:
        """After a reconnect, learn what happened to our jobs while the socket was down:
        the server replays nothing."""
        for pid in list(self.routing.pins.jobs_on(server)):
            rec = self.book.get(pid)
            if rec is None or self.book.finished(rec) or rec.settled is not None:
                continue
            with contextlib.suppress(ComfyClientError):
                entry = await self.history(pid, retry=False)
                if entry is not None:
                    self._finish_from_history(rec, entry)

    async def history(self, prompt_id: str, *, retry: bool = False,
                      first: asyncio.Future | None = None) -> Any:
        """GET /history/{id} from the job's server; with ``retry``, an empty answer (not
        written yet) and a 5xx are asked again, ``historyRetries`` times in all. ``first``:
        the first read, armed to go out at the job's end marker (``HttpGate.arm``)."""
        rec = self.book.get(prompt_id)
        server = rec.job.server if rec else self.routing.api_base(prompt_id)
        attempts = self.options.history_retries if retry else 1
        for attempt in range(attempts):
            resp = await first if first is not None and attempt == 0 else None
            if resp is None:
                resp = await self.gate.send(server, rq.get_history(prompt_id), job=prompt_id,
                                            operation="history")
            last = attempt + 1 == attempts
            # a 5xx to this idempotent read is asked again like an empty history; only the
            # last one is reported (as the typed error parse raises)
            if resp.status < 500 or last:
                entry = self.gate.parse(rs.parse_history, resp, server, prompt_id)
                if entry is not None:
                    return entry
            if not last:
                await self.env.sleep(min(0.05 * (2 ** attempt), 2.0))
        return None

    async def fetch_outputs(self, prompt_id: str) -> list[dict[str, Any]]:
        """Every output image the job's history lists, from the job's own server, in the
        history's order; the downloads run in parallel, and those started early (when an
        ``executed`` message named the image) are used, not repeated. An output the
        messages named but the history does not list is reported, not returned.
        (comfyui.js gives each item a ``url`` made on first read.)"""
        rec = self.record_of(prompt_id)
        if rec.history is None:
            rec.history = await self.history(prompt_id, retry=True)
        if rec.history is None:
            raise JobLost("no history for this job", server=rec.job.server, prompt_id=prompt_id)
        listed = rec.history.images
        early = rec.downloads or {}
        tasks = []
        for ref in listed:
            task = early.get(ref)
            if task is None or task.cancelled():
                task = self._download(ref, prompt_id)
            tasks.append(task)
        blobs = await asyncio.gather(*tasks) if tasks else []
        server = rec.job.server
        images = [{"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type,
                   "blob": blob, "server": server} for ref, blob in zip(listed, blobs, strict=True)]
        rec.images = images
        named = set(listed)
        unexpected = [ref.to_dict() for ref in early if ref not in named]
        if unexpected and not rec.unexpected:
            rec.unexpected = unexpected
            self.log(f"job {prompt_id}: {len(unexpected)} output(s) named by its messages are "
                     f"not in its history on {rec.job.server}: "
                     + ", ".join(u["filename"] for u in unexpected))
        if rec.job.state in jobs_mod.AWAITING_OUTPUTS:
            rec.job = jobs_mod.outputs_fetched(rec.job, now=self.env.wall_time())
            self.endings.task_done(rec, "outputs fetched")
            self.book.emit_job(rec, "outputs_fetched")
        return images

    def prefetch(self, rec: JobRecord, event: Any) -> None:
        """An ``executed`` message named outputs of a run_job job (``JobBook.on_output``):
        each downloads now, while the job's other nodes still run. The outputs of its last
        node are armed to go out with the job's end marker instead, beside the history
        read: the marker follows within a millisecond or two, and sent at once they only
        competed with the server finishing the job (measured against a real ComfyUI 0.33 on
        the CPU: its end marker came 3.8 ms later, the job ended 1.2 ms later in all)."""
        downloads = rec.downloads
        if downloads is None:
            return
        refs = [ref for ref in event.images if ref not in downloads]
        if not refs:
            return
        job = rec.job
        done = set(job.executed_nodes).union(job.cached_nodes)
        at_end = rec.workflow is not None and done.issuperset(rec.workflow)
        for ref in refs:
            downloads[ref] = self._download(ref, job.prompt_id, at_end=at_end)

    def _download(self, ref: Any, prompt_id: str, *, at_end: bool = False) -> asyncio.Future:
        """One output's ``GET /view`` as a task; ``at_end``: armed to go out with the job's
        end marker (sent from here if it never does). A failure nobody awaits is not
        reported as an unretrieved exception (the history decides whether it matters)."""
        armed = None
        if at_end:
            server = self.routing.pins.server_of(prompt_id) or ""
            armed = self.gate.arm(server, rq.view(ref.filename, ref.subfolder, ref.type),
                                  job=prompt_id, operation="image download")
        task = asyncio.ensure_future(self.image(ref.filename, ref.subfolder, ref.type,
                                                job=prompt_id, first=armed))
        task.add_done_callback(retrieve_failure)
        return task

    async def image(self, filename: str, subfolder: str, image_type: str, *,
                    job: str | None = None, server: str | None = None,
                    first: asyncio.Future | None = None) -> Any:
        """GET /view of one file from the job's server (or the named one, or the API base);
        ``first``: the request armed for the job's end marker, if it went out."""
        target = (self.routing.pins.server_of(job) if job
                  else (server or self.routing.api_base()))
        resp = await first if first is not None else None
        if resp is None:
            resp = await self.gate.send(target, rq.view(filename, subfolder, image_type),
                                        job=job, operation="image download")
        if not 200 <= resp.status < 300:
            self.gate.parse(rs.check_status, resp, target, job)
        return resp.body

