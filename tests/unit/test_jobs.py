"""The job lifecycle table, driven by hand-made and recorded (ComfyUI 0.33) event sequences."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest

from comfyui_client import jobs
from comfyui_client.errors import InvalidInputError
from comfyui_client.jobs import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    Job,
    OutputImage,
    apply_event,
    from_history,
    history_empty,
    is_pending,
    is_terminal,
    job_to_dict,
    mark,
    new_job,
    outputs_fetched,
)

PID = "05ce3d50-c709-4d64-ae82-a8cdd0f1ba8c"
SERVER = "http://127.0.0.1:8188"
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
}
IMG = {"filename": "fixture_invert_00001_.png", "subfolder": "", "type": "output"}


def ev(kind: str, pid: str | None = PID, **attrs: Any) -> SimpleNamespace:
    """An event shaped like the protocol layer's dataclasses: ``.type``, ``.prompt_id``..."""
    return SimpleNamespace(type=kind, prompt_id=pid, **attrs)


def submitted_job(pid: str = PID, workflow: dict | None = WORKFLOW) -> Job:
    job = new_job(pid, SERVER, now=0.0, workflow=workflow)
    job = jobs.submit_started(job, now=1.0)
    return jobs.submitted(job, now=2.0, number=7)


def run(job: Job, events: list[Any], progress: list[float] | None = None
        ) -> tuple[Job, list[str]]:
    states = []
    for i, event in enumerate(events):
        job = apply_event(job, event, now=10.0 + i)
        states.append(job.state)
        if progress is not None:
            progress.append(job.progress)
    return job, states


def _state(nodes: dict[str, str]) -> SimpleNamespace:
    return ev("progress_state", nodes={
        n: {"value": 1.0 if s == "finished" else 0.0, "max": 1.0, "state": s}
        for n, s in nodes.items()})


SUCCESS = [
    ev("status", None, queue_remaining=1),
    ev("execution_start"),
    ev("execution_cached", nodes=[]),
    _state({"1": "running"}),
    ev("executing", node="1"),
    _state({"1": "finished", "2": "running"}),
    ev("executing", node="2"),
    _state({"1": "finished", "2": "finished", "3": "running"}),
    ev("executing", node="3"),
    ev("executed", node="3", images=[IMG]),
    _state({"1": "finished", "2": "finished", "3": "finished"}),
    ev("execution_success"),
    ev("status", None, queue_remaining=0),
    ev("executing", node=None),
]


# --------------------------------------------------------------------------- recordings


def _wire_to_event(msg: dict[str, Any]) -> SimpleNamespace:
    data = dict(msg.get("data") or {})
    if msg["type"] == "executed":
        data["images"] = (data.get("output") or {}).get("images", [])
    data.setdefault("prompt_id", None)
    return SimpleNamespace(type=msg["type"], **data)


@pytest.fixture(scope="module")
def rec() -> Any:
    recordings = pytest.importorskip("recordings")
    try:
        recordings.traffic_dir()
    except FileNotFoundError as exc:  # pragma: no cover - depends on the checkout
        pytest.skip(str(exc))
    return recordings


def _recorded(rec: Any, name: str, pid: str) -> tuple[list[dict], dict]:
    msgs = rec.ws_json(name)
    hist = [h for h in rec.http(name, "GET") if h["request"]["path"] == f"/history/{pid}"]
    return msgs, hist[0]["response"]["body"]["json"]


def _recorded_workflow(rec: Any, name: str, pid: str) -> dict:
    post = [h for h in rec.http(name, "POST", "/prompt")
            if h["response"]["body"].get("json", {}).get("prompt_id") == pid]
    return post[0]["request"]["json"]["prompt"]


# --------------------------------------------------------------------------- success


