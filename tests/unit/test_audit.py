"""The audit trail: redaction, bounds, and the consistency check read from it."""

from __future__ import annotations

import json

import pytest

from comfyui_client.audit import (
    AuditLog,
    AuditRecord,
    redact_path,
    redact_url,
    validate_consistency,
)
from comfyui_client.lock import LockState, Pins, on_task_pending, on_ws_closed, on_ws_open

A = "http://a:8188"
B = "http://b:8188"


def rec(job: str | None, server: str, path: str = "/history/x", method: str = "GET",
        status: int | str = 200, time: float = 1.0) -> AuditRecord:
    return AuditRecord(time=time, job=job, server=server, method=method, path=path,
                       status=status)


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("/ws?clientId=abc&token=s3cret", "/ws?clientId=abc&token=***"),
        ("/view?filename=a.png&token=s3cret&type=output",
         "/view?filename=a.png&token=***&type=output"),
        ("http://a:8188/view?Token=s3cret", "http://a:8188/view?Token=***"),
        ("/x?access_token=s3cret&api_key=s3cret", "/x?access_token=***&api_key=***"),
        ("/x?token=", "/x?token=***"),
        ("/x?tokenish=1&mytoken=2", "/x?tokenish=1&mytoken=2"),  # other names untouched
        ("/history/abc", "/history/abc"),
        ("/prompt?", "/prompt?"),
        ("http://user:s3cret@a/x?token=s3cret#frag", "http://***@a/x?token=***#frag"),
        ("/view?filename=a%20b.png&token=s3cret", "/view?filename=a%20b.png&token=***"),
    ],
)
def test_redact(raw: str, safe: str) -> None:
    assert redact_url(raw) == safe
    assert redact_path(raw) == safe
    assert "s3cret" not in redact_url(raw)


def test_append_redacts_so_secrets_never_enter_the_log() -> None:
    log = AuditLog()
    stored = log.append(rec("p1", A, "/ws?clientId=c&token=s3cret", method="WS", status="open"))
    assert stored.path == "/ws?clientId=c&token=***"
    assert "s3cret" not in json.dumps(log.to_list())
    assert "s3cret" not in repr(log.records())
    plain = rec("p1", A, "/history/p1")
    assert log.append(plain) is plain  # nothing to redact: stored as is


# --------------------------------------------------------------------------- the log


def test_records_and_servers_per_job() -> None:
    log = AuditLog()
    log.append(rec(None, A, "/system_stats"))
    log.append(rec("p1", A, "/upload/image", "POST"))
    log.append(rec("p1", A, "/prompt", "POST"))
    log.append(rec("p2", B, "/prompt", "POST"))
    assert len(log) == 4
    assert [r.path for r in log.records("p1")] == ["/upload/image", "/prompt"]
    assert log.records("nope") == []
    assert log.servers_for("p1") == (A,) and log.servers_for("p2") == (B,)
    assert log.servers_for("nope") == ()
    assert log.jobs() == ("p1", "p2")


def test_a_renamed_job_keeps_one_trail() -> None:
    log = AuditLog()
    log.append(rec("ours", A, "/upload/image", "POST"))
    log.append(rec("ours", A, "/prompt", "POST"))
    log.append(rec("theirs", A, "/history/theirs"))  # a request under the new name first
    log.rename("ours", "theirs")
    assert [r.path for r in log.records("theirs")] == [
        "/upload/image", "/prompt", "/history/theirs"]
    assert [r.job for r in log.records("theirs")] == ["ours", "ours", "theirs"]
    assert log.records("ours") == [] and log.servers_for("theirs") == (A,)
    assert log.jobs() == ("theirs",)
    log.rename("gone", "x")  # unknown: nothing happens
    log.rename("theirs", "theirs")
    assert log.jobs() == ("theirs",) and len(log.records("theirs")) == 3


def test_log_is_bounded_and_counts_drops() -> None:
    log = AuditLog(maxlen=10)
    for i in range(25):
        log.append(rec(None, A, f"/r{i}", time=float(i)))
    assert len(log) == 10 and log.dropped == 15
    assert [r.path for r in log.records()] == [f"/r{i}" for i in range(15, 25)]
    assert [d["path"] for d in log.to_list(limit=2)] == ["/r23", "/r24"]


