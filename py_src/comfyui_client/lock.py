"""The session lock (``affinity: "session"``) and job pins (both modes), as small tables.

The old ``comfyui.js`` picked a server per call; users asked for its later "session lock"
semantics, restated here as data so the debug helper can print exactly what the code does:

* Opening the WebSocket (``/ws?clientId=SID``, one SID per page) locks that server.
* While a server is locked AND (the WebSocket is open OR a task is pending), every call goes
  there (``api_base``); otherwise a server is selected afresh.
* A task is pending from just before its ``POST /prompt`` until it reached a terminal state
  and its outputs were fetched, or it was released.
* Pending tasks hold the lock through a WebSocket drop: reconnection must go to the same
  server (same SID, which is the page's, not the lock's).
* The lock is released exactly when nothing holds it any more: the last pending task ends
  with the WebSocket not open, or the WebSocket closes with nothing pending. So yes, a WS
  close with no pending task releases the lock (``held = locked and (ws open or pending)``).
* Submitting needs a lock and an API base equal to it; upload/history/image calls are
  checked against it and refused (``ServerMismatch`` naming both servers), never rerouted.

Invariant kept by every transition here: ``locked_server is not None`` iff the lock is held.

In per-job mode (``affinity: "job"``) there is no session lock; ``Pins`` maps each job to the
server it was created on, for life, and ``check_job_server`` guards every call. Session mode
uses the same pins (every job is pinned to the lock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .errors import ServerMismatch

__all__ = [
    "RULES",
    "WS_STATES",
    "LockState",
    "Pins",
    "UnlockCheck",
    "api_base",
    "can_unlock",
    "check_consistency",
    "check_job_server",
    "describe",
    "is_held",
    "lock_change",
    "on_task_done",
    "on_task_pending",
    "on_ws_closed",
    "on_ws_connecting",
    "on_ws_open",
    "require_lock_for_submit",
    "why_held",
]

WS_STATES = ("closed", "connecting", "open", "reconnecting")

#: The lock's rules, condition -> outcome, in the order the code applies them. Printed by
#: the debug helper; each row has a test in tests/unit/test_lock.py.
RULES: tuple[tuple[str, str], ...] = (
    ("WebSocket opens on S, no server locked", "lock S"),
    ("WebSocket opens on S, locked to S", "stay locked to S; reconnect attempts reset"),
    ("WebSocket opens on T, locked to S", "refused: ServerMismatch (reconnect goes to S)"),
    ("WebSocket connects again while locked", "wsState reconnecting; attempts + 1"),
    ("WebSocket closes, tasks pending", "lock held; reconnect to S with the same SID"),
    ("WebSocket closes, no task pending", "lock released"),
    ("task becomes pending (just before POST /prompt), no lock", "refused: ServerMismatch"),
    ("task becomes pending, lock held", "added to pending; lock held"),
    ("task ends (terminal + outputs fetched, or released), WebSocket open or others pending",
     "removed from pending; lock held"),
    ("last pending task ends, WebSocket not open", "lock released (logged)"),
    ("API base asked, lock held", "the locked server"),
    ("API base asked, no lock held", "select a server (pool rule)"),
    ("submit, no server locked", "refused: ServerMismatch"),
    ("submit, API base differs from the lock", "refused: ServerMismatch naming both"),
    ("upload/history/image/... to T, locked to S", "refused: ServerMismatch naming S, T, op"),
    ("upload/history/image/... with no lock held", "allowed (nothing to disagree with)"),
)


@dataclass(frozen=True)
class LockState:
    """The session lock. ``since`` is when it was taken (caller's clock), for the debug view."""

    locked_server: str | None = None
    ws_state: str = "closed"
    pending: frozenset[str] = frozenset()
    reconnect_attempts: int = 0
    since: float | None = None

    def __post_init__(self) -> None:
        if self.ws_state not in WS_STATES:
            raise ValueError(f"ws_state must be one of {WS_STATES}, got {self.ws_state!r}")


@dataclass(frozen=True)
class UnlockCheck:
    """Answer to "may the page move to another server now?" (old ``canUnlockServer``)."""

    can_unlock: bool
    pending_tasks: int
    locked_server: str | None
    ws_state: str
    reason: str


def _same(a: str | None, b: str | None) -> bool:
    """Server keys compare equal up to a trailing slash (callers pass normalised keys)."""
    if a is None or b is None:
        return a is b
    return a.rstrip("/") == b.rstrip("/")


def is_held(state: LockState) -> bool:
    """The one predicate: a server is locked and (the WebSocket is open or tasks pend)."""
    return state.locked_server is not None and (state.ws_state == "open" or bool(state.pending))


# --------------------------------------------------------------------------- transitions


def on_ws_connecting(state: LockState, server: str) -> LockState:
    """A socket starts connecting to ``server``. While locked it must be the locked server:
    that is what keeps a reconnect on the server that has the page's jobs."""
    if state.locked_server is not None:
        if not _same(server, state.locked_server):
            raise ServerMismatch(
                f"WebSocket connect refused: it would go to {server} but the session is "
                f"locked to {state.locked_server}",
                server=server,
                hint="the lock holds while tasks are pending; wait for them or release them",
                details={"lockedServer": state.locked_server, "apiServer": server,
                         "operation": "websocket"},
            )
        return replace(state, ws_state="reconnecting",
                       reconnect_attempts=state.reconnect_attempts + 1)
    return replace(state, ws_state="connecting")


def on_ws_open(state: LockState, server: str, *, now: float | None = None) -> LockState:
    """The socket to ``server`` opened: that server becomes (or stays) the lock."""
    if state.locked_server is None:
        return replace(state, locked_server=server, ws_state="open", reconnect_attempts=0,
                       since=now)
    if not _same(server, state.locked_server):
        raise ServerMismatch(
            f"WebSocket opened on {server} while the session is locked to "
            f"{state.locked_server}",
            server=server,
            hint="close it: reconnection must go to the locked server with the same client id",
            details={"lockedServer": state.locked_server, "apiServer": server,
                     "operation": "websocket"},
        )
    return replace(state, ws_state="open", reconnect_attempts=0)


def on_ws_closed(state: LockState) -> LockState:
    """The socket closed. Pending tasks keep the lock (and ask for a reconnect); with none
    pending the lock is released."""
    if state.locked_server is None:
        return replace(state, ws_state="closed")
    if state.pending:
        return replace(state, ws_state="reconnecting")
    return LockState(ws_state="closed")


def on_task_pending(state: LockState, job_id: str, *, now: float | None = None) -> LockState:
    """A task becomes pending (just before its ``POST /prompt``). Needs a held lock: a task
    with no server to stay on is exactly the old bug. Idempotent for a known id."""
    if state.locked_server is None:
        raise ServerMismatch(
            f"task {job_id} cannot start: no server is locked",
            prompt_id=job_id,
            hint="open the WebSocket first (ensureConnection); its server becomes the lock",
        )
    if job_id in state.pending:
        return state
    return replace(state, pending=state.pending | {job_id})


def on_task_done(state: LockState, job_id: str) -> tuple[LockState, bool]:
    """A task stops being pending. Returns ``(state, released)``; ``released`` is True
    exactly when this removal let go of the lock (last task, WebSocket not open), so the
    caller logs it once. Unknown ids change nothing."""
    if job_id not in state.pending:
        return state, False
    rest = state.pending - {job_id}
    if rest or state.ws_state == "open":
        return replace(state, pending=rest), False
    # A socket still connecting stays visible as such; a reconnect is no longer needed.
    ws = "connecting" if state.ws_state == "connecting" else "closed"
    return LockState(ws_state=ws), True


# --------------------------------------------------------------------------- questions


def api_base(state: LockState, select: Callable[[], str]) -> str:
    """Old ``getApiBaseUrl()``: the locked server while the lock is held, else ``select()``."""
    if is_held(state):
        assert state.locked_server is not None
        return state.locked_server
    return select()


def _tasks(n: int) -> str:
    return f"{n} task{'s' if n != 1 else ''}"


def can_unlock(state: LockState) -> UnlockCheck:
    """May the page switch servers now? Only when no task is pending on the lock."""
    n = len(state.pending)
    if state.locked_server is None:
        reason = "no server locked"
        ok = True
    elif n:
        reason = f"{_tasks(n)} pending on {state.locked_server}"
        ok = False
    elif state.ws_state == "open":
        reason = "WebSocket open and healthy"
        ok = True
    else:
        reason = "no task pending"
        ok = True
    return UnlockCheck(can_unlock=ok, pending_tasks=n, locked_server=state.locked_server,
                       ws_state=state.ws_state, reason=reason)


def why_held(state: LockState) -> str:
    """One line for the debug view: why calls go where they go."""
    if not is_held(state):
        return "not held: no server locked; the next job selects a server"
    server = state.locked_server
    n = len(state.pending)
    if n and state.ws_state == "open":
        return f"held on {server}: WebSocket open and {_tasks(n)} pending"
    if n:
        return f"held on {server}: {_tasks(n)} pending (WebSocket {state.ws_state})"
    return f"held on {server}: WebSocket open"


def describe(state: LockState) -> dict[str, Any]:
    """Plain JSON-safe view for page JavaScript (old ``getDebugInfo`` names)."""
    return {
        "lockedServer": state.locked_server,
        "wsState": state.ws_state,
        "pendingTasks": sorted(state.pending),
        "heldBecause": why_held(state),
        "reconnectAttempts": state.reconnect_attempts,
        "held": is_held(state),
    }


def lock_change(old: LockState, new: LockState) -> tuple[str, str] | None:
    """``("locked", server)`` / ``("released", server)`` when the lock moved, else None:
    what the caller writes to its log after a transition."""
    if old.locked_server == new.locked_server:
        return None
    if new.locked_server is None:
        assert old.locked_server is not None
        return ("released", old.locked_server)
    return ("locked", new.locked_server)


def check_consistency(state: LockState, operation: str, target_server: str) -> None:
    """Refuse a call that would leave the locked server. Never reroutes: the error names
    the operation and both servers so the page can tell the user what happened."""
    if not is_held(state) or _same(target_server, state.locked_server):
        return
    raise ServerMismatch(
        f"{operation} refused: it would go to {target_server} but the session is locked to "
        f"{state.locked_server}",
        server=target_server,
        hint="nothing was sent; use the locked server, or wait until its tasks end",
        details={"lockedServer": state.locked_server, "apiServer": target_server,
                 "operation": operation},
    )


def require_lock_for_submit(state: LockState, api_server: str | None) -> None:
    """``submitWorkflow``: refuse without a held lock, and when the API base differs."""
    if not is_held(state):
        raise ServerMismatch(
            "submitWorkflow refused: no server is locked",
            server=api_server,
            hint="open the WebSocket first (ensureConnection); its server becomes the lock",
            details={"lockedServer": None, "apiServer": api_server, "operation": "submit"},
        )
    if not _same(api_server, state.locked_server):
        raise ServerMismatch(
            f"submitWorkflow refused: the API base {api_server} differs from the locked "
            f"server {state.locked_server}",
            server=api_server,
            hint="nothing was sent; submit to the locked server",
            details={"lockedServer": state.locked_server, "apiServer": api_server,
                     "operation": "submit"},
        )


# --------------------------------------------------------------------------- pins


@dataclass(frozen=True)
class Pins:
    """Job -> server, for the job's whole life. Immutable: every operation returns new Pins.

    ``pin`` refuses to move a pinned job (a job never changes server); pinning it again to
    the same server is a no-op. Iteration order is pin order.
    """

    _map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def pin(self, job_id: str, server: str) -> Pins:
        current = self._map.get(job_id)
        if current is not None:
            if _same(current, server):
                return self
            raise ServerMismatch(
                f"job {job_id} is pinned to {current}; it cannot move to {server}",
                server=server,
                prompt_id=job_id,
                hint="a job stays on the server it was created on; submit a new job instead",
                details={"expected": current, "actual": server, "operation": "pin"},
            )
        updated = dict(self._map)
        updated[job_id] = server
        return Pins(MappingProxyType(updated))

    def unpin(self, job_id: str) -> Pins:
        if job_id not in self._map:
            return self
        updated = dict(self._map)
        del updated[job_id]
        return Pins(MappingProxyType(updated))

    def server_of(self, job_id: str) -> str | None:
        return self._map.get(job_id)

    def servers_in_use(self) -> tuple[str, ...]:
        """Servers with at least one pinned job (each needs its WebSocket), in pin order."""
        return tuple(dict.fromkeys(self._map.values()))

    def jobs_on(self, server: str) -> tuple[str, ...]:
        return tuple(j for j, s in self._map.items() if _same(s, server))

    def items(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._map.items())

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._map

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._map))


def check_job_server(pins: Pins, job_id: str, operation: str, target: str) -> None:
    """Refuse a call for ``job_id`` aimed at any server but the job's pin (or an unknown job:
    with no pin there is no server it may safely go to)."""
    pinned = pins.server_of(job_id)
    if pinned is None:
        raise ServerMismatch(
            f"{operation} for job {job_id} refused: the job has no pinned server "
            f"(it would have gone to {target})",
            server=target,
            prompt_id=job_id,
            hint="only jobs created by this client have a server; nothing was sent",
            details={"expected": None, "actual": target, "operation": operation},
        )
    if not _same(pinned, target):
        raise ServerMismatch(
            f"{operation} for job {job_id} refused: the job is on {pinned} but the call "
            f"would go to {target}",
            server=target,
            prompt_id=job_id,
            hint="nothing was sent; a job's calls all go to the server it was submitted to",
            details={"expected": pinned, "actual": target, "operation": operation},
        )