def test_full_success_order_ends_fetching_outputs_then_succeeded() -> None:
    progress: list[float] = []
    job, states = run(submitted_job(), SUCCESS, progress)
    assert progress == pytest.approx([0, 0, 0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1, 1])
    assert states == [
        "queued",  # status: not a job event
        "running", "running", "running", "running", "running", "running", "running",
        "running", "running", "running",
        "finished",  # execution_success: history may not be written yet
        "finished",
        "fetching_outputs",  # executing{node: null}: the end marker
    ]
    assert job.outputs == {"3": (OutputImage(**IMG),)}
    assert job.executed_nodes == ("1", "2", "3") and job.cached_nodes == ()
    assert job.progress == 1.0 and job.current_node is None
    assert job.ignored == ()  # every event of a normal run has a row
    assert job.events_seen == 12  # the two status messages are not this job's
    assert job.started_at == 11.0 and job.finished_at == 21.0
    assert is_pending(job) and not is_terminal(job)
    done = outputs_fetched(job, now=30.0)
    assert done.state == "succeeded" and is_terminal(done) and not is_pending(done)
    assert done.finished_at == 21.0


def test_recorded_success(rec: Any) -> None:
    pid = rec.load("invert_success")["meta"]["prompt_id"]
    msgs, history = _recorded(rec, "invert_success", pid)
    workflow = _recorded_workflow(rec, "invert_success", pid)
    job = submitted_job(pid, workflow)
    job, states = run(job, [_wire_to_event(m) for m in msgs])
    assert states[-1] == "fetching_outputs" and "finished" in states
    assert job.ignored == ()
    assert job.outputs == {"3": (OutputImage(**IMG),)}
    # the same messages as raw wire dicts give the same job
    raw, _ = run(submitted_job(pid, workflow), msgs)
    assert raw == job
    # history agrees (and is idempotent on an already-ended job)
    after = from_history(job, history, now=50.0)
    assert after.state == "fetching_outputs" and after.outputs == job.outputs
    assert outputs_fetched(after).state == "succeeded"


def test_recorded_cached_rerun(rec: Any) -> None:
    pid = rec.load("invert_cached_rerun")["meta"]["prompt_id"]
    msgs, history = _recorded(rec, "invert_cached_rerun", pid)
    assert not any(m["type"] == "executing" and m["data"]["node"] for m in msgs)
    job, states = run(submitted_job(pid, WORKFLOW), [_wire_to_event(m) for m in msgs])
    assert states[-1] == "fetching_outputs"
    assert job.cached_nodes == ("1", "2", "3")
    assert job.outputs == {"3": (OutputImage(**IMG),)}  # replayed from the cache
    assert job.executed_nodes == ()  # nothing actually ran
    assert job.ignored == () and job.progress == 1.0
    assert from_history(submitted_job(pid), history).outputs == job.outputs


def test_cached_rerun_progress_counts_cached_nodes() -> None:
    job = submitted_job()
    job = apply_event(job, ev("execution_start"))
    job = apply_event(job, ev("execution_cached", nodes=["1", "2"]))
    assert job.progress == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- failures


def test_execution_error_fails_with_node_and_exception() -> None:
    job, states = run(submitted_job(), [
        ev("execution_start"),
        ev("executing", node="1"),
        ev("execution_error", node_id="1", node_type="LoadImage",
           exception_message="cannot identify image file 'x.png'\n",
           exception_type="PIL.UnidentifiedImageError", executed=[]),
        ev("status", None),
        ev("executing", node=None),
    ])
    assert states[2:] == ["failed", "failed", "failed"]
    assert job.error == {
        "source": "execution_error",
        "message": "PIL.UnidentifiedImageError: cannot identify image file 'x.png'",
        "node_id": "1",
        "node_type": "LoadImage",
        "exception_type": "PIL.UnidentifiedImageError",
        "exception_message": "cannot identify image file 'x.png'\n",
    }
    assert job.ignored == ()  # the trailing end marker is expected, not an anomaly
    assert is_terminal(job) and not is_pending(job)


