"""The session lock table and job pins."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from comfyui_client.errors import ServerMismatch
from comfyui_client.lock import (
    RULES,
    LockState,
    Pins,
    api_base,
    can_unlock,
    check_consistency,
    check_job_server,
    describe,
    is_held,
    lock_change,
    on_task_done,
    on_task_pending,
    on_ws_closed,
    on_ws_connecting,
    on_ws_open,
    require_lock_for_submit,
    why_held,
)

A = "http://a:8188"
B = "http://b:8188"


def must_not_select() -> str:
    raise AssertionError("select() called while the lock is held")


def selects(server: str) -> Callable[[], str]:
    return lambda: server


def locked(*pending: str, ws: str = "open") -> LockState:
    state = on_ws_open(LockState(), A, now=5.0)
    for job in pending:
        state = on_task_pending(state, job)
    if ws != "open":
        state = on_ws_closed(state)
    return state


# --------------------------------------------------------------------------- scenarios


def test_opening_the_websocket_locks_that_server() -> None:
    state = on_ws_open(LockState(), A, now=12.0)
    assert state.locked_server == A and state.ws_state == "open" and state.since == 12.0
    assert is_held(state)
    assert api_base(state, must_not_select) == A
    assert lock_change(LockState(), state) == ("locked", A)


def test_no_lock_means_api_base_selects() -> None:
    assert api_base(LockState(), selects(B)) == B


def test_api_base_returns_the_lock_while_pending_even_with_ws_closed() -> None:
    state = on_ws_closed(locked("p1"))
    assert state.locked_server == A and state.ws_state == "reconnecting"
    assert is_held(state)
    assert api_base(state, must_not_select) == A


def test_released_exactly_when_the_last_pending_task_ends() -> None:
    state = on_ws_closed(locked("p1", "p2"))
    state, released = on_task_done(state, "p1")
    assert not released and is_held(state) and state.pending == frozenset({"p2"})
    assert api_base(state, must_not_select) == A
    before = state
    state, released = on_task_done(state, "p2")
    assert released
    assert state.locked_server is None and not is_held(state) and state.pending == frozenset()
    assert lock_change(before, state) == ("released", A)  # what the client logs
    assert api_base(state, selects(B)) == B  # the next job selects again


def test_websocket_holds_the_lock_after_the_last_task_then_close_releases() -> None:
    state, released = on_task_done(locked("p1"), "p1")
    assert not released and state.locked_server == A  # WS still open
    after = on_ws_closed(state)
    assert after.locked_server is None
    assert lock_change(state, after) == ("released", A)


def test_ws_close_without_pending_releases() -> None:
    state = on_ws_closed(locked())
    assert state == LockState(ws_state="closed")
    assert api_base(state, selects(B)) == B


def test_done_for_an_unknown_task_changes_nothing() -> None:
    state = locked("p1")
    assert on_task_done(state, "nope") == (state, False)


def test_pending_needs_a_lock_and_is_idempotent() -> None:
    with pytest.raises(ServerMismatch, match="no server is locked"):
        on_task_pending(LockState(), "p1")
    state = locked("p1")
    assert on_task_pending(state, "p1") is state


def test_reconnect_goes_to_the_same_server_only() -> None:
    state = on_ws_closed(locked("p1"))
    with pytest.raises(ServerMismatch) as info:
        on_ws_connecting(state, B)
    assert A in str(info.value) and B in str(info.value)
    state = on_ws_connecting(state, A)
    state = on_ws_connecting(state, A)
    assert state.reconnect_attempts == 2 and state.ws_state == "reconnecting"
    with pytest.raises(ServerMismatch):
        on_ws_open(state, B)
    state = on_ws_open(state, A)
    assert state.ws_state == "open" and state.reconnect_attempts == 0
    assert state.pending == frozenset({"p1"}) and state.since == 5.0  # not re-taken


def test_connecting_without_a_lock_does_not_lock() -> None:
    state = on_ws_connecting(LockState(), B)
    assert state.ws_state == "connecting" and state.locked_server is None
    assert not is_held(state)


def test_submit_refused_without_lock() -> None:
    with pytest.raises(ServerMismatch, match="submitWorkflow refused: no server is locked"):
        require_lock_for_submit(LockState(), A)


def test_submit_refused_when_api_base_differs_and_names_both() -> None:
    with pytest.raises(ServerMismatch) as info:
        require_lock_for_submit(locked(), B)
    text = str(info.value)
    assert A in text and B in text and "submitWorkflow refused" in text
    assert info.value.details == {"lockedServer": A, "apiServer": B, "operation": "submit"}
    require_lock_for_submit(locked(), A)  # same server: allowed (returns None)
    require_lock_for_submit(locked(), A + "/")


@pytest.mark.parametrize("operation", ["upload", "history", "image download"])
def test_calls_to_another_server_are_refused_naming_both_and_the_operation(
    operation: str,
) -> None:
    with pytest.raises(ServerMismatch) as info:
        check_consistency(locked("p1"), operation, B)
    text = str(info.value)
    assert text.startswith(f"{operation} refused") and A in text and B in text
    assert info.value.details["operation"] == operation
    assert check_consistency(locked("p1"), operation, A) is None


def test_calls_without_a_lock_are_not_checked() -> None:
    assert check_consistency(LockState(), "upload", B) is None


@pytest.mark.parametrize(
    ("state", "ok", "n", "reason"),
    [
        (LockState(), True, 0, "no server locked"),
        (locked(), True, 0, "WebSocket open and healthy"),
        (locked("p1"), False, 1, f"1 task pending on {A}"),
        (locked("p1", "p2", ws="closed"), False, 2, f"2 tasks pending on {A}"),
    ],
)
def test_can_unlock(state: LockState, ok: bool, n: int, reason: str) -> None:
    check = can_unlock(state)
    assert (check.can_unlock, check.pending_tasks, check.reason) == (ok, n, reason)
    assert check.locked_server == state.locked_server and check.ws_state == state.ws_state


@pytest.mark.parametrize(
    ("state", "text"),
    [
        (LockState(), "not held: no server locked; the next job selects a server"),
        (locked(), f"held on {A}: WebSocket open"),
        (locked("p1"), f"held on {A}: WebSocket open and 1 task pending"),
        (locked("p1", "p2", ws="closed"), f"held on {A}: 2 tasks pending (WebSocket reconnecting)"),
    ],
)
def test_why_held(state: LockState, text: str) -> None:
    assert why_held(state) == text


def test_describe_is_plain_json() -> None:
    d = describe(locked("p2", "p1", ws="closed"))
    assert d == {
        "lockedServer": A,
        "wsState": "reconnecting",
        "pendingTasks": ["p1", "p2"],
        "heldBecause": f"held on {A}: 2 tasks pending (WebSocket reconnecting)",
        "reconnectAttempts": 0,
        "held": True,
    }
    assert json.loads(json.dumps(d)) == d


def test_lock_state_rejects_unknown_ws_state_and_is_frozen() -> None:
    with pytest.raises(ValueError, match="ws_state"):
        LockState(ws_state="half-open")
    with pytest.raises(dataclasses.FrozenInstanceError):
        LockState().locked_server = A  # type: ignore[misc]


# --------------------------------------------------------------------------- the table
# One check per RULES row: the printed table and the code cannot drift apart.


def _rule_checks() -> dict[str, Callable[[], None]]:
    def raises(fn: Callable[[], object]) -> None:
        with pytest.raises(ServerMismatch):
            fn()

    def opens_unlocked() -> None:
        assert on_ws_open(LockState(), A).locked_server == A

    def opens_same() -> None:
        s = on_ws_open(on_ws_connecting(on_ws_closed(locked("p")), A), A)
        assert s.locked_server == A and s.reconnect_attempts == 0

    def connects_again() -> None:
        s = on_ws_connecting(on_ws_closed(locked("p")), A)
        assert (s.ws_state, s.reconnect_attempts) == ("reconnecting", 1)

    def closes_pending() -> None:
        s = on_ws_closed(locked("p"))
        assert s.locked_server == A and is_held(s)

    def closes_idle() -> None:
        assert on_ws_closed(locked()).locked_server is None

    def pending_held() -> None:
        assert on_task_pending(locked(), "q").pending == frozenset({"q"})

    def task_ends_held() -> None:
        s, rel = on_task_done(locked("p", "q", ws="closed"), "p")
        assert not rel and is_held(s)
        s, rel = on_task_done(locked("p"), "p")
        assert not rel and is_held(s)

    def last_ends() -> None:
        s, rel = on_task_done(locked("p", ws="closed"), "p")
        assert rel and s.locked_server is None

    def api_held() -> None:
        assert api_base(locked(), must_not_select) == A

    def api_free() -> None:
        assert api_base(LockState(), selects(B)) == B

    def calls_free() -> None:
        assert check_consistency(LockState(), "image", B) is None

    return {
        "WebSocket opens on S, no server locked": opens_unlocked,
        "WebSocket opens on S, locked to S": opens_same,
        "WebSocket opens on T, locked to S": lambda: raises(lambda: on_ws_open(locked(), B)),
        "WebSocket connects again while locked": connects_again,
        "WebSocket closes, tasks pending": closes_pending,
        "WebSocket closes, no task pending": closes_idle,
        "task becomes pending (just before POST /prompt), no lock":
            lambda: raises(lambda: on_task_pending(LockState(), "p")),
        "task becomes pending, lock held": pending_held,
        "task ends (terminal + outputs fetched, or released), WebSocket open or others pending":
            task_ends_held,
        "last pending task ends, WebSocket not open": last_ends,
        "API base asked, lock held": api_held,
        "API base asked, no lock held": api_free,
        "submit, no server locked": lambda: raises(lambda: require_lock_for_submit(LockState(), A)),
        "submit, API base differs from the lock":
            lambda: raises(lambda: require_lock_for_submit(locked(), B)),
        "upload/history/image/... to T, locked to S":
            lambda: raises(lambda: check_consistency(locked(), "upload", B)),
        "upload/history/image/... with no lock held": calls_free,
    }


def test_every_rule_has_a_check() -> None:
    assert all(isinstance(c, str) and isinstance(o, str) for c, o in RULES)
    assert [c for c, _ in RULES] == list(_rule_checks())


@pytest.mark.parametrize(("condition", "outcome"), RULES)
def test_rule(condition: str, outcome: str) -> None:
    _rule_checks()[condition]()


# --------------------------------------------------------------------------- pins


def test_pins_are_immutable_job_to_server() -> None:
    empty = Pins()
    p = empty.pin("j1", A).pin("j2", B).pin("j3", A)
    assert len(empty) == 0 and len(p) == 3
    assert p.server_of("j2") == B and p.server_of("nope") is None
    assert p.servers_in_use() == (A, B)  # one WebSocket per server in use
    assert p.jobs_on(A) == ("j1", "j3") and p.jobs_on("http://c") == ()
    assert "j1" in p and list(p) == ["j1", "j2", "j3"]
    assert p.pin("j1", A) is p  # same pin again: no-op
    q = p.unpin("j1")
    assert q.server_of("j1") is None and p.server_of("j1") == A
    assert q.unpin("j1") is q
    assert q.unpin("j2").unpin("j3").servers_in_use() == ()


def test_a_pinned_job_never_moves() -> None:
    p = Pins().pin("j1", A)
    with pytest.raises(ServerMismatch) as info:
        p.pin("j1", B)
    assert "j1" in str(info.value) and A in str(info.value) and B in str(info.value)


def test_check_job_server_names_job_servers_and_operation() -> None:
    pins = Pins().pin("job-7", A)
    check_job_server(pins, "job-7", "history", A)
    with pytest.raises(ServerMismatch) as info:
        check_job_server(pins, "job-7", "image download", B)
    text = str(info.value)
    assert "job-7" in text and A in text and B in text and "image download" in text
    assert info.value.details == {"expected": A, "actual": B, "operation": "image download"}
    with pytest.raises(ServerMismatch, match="no pinned server"):
        check_job_server(pins, "job-8", "history", A)


def test_per_job_mode_runs_jobs_on_several_servers() -> None:
    pins = Pins().pin("j1", A).pin("j2", B)
    for job, server in (("j1", A), ("j2", B)):
        for op in ("upload", "submit", "history", "image download"):
            check_job_server(pins, job, op, server)
    with pytest.raises(ServerMismatch):
        check_job_server(pins, "j2", "history", A)
