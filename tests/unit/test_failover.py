"""The opt-in failover rule (``jobs.failover_decision``): which lost jobs may run elsewhere.

Pure: the client supplies the policy, the job value, the error code and the server a move
would go to; these tests pin every branch with plain values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from comfyui_client import jobs
from comfyui_client.errors import InvalidInputError
from comfyui_client.jobs import failover_decision, has_started, new_job

PID = "05ce3d50-c709-4d64-ae82-a8cdd0f1ba8c"
A, B = "http://127.0.0.1:8188", "http://127.0.0.1:8189"
IMG = {"filename": "out_00001_.png", "subfolder": "", "type": "output"}


def ev(kind: str, **attrs: object) -> SimpleNamespace:
    return SimpleNamespace(type=kind, prompt_id=PID, **attrs)


def queued() -> jobs.Job:
    job = jobs.submit_started(new_job(PID, A, now=0.0), now=1.0)
    return jobs.submitted(job, now=2.0)


def decide(job: jobs.Job, code: str = "server_lost", policy: str = "before-start",
           alternative: str | None = B, moves: int = 0, max_moves: int = 2):
    return failover_decision(policy, job, code, alternative=alternative, moves=moves,
                             max_moves=max_moves)


@pytest.mark.parametrize("job", [
    new_job(PID, A, now=0.0),                                  # connect failed
    jobs.upload_started(new_job(PID, A, now=0.0)),             # upload failed
    jobs.submit_started(new_job(PID, A, now=0.0)),             # POST got no answer
    queued(),                                                  # queued, then server lost
], ids=["created", "uploading", "submitting", "queued"])
@pytest.mark.parametrize("code", ["server_unreachable", "server_lost"])
def test_a_lost_server_moves_a_job_that_had_not_started(job, code):
    decision = decide(job, code)
    assert decision.move is True and decision.target == B
    assert A in decision.reason
    moved = jobs.mark(job, "moved", now=3.0)
    assert moved.state == "moved" and jobs.is_terminal(moved)


@pytest.mark.parametrize("events", [
    [ev("execution_start", timestamp=1)],
    [ev("executing", node="2")],
    [ev("execution_cached", nodes=["1"])],
    [ev("execution_start", timestamp=1), ev("executed", node="3", output={"images": [IMG]})],
], ids=["start", "executing", "cached", "executed"])
def test_a_started_job_never_moves(events):
    job = queued()
    for e in events:
        job = jobs.apply_event(job, e, now=5.0)
    assert has_started(job)
    decision = decide(job)
    assert decision.move is False and "started" in decision.reason


def test_a_job_started_then_marked_lost_keeps_its_started_facts():
    """The client may mark the job server_lost first; the rule still sees it had started."""
    job = jobs.apply_event(queued(), ev("execution_start", timestamp=1), now=5.0)
    lost = jobs.server_lost(job, now=6.0)
    assert has_started(lost) and decide(lost).move is False


@pytest.mark.parametrize("code", ["bad_response", "invalid_workflow", "cross_origin_blocked",
                                  "upload_too_large", "execution_failed"])
def test_an_answer_from_the_server_is_not_a_lost_server(code):
    decision = decide(queued(), code)
    assert decision.move is False and code in decision.reason


def test_off_never_moves_and_unknown_policies_are_refused():
    assert decide(queued(), policy="off") == jobs.FailoverDecision(False, "failover is off")
    with pytest.raises(InvalidInputError):
        decide(queued(), policy="always")


@pytest.mark.parametrize("alternative", [None, A])
def test_no_other_server_means_no_move(alternative):
    decision = decide(queued(), alternative=alternative)
    assert decision.move is False and "no other" in decision.reason


def test_moves_are_capped():
    assert decide(queued(), moves=1, max_moves=2).move is True
    decision = decide(queued(), moves=2, max_moves=2)
    assert decision.move is False and "2 time" in decision.reason


def test_only_states_with_a_failover_row_move():
    """A finished attempt (here: rejected by the server) has no ``moved_away`` row."""
    rejected = jobs.submit_rejected(jobs.submit_started(new_job(PID, A, now=0.0)))
    assert not has_started(rejected)
    decision = decide(rejected, "server_unreachable")
    assert decision.move is False and "rejected" in decision.reason
    assert ("rejected", "moved_away") not in jobs.TRANSITIONS


def test_a_queued_job_a_restart_wiped_moves_but_a_started_one_does_not():
    """job_lost before start: the restarted server forgot it and will never run it, so it
    moves; after start it may have produced outputs there, so it ends lost."""
    moved = decide(queued(), "job_lost")
    assert moved.move is True and moved.target is not None
    started = jobs.apply_event(queued(), ev("execution_start", timestamp=1), now=5.0)
    assert decide(started, "job_lost").move is False