def test_per_job_index_is_bounded_too() -> None:
    log = AuditLog(maxlen=100, per_job=3, max_jobs=2)
    for i in range(5):
        log.append(rec("p1", A, f"/h{i}"))
    assert [r.path for r in log.records("p1")] == ["/h2", "/h3", "/h4"]
    log.append(rec("p2", A))
    log.append(rec("p3", A))  # evicts p1, the job seen first
    assert log.jobs() == ("p2", "p3") and log.jobs_dropped == 1
    assert log.records("p1") == [] and log.servers_for("p1") == ()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        AuditLog(maxlen=0)


# --------------------------------------------------------------------------- consistency


def session(*pending: str) -> LockState:
    state = on_ws_open(LockState(), A)
    for job in pending:
        state = on_task_pending(state, job)
    return state


def test_consistent_session() -> None:
    log = AuditLog()
    pins = Pins().pin("p1", A)
    log.append(rec(None, A, "/ws?clientId=c", "WS", "open"))
    log.append(rec("p1", A, "/prompt", "POST"))
    log.append(rec("p1", A, "/history/p1"))
    log.append(rec("p1", A, "/view?filename=o.png"))
    result = validate_consistency(log, pins, session("p1"), api_server=A)
    assert result["consistent"] is True
    assert result["server"] == A and result["lockedServer"] == A and result["apiServer"] == A
    assert result["violations"] == []
    assert result["reason"] == f"all requests went to the locked server {A}"
    assert json.loads(json.dumps(result)) == result


def test_a_request_to_another_server_is_a_violation() -> None:
    log = AuditLog()
    pins = Pins().pin("p1", A)
    log.append(rec("p1", A, "/prompt", "POST", time=1.0))
    log.append(rec("p1", B, "/history/p1", "GET", time=2.0))
    log.append(rec("p1", B, "/view?filename=o.png", time=3.0))
    result = validate_consistency(log, pins, session("p1"), "history", api_server=A)
    assert result["consistent"] is False and result["server"] is None
    assert result["violations"] == [{
        "promptId": "p1", "expected": A, "actual": B,
        "method": "GET", "path": "/history/p1", "time": 2.0,
    }]
    assert result["reason"].startswith("history: ")
    assert f"p1 expected {A} got {B}" in result["reason"]


def test_api_base_differing_from_the_lock_is_inconsistent() -> None:
    result = validate_consistency(AuditLog(), Pins(), session(), api_server=B)
    assert result["consistent"] is False
    assert (result["lockedServer"], result["apiServer"]) == (A, B)
    assert result["reason"] == f"the API base {B} differs from the locked server {A}"


def test_released_lock_is_not_compared_with_the_api_base() -> None:
    released = on_ws_closed(session())
    result = validate_consistency(AuditLog(), Pins(), released, api_server=B)
    assert result["consistent"] is True and result["lockedServer"] is None


def test_job_mode_jobs_on_different_servers_are_consistent() -> None:
    log = AuditLog()
    pins = Pins().pin("p1", A).pin("p2", B)
    log.append(rec("p1", A, "/prompt", "POST"))
    log.append(rec("p2", B, "/prompt", "POST"))
    log.append(rec(None, B, "/system_stats"))  # server-level: not a job's request
    result = validate_consistency(log, pins)
    assert result["consistent"] is True and result["server"] is None
    assert result["reason"] == "every job's requests went to its own server (2 servers)"
    assert validate_consistency(AuditLog(), Pins())["reason"] == "no job requests recorded"


def test_unpinned_job_must_still_use_one_server() -> None:
    log = AuditLog()
    log.append(rec("old", A, "/prompt", "POST"))
    log.append(rec("old", B, "/history/old"))
    result = validate_consistency(log, Pins())
    assert result["consistent"] is False
    assert result["violations"][0]["expected"] == A
    assert result["violations"][0]["actual"] == B


def test_a_violation_survives_log_rotation() -> None:
    log = AuditLog(maxlen=5)
    pins = Pins().pin("p1", A)
    log.append(rec("p1", B, "/upload/image", "POST", time=0.5))
    for i in range(20):
        log.append(rec("p1", A, f"/history/p1?{i}"))
    assert all(r.server == A for r in log.records())  # the wrong request scrolled out...
    result = validate_consistency(log, pins)
    assert result["consistent"] is False  # ...but is still reported
    assert result["violations"][0]["path"] == "/upload/image"
    assert result["droppedRecords"] == 16
