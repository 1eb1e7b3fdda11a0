"""The dev server answers the recorded real-ComfyUI scenarios the way the real server did.

The recordings were made one after another against ONE real server (numbers, the input
folder's files and the node cache carry over from scenario to scenario), so the session
scenarios are replayed in recording order against one fresh dev server; asking for a later
scenario replays the earlier ones first. The origin and CORS scenarios came from servers
started with other flags and get their own instance.

For every request: same status, same header names (and values for content type,
disposition, nosniff, CORS), same JSON keys and value types, same values wherever the real
server is deterministic (errors, numbers, file names, outputs). For every socket: the same
event sequence (``status`` compared as its own sequence, since its interleaving with a
running job depends on timing) with the same payloads.
"""

from __future__ import annotations

from typing import Any

import pytest
from devserver_testkit import Replayer, ScenarioResult, run

import recordings
from comfyui_devserver import ServerGroup

SESSION = [
    "invert_success", "invert_cached_rerun", "empty_image_success", "node_errors_400",
    "execution_error", "interrupt", "queue_history_shapes", "upload_variants",
    "ws_binary_frames", "ws_routing_two_clients",
]
# The real blurs took ~3 s each on 2048x2048; a node delay keeps the job running long
# enough for the recorded interrupts and queue snapshots to land where they did.
KNOBS: dict[str, dict[str, Any]] = {
    "interrupt": {"node_delay_s": 0.25},
    "queue_history_shapes": {"node_delay_s": 0.2},
}


def test_every_recording_is_covered() -> None:
    skipped = {"timings", "two_instances"}  # benchmarks and a memory note, no protocol
    assert set(recordings.names()) == set(SESSION) | {"origin_check_default",
                                                     "cors_enabled"} | skipped


class Session:
    def __init__(self, group: ServerGroup) -> None:
        self.group = group
        self.replayer = Replayer(group.urls[0])
        self.results: dict[str, ScenarioResult] = {}

    def get(self, name: str) -> ScenarioResult:
        server = self.group.servers[0]
        for scenario in SESSION[: SESSION.index(name) + 1]:
            if scenario in self.results:
                continue
            knobs = KNOBS.get(scenario, {})

            def apply(values: dict[str, Any] = knobs) -> None:
                for key, value in values.items():
                    setattr(server.faults, key, value)

            self.group.call(apply)
            try:
                self.results[scenario] = run(self.replayer.replay(scenario), timeout=90)
            finally:
                self.group.call(server.faults.clear)
        return self.results[name]


@pytest.fixture(scope="module")
def session():
    with ServerGroup(count=1, cors_origin=None) as group:
        yield Session(group)


def _report(result: ScenarioResult) -> str:
    return f"{len(result.problems)} difference(s) in {result.name}:\n" + "\n".join(
        result.problems[:40])


@pytest.mark.parametrize("name", SESSION)
def test_session_scenario_matches_recording(session: Session, name: str) -> None:
    result = session.get(name)
    assert result.exchanges or result.sockets, "nothing was replayed"
    assert not result.problems, _report(result)


def test_replay_uses_recorded_numbers_and_ids(session: Session) -> None:
    """Numbers are compared exactly, so the POST count (rejected ones too) matches the
    real server's across the whole session; client-chosen ids were echoed unchanged."""
    result = session.get("empty_image_success")
    posts = [(ev, status, body) for ev, status, body in result.exchanges
             if ev["request"]["path"] == "/prompt"]
    assert [status for _, status, _ in posts] == [200, 400, 200]
    assert [body.get("number") for _, _, body in posts if "number" in body] == [2, 4]
    assert posts[0][2]["prompt_id"] == "e60e7da2-02b3-42b4-9169-117044160149"


@pytest.mark.parametrize(("name", "cors"), [("origin_check_default", None),
                                            ("cors_enabled", "*")])
def test_origin_scenarios_match_recording(name: str, cors: str | None) -> None:
    with ServerGroup(count=1, cors_origin=cors) as group:
        result = run(Replayer(group.urls[0]).replay(name))
        log = group.log(0)
    assert len(result.exchanges) == len(recordings.http(name))
    assert not result.problems, _report(result)
    refused = [r for r in log if r["status"] == 403]
    assert len(refused) == (6 if cors is None else 0)