def test_recorded_execution_error_and_its_history(rec: Any) -> None:
    pid = rec.load("execution_error")["meta"]["prompt_id"]
    msgs, history = _recorded(rec, "execution_error", pid)
    job, _ = run(submitted_job(pid), [_wire_to_event(m) for m in msgs])
    assert job.state == "failed"
    assert (job.error["node_id"], job.error["node_type"]) == ("1", "LoadImage")
    assert job.error["exception_type"] == "PIL.UnidentifiedImageError"
    # a client that missed the socket learns the same from history alone
    from_hist = from_history(submitted_job(pid), history, now=9.0)
    assert from_hist.state == "failed"
    assert from_hist.error == job.error


def test_interrupted() -> None:
    job, states = run(submitted_job(), [
        ev("execution_start"),
        ev("executing", node="1"),
        ev("executing", node="2"),
        ev("execution_interrupted", node_id="2", node_type="ImageInvert", executed=["1"]),
        ev("executing", node=None),
    ])
    assert states[-2:] == ["interrupted", "interrupted"]
    assert job.error == {"source": "execution_interrupted", "message": "interrupted",
                         "node_id": "2", "node_type": "ImageInvert"}
    assert job.executed_nodes == ("1",)
    assert not is_pending(job)


def test_recorded_interrupts(rec: Any) -> None:
    meta = rec.load("interrupt")["meta"]
    msgs = rec.ws_json("interrupt")
    for pid, node in zip(meta["prompt_ids"], ["11", "12", "11"], strict=True):
        job, _ = run(submitted_job(pid), [_wire_to_event(m) for m in msgs])
        assert job.state == "interrupted", pid
        assert job.error["node_id"] == node
        assert job.ignored == ()


def test_events_for_another_prompt_are_ignored() -> None:
    job = submitted_job()
    for event in (ev("execution_start", "other"), ev("execution_error", "other", node_id="1"),
                  ev("executing", None, node="3"), ev("status", None)):
        assert apply_event(job, event) is job


def test_duplicate_events_are_idempotent() -> None:
    once, _ = run(submitted_job(), SUCCESS)
    doubled = [e for e in SUCCESS for _ in (0, 1)]
    twice, _ = run(submitted_job(), doubled)

    def essence(j: Job) -> Job:
        return dataclasses.replace(j, events_seen=0, updated_at=0.0, started_at=0.0,
                                   finished_at=0.0)

    assert essence(twice) == essence(once)
    assert twice.events_seen == 2 * once.events_seen
    assert twice.ignored == ()


def test_unexpected_events_are_recorded_not_raised() -> None:
    job = new_job(PID, SERVER, now=0.0)
    job = apply_event(job, ev("execution_start"))  # before any POST
    assert job.state == "created" and job.ignored == ("execution_start@created",)
    job = apply_event(job, ev("b_preview_with_metadata"))  # unknown type
    assert job.ignored[-1] == "b_preview_with_metadata@created" and job.events_seen == 2
    done = outputs_fetched(jobs.submit_started(job))  # outputs before the end
    assert done.state == "submitting" and done.ignored[-1] == "outputs_fetched@submitting"
    many = job
    for _ in range(50):
        many = apply_event(many, ev("execution_success"))
    assert len(many.ignored) == 16  # bounded


def test_events_can_overtake_the_post_answer() -> None:
    job = jobs.submit_started(new_job(PID, SERVER, now=0.0))
    job = apply_event(job, ev("execution_start"))
    assert job.state == "running" and is_pending(job)
    job = jobs.submitted(job, number=42)
    assert job.state == "running" and job.number == 42 and job.ignored == ()


def test_submit_rejected() -> None:
    job = jobs.submit_started(new_job(PID, SERVER, now=0.0))
    job = jobs.submit_rejected(job, {"type": "prompt_outputs_failed_validation"}, now=3.0)
    assert job.state == "rejected" and job.error == {"type": "prompt_outputs_failed_validation"}
    assert is_terminal(job) and not is_pending(job) and job.finished_at == 3.0


