"""The audit trail: one record per HTTP request / WebSocket connection, and the consistency
check that reads it.

The client's single choke point appends a record for every request it makes *for a server*
(and, when it belongs to one, *for a job*). ``validate_consistency`` then answers the old
``validateServerConsistency()`` question from what was actually sent, instead of comparing
two strings that may both be wrong.

Bounded on purpose (a page may run for days): the log is a ring of ``maxlen`` records with a
count of those dropped. Beside it, a per-job index keeps each job's last records and, per
job, the *first* record sent to each server. That small map (at most one record per server)
survives the ring's rotation, so a job that once went to the wrong server is still reported
after its records scrolled out.

Secrets never enter the log: ``append`` passes every path through ``redact_url``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from .lock import LockState, Pins, is_held

__all__ = [
    "SECRET_PARAMS",
    "AuditLog",
    "AuditRecord",
    "redact_path",
    "redact_url",
    "validate_consistency",
]

#: Query parameter names whose values are replaced by ``***`` (compared case-insensitively).
SECRET_PARAMS = frozenset({"token", "access_token", "api_key", "apikey", "auth", "password"})

_USERINFO_RE = re.compile(r"(?<=://)[^/@?#]*@")


def redact_url(url: str) -> str:
    """``url`` with secret query values replaced by ``***`` and ``user:pw@`` by ``***@``.

    Works on full URLs and on bare paths (``/ws?clientId=x&token=y``); everything else is
    kept byte for byte (no re-encoding), so the log shows what was sent minus the secret.
    """
    if "@" in url:
        url = _USERINFO_RE.sub("***@", url, count=1)
    if "?" not in url:
        return url
    head, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    params = []
    changed = False
    for param in query.split("&"):
        name, eq, _value = param.partition("=")
        if eq and name.lower() in SECRET_PARAMS:
            params.append(f"{name}=***")
            changed = True
        else:
            params.append(param)
    if not changed:
        return url
    return f"{head}?{'&'.join(params)}{hash_mark}{fragment}"


#: Same rule for a path with a query; the name says what the caller has in hand.
redact_path = redact_url


@dataclass(frozen=True)
class AuditRecord:
    """One request. ``job`` is the prompt id it was made for (None: server-level, e.g. a
    health probe or the WebSocket). ``status`` is the HTTP status, or a short text such as
    ``"open"`` (WS) or ``"error:timeout"`` when no answer came. ``time`` is wall seconds."""

    time: float
    job: str | None
    server: str
    method: str
    path: str
    status: int | str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "promptId": self.job, "server": self.server,
                "method": self.method, "path": self.path, "status": self.status}


class AuditLog:
    """Bounded audit log (mutable: the client owns one; the records are frozen values)."""

    def __init__(self, maxlen: int = 5000, *, per_job: int = 100, max_jobs: int = 1000) -> None:
        if maxlen < 1 or per_job < 1 or max_jobs < 1:
            raise ValueError("audit log sizes must be >= 1")
        self.maxlen = maxlen
        self.per_job = per_job
        self.max_jobs = max_jobs
        self._records: deque[AuditRecord] = deque(maxlen=maxlen)
        self.dropped = 0
        self._by_job: dict[str, deque[AuditRecord]] = {}
        self._first_by_server: dict[str, dict[str, AuditRecord]] = {}
        self.jobs_dropped = 0

    def append(self, record: AuditRecord) -> AuditRecord:
        """Store ``record`` (its path redacted); returns the stored record."""
        safe = redact_url(record.path)
        if safe != record.path:
            record = replace(record, path=safe)
        if len(self._records) == self.maxlen:
            self.dropped += 1
        self._records.append(record)
        job = record.job
        if job is not None:
            per = self._by_job.get(job)
            if per is None:
                if len(self._by_job) >= self.max_jobs:
                    # dicts keep insertion order: evict the job seen first
                    oldest = next(iter(self._by_job))
                    del self._by_job[oldest]
                    self._first_by_server.pop(oldest, None)
                    self.jobs_dropped += 1
                per = self._by_job[job] = deque(maxlen=self.per_job)
                self._first_by_server[job] = {}
            per.append(record)
            self._first_by_server[job].setdefault(record.server, record)
        return record

    def rename(self, old: str, new: str) -> None:
        """A server that names jobs itself renamed job ``old`` to ``new``: the job's trail
        stays one, so its upload (made under ``old``; the records keep the name they were
        made under) counts for ``new`` in ``records``, ``servers_for`` and the consistency
        check."""
        if old == new or old not in self._by_job:
            return
        per = self._by_job.pop(old)
        first = self._first_by_server.pop(old, {})
        later = self._by_job.get(new)
        if later is not None:  # requests already made under the new name
            per.extend(later)
            for server, record in self._first_by_server.get(new, {}).items():
                first.setdefault(server, record)
        self._by_job[new] = per
        self._first_by_server[new] = first

    def records(self, job: str | None = None) -> list[AuditRecord]:
        """All retained records, or the retained records of one job (oldest first)."""
        if job is None:
            return list(self._records)
        return list(self._by_job.get(job, ()))

    def servers_for(self, job: str) -> tuple[str, ...]:
        """Every server this job's requests went to, in first-use order (should be one)."""
        return tuple(self._first_by_server.get(job, {}))

    def first_record(self, job: str, server: str) -> AuditRecord | None:
        return self._first_by_server.get(job, {}).get(server)

    def jobs(self) -> tuple[str, ...]:
        return tuple(self._by_job)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(tuple(self._records))

    def to_list(self, job: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Plain JSON-safe records for the debug helper (the newest ``limit``)."""
        recs = self.records(job)
        if limit is not None:
            recs = recs[-limit:] if limit > 0 else []
        return [r.to_dict() for r in recs]


def validate_consistency(
    log: AuditLog,
    pins: Pins,
    lock_state: LockState | None = None,
    operation: str | None = None,
    *,
    api_server: str | None = None,
) -> dict[str, Any]:
    """Old ``validateServerConsistency()``, answered from the audit trail.

    Consistent iff every job's requests all went to one server, that server being the job's
    pin when it is still pinned (else the first server it used), and, in session mode
    (``lock_state`` given and held), ``api_server`` (what the API base is now) equals the
    lock. Server-level records (``job`` None: probes, WebSocket) are not checked: they may
    go anywhere by design.

    Returns the original field names: ``consistent``, ``server`` (the one server in use
    when that is well defined: the lock, or the single server of all jobs), ``lockedServer``,
    ``apiServer``, ``reason``, ``violations`` (``promptId, expected, actual, method, path,
    time``), plus ``operation``, ``checkedJobs`` and ``droppedRecords``.
    """
    locked = lock_state.locked_server if lock_state is not None else None
    held = lock_state is not None and is_held(lock_state)
    violations: list[dict[str, Any]] = []
    used: dict[str, None] = {}
    jobs = log.jobs()
    for job in jobs:
        servers = log.servers_for(job)
        if not servers:
            continue
        expected = pins.server_of(job) or servers[0]
        used[expected] = None
        for server in servers:
            if server == expected:
                continue
            first = log.first_record(job, server)
            violations.append({
                "promptId": job,
                "expected": expected,
                "actual": server,
                "method": first.method if first else None,
                "path": first.path if first else None,
                "time": first.time if first else None,
            })
    reasons: list[str] = []
    if violations:
        bad = sorted({v["promptId"] for v in violations})
        reasons.append(f"{len(violations)} request group(s) of {len(bad)} job(s) went to a "
                       f"server other than the job's: " + ", ".join(
                           f"{v['promptId']} expected {v['expected']} got {v['actual']}"
                           for v in violations[:5]))
    if held and api_server is not None and api_server != locked:
        reasons.append(f"the API base {api_server} differs from the locked server {locked}")
    consistent = not reasons
    if consistent:
        if held:
            server = locked
            reason = f"all requests went to the locked server {locked}"
        elif len(used) == 1:
            server = next(iter(used))
            reason = f"all job requests went to {server}"
        else:
            server = None
            reason = (f"every job's requests went to its own server ({len(used)} servers)"
                      if used else "no job requests recorded")
    else:
        server = None
        reason = "; ".join(reasons)
    if operation:
        reason = f"{operation}: {reason}"
    return {
        "consistent": consistent,
        "server": server,
        "lockedServer": locked,
        "apiServer": api_server,
        "reason": reason,
        "violations": violations,
        "operation": operation,
        "checkedJobs": len(jobs),
        "droppedRecords": log.dropped,
    }
