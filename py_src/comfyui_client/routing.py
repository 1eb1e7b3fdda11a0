"""Where a job goes, and where each of its calls may go: the session lock and the pins.

``Routing`` holds the live values of ``lock.py``'s rules: the session lock (``affinity:
"session"``), every job's pin to its server (both modes), and which server holds each file
this page uploaded. It answers the questions the rest of the client asks:

* ``server_for_new_job``: session mode, the lock; job mode, the server of the workflow's
  uploaded files, else a fresh selection (``HealthMonitor.select``);
* ``check``: may this request go to this server? (called by ``HttpGate.send`` for every
  request; refusals name both servers and nothing is sent);
* ``api_base``: the old ``getApiBaseUrl()``;
* ``connect``: open the page's WebSocket; in session mode its server becomes the lock.

It moves the lock on the events that move it (a socket opened or closed, a task pending or
done) and tells the lock's story on the console at the level of ``init({log})``
(``console.py``): each change of the lock, and at ``"verbose"`` every check that passed and
every submit. The rules themselves are the tables of ``lock.py``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from . import console as console_mod
from . import lock as lock_mod
from . import pool as pool_mod
from .errors import ComfyClientError, InvalidInputError, ServerMismatch
from .options import ClientOptions
from .protocol import workflow as wf

if TYPE_CHECKING:
    from .channels import Channels, ServerChannel
    from .console import Console
    from .health import HealthMonitor
    from .records import JobBook


class Routing:
    """The session lock, the job pins and the uploads' servers (see the module doc)."""

    def __init__(self, env: Any, options: ClientOptions, health: HealthMonitor,
                 book: JobBook, log: Console) -> None:
        self.env, self.options, self.log = env, options, log
        self.health, self.book = health, book
        self.lock = lock_mod.LockState()
        self.pins = lock_mod.Pins()
        self.lock_log: deque[dict[str, Any]] = deque(maxlen=200)
        self.uploads: dict[str, str] = {}  # uploaded file name -> server it lives on
        self._channels: Channels | None = None

    def bind(self, channels: Channels) -> None:
        """The sockets ``connect`` opens and closes."""
        self._channels = channels

    @property
    def session(self) -> bool:
        return self.options.affinity == "session"

    # ------------------------------------------------------------------ questions

    def check(self, server: str, job: str | None, operation: str, *,
              unlocked: bool = False) -> None:
        """Raise ``ServerMismatch`` if a request for ``job`` (or, without one, for the
        session) must not go to ``server``. Every request of the client is checked here
        (``HttpGate``), so at ``log: "verbose"`` this is where each check that passed is
        told; at any other level that costs one attribute read."""
        if job is not None:
            lock_mod.check_job_server(self.pins, job, operation, server)
        elif self.session and not unlocked:
            lock_mod.check_consistency(self.lock, operation, server)
        elif unlocked:
            return  # not a job's work (a health probe): nothing was checked, nothing to tell
        if self.log.verbose:
            self._tell_check(server, job, operation)

    def _tell_check(self, server: str, job: str | None, operation: str) -> None:
        """The verbose line of a check that passed; a submit says where it goes."""
        held = lock_mod.is_held(self.lock) if self.session else False
        if operation == "submit" and job is not None:
            line = console_mod.submit_on(job, server, held and self.lock.locked_server == server,
                                         len(self.lock.pending))
        else:
            line = console_mod.check_passed(operation, server, job,
                                            self.lock.locked_server if held else None)
        self.log.story(line)

    def select(self) -> str:
        """A fresh selection: the pool's rule, counting this page's unfinished jobs."""
        return self.health.select(self.book.inflight())

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
        if self.session:
            return lock_mod.api_base(self.lock, self.select)
        return self.select()

    def api_base_or_none(self) -> str | None:
        """The session's API base for reports, or None when none can be chosen."""
        if not self.session:
            return None
        try:
            return lock_mod.api_base(self.lock, self.select)
        except ComfyClientError:  # no server can be selected: nothing to compare with
            return None

    def server_for_new_job(self, server: str | None, workflow: dict[str, Any] | None) -> str:
        """Session mode: the lock. Job mode: the server of files this page uploaded for the
        workflow, else the explicit ``server``, else a fresh selection."""
        if self.session:
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

    def note_upload(self, name: str, server: str) -> None:
        """``name`` now lives on ``server``: a workflow naming it follows it there."""
        self.uploads[name] = server
        if len(self.uploads) > 2000:
            self.uploads.pop(next(iter(self.uploads)))

    def needs_socket(self, server: str) -> bool:
        """A socket is kept (and re-opened) while any unfinished job is pinned to it, and in
        session mode while it is the lock."""
        if self.book.any_unfinished(self.pins.jobs_on(server)):
            return True
        return self.session and self.lock.locked_server == server and bool(self.lock.pending)

    # ------------------------------------------------------------------ pins and tasks

    def pin(self, prompt_id: str, server: str, *, hold_lock: bool) -> None:
        """A new job on ``server`` for life; in session mode it holds the lock (unless it
        runs outside it, as the self test's jobs do)."""
        self.pins = self.pins.pin(prompt_id, server)
        if self.session and hold_lock:
            self.set_lock(lock_mod.on_task_pending(self.lock, prompt_id), "task pending")

    def unpin(self, prompt_id: str) -> None:
        self.pins = self.pins.unpin(prompt_id)

    def rename(self, old: str, new: str, server: str) -> None:
        """A server named the job itself: the pin (and the lock's hold) follow the name."""
        self.pins = self.pins.unpin(old).pin(new, server)
        if self.session and old in self.lock.pending:
            # pending(new) before done(old): the lock must never be released in between.
            # (A job outside the lock, like the self test's, holds nothing to hand over.)
            state = lock_mod.on_task_pending(self.lock, new)
            self.lock, _ = lock_mod.on_task_done(state, old)

    def task_done(self, prompt_id: str, why: str) -> None:
        """The task stops being pending: in session mode this may release the lock."""
        if self.session and prompt_id in self.lock.pending:
            state, released = lock_mod.on_task_done(self.lock, prompt_id)
            if not state.pending and state.locked_server is not None:
                # The last pending task ended: let go even though the socket stays open, so
                # the next job selects again (an idle socket re-locks if it is selected).
                state = lock_mod.on_ws_closed(state)
                released = True
            self.set_lock(state, f"last pending task ended ({why})" if released else why,
                          ended=why if released else None)

    # ------------------------------------------------------------------ the lock

    def set_lock(self, new: lock_mod.LockState, why: str, *, ended: str | None = None) -> None:
        """Move the lock; a change is kept in ``lock_log`` and told on the console (level
        ``"lock"`` and up). ``ended``: how the last pending task ended, when that is what
        released the lock."""
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
            if self.log.lock:
                if new.locked_server is not None:
                    line = console_mod.lock_taken(new.locked_server, new.ws_state,
                                                  len(new.pending))
                else:
                    line = console_mod.lock_released(entry["server"], why, ended)
                self.log.story(line)

    def on_ws_open(self, chan: ServerChannel) -> None:
        if self.session and chan.locks and self.lock.locked_server in (None, chan.server):
            self.set_lock(lock_mod.on_ws_open(self.lock, chan.server), "WebSocket opened")

    def on_ws_closed(self, chan: ServerChannel) -> None:
        if self.session and self.lock.locked_server == chan.server:
            self.set_lock(lock_mod.on_ws_closed(self.lock), "WebSocket closed, nothing pending")

    async def connect(self, server: str | None = None) -> str:
        """Open (or reuse) the WebSocket. In session mode the socket's server becomes the lock."""
        channels = self._channels
        assert channels is not None, "Routing.bind(channels) first"
        if server is None:
            server = self.api_base()
        elif self.health.spec(server) is None:
            server = pool_mod.server_key(server)
            if self.health.spec(server) is None:
                raise InvalidInputError(f"{server} is not one of the configured servers")
        if self.session and self.lock.locked_server not in (None, server):
            if lock_mod.can_unlock(self.lock).can_unlock:
                self.set_lock(lock_mod.on_ws_closed(self.lock), "lock moved")
            else:
                raise ServerMismatch(
                    f"cannot connect to {server}: the session is locked to "
                    f"{self.lock.locked_server} while tasks are pending",
                    server=server,
                    details={"lockedServer": self.lock.locked_server, "apiServer": server},
                )
        if self.session:
            # one WebSocket per page in session mode: idle sockets elsewhere are closed
            for other in [s for s in channels.servers() if s != server]:
                if not self.needs_socket(other):
                    await channels.close(other)
        chan = await channels.open(server)
        chan.locks = True
        if self.session and self.lock.locked_server is None:
            self.set_lock(lock_mod.on_ws_open(self.lock, server), "WebSocket open")
        return server