# --------------------------------------------------------------------------- history


def _ended() -> Job:
    return run(submitted_job(), SUCCESS)[0]


def test_empty_history_is_retried_then_lost_only_after_leaving_the_queue() -> None:
    job = _ended()
    for i in range(1, 8):
        job = history_empty(job, in_queue=False, max_retries=8)
        assert job.state == "fetching_outputs" and job.history_retries == i
    job = history_empty(job, in_queue=False, max_retries=8)
    assert job.state == "lost" and job.history_retries == 8
    assert "no longer knows" in job.error["message"]


@pytest.mark.parametrize("in_queue", [True, None])
def test_empty_history_never_lost_while_queued_or_unknown(in_queue: bool | None) -> None:
    job = submitted_job()
    for _ in range(20):
        job = history_empty(job, in_queue=in_queue, max_retries=3)
    assert job.state == "queued" and job.history_retries == 20


def test_history_retry_count_survives_a_late_success() -> None:
    job = history_empty(_ended(), in_queue=False)
    job = from_history(job, {"outputs": {"3": {"images": [IMG]}},
                             "status": {"status_str": "success", "completed": True,
                                        "messages": []}})
    assert job.state == "fetching_outputs" and job.history_retries == 1


def test_history_shapes() -> None:
    entry = {"outputs": {"9": {"images": [IMG]}},
             "status": {"status_str": "success", "completed": True, "messages": []}}
    job = submitted_job()  # socket missed everything: history is the truth
    for shape in (entry, {PID: entry},
                  SimpleNamespace(outputs=entry["outputs"], status_str="success", messages=[]),
                  SimpleNamespace(images=[SimpleNamespace(node="9", **IMG)], status_str="success",
                                  messages=None, outputs=None)):
        got = from_history(job, shape)
        assert got.state == "fetching_outputs"
        assert got.outputs == {"9": (OutputImage(**IMG),)}
    interrupted = {"outputs": {}, "status": {"status_str": "error", "messages": [
        ["execution_start", {}],
        ["execution_interrupted", {"node_id": "4", "node_type": "X", "executed": ["1"]}]]}}
    assert from_history(job, interrupted).state == "interrupted"
    bare_error = {"outputs": {}, "status": {"status_str": "error", "messages": []}}
    failed = from_history(job, bare_error)
    assert failed.state == "failed" and failed.error["source"] == "history"


# --------------------------------------------------------------------------- progress


def test_progress_counts_nodes_and_current_node_fraction() -> None:
    wf = {str(i): {} for i in range(1, 5)}
    job = submitted_job(workflow=wf)
    assert job.total_nodes == 4 and job.progress == 0.0
    seen = []
    for event in (
        ev("execution_start"),
        ev("execution_cached", nodes=["1"]),
        ev("executing", node="2"),
        ev("progress", node="2", value=5, max=10),
        ev("progress", node="2", value=10, max=10),
        ev("executing", node="3"),
        ev("progress", node="99", value=1, max=2),  # another node's progress: not counted
        ev("executing", node="4"),
        ev("execution_success"),
    ):
        job = apply_event(job, event)
        seen.append(job.progress)
    assert seen == pytest.approx([0.0, 0.25, 0.25, 0.375, 0.5, 0.5, 0.5, 0.75, 1.0])
    assert seen == sorted(seen)  # never backwards
    assert job_to_dict(job)["nodeProgress"] is None


def test_progress_without_known_total_moves_only_at_the_end() -> None:
    job = submitted_job(workflow=None)
    job, _ = run(job, SUCCESS[:11])
    assert job.progress == 0.0
    assert (job.current_node, job.node_value, job.node_max) == ("3", 1.0, 1.0)
    assert apply_event(job, ev("execution_success")).progress == 1.0


