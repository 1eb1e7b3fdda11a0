"""WebSocket text frames -> events, checked against every recorded ComfyUI 0.33 message."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import recordings
from comfyui_client.errors import ProtocolError
from comfyui_client.protocol import events as ev
from comfyui_client.protocol.events import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    FeatureFlags,
    ImageRef,
    NodeProgress,
    Progress,
    ProgressState,
    Status,
    UnknownMessage,
    decode_text,
    event_to_dict,
)

ALL_MESSAGES = recordings.all_ws_json()

CLASS_OF = {
    "status": Status,
    "execution_start": ExecutionStart,
    "execution_cached": ExecutionCached,
    "executing": Executing,
    "progress": Progress,
    "progress_state": ProgressState,
    "executed": Executed,
    "execution_success": ExecutionSuccess,
    "execution_error": ExecutionError,
    "execution_interrupted": ExecutionInterrupted,
    "feature_flags": FeatureFlags,
}


def _node_tuple(raw: dict[str, Any]) -> tuple[Any, ...]:
    return (raw["value"], raw["max"], raw["state"], raw["node_id"], raw["prompt_id"],
            raw["display_node_id"], raw["parent_node_id"], raw["real_node_id"])


def _decoded_node_tuple(node: NodeProgress) -> tuple[Any, ...]:
    return (node.value, node.max, node.state, node.node_id, node.prompt_id,
            node.display_node_id, node.parent_node_id, node.real_node_id)


def test_the_recordings_hold_every_known_message_type() -> None:
    # If a recording is replaced by one lacking a type, the per-message test below would
    # silently stop covering it.
    seen = {msg["type"] for _, msg in ALL_MESSAGES}
    assert seen == set(CLASS_OF)
    assert len(ALL_MESSAGES) > 200


@pytest.mark.parametrize(
    ("scenario", "msg"), ALL_MESSAGES,
    ids=[f"{s}-{i}-{m['type']}" for i, (s, m) in enumerate(ALL_MESSAGES)],
)
def test_every_recorded_text_message_decodes_to_its_recorded_fields(
    scenario: str, msg: dict[str, Any]
) -> None:
    event = decode_text(json.dumps(msg))
    data = msg["data"]
    kind = msg["type"]
    assert type(event) is CLASS_OF[kind]
    assert event.type == kind
    assert event.prompt_id == data.get("prompt_id")
    if kind == "status":
        assert event.queue_remaining == data["status"]["exec_info"]["queue_remaining"]
        assert event.sid == data.get("sid")
    elif kind in ("execution_start", "execution_success"):
        assert event.timestamp == data["timestamp"]
    elif kind == "execution_cached":
        assert event.nodes == tuple(data["nodes"])
        assert event.timestamp == data["timestamp"]
    elif kind == "executing":
        assert event.node == data["node"]
        assert event.display_node == data.get("display_node")
        assert event.done is (data["node"] is None)
    elif kind == "progress":
        assert (event.node, event.value, event.max) == (data["node"], data["value"], data["max"])
    elif kind == "progress_state":
        assert {k: _decoded_node_tuple(v) for k, v in event.nodes.items()} == {
            k: _node_tuple(v) for k, v in data["nodes"].items()
        }
    elif kind == "executed":
        assert (event.node, event.display_node) == (data["node"], data["display_node"])
        assert event.output == data["output"]
        assert event.images == tuple(ImageRef(**img) for img in data["output"]["images"])
    elif kind == "execution_error":
        assert event.node_id == data["node_id"]
        assert event.node_type == data["node_type"]
        assert event.executed == tuple(data["executed"])
        assert event.exception_message == data["exception_message"]
        assert event.exception_type == data["exception_type"]
        assert event.traceback == tuple(data["traceback"])
        assert event.current_inputs == data["current_inputs"]
        assert event.current_outputs == data["current_outputs"]
        assert event.timestamp == data["timestamp"]
    elif kind == "execution_interrupted":
        assert (event.node_id, event.node_type) == (data["node_id"], data["node_type"])
        assert event.executed == tuple(data["executed"])
        assert event.timestamp == data["timestamp"]
    elif kind == "feature_flags":
        assert event.flags == data
    else:  # pragma: no cover - guarded by test_the_recordings_hold_every_known_message_type
        pytest.fail(f"no field check for {kind}")


@pytest.mark.parametrize(
    ("scenario", "msg"), ALL_MESSAGES,
    ids=[f"{s}-{i}-{m['type']}" for i, (s, m) in enumerate(ALL_MESSAGES)],
)
def test_event_to_dict_keeps_the_wire_keys_and_is_json_safe(
    scenario: str, msg: dict[str, Any]
) -> None:
    out = event_to_dict(decode_text(json.dumps(msg)))
    assert json.loads(json.dumps(out)) == out
    assert out["type"] == msg["type"]
    data = msg["data"]
    if msg["type"] == "status":
        assert out["queue_remaining"] == data["status"]["exec_info"]["queue_remaining"]
        assert out["prompt_id"] is None
    elif msg["type"] == "feature_flags":
        assert out["flags"] == data
    else:
        for key, value in data.items():
            assert out[key] == value, key


def test_a_successful_run_decodes_in_the_documented_order() -> None:
    decoded = [decode_text(json.dumps(m)) for m in recordings.ws_json("invert_success")]
    pid = recordings.load("invert_success")["meta"]["prompt_id"]
    mine = [e for e in decoded if e.prompt_id == pid]
    assert mine[0].type == "execution_start"
    assert mine[1].type == "execution_cached"
    success = next(i for i, e in enumerate(mine) if e.type == "execution_success")
    assert isinstance(mine[-1], Executing) and mine[-1].done
    assert success < len(mine) - 1  # success comes BEFORE the final executing{node: null}
    executed = [e for e in mine if isinstance(e, Executed)]
    assert [img.filename for e in executed for img in e.images] == ["fixture_invert_00001_.png"]
    # The first status names this socket's sid, as the server assigned it.
    assert decoded[0].sid == "c9eb5776cdb4415d9333ece153d3cc4f"


def test_progress_state_overall_fraction_uses_the_total_when_given() -> None:
    msgs = [m for m in recordings.ws_json("invert_success") if m["type"] == "progress_state"]
    # Node 1 finished, node 2 running at 0.0 (the fourth progress_state of the run).
    state = decode_text(json.dumps(msgs[2]))
    assert {k: n.state for k, n in state.nodes.items()} == {"1": "finished", "2": "running"}
    assert state.overall_fraction(3) == pytest.approx(1 / 3)
    assert state.overall_fraction() == pytest.approx(1 / 2)  # only nodes seen so far
    last = decode_text(json.dumps(msgs[-1]))
    assert last.overall_fraction(3) == 1.0


def test_progress_fraction_is_clamped_and_safe_with_zero_max() -> None:
    assert Progress(prompt_id=None, node="2", value=1, max=2).fraction == 0.5
    assert Progress(prompt_id=None, node="2", value=5, max=2).fraction == 1.0
    assert Progress(prompt_id=None, node="2", value=1, max=0).fraction == 0.0


def test_unknown_message_types_are_kept_not_raised() -> None:
    event = decode_text('{"type": "crystools.monitor", "data": {"cpu_utilization": 3.5}}')
    assert isinstance(event, UnknownMessage)
    assert event.type_name == "crystools.monitor"
    assert event.data == {"cpu_utilization": 3.5}
    assert event.prompt_id is None
    routed = decode_text('{"type": "my_ext.step", "data": {"prompt_id": "p1", "x": [1]}}')
    assert routed.prompt_id == "p1"
    assert event_to_dict(routed) == {"type": "unknown", "prompt_id": "p1",
                                     "type_name": "my_ext.step",
                                     "data": {"prompt_id": "p1", "x": [1]}}


def test_the_first_servers_top_level_status_shape_is_read() -> None:
    # ComfyUI's first server.py sent {'type': 'status', 'status': get_queue_info(...)} with no
    # "data" wrapper.
    event = decode_text('{"type": "status", "status": {"exec_info": {"queue_remaining": 2}}}')
    assert isinstance(event, Status)
    assert event.queue_remaining == 2


def test_old_messages_without_prompt_id_decode_with_none() -> None:
    # Servers before prompt ids in events sent {"node": null} and {"value", "max"} only.
    done = decode_text('{"type": "executing", "data": {"node": null}}')
    assert isinstance(done, Executing) and done.done and done.prompt_id is None
    step = decode_text('{"type": "progress", "data": {"value": 3, "max": 20}}')
    assert (step.prompt_id, step.node, step.value, step.max) == (None, None, 3, 20)


def test_numeric_node_ids_become_strings() -> None:
    event = decode_text('{"type": "executing", "data": {"node": 7, "prompt_id": "p"}}')
    assert event.node == "7"


def _checked(text: str) -> Any:
    """The same frame through the checked decoders only (no fast lane)."""
    msg = json.loads(text)
    return ev._DECODERS[msg["type"]](ev._Fields(msg["type"], msg["data"], None))


@pytest.mark.parametrize("msg", [m for _, m in ALL_MESSAGES
                                 if m["type"] in ("progress", "progress_state")])
def test_the_fast_lane_gives_what_the_checked_decoders_give(msg: dict[str, Any]) -> None:
    """Progress messages take a fast lane; on every recorded one it must agree with the
    checked decoders, whitespace around the frame included."""
    text = json.dumps(msg)
    assert decode_text(text) == _checked(text)
    assert decode_text(f"  {text}\n") == _checked(text)


@pytest.mark.parametrize("msg", [m for _, m in ALL_MESSAGES])
def test_a_frame_is_parsed_once_and_decodes_as_through_json_loads(msg: dict[str, Any]) -> None:
    """A frame the C scanner took whole is decoded from that parse (not parsed again); one
    with whitespace around goes through json.loads: every recorded message decodes the same
    both ways."""
    text = json.dumps(msg)
    assert decode_text(text) == decode_text(f" {text}\n")


@pytest.mark.parametrize(
    "data",
    [
        {"value": 3, "max": 20, "prompt_id": "p", "node": 7},          # numeric node id
        {"value": 3.5, "max": 20, "prompt_id": None, "node": None},
        {"max": 20, "prompt_id": "p", "node": "1"},                      # value missing: 0
        {"prompt_id": "p", "nodes": {"1": {"value": 1, "max": 2, "node_id": 1,
                                           "state": "running"}}},      # numeric id inside
        {"prompt_id": "p", "nodes": {}},
    ],
)
def test_unusual_progress_fields_leave_the_fast_lane_with_the_same_result(
        data: dict[str, Any]) -> None:
    kind = "progress_state" if "nodes" in data else "progress"
    text = json.dumps({"type": kind, "data": data})
    assert decode_text(text) == _checked(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"type": "progress", "data": {"value": true, "max": 20}}', "'value' must be a number"),
        ('{"type": "progress", "data": {"value": 1, "max": null}}', "'max' must be a number"),
        ('{"type": "progress_state", "data": {"nodes": {"1": {"value": 1, "state": 3}}}}',
         "'state' must be a string"),
        ('{"type": "progress", "data": {"value": 1, "max": 2}} trailing', "not valid JSON"),
    ],
)
def test_bad_progress_fields_are_named_despite_the_fast_lane(text: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_text(text)
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON a list, not an object"),
        ('"status"', "not an object"),
        ('{"data": {}}', "no 'type'"),
        ('{"type": 5, "data": {}}', "no 'type'"),
        ('{"type": "executing", "data": [1]}', "'data' must be an object"),
        ('{"type": "executing", "data": {"node": [1], "prompt_id": "p"}}', "'node'"),
        ('{"type": "progress", "data": {"value": "3", "max": 20}}', "'value' must be a number"),
        ('{"type": "execution_cached", "data": {"nodes": "1,2"}}', "'nodes'"),
        ('{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "1"}}}}',
         "queue_remaining"),
        ('{"type": "executed", "data": {"node": "1", "output": []}}', "'output'"),
        ('{"type": "progress_state", "data": {"nodes": {"1": 5}}}', "nodes.1"),
    ],
)
def test_malformed_frames_raise_protocol_error_naming_the_problem(text: str, fragment: str
                                                                  ) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_text(text, server="http://s:8188")
    assert fragment in info.value.message
    assert info.value.server == "http://s:8188"


def test_oversized_frames_are_refused_by_byte_count() -> None:
    msg = json.dumps({"type": "status", "data": {"pad": "é" * 10}}, ensure_ascii=False)
    size = len(msg.encode())
    assert size > len(msg)  # multi-byte characters: bytes, not characters, are counted
    assert isinstance(decode_text(msg, max_bytes=size), Status)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_text(msg, max_bytes=size - 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_text(msg.encode(), max_bytes=size - 1)
    assert ev.DEFAULT_MAX_TEXT_BYTES == 8 * 1024 * 1024


def test_text_frames_given_as_bytes_must_be_utf8() -> None:
    assert decode_text(b'{"type": "status", "data": {}}').queue_remaining is None
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_text(b'{"type": "\xff"}')


def test_events_are_frozen() -> None:
    event = decode_text('{"type": "executing", "data": {"node": "1", "prompt_id": "p"}}')
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.node = "2"  # type: ignore[misc]
    # the wire type is a class attribute, not an instance field
    assert "type" not in {f.name for f in dataclasses.fields(event)}
    assert Executing.type == "executing"
