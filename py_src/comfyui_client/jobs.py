"""The job lifecycle, as a table (the shape of h11's ``_state.py``).

A ``Job`` is a frozen value; every server message and every client step returns a new one.
Everything that moves a job between states is in ``TRANSITIONS``: ``(state, event) -> next``.
An event the table has no row for is *ignored and recorded* (``Job.ignored``), never an
exception: a late, replayed or out-of-order WebSocket message must not crash a page.

States::

    created -> uploading -> submitting -> queued -> running -> finished -> fetching_outputs
                                                                             -> succeeded
    terminal: succeeded | failed | interrupted | lost | server_lost | rejected | moved

``finished`` is the short stretch between ``execution_success`` and the final
``executing{node: null}``: the server says it succeeded but may not have written the history
yet (recorded in invert_success: success comes first). ``executing{node: null}`` is the end
marker; only then are outputs fetched. A job reaches ``succeeded`` only once its outputs were
fetched, so "terminal" and "outputs fetched" coincide for success.

Events come in two kinds, both funnelled through the same table:

* server events, by their wire ``type`` (``execution_start``, ``execution_cached``,
  ``executing`` [``executing_null`` when ``node`` is None], ``progress``, ``progress_state``,
  ``executed``, ``execution_success``, ``execution_error``, ``execution_interrupted``), read
  with ``getattr`` only, so any event object with ``.type`` and ``.prompt_id`` (and the named
  attributes) works; a plain wire dict ``{"type", "data"}`` works too. Events for another
  prompt id, or with none (``status``), leave the job untouched.
* client steps, via the helper functions below (``upload_started``, ``submit_started``,
  ``submitted``, ``submit_rejected``, ``history_empty``, ``from_history``,
  ``outputs_fetched``, ``server_lost``, ``released``, ``mark``...).

Server events can overtake the ``POST /prompt`` answer (the client chooses the prompt id, so
the socket already routes the job's events to us): hence rows from ``submitting`` on server
events, and ``submitted`` accepted (as a no-op on state) in every later live state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from ._frozen import evolve
from .errors import InvalidInputError

__all__ = [
    "AWAITING_OUTPUTS",
    "CLIENT_EVENTS",
    "FAILOVER_POLICIES",
    "FREQUENT_EVENTS",
    "LOSS_CODES",
    "SERVER_EVENTS",
    "STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "FailoverDecision",
    "Job",
    "OutputImage",
    "apply_event",
    "cancelled",
    "describe_transitions",
    "failover_decision",
    "from_history",
    "has_started",
    "history_empty",
    "is_pending",
    "is_terminal",
    "job_lost",
    "job_to_dict",
    "mark",
    "new_job",
    "outputs_fetched",
    "progress_to_dict",
    "released",
    "rename",
    "server_lost",
    "submit_rejected",
    "submit_started",
    "submitted",
    "upload_started",
]

# --------------------------------------------------------------------------- vocabulary

CREATED = "created"
UPLOADING = "uploading"
SUBMITTING = "submitting"
QUEUED = "queued"
RUNNING = "running"
FINISHED = "finished"
FETCHING_OUTPUTS = "fetching_outputs"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
LOST = "lost"
SERVER_LOST = "server_lost"
REJECTED = "rejected"
#: this attempt's server was lost before the job started; the job goes on elsewhere as a new
#: attempt (opt-in failover): terminal for this prompt id, not for the caller's job
MOVED = "moved"

STATES = (CREATED, UPLOADING, SUBMITTING, QUEUED, RUNNING, FINISHED, FETCHING_OUTPUTS,
          SUCCEEDED, FAILED, INTERRUPTED, LOST, SERVER_LOST, REJECTED, MOVED)
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, INTERRUPTED, LOST, SERVER_LOST, REJECTED,
                             MOVED})
#: The server is done with the job; the client still has to read history and download.
AWAITING_OUTPUTS = frozenset({FETCHING_OUTPUTS})
_BEFORE_POST = frozenset({CREATED, UPLOADING})

SERVER_EVENTS = (
    "execution_start", "execution_cached", "executing", "executing_null", "progress",
    "progress_state", "executed", "execution_success", "execution_error",
    "execution_interrupted",
)
CLIENT_EVENTS = (
    "upload_started", "submit_started", "submitted", "submit_rejected", "client_error",
    "cancelled", "history_empty", "history_exhausted", "history_success", "history_error",
    "history_interrupted", "outputs_fetched", "job_lost", "server_lost", "moved_away",
    "released",
)
_WIRE_TYPES = frozenset(SERVER_EVENTS) - {"executing_null"}

# --------------------------------------------------------------------------- the table

_SAME = "<same>"
_LIVE = (SUBMITTING, QUEUED, RUNNING, FINISHED, FETCHING_OUTPUTS)  # the server has the job
_NOT_TERMINAL = tuple(s for s in STATES if s not in TERMINAL_STATES)
_RUN_EVENTS = ("execution_cached", "executing", "progress", "progress_state", "executed")

# (from states, event, to). Rows are the whole state machine; read top to bottom.
_ROWS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    # before the POST
    ((CREATED,), "upload_started", UPLOADING),
    ((UPLOADING,), "upload_started", _SAME),
    ((CREATED, UPLOADING), "submit_started", SUBMITTING),
    ((SUBMITTING,), "submit_started", _SAME),  # a timed-out POST retried with the same id
    ((CREATED, UPLOADING, SUBMITTING), "submit_rejected", REJECTED),
    ((SUBMITTING,), "submitted", QUEUED),
    ((QUEUED, RUNNING, FINISHED, FETCHING_OUTPUTS), "submitted", _SAME),  # answer came late
    # the server runs it
    ((SUBMITTING, QUEUED), "execution_start", RUNNING),
    ((RUNNING,), "execution_start", _SAME),
    *(((SUBMITTING, QUEUED), ev, RUNNING) for ev in _RUN_EVENTS),
    *(((RUNNING,), ev, _SAME) for ev in _RUN_EVENTS),
    ((SUBMITTING, QUEUED, RUNNING), "execution_success", FINISHED),
    ((FINISHED,), "execution_success", _SAME),
    ((FINISHED,), "executed", _SAME),
    ((FINISHED,), "progress_state", _SAME),
    ((FINISHED,), "progress", _SAME),
    # the end marker; also the only end signal of servers that predate execution_success
    ((SUBMITTING, QUEUED, RUNNING, FINISHED), "executing_null", FETCHING_OUTPUTS),
    ((FETCHING_OUTPUTS,), "executing_null", _SAME),
    ((FETCHING_OUTPUTS,), "execution_success", _SAME),
    ((SUBMITTING, QUEUED, RUNNING), "execution_error", FAILED),
    ((SUBMITTING, QUEUED, RUNNING), "execution_interrupted", INTERRUPTED),
    # history, read after the end marker, after a reconnect, or when the socket went quiet
    (_LIVE, "history_empty", _SAME),
    (_LIVE, "history_exhausted", LOST),
    (_LIVE, "history_success", FETCHING_OUTPUTS),
    (_LIVE, "history_error", FAILED),
    (_LIVE, "history_interrupted", INTERRUPTED),
    ((FETCHING_OUTPUTS,), "outputs_fetched", SUCCEEDED),
    ((SUCCEEDED,), "outputs_fetched", _SAME),
    # client-side endings
    ((CREATED, UPLOADING, SUBMITTING, QUEUED, RUNNING), "cancelled", INTERRUPTED),
    (_NOT_TERMINAL, "client_error", FAILED),
    (_LIVE, "job_lost", LOST),
    (_NOT_TERMINAL, "server_lost", SERVER_LOST),
    # opt-in failover: only while nothing says the server started it (see failover_decision)
    ((CREATED, UPLOADING, SUBMITTING, QUEUED), "moved_away", MOVED),
    (STATES, "released", _SAME),  # a flag, not a state: the job may still run on the server
    # harmless stragglers after the end (the end marker follows an error or interruption)
    ((SUCCEEDED, FAILED, INTERRUPTED), "executing_null", _SAME),
    ((SUCCEEDED, FAILED, INTERRUPTED), "progress_state", _SAME),
    ((SUCCEEDED, FAILED, INTERRUPTED), "progress", _SAME),
)


def _build(rows: Iterable[tuple[tuple[str, ...], str, str]]) -> Mapping[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for sources, event, target in rows:
        for source in sources:
            key = (source, event)
            if key in table:  # a duplicate row would make the table order-dependent
                raise AssertionError(f"duplicate transition {key}")
            table[key] = source if target == _SAME else target
    return MappingProxyType(table)


#: ``(state, event) -> next state``. Anything absent is ignored (and recorded on the job).
TRANSITIONS: Mapping[tuple[str, str], str] = _build(_ROWS)


def describe_transitions() -> list[list[str]]:
    """The table as ``[state, event, next]`` rows in state order (for the debug helper)."""
    order = {s: i for i, s in enumerate(STATES)}
    return [[s, e, t] for (s, e), t in sorted(TRANSITIONS.items(),
                                              key=lambda kv: (order[kv[0][0]], kv[0][1]))]


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class OutputImage:
    """One output image reference, enough to build ``/view?filename=&subfolder=&type=``."""

    filename: str
    subfolder: str = ""
    type: str = "output"

    def to_dict(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Job:
    """One job's state. ``progress`` is overall 0..1 (see ``_progress``); ``node_value`` /
    ``node_max`` are the current node's own progress. ``ignored`` keeps the last few events
    the table had no row for, as ``"event@state"``. Times are the caller's wall clock."""

    job_id: str
    server: str
    prompt_id: str | None
    state: str = CREATED
    number: int | None = None
    progress: float = 0.0
    current_node: str | None = None
    node_value: float | None = None
    node_max: float | None = None
    total_nodes: int | None = None
    cached_nodes: tuple[str, ...] = ()
    executed_nodes: tuple[str, ...] = ()
    outputs: Mapping[str, tuple[OutputImage, ...]] = field(default_factory=_empty)
    error: Mapping[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    events_seen: int = 0
    ignored: tuple[str, ...] = ()
    history_retries: int = 0
    released: bool = False


_MAX_IGNORED = 16


def new_job(
    job_id: str,
    server: str,
    *,
    now: float,
    workflow: Mapping[str, Any] | None = None,
    prompt_id: str | None = None,
    total_nodes: int | None = None,
) -> Job:
    """A job in ``created``, pinned to ``server``.

    ``prompt_id`` defaults to ``job_id`` because the client chooses the prompt id itself
    (before the POST), which is what lets it pin job -> server before anything is sent.
    ``total_nodes`` defaults to the number of nodes in the API-format ``workflow``.
    """
    if total_nodes is None and isinstance(workflow, Mapping):
        total_nodes = len(workflow) or None
    return Job(job_id=job_id, server=server, prompt_id=prompt_id or job_id,
               total_nodes=total_nodes, created_at=now, updated_at=now)


def is_terminal(job: Job) -> bool:
    return job.state in TERMINAL_STATES


def is_pending(job: Job) -> bool:
    """Pending in the lock's sense: from just before ``POST /prompt`` (``submitting``) until
    terminal with outputs fetched (``succeeded`` is only reached after the fetch), or
    until released. ``created``/``uploading`` are not pending yet."""
    return not job.released and job.state not in _BEFORE_POST and job.state not in TERMINAL_STATES


# --------------------------------------------------------------------------- reading events


_MAPPING_TYPES: dict[type, bool] = {dict: True}


def _is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)`` remembered per type: the ABC check is slow under
    Pyodide and ``_attr`` runs several times per WebSocket message. The few types met
    (dicts, event classes, proxies) keep this table small."""
    kind = type(value)
    known = _MAPPING_TYPES.get(kind)
    if known is None:
        known = isinstance(value, Mapping)
        if len(_MAPPING_TYPES) < 256:
            _MAPPING_TYPES[kind] = known
    return known


def _attr(event: Any, name: str, default: Any = None) -> Any:
    """``getattr`` for event objects; for wire dicts, the key itself or inside ``data``."""
    if _is_mapping(event):
        if name in event:
            return event[name]
        data = event.get("data")
        if _is_mapping(data):
            return data.get(name, default)
        return default
    return getattr(event, name, default)


def _node_id(value: Any) -> str | None:
    return None if value is None else str(value)


def _node_ids(values: Any) -> tuple[str, ...]:
    if values is None or isinstance(values, (str, bytes)):
        return ()
    try:
        return tuple(str(v) for v in values if v is not None)
    except TypeError:
        return ()


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _images(raw: Any) -> tuple[OutputImage, ...]:
    """Image refs from dicts or objects with ``filename``/``subfolder``/``type``."""
    out: list[OutputImage] = []
    for item in raw or ():
        name = _attr(item, "filename")
        if not isinstance(name, str) or not name:
            continue
        sub = _attr(item, "subfolder", "") or ""
        kind = _attr(item, "type", "output") or "output"
        out.append(OutputImage(filename=name, subfolder=str(sub), type=str(kind)))
    return tuple(out)


def _executed_images(event: Any) -> tuple[OutputImage, ...]:
    images = _attr(event, "images")
    if images is None:
        output = _attr(event, "output")
        images = _attr(output, "images") if output is not None else None
    return _images(images)


def _execution_error(data: Any) -> dict[str, Any]:
    etype = _attr(data, "exception_type")
    emsg = _attr(data, "exception_message")
    detail = str(emsg).strip() if emsg else ""
    text = f"{etype or 'Error'}: {detail}" if detail else str(etype or "Error")
    return {
        "source": "execution_error",
        "message": text,
        "node_id": _node_id(_attr(data, "node_id")),
        "node_type": _attr(data, "node_type"),
        "exception_type": etype,
        "exception_message": emsg,
    }


def _execution_interrupted(data: Any) -> dict[str, Any]:
    return {
        "source": "execution_interrupted",
        "message": "interrupted",
        "node_id": _node_id(_attr(data, "node_id")),
        "node_type": _attr(data, "node_type"),
    }


class _Wire:
    """A wire dict read like an event object: ``.name`` is the key itself or the key inside
    ``data`` (what ``_attr`` does), so ``apply_event`` reads both kinds with plain
    ``getattr``, the cheap path for the decoded events it gets per WebSocket message."""

    __slots__ = ("_msg",)

    def __init__(self, msg: Mapping[str, Any]) -> None:
        self._msg = msg

    def __getattr__(self, name: str) -> Any:
        value = _attr(self._msg, name, _MISSING)
        if value is _MISSING:
            raise AttributeError(name)
        return value


_MISSING = object()


def _event_key(event: Any) -> str | None:
    kind = getattr(event, "type", None)
    if not isinstance(kind, str):
        return None
    if kind == "executing" and getattr(event, "node", None) is None:
        return "executing_null"
    return kind


# --------------------------------------------------------------------------- data updates
# Each updater returns the fields an *allowed* event changes. They are written to be
# idempotent (sets, replacement), so a replayed event leaves the job as it was.


def _merge(old: tuple[str, ...], new: Iterable[str]) -> tuple[str, ...]:
    extra = [n for n in dict.fromkeys(new) if n not in old]
    return (*old, *extra) if extra else old


def _on_executing(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    node = data["node"]
    if node == job.current_node:
        return {}
    changes: dict[str, Any] = {"current_node": node, "node_value": None, "node_max": None}
    if job.current_node is not None:  # the server moved on: the previous node is done
        changes["executed_nodes"] = _merge(job.executed_nodes, (job.current_node,))
    return changes


def _on_executing_null(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {"current_node": None, "node_value": None, "node_max": None}
    if job.current_node is not None and job.state not in (FAILED, INTERRUPTED):
        changes["executed_nodes"] = _merge(job.executed_nodes, (job.current_node,))
    return changes


def _on_progress(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    return _progress_changes(job, data.get("node"), data.get("value"), data.get("max"))


def _progress_changes(job: Job, node: str | None, value: float | None,
                      top: float | None) -> dict[str, Any]:
    node = node or job.current_node
    if value is None or top is None:
        return {}
    if job.current_node is None:
        return {"current_node": node, "node_value": value, "node_max": top}
    if node != job.current_node:
        return {}  # progress of another node (e.g. a sub-graph): not the current one
    return {"node_value": value, "node_max": top}


def _on_progress_state(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    return _progress_state_changes(job, data.get("nodes"))


def _progress_state_changes(job: Job, nodes: Any) -> dict[str, Any]:
    """Newer servers' per-node snapshot. It arrives *before* the matching ``executing``
    (recorded order), so a single running node becomes the current node here; finished
    nodes that were not cached count as executed (a cached node is reported finished too)."""
    if not _is_mapping(nodes):
        return {}
    # one pass over the nodes (this runs per sampler step): finished ones not yet counted,
    # and the running ones
    done: list[str] = []
    running: list[str] = []
    counted = job.executed_nodes
    cached = job.cached_nodes
    for key, entry in nodes.items():
        state = _attr(entry, "state")
        if state == "finished":
            name = str(key)
            if name not in cached and name not in counted:
                done.append(name)
        elif state == "running":
            running.append(str(key))
    changes: dict[str, Any] = {}
    if done:
        changes["executed_nodes"] = _merge(counted, done)
    current = job.current_node
    if len(running) == 1 and running[0] != current:
        current = running[0]
        changes["current_node"] = current
    if current is not None and current in nodes:
        value = _number_or_none(_attr(nodes[current], "value"))
        top = _number_or_none(_attr(nodes[current], "max"))
        if value is not None and top is not None and (value, top) != (job.node_value,
                                                                      job.node_max):
            changes.update(node_value=value, node_max=top)
    return changes


def _on_executed(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    node = data.get("node")
    if node is None:
        return {}
    outputs = dict(job.outputs)
    outputs[node] = data["images"]
    changes: dict[str, Any] = {"outputs": MappingProxyType(outputs)}
    if node not in job.cached_nodes:
        changes["executed_nodes"] = _merge(job.executed_nodes, (node,))
    return changes


def _on_history_success(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    outputs = data.get("outputs")
    if not outputs:
        return {}
    merged = dict(job.outputs)
    merged.update(outputs)
    return {"outputs": MappingProxyType(merged)}


def _with_error(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    error = data.get("error")
    changes: dict[str, Any] = {}
    if error is not None:
        changes["error"] = MappingProxyType(dict(error))
    if data.get("executed"):
        changes["executed_nodes"] = _merge(job.executed_nodes, data["executed"])
    return changes


def _on_submitted(job: Job, data: Mapping[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if data.get("number") is not None:
        changes["number"] = data["number"]
    if data.get("prompt_id"):
        changes["prompt_id"] = data["prompt_id"]
    return changes


_UPDATERS: Mapping[str, Any] = MappingProxyType({
    "execution_start": lambda job, data: {},
    "execution_cached": lambda job, data: {
        "cached_nodes": _merge(job.cached_nodes, data.get("nodes", ()))},
    "executing": _on_executing,
    "executing_null": _on_executing_null,
    "progress": _on_progress,
    "progress_state": _on_progress_state,
    "executed": _on_executed,
    "execution_success": lambda job, data: {},
    "execution_error": _with_error,
    "execution_interrupted": _with_error,
    "submitted": _on_submitted,
    "history_empty": lambda job, data: {"history_retries": job.history_retries + 1},
    "history_exhausted": lambda job, data: {
        "history_retries": job.history_retries + 1, **_with_error(job, data)},
    "history_success": _on_history_success,
    "history_error": _with_error,
    "history_interrupted": _with_error,
    "released": lambda job, data: {"released": True},
})


def _server_data(key: str, event: Any) -> dict[str, Any]:
    """The few named attributes each server event contributes."""
    if key == "executing":
        return {"node": _node_id(getattr(event, "node", None))}
    if key == "progress":
        return {"node": _node_id(getattr(event, "node", None)),
                "value": _number_or_none(getattr(event, "value", None)),
                "max": _number_or_none(getattr(event, "max", None))}
    if key == "execution_cached":
        return {"nodes": _node_ids(getattr(event, "nodes", None))}
    if key == "progress_state":
        return {"nodes": getattr(event, "nodes", None)}
    if key == "executed":
        return {"node": _node_id(getattr(event, "node", None)), "images": _executed_images(event)}
    if key == "execution_error":
        return {"error": _execution_error(event),
                "executed": _node_ids(getattr(event, "executed", None))}
    if key == "execution_interrupted":
        return {"error": _execution_interrupted(event),
                "executed": _node_ids(getattr(event, "executed", None))}
    return {}


# --------------------------------------------------------------------------- the engine


def _progress(job: Job) -> float:
    """Overall progress, never going backwards.

    ``(completed nodes + current node's value/max) / total nodes``, completed being the
    cached nodes plus the nodes the server finished. Nodes not on an output path never run,
    so the fraction may stop short of 1 until the end: ``finished`` and later success states
    are 1.0. Without a known total only the end moves it (to 1.0).
    """
    if job.state in (FINISHED, FETCHING_OUTPUTS, SUCCEEDED):
        return 1.0
    total = job.total_nodes
    if not total:
        return job.progress
    done = set(job.cached_nodes)
    done.update(job.executed_nodes)
    frac = 0.0
    if (job.current_node is not None and job.current_node not in done
            and job.node_value is not None and job.node_max):
        frac = min(max(job.node_value / job.node_max, 0.0), 1.0)
    raw = min((len(done) + frac) / total, 1.0)
    return max(job.progress, raw)


def _step(job: Job, key: str, data: Mapping[str, Any], now: float | None, *,
          server_event: bool) -> Job:
    at = job.updated_at if now is None else now
    seen = job.events_seen + 1 if server_event else job.events_seen
    target = TRANSITIONS.get((job.state, key))
    if target is None:
        note = f"{key}@{job.state}"
        return evolve(job, {"events_seen": seen, "updated_at": at,
                             "ignored": (*job.ignored, note)[-_MAX_IGNORED:]})
    updater = _UPDATERS.get(key)
    changes: dict[str, Any] = dict(updater(job, data)) if updater else {}
    if key in ("submit_rejected", "client_error", "cancelled", "job_lost", "server_lost",
               "moved_away") \
            and data.get("error") is not None:
        changes["error"] = MappingProxyType(dict(data["error"]))
    if server_event and job.started_at is None and target in (RUNNING, FINISHED,
                                                               FETCHING_OUTPUTS):
        changes["started_at"] = at
    if job.finished_at is None and target != job.state and (
            target in TERMINAL_STATES or target in (FINISHED, FETCHING_OUTPUTS)):
        changes["finished_at"] = at
    changes["state"] = target
    changes["events_seen"] = seen
    changes["updated_at"] = at
    updated = evolve(job, changes)
    progress = _progress(updated)
    if progress != updated.progress:
        # ``updated`` is brand new and not shared yet: set the derived field in place
        # rather than copying the whole job a second time (this runs per WS message)
        object.__setattr__(updated, "progress", progress)
    return updated


# The steady lane: a sampler sends a ``progress`` and a ``progress_state`` per step (a
# flood is tens of thousands), and for a job the table keeps in its state, with its start
# time set, ``_step`` reduces to the updater's changes plus the two counters. The lane
# computes just that, from the event's attributes directly; anything else (another state,
# a row that moves the job) goes through ``_step``. Tests hold both to the same result.
_STEADY: Mapping[str, frozenset[str]] = MappingProxyType({
    kind: frozenset(s for (s, e), t in TRANSITIONS.items() if e == kind and t == s)
    for kind in ("progress", "progress_state")
})
_STARTS = frozenset({RUNNING, FINISHED, FETCHING_OUTPUTS})  # ``_step`` sets started_at there


def _steady_step(job: Job, kind: str, event: Any, now: float | None) -> Job:
    if kind == "progress":
        changes = _progress_changes(job, _node_id(getattr(event, "node", None)),
                                    _number_or_none(getattr(event, "value", None)),
                                    _number_or_none(getattr(event, "max", None)))
    else:
        changes = _progress_state_changes(job, getattr(event, "nodes", None))
    changes["events_seen"] = job.events_seen + 1
    changes["updated_at"] = job.updated_at if now is None else now
    updated = evolve(job, changes)
    progress = _progress(updated)
    if progress != updated.progress:
        object.__setattr__(updated, "progress", progress)  # brand new, not shared yet
    return updated


def apply_event(job: Job, event: Any, *, now: float | None = None) -> Job:
    """Advance ``job`` by one server event (object with ``.type``/``.prompt_id``, or a wire
    dict). Not this job's (other or no prompt id): returned unchanged. An unknown type or a
    ``(state, event)`` with no row: state kept, recorded in ``ignored``. Replays are
    idempotent apart from ``events_seen``/``updated_at``."""
    mapping = _MAPPING_TYPES.get(type(event))  # known types without a call: per message
    if mapping or (mapping is None and _is_mapping(event)):
        event = _Wire(event)
    pid = getattr(event, "prompt_id", None)
    if pid is None or pid != job.prompt_id:
        return job
    kind = getattr(event, "type", None)
    steady = _STEADY.get(kind) if type(kind) is str else None
    if steady is not None and job.state in steady and (
            job.started_at is not None or job.state not in _STARTS):
        return _steady_step(job, kind, event, now)
    key = _event_key(event)
    if key is None or (key not in _WIRE_TYPES and key != "executing_null"):
        label = key if key is not None else "<no type>"
        at = job.updated_at if now is None else now
        return evolve(job, {"events_seen": job.events_seen + 1, "updated_at": at,
                             "ignored": (*job.ignored, f"{label}@{job.state}")[-_MAX_IGNORED:]})
    return _step(job, key, _server_data(key, event), now, server_event=True)


# --------------------------------------------------------------------------- client steps


def _client(job: Job, key: str, now: float | None, **data: Any) -> Job:
    return _step(job, key, data, now, server_event=False)


def upload_started(job: Job, *, now: float | None = None) -> Job:
    return _client(job, "upload_started", now)


def submit_started(job: Job, *, now: float | None = None) -> Job:
    """Just before ``POST /prompt``: from here on the job is pending (holds the lock)."""
    return _client(job, "submit_started", now)


def submitted(job: Job, *, now: float | None = None, prompt_id: str | None = None,
              number: int | None = None) -> Job:
    """``POST /prompt`` answered 200. ``prompt_id`` only if the server chose another one."""
    return _client(job, "submitted", now, prompt_id=prompt_id, number=number)


def submit_rejected(job: Job, error: Mapping[str, Any] | None = None, *,
                    now: float | None = None) -> Job:
    """``POST /prompt`` answered 400 (the workflow did not validate)."""
    return _client(job, "submit_rejected", now, error=error)


def cancelled(job: Job, *, now: float | None = None,
              error: Mapping[str, Any] | None = None) -> Job:
    """Cancelled by the client before the server reported an interruption (e.g. deleted
    from the queue before it started: no event will ever come)."""
    return _client(job, "cancelled", now, error=error or {"message": "cancelled"})


def history_empty(job: Job, *, now: float | None = None, in_queue: bool | None = None,
                  max_retries: int = 8) -> Job:
    """``/history/{id}`` answered ``{}``. Counts a retry; the job becomes ``lost`` only when
    the retries are used up AND the job is known to have left the queue
    (``in_queue is False``): right after the end marker the history may simply not be
    written yet, and a queued job has no history at all."""
    key = "history_empty"
    if in_queue is False and job.history_retries + 1 >= max_retries:
        key = "history_exhausted"
    error = {"source": "history", "message": "the server no longer knows this job "
             "(not queued, no history: restarted or history cleared)"}
    return _client(job, key, now, error=error if key == "history_exhausted" else None)


def _history_parts(entry: Any) -> tuple[str | None, list[Any], Any]:
    status = _attr(entry, "status")
    status_str = _attr(entry, "status_str")
    if status_str is None and status is not None and not isinstance(status, str):
        status_str = _attr(status, "status_str")
    elif status_str is None and isinstance(status, str):
        status_str = status
    messages = _attr(entry, "messages")
    if messages is None and status is not None and not isinstance(status, str):
        messages = _attr(status, "messages")
    return status_str, list(messages or ()), _attr(entry, "outputs")


def _history_outputs(entry: Any, outputs: Any) -> dict[str, tuple[OutputImage, ...]]:
    result: dict[str, tuple[OutputImage, ...]] = {}
    if isinstance(outputs, Mapping):
        for node, value in outputs.items():
            images = value if isinstance(value, (list, tuple)) else _attr(value, "images")
            result[str(node)] = _images(images)
        return result
    refs = _attr(entry, "images")
    for ref in refs or ():  # parsed entries that only list images: group by their node
        node = str(_attr(ref, "node", "") or "")
        result[node] = (*result.get(node, ()), *_images([ref]))
    return result


def from_history(job: Job, entry: Any, *, now: float | None = None) -> Job:
    """Apply a (non-empty) ``/history/{id}`` entry: the truth when WS events were missed.

    Accepts the raw entry (``{"outputs", "status": {"status_str", "messages"}}``), the whole
    response (``{prompt_id: entry}``), or a parsed object with ``outputs``/``status_str``/
    ``messages`` (or ``images``) attributes. An ``execution_interrupted`` message means
    interrupted; ``status_str == "error"`` (or an ``execution_error`` message) failed;
    otherwise success with the entry's outputs.
    """
    if isinstance(entry, Mapping) and job.prompt_id in entry and len(entry) == 1:
        entry = entry[job.prompt_id]
    status_str, messages, outputs = _history_parts(entry)
    by_name: dict[str, Any] = {}
    for msg in messages:
        if isinstance(msg, (list, tuple)) and len(msg) == 2 and isinstance(msg[0], str):
            by_name.setdefault(msg[0], msg[1])
    if "execution_interrupted" in by_name:
        data = by_name["execution_interrupted"]
        return _client(job, "history_interrupted", now, error=_execution_interrupted(data),
                       executed=_node_ids(_attr(data, "executed")))
    if status_str == "error" or "execution_error" in by_name:
        data = by_name.get("execution_error")
        error = _execution_error(data) if data is not None else {
            "source": "history", "message": "the server reported an error"}
        return _client(job, "history_error", now, error=error,
                       executed=_node_ids(_attr(data, "executed")) if data else ())
    return _client(job, "history_success", now, outputs=_history_outputs(entry, outputs))


def outputs_fetched(job: Job, *, now: float | None = None) -> Job:
    """Every output image was downloaded: ``succeeded``, and no longer pending."""
    return _client(job, "outputs_fetched", now)


def job_lost(job: Job, *, now: float | None = None,
             error: Mapping[str, Any] | None = None) -> Job:
    return _client(job, "job_lost", now, error=error or {"message": "job lost"})


def server_lost(job: Job, *, now: float | None = None,
                error: Mapping[str, Any] | None = None) -> Job:
    """The job's server stayed unreachable past the job's deadline."""
    return _client(job, "server_lost", now, error=error or {"message": "server lost"})


def released(job: Job, *, now: float | None = None) -> Job:
    """The caller stopped tracking the job: no longer pending, whatever its state."""
    return _client(job, "released", now)


_MARKS: Mapping[str, str] = MappingProxyType({
    UPLOADING: "upload_started",
    SUBMITTING: "submit_started",
    QUEUED: "submitted",
    REJECTED: "submit_rejected",
    FAILED: "client_error",
    INTERRUPTED: "cancelled",
    LOST: "job_lost",
    SERVER_LOST: "server_lost",
    MOVED: "moved_away",
    SUCCEEDED: "outputs_fetched",
    "released": "released",
})


def mark(job: Job, target: str, *, now: float | None = None,
         error: Mapping[str, Any] | None = None) -> Job:
    """Client step named by the state it aims at (``"submitting"``, ``"rejected"``,
    ``"failed"``, ``"lost"``, ``"server_lost"``, ``"interrupted"``, ``"released"``...).
    Still goes through the table: a step the current state does not allow is recorded in
    ``ignored``, not forced."""
    key = _MARKS.get(target)
    if key is None:
        raise InvalidInputError(
            f"cannot mark a job {target!r}",
            hint=f"use one of {', '.join(sorted(_MARKS))}",
        )
    return _client(job, key, now, error=error)


def rename(job: Job, prompt_id: str) -> Job:
    """An older server ignored our prompt id and chose its own: adopt it (same server)."""
    return replace(job, prompt_id=prompt_id)


# --------------------------------------------------------------------------- failover

#: ``failover`` init option values. ``"off"``: a lost server's jobs end with ``ServerLost``.
#: ``"before-start"``: a job the lost server had not started yet runs elsewhere instead.
FAILOVER_POLICIES = ("off", "before-start")
#: error codes that mean "the server is gone", as opposed to "the server said no": it went
#: away (no answer), or came back without the job (a restart wiped its queue); either way
#: the job's server will not run it, so running it elsewhere is safe
LOSS_CODES = frozenset({"server_unreachable", "server_lost", "job_lost"})


@dataclass(frozen=True)
class FailoverDecision:
    """``move`` to ``target`` or not, and why (the reason goes to the log and audit)."""

    move: bool
    reason: str
    target: str | None = None


def has_started(job: Job) -> bool:
    """Whether anything tells us the server began executing the job: a start or run event,
    a node executed or cached, an output produced, or a state past ``queued``. Moving a
    started job could run it twice and split its outputs over two servers."""
    return (job.started_at is not None or bool(job.executed_nodes) or bool(job.cached_nodes)
            or bool(job.outputs) or job.state in (RUNNING, FINISHED, FETCHING_OUTPUTS,
                                                  SUCCEEDED))


def failover_decision(policy: str, job: Job, error_code: str, *, alternative: str | None,
                      moves: int, max_moves: int) -> FailoverDecision:
    """Should a job whose attempt just failed with ``error_code`` move to ``alternative``?

    Pure rule (the client supplies the facts): only with ``policy == "before-start"``; only
    for a lost server (no answer, unreachable past the deadline, or back from a restart that
    wiped the queued job: ``job_lost``), never for an answer
    the server gave (a 4xx/5xx, a rejected workflow: another server would say the same);
    only while the job has not started (``has_started``); only in a state the failover row
    of the table allows; only to a different selectable server; at most ``max_moves``
    times, so a pool that is dying as a whole ends the job instead of bouncing it around.
    """
    if policy not in FAILOVER_POLICIES:
        raise InvalidInputError(f"unknown failover policy {policy!r}",
                                hint=f"use one of {', '.join(FAILOVER_POLICIES)}")
    if policy == "off":
        return FailoverDecision(False, "failover is off")
    if error_code not in LOSS_CODES:
        return FailoverDecision(False, f"{error_code} is an answer from the server, "
                                "not a lost server")
    if has_started(job):
        return FailoverDecision(False, "the job had started on its server: it is not "
                                "run twice")
    if (job.state, "moved_away") not in TRANSITIONS:
        return FailoverDecision(False, f"a {job.state} job cannot move")
    if moves >= max_moves:
        return FailoverDecision(False, f"the job already moved {moves} time(s)")
    if alternative is None or alternative == job.server:
        return FailoverDecision(False, "no other healthy server")
    return FailoverDecision(True, f"{job.server} was lost before the job started",
                            target=alternative)


# --------------------------------------------------------------------------- page view


#: events that come by the hundred per node: their callback gets ``progress_to_dict``
FREQUENT_EVENTS = frozenset({"progress", "progress_state"})


def progress_to_dict(job: Job) -> dict[str, Any]:
    """The short view for ``progress``/``progress_state`` callbacks: what a progress bar
    needs. Building and converting the full ``job_to_dict`` (outputs, node lists...) for
    every one of those messages was most of the client's per-message cost in the page.
    The page builds the same object in JS (``PoolClient._emit_progress``; tested equal)."""
    node_progress = None
    if job.node_value is not None and job.node_max is not None:
        node_progress = {"value": job.node_value, "max": job.node_max}
    return {
        "jobId": job.job_id,
        "promptId": job.prompt_id,
        "server": job.server,
        "state": job.state,
        "progress": job.progress,
        "currentNode": job.current_node,
        "nodeProgress": node_progress,
        "totalNodes": job.total_nodes,
    }


def job_to_dict(job: Job) -> dict[str, Any]:
    """Plain JSON-safe view with camelCase keys for page JavaScript: the progress view and
    everything else about the job."""
    outputs = {node: [img.to_dict() for img in imgs] for node, imgs in job.outputs.items()}
    return {
        **progress_to_dict(job),
        "number": job.number,
        "cachedNodes": list(job.cached_nodes),
        "executedNodes": list(job.executed_nodes),
        "outputs": outputs,
        "images": [img for imgs in outputs.values() for img in imgs],
        "error": dict(job.error) if job.error is not None else None,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "startedAt": job.started_at,
        "finishedAt": job.finished_at,
        "eventsSeen": job.events_seen,
        "ignoredEvents": list(job.ignored),
        "historyRetries": job.history_retries,
        "released": job.released,
        "terminal": is_terminal(job),
        "pending": is_pending(job),
    }