# --------------------------------------------------------------------------- client steps


def test_new_job_defaults() -> None:
    job = new_job("j1", SERVER, now=4.0, workflow=WORKFLOW)
    assert (job.job_id, job.prompt_id, job.state, job.total_nodes) == ("j1", "j1", "created", 3)
    assert not is_pending(job)  # pending starts just before POST /prompt
    assert is_pending(jobs.submit_started(job))
    assert jobs.upload_started(job).state == "uploading"
    assert not is_pending(jobs.upload_started(job))
    other = new_job("j2", SERVER, now=0.0, prompt_id="p2")
    assert other.prompt_id == "p2"


@pytest.mark.parametrize(
    ("target", "state"),
    [("failed", "failed"), ("server_lost", "server_lost"), ("interrupted", "interrupted"),
     ("lost", "lost")],
)
def test_mark_goes_through_the_table(target: str, state: str) -> None:
    job = mark(submitted_job(), target, now=5.0, error={"message": "m"})
    assert job.state == state and job.error == {"message": "m"} and job.finished_at == 5.0
    assert not is_pending(job)


def test_mark_refuses_a_step_the_table_lacks_and_unknown_names() -> None:
    done = outputs_fetched(_ended())
    again = mark(done, "failed")
    assert again.state == "succeeded" and again.ignored == ("client_error@succeeded",)
    with pytest.raises(InvalidInputError):
        mark(done, "exploded")


def test_released_ends_pending_without_changing_state() -> None:
    job = apply_event(submitted_job(), ev("execution_start"))
    rel = mark(job, "released")
    assert rel.state == "running" and rel.released and not is_pending(rel)
    assert jobs.released(job) == rel


def test_cancel_before_start_and_server_lost() -> None:
    assert jobs.cancelled(submitted_job()).state == "interrupted"
    lost = jobs.server_lost(apply_event(submitted_job(), ev("execution_start")))
    assert lost.state == "server_lost" and lost.error == {"message": "server lost"}
    assert jobs.job_lost(submitted_job()).state == "lost"


def test_rename_adopts_the_servers_prompt_id() -> None:
    job = jobs.rename(submitted_job(), "p-server")
    assert job.prompt_id == "p-server" and job.job_id == PID
    assert apply_event(job, ev("execution_start", "p-server")).state == "running"
    assert apply_event(job, ev("execution_start")) is job


def test_job_to_dict_is_plain_camel_case_json() -> None:
    job = apply_event(_ended(), ev("progress", value=1, max=2))
    d = job_to_dict(job)
    assert json.loads(json.dumps(d)) == d
    assert d["jobId"] == PID and d["promptId"] == PID and d["server"] == SERVER
    assert d["state"] == "fetching_outputs" and d["progress"] == 1.0
    assert d["outputs"] == {"3": [IMG]} and d["images"] == [IMG]
    assert d["error"] is None and d["pending"] is True and d["terminal"] is False
    failed = mark(job, "failed", error={"message": "x"})
    assert job_to_dict(failed)["error"] == {"message": "x"}


# --------------------------------------------------------------------------- the table


def test_table_vocabulary() -> None:
    for (state, event), target in TRANSITIONS.items():
        assert state in STATES and target in STATES
        assert event in SERVER_EVENTS or event in CLIENT_EVENTS


def test_terminal_states_never_leave() -> None:
    for (state, _event), target in TRANSITIONS.items():
        if state in TERMINAL_STATES:
            assert target == state


def test_every_state_reachable_from_created() -> None:
    reached = {"created"}
    frontier = ["created"]
    while frontier:
        s = frontier.pop()
        for (src, _e), dst in TRANSITIONS.items():
            if src == s and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached == set(STATES)


def test_describe_transitions_lists_the_table() -> None:
    rows = jobs.describe_transitions()
    assert len(rows) == len(TRANSITIONS)
    assert ["fetching_outputs", "outputs_fetched", "succeeded"] in rows
    assert ["running", "executing_null", "fetching_outputs"] in rows


