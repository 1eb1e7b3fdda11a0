"""One job's life, from upload to download, on one server: ``JobLifecycle.run_job``.

``run_job`` is the whole life in one call (what ``processImage`` and the consistency self
test run): pick the server and pin the job to it, open its socket, name the input after its
bytes, upload it (unless the server already holds it) and submit the workflow reading it as
one chained pair, with a prompt id chosen here, then let ``JobCompletion``
(``completion.py``) wait for the job's end and fetch its history and outputs, and — with
failover on — run it again elsewhere when its server was lost before it started. Every
request of it passes ``HttpGate`` for the job, so it cannot leave the job's server. The
steps are public on their own too (the old module's step-by-step calls: ``upload``,
``submit``, ``interrupt``, ``release``). Every failure ends through ``JobEndings.fail``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import jobs as jobs_mod
from . import pool as pool_mod
from .channels import Channels
from .completion import JobCompletion
from .endings import JobEndings
from .errors import (
    BadResponse,
    ComfyClientError,
    InvalidInputError,
    InvalidWorkflow,
    JobInterrupted,
    ServerLost,
    ServerUnreachable,
    UploadConflict,
)
from .gate import HttpGate
from .health import HealthMonitor
from .options import ClientOptions
from .persistence import SessionStore
from .protocol import requests as rq
from .protocol import responses as rs
from .protocol import workflow as wf
from .records import JobBook, JobRecord
from .routing import Routing


class JobLifecycle:
    """A job's life and its steps (see the module doc)."""

    def __init__(self, env: Any, options: ClientOptions, *, gate: HttpGate,
                 health: HealthMonitor, routing: Routing, channels: Channels, book: JobBook,
                 store: SessionStore, endings: JobEndings, completion: JobCompletion) -> None:
        self.env, self.options, self.log = env, options, endings.log
        self.gate, self.health, self.routing, self.channels = gate, health, routing, channels
        self.book, self.store, self.endings = book, store, endings
        self.completion = completion
        # (server, content-named input) this page uploaded there: not sent again (bounded)
        self.held: dict[tuple[str, str], None] = {}

    @property
    def session(self) -> bool:
        return self.options.affinity == "session"

    # ------------------------------------------------------------------ the whole life

    async def run_job(
        self,
        workflow: Any,
        file: Any,
        *,
        image_node: str | None = None,
        filename: str = "image.png",
        content_type: str = "image/png",
        size: int | None = None,
        prompt_id: str | None = None,
        on_progress: Any = None,
        on_preview: Any = None,
        server: str | None = None,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """Upload -> set the load-image input -> submit -> wait -> history -> images, all on
        the job's one server; returns ``{promptId, server, images, history, upload,
        movedFrom, unexpectedOutputs}``.

        The input is named after its bytes (``workflow.content_upload_name``): concurrent
        jobs with different images never share a name, a job repeated on the same image
        hits ComfyUI's cache, and a server this page already gave those bytes is not sent
        them again. The ``POST /prompt`` goes out the moment the upload answers with that
        name (``HttpGate.send_pair``); each output downloads as soon as an ``executed``
        message names it while other nodes still run, and the history read, with the last
        node's outputs, goes out the moment the job's end marker arrives (``HttpGate.arm``,
        ``completion.py``). ``server`` pins the job to that server *outside* the session lock (the
        self test runs one job per server so, without moving the lock or waiting for it).
        ``digest``: the sha256 (hex) of ``file``'s bytes when the caller has it already
        (comfyui.js hashes a Blob before the call). A cancelled call releases its job."""
        graph = wf.validate_workflow(workflow)
        node = wf.pick_image_node(graph, image_node)
        wf.validate_filename(filename)
        upload = {"file": file, "digest": digest, "filename": filename,
                  "content_type": content_type, "size": size}
        pid = prompt_id or wf.new_prompt_id()
        callbacks = {"onProgress": on_progress, "onPreview": on_preview}
        if server is not None:
            rec = self._create(pid, server, graph, callbacks, hold_lock=False)
        elif self.session:
            await self.routing.connect()
            target = self.routing.server_for_new_job(None, None)
            rec = self._create(pid, target, graph, callbacks)
        else:
            # select and pin in one step (no await between), so concurrent calls see each
            # other's in-flight jobs and spread out
            rec = self._create(pid, self.routing.select(), graph, callbacks)
            # this call holds the input file, so it alone can re-run the job elsewhere
            rec.can_move = self.options.failover != "off"
        while True:
            try:
                up, rec, images = await self._attempt(rec, graph, node, upload,
                                                      outside_lock=server is not None)
                break
            except ComfyClientError as exc:
                if not self.book.finished(rec):
                    self.endings.fail(rec, exc, "rejected" if exc.code == "invalid_workflow"
                                      else "failed")
                if rec.job.state != jobs_mod.MOVED:
                    raise
                rec = self.move(rec, callbacks)  # failover: same job, new attempt elsewhere
            except asyncio.CancelledError:
                if not self.book.finished(rec):
                    self.release(rec.job.prompt_id)
                raise
        return {"promptId": rec.job.prompt_id, "server": rec.job.server, "images": images,
                "history": rec.history.raw if rec.history else None,
                "upload": up, "movedFrom": list(rec.moved_from),
                "unexpectedOutputs": list(rec.unexpected)}

    async def _attempt(self, rec: JobRecord, graph: dict[str, Any], node: str,
                       upload: dict[str, Any], *, outside_lock: bool,
                       ) -> tuple[dict[str, Any], JobRecord, list[Any]]:
        """One attempt of ``run_job`` on the record's server: every step on that server."""
        server = rec.job.server
        if outside_lock:
            await self.channels.open(server, locks=False)
        elif not self.session:
            await self.connect_for_job(rec)
        name = upload.get("name")
        if name is None:  # the first attempt names the input after its bytes
            digest = upload["digest"] or await self._digest(upload["file"])
            name = upload["name"] = wf.content_upload_name(
                digest, upload["filename"], upload["content_type"])
        graph = wf.set_input(graph, node, "image", name)
        rec.downloads = {}  # outputs download as soon as a message names them
        up: dict[str, Any] | None = None
        if (server, name) in self.held:
            # this page gave these bytes to this server before: submit at once; a server
            # that lost the file (a restart, a cleaned input folder) refuses the prompt,
            # and then gets the file again and the job runs all the same
            try:
                rec, _ = await self._submit(rec, graph)
                up = {"name": name, "subfolder": "", "type": "input", "server": server,
                      "reused": True}
            except InvalidWorkflow as exc:
                if not rs.missing_input_files(exc.details.get("node_errors"), [name]):
                    raise
                self.held.pop((server, name), None)
                self.log(f"{server} no longer holds {name}: uploading it again")
        if up is None:
            rec, up = await self._submit(rec, graph, upload=upload)
        # the history read leaves the moment the job's end marker arrives
        rec.armed_history = self.gate.arm(server, rq.get_history(rec.job.prompt_id),
                                          job=rec.job.prompt_id, operation="history")
        rec = await self.completion.wait(rec.job.prompt_id)
        images = await self.completion.fetch_outputs(rec.job.prompt_id)
        return up, rec, images

    async def _digest(self, file: Any) -> str:
        """The sha256 (hex) of the input's bytes, for its name: hashed off the Python path
        where the environment can (the page: ``crypto.subtle`` in JS, remembered per Blob)."""
        digest = getattr(self.env, "content_digest", None)
        if isinstance(file, (bytes, bytearray, memoryview)) or digest is None:
            import hashlib

            if not isinstance(file, (bytes, bytearray, memoryview)):
                raise InvalidInputError(
                    f"cannot upload a {type(file).__name__}: pass a File, a Blob or bytes")
            return hashlib.sha256(file).hexdigest()
        return await digest(file)

    def _create(
        self, prompt_id: str, server: str, workflow: Any, callbacks: dict[str, Any],
        *, hold_lock: bool = True, job_id: str | None = None,
    ) -> JobRecord:
        """A new job pinned to ``server`` (holding the session lock unless ``hold_lock`` is
        False), saved in the tab's job map."""
        job = jobs_mod.new_job(job_id or prompt_id, server, now=self.env.wall_time(),
                               workflow=workflow, prompt_id=prompt_id)
        rec = JobRecord(job=job, workflow=workflow)
        rec.on_progress = callbacks.get("onProgress")
        rec.on_preview = callbacks.get("onPreview")
        rec.last_message_at = self.env.now()
        self.book.add(rec)
        self.routing.pin(prompt_id, server, hold_lock=hold_lock)
        self.store.save(self.book)
        for dropped in self.book.trim():
            self.routing.unpin(dropped)
        return rec

    def revive(self, prompt_id: str, server: str) -> JobRecord:
        """A job the previous page of this tab left in flight (after a reload): pinned
        again to its server and waited for as a submitted job."""
        rec = self._create(prompt_id, server, None, {})
        rec.job = jobs_mod.mark(rec.job, "submitting", now=self.env.wall_time())
        rec.job = jobs_mod.submitted(rec.job, now=self.env.wall_time())
        return rec

    def move(self, rec: JobRecord, callbacks: dict[str, Any]) -> JobRecord:
        """Failover: a new attempt of the same job (same ``job_id``) under a new prompt id on
        another server, with an explicit MOVE record in the audit trail.

        A new prompt id, not the old one: the lost server may come back and still run its
        copy; with distinct ids each server's history, outputs and our pins stay
        unambiguous, and no prompt id ever has requests on two servers."""
        assert rec.job.state == "moved"
        old_server, old_pid = rec.job.server, rec.job.prompt_id
        target = rec.move_target  # chosen by the failover decision in JobEndings.fail
        if target is None or rec.error is None:
            raise rec.error or ServerLost("no server to move to", server=old_server,
                                          prompt_id=old_pid)
        new_pid = rq.new_prompt_id()
        new = self._create(new_pid, target, rec.workflow, callbacks, job_id=rec.job.job_id)
        new.can_move = True
        new.moves = rec.moves + 1
        new.moved_from = [*rec.moved_from, {"server": old_server, "promptId": old_pid}]
        self.gate.record(target, new_pid, "MOVE",
                         f"failover of job {rec.job.job_id}: {old_server} (prompt {old_pid}) "
                         f"-> {target} (prompt {new_pid}), lost before it started", "moved")
        self.log(f"job {rec.job.job_id} moved from {old_server} to {target}")
        self.book.emit_job(new, "moved", fromServer=old_server, fromPromptId=old_pid)
        return new

    # ------------------------------------------------------------------ steps

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
        routing = self.routing
        if job is not None:
            target = routing.pins.server_of(job)  # unknown: the gate refuses, naming it
        elif server is not None:
            target = pool_mod.server_key(server)
        else:
            target = routing.api_base()
            if self.session:
                await routing.connect(target)
                target = routing.lock.locked_server or target
        req, limit = self._upload_request(target, file, filename=filename,
                                          subfolder=subfolder, image_type=image_type,
                                          overwrite=overwrite, content_type=content_type,
                                          size=size, job=job)
        resp = await self.gate.send(target, req, job=job, operation="upload",
                                    timeout=self.options.upload_timeout_s)
        result = self.gate.parse(rs.parse_upload, resp, target, job, max_upload_size=limit)
        routing.note_upload(result.name, target)
        return {"name": result.name, "subfolder": result.subfolder, "type": result.type,
                "server": target}

    def _upload_request(self, target: str, file: Any, *, filename: str, subfolder: str = "",
                        image_type: str = "input", overwrite: bool, content_type: str,
                        size: int | None, job: str | None) -> tuple[rq.HttpRequest, int | None]:
        """The upload request, refused before anything is sent when the server's announced
        size limit says it would be (413)."""
        limit = self.health.max_upload_size(target)
        if size is not None and limit and size > limit:
            raise rs.upload_too_large(target, size=size, limit=limit, prompt_id=job)
        req = rq.upload_image(
            file, filename=filename, subfolder=subfolder, image_type=image_type,
            overwrite=overwrite, content_type=content_type,
        )
        return req, limit

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
            if self.session:
                await self.routing.connect()
            pid = prompt_id or rq.new_prompt_id()
            known = self.book.get(pid)
            if known is not None and not self.book.finished(known):
                raise InvalidInputError(f"prompt id {pid} is already running on "
                                        f"{known.job.server}")
            # choose and pin without an await in between: concurrent submits then see each
            # other as in-flight load
            target = self.routing.server_for_new_job(server, graph)
            record = self._create(pid, target, graph,
                                  {"onProgress": on_progress, "onPreview": on_preview})
            if not self.session:
                await self.connect_for_job(record)
        try:
            record, _ = await self._submit(record, graph)
        except ComfyClientError as exc:
            self.endings.fail(record, exc,
                              "rejected" if exc.code == "invalid_workflow" else "failed")
            raise
        return record

    async def _submit(self, record: JobRecord, graph: dict[str, Any], *,
                      upload: dict[str, Any] | None = None,
                      ) -> tuple[JobRecord, dict[str, Any] | None]:
        """``POST /prompt`` for the job (after its input's upload, sent as a pair, when
        ``upload`` is given); returns the record (renamed if the server named the job
        itself) and the upload's result. Errors are raised, the job is not failed here."""
        pid, target = record.job.prompt_id, record.job.server
        record.workflow = graph
        record.job = jobs_mod.mark(record.job, "submitting", now=self.env.wall_time())
        chan = self.channels.get(target)
        if chan is not None:
            chan.submit_started()
        up = None
        try:
            req = rq.post_prompt(graph, client_id=self.store.client_id, prompt_id=pid)
            first = None
            if upload is not None:
                up, first = await self._upload_then_post(record, upload, req)
            accepted = await self._post_prompt(target, req, pid, first=first)
            if accepted.prompt_id and accepted.prompt_id != pid:
                # An older server ignored our id: adopt its id, keeping the same server,
                # and apply what it said under that id before its answer came, in order.
                record = self._adopt(record, accepted.prompt_id)
                for event, kind in (chan.claim(accepted.prompt_id) if chan is not None
                                    else ()):
                    self.book.apply(record, event, kind)
        finally:
            if chan is not None:
                chan.submit_done()
        record.job = jobs_mod.submitted(record.job, number=accepted.number,
                                        now=self.env.wall_time())
        self.book.emit_job(record, "queued")
        return record, up

    async def _upload_then_post(self, record: JobRecord, upload: dict[str, Any],
                                post: rq.HttpRequest) -> tuple[dict[str, Any], Any]:
        """The content-named upload and, the moment it answers with that name, the
        ``POST /prompt`` whose workflow reads it: no Python step between the two in the
        page. Returns the upload's result and the POST's answer (or its typed error). An
        upload the server stored under another name holds the POST back and ends here."""
        pid, target, name = record.job.prompt_id, record.job.server, upload["name"]
        req, limit = self._upload_request(target, upload["file"], filename=name,
                                          overwrite=False, content_type=upload["content_type"],
                                          size=upload["size"], job=pid)
        resp, answer = await self.gate.send_pair(
            target, req, post, job=pid, operations=("upload", "submit"),
            expect={"name": name, "subfolder": ""},
            timeouts=(self.options.upload_timeout_s, self.options.request_timeout_s))
        result = self.gate.parse(rs.parse_upload, resp, target, pid, max_upload_size=limit)
        if answer is None or result.name != name or result.subfolder:
            stored = f"{result.subfolder}/{result.name}" if result.subfolder else result.name
            raise UploadConflict(
                f"the server stored the input as {stored!r}, not {name!r}: it already holds "
                "a different file under that name, so the job was not submitted",
                server=target, prompt_id=pid,
                hint=f"remove {name} from the server's input folder (its content is not "
                "what its name says) and run the job again",
                details={"expected": name, "stored": stored})
        self.held[(target, name)] = None
        if len(self.held) > 4096:
            self.held.pop(next(iter(self.held)))
        return ({"name": name, "subfolder": "", "type": result.type, "server": target,
                 "reused": False}, answer)

    async def connect_for_job(self, rec: JobRecord) -> None:
        """Job mode: the socket to the job's server. When the socket cannot open but HTTP
        answers (a proxy that blocks WebSockets), the job still runs: its state is polled
        and progress is reported as coarse states. Otherwise the job fails."""
        server = rec.job.server
        try:
            await self.routing.connect(server)
            return
        except ComfyClientError as exc:
            ws_error = exc
        try:
            resp = await self.gate.send(server, rq.get_prompt_queue(), job=rec.job.prompt_id,
                                        operation="polling fallback")
            self.gate.parse(rs.parse_prompt_info, resp, server, rec.job.prompt_id)
        except ComfyClientError:
            self.endings.fail(rec, ws_error, "failed")
            raise ws_error from None
        self.log(f"WebSocket to {server} unavailable ({ws_error.message}); "
                 f"job {rec.job.prompt_id} continues by polling")

    async def _post_prompt(self, target: str, req: rq.HttpRequest, pid: str, *,
                           first: Any = None) -> Any:
        """POST /prompt, retried once when it may not have reached ComfyUI (no answer, or a
        proxy's 502/503/504) or its 2xx answer cannot be read (a proxy mangled the body) —
        but only after asking the server whether it already knows our client-chosen id, so a
        retry never creates a second job. ``first``: the first attempt's outcome when it was
        sent already (right after the upload: its answer, or its typed error)."""
        known = rs.PromptAccepted(prompt_id=pid, number=None, node_errors={})
        for attempt in range(2):
            last = attempt == 1
            try:
                if attempt == 0 and first is not None:
                    if isinstance(first, ComfyClientError):
                        raise first
                    resp = first
                else:
                    resp = await self.gate.send(target, req, job=pid, operation="submit")
            except ServerUnreachable:
                if last:
                    raise
            else:
                if resp.status not in (502, 503, 504) or last:
                    try:
                        return self.gate.parse(rs.parse_prompt_response, resp, target, pid)
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
        resp = await self.gate.send(server, rq.get_queue(), job=pid, operation="submit check")
        if self.gate.parse(rs.parse_queue, resp, server, pid).contains(pid):
            return True
        return await self.completion.history(pid, retry=False) is not None

    def _adopt(self, rec: JobRecord, new_id: str) -> JobRecord:
        """The server named the job ``new_id``: the record, its pin, the lock's hold and
        its audit trail follow the name."""
        old = rec.job.prompt_id
        self.book.pop(old)
        self.routing.rename(old, new_id, rec.job.server)
        rec.job = jobs_mod.rename(rec.job, new_id)
        self.book.add(rec)
        self.gate.audit.rename(old, new_id)
        self.store.save(self.book)
        return rec

    async def interrupt(self, prompt_id: str) -> dict[str, Any]:
        """Stop the job on its server: ``POST /interrupt`` if it runs, out of the queue if it
        waits. The queue is asked first because servers before targeted interrupts (and the
        2024 fork on PyPI) ignore the ``prompt_id`` of ``POST /interrupt`` and stop whatever
        runs, which may be another job, another user's even."""
        rec = self.completion.record_of(prompt_id)
        server = rec.job.server
        resp = await self.gate.send(server, rq.get_queue(), job=prompt_id, operation="interrupt")
        queue = self.gate.parse(rs.parse_queue, resp, server, prompt_id)
        if prompt_id in queue.running:
            resp = await self.gate.send(server, rq.interrupt(prompt_id), job=prompt_id,
                                        operation="interrupt")
            self.gate.parse(rs.check_status, resp, server, prompt_id)
            # the server says so (execution_interrupted) once the running node returns
        elif prompt_id in queue.pending or rec.job.state in ("queued", "submitting"):
            # A queued job never starts, so no event will tell us: it leaves the queue here.
            # One whose POST /prompt is still unanswered may not be queued yet; it ends here
            # all the same (were it to run after all, nobody waits for it).
            resp = await self.gate.send(server, rq.delete_from_queue([prompt_id]),
                                        job=prompt_id, operation="interrupt")
            self.gate.parse(rs.check_status, resp, server, prompt_id)
            self.endings.fail(rec, JobInterrupted("the job was cancelled before it started",
                                                  server=server, prompt_id=prompt_id),
                              "interrupted")
        return {"promptId": prompt_id, "server": server, "interrupted": True}

    def release(self, prompt_id: str) -> None:
        """Give up on the job without waiting: it stops holding the lock (it may still run
        on its server; its outputs stay fetchable by id)."""
        rec = self.completion.record_of(prompt_id)
        if not self.book.finished(rec):
            rec.job = jobs_mod.mark(rec.job, "released", now=self.env.wall_time())
            self.book.settle(rec, "released")
            self.endings.task_done(rec, "released by caller")