# --------------------------------------------------------------------------- steady lane


def _general_only(job: Job, event: Any, now: float | None) -> Job:
    """apply_event with the steady lane switched off: every event through ``_step``."""
    saved = jobs._STEADY
    jobs._STEADY = {}
    try:
        return apply_event(job, event, now=now)
    finally:
        jobs._STEADY = saved


def _both_ways(job: Job, events: list[Any]) -> tuple[Job, int]:
    """Feed ``events`` to both paths side by side, asserting the same job after each;
    returns the final job and how many events took the steady lane."""
    steady = 0
    for i, event in enumerate(events):
        kind = getattr(event, "type", None) if not isinstance(event, dict) else event["type"]
        if kind in ("progress", "progress_state") and job.state in jobs._STEADY[kind] \
                and job.started_at is not None:
            steady += 1
        now = None if i % 5 == 4 else 10.0 + i  # also without a clock
        fast, slow = apply_event(job, event, now=now), _general_only(job, event, now)
        assert fast == slow, (i, event)
        job = fast
    return job, steady


def test_steady_lane_equals_the_table_on_every_recording(rec: Any) -> None:
    from comfyui_client.protocol import events as protocol

    checked = 0
    for name in rec.names():
        if name == "timings":  # figures, not traffic
            continue
        msgs = rec.ws_json(name)
        pids = {m["data"]["prompt_id"] for m in msgs
                if isinstance(m.get("data"), dict) and m["data"].get("prompt_id")}
        for pid in sorted(pids):
            decoded = [protocol.decode_text(json.dumps(m)) for m in msgs]
            for events in (decoded, msgs):  # typed events, and the wire dicts themselves
                job = jobs.submitted(jobs.submit_started(
                    new_job(pid, SERVER, now=0.0, total_nodes=3), now=1.0), now=2.0)
                _, steady = _both_ways(job, events)
                checked += steady
    assert checked > 20, "the recordings hold progress messages of running jobs"


def test_steady_lane_equals_the_table_on_odd_and_late_progress() -> None:
    wf = {str(i): {} for i in range(1, 5)}
    running = apply_event(submitted_job(workflow=wf), ev("execution_start"), now=3.0)
    node = {"value": 2.0, "max": 4.0, "state": "running"}
    events = [
        ev("progress", node="1", value=1, max=4),      # becomes the current node
        ev("progress", node="1", value=True, max=4),   # a bool is not a number
        ev("progress", node="9", value=3, max=4),      # another node: not the current one
        ev("progress", node=None, value=3, max=4),     # no node: the current one
        ev("progress", node="1", value=None, max=4),
        ev("progress_state", nodes={"1": {**node, "state": "finished"}, "2": node}),
        ev("progress_state", nodes={"2": node, "3": node}),  # two running: current kept
        ev("progress_state", nodes="not a mapping"),
        ev("progress_state", nodes={"2": SimpleNamespace(**node)}),
        {"type": "progress", "data": {"prompt_id": PID, "node": "2", "value": 4, "max": 4}},
        ev("progress", PID + "-other", node="2", value=1, max=4),
        ev("execution_success"),
        ev("progress", node="2", value=1, max=4),       # finished: kept, counted
        ev("executing", node=None),
        ev("progress_state", nodes={"2": node}),        # fetching outputs: no row
    ]
    job, steady = _both_ways(running, events)
    assert steady >= 10
    assert job.state == jobs.FETCHING_OUTPUTS and job.progress == 1.0
    # a running job without a start time (made by hand) takes the table, which sets it
    unstarted = dataclasses.replace(running, started_at=None)
    done, steady = _both_ways(unstarted, [ev("progress", node="1", value=1, max=4)])
    assert steady == 0 and done.started_at == 10.0
