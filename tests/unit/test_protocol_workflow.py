"""Workflow validation and non-mutating edits, on the workflows ComfyUI ran in the recordings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import recordings
from comfyui_client.errors import InvalidInputError
from comfyui_client.protocol import workflow as wf

PID = "05ce3d50-c709-4d64-ae82-a8cdd0f1ba8c"


def recorded_accepted_workflows() -> list[dict[str, Any]]:
    out = []
    for name in recordings.names():
        if name == "timings":
            continue
        for e in recordings.http(name, "POST", "/prompt"):
            body = e["request"].get("json") or {}
            if e["response"]["status"] == 200 and "prompt" in body:
                out.append(body["prompt"])
    return out


INVERT = recordings.http("invert_success", "POST", "/prompt")[0]["request"]["json"]["prompt"]


def test_every_workflow_the_server_accepted_validates_unchanged() -> None:
    graphs = recorded_accepted_workflows()
    assert len(graphs) > 15
    for graph in graphs:
        before = copy.deepcopy(graph)
        out = wf.validate_workflow(graph)
        assert out == graph
        assert out is not graph and out["1"] is not graph["1"]
        assert graph == before


def test_validate_returns_a_deep_copy() -> None:
    graph = copy.deepcopy(INVERT)
    out = wf.validate_workflow(graph)
    out["2"]["inputs"]["image"][0] = "9"
    assert graph["2"]["inputs"]["image"] == ["1", 0]


def test_tuples_become_lists() -> None:
    out = wf.validate_workflow({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
                                "2": {"class_type": "SaveImage",
                                      "inputs": {"images": ("1", 0)}}})
    assert out["2"]["inputs"]["images"] == ["1", 0]


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ([], "the workflow must be an object mapping node ids to nodes, got a list"),
        ({}, "the workflow is empty: it needs nodes, including an output node such as "
             "SaveImage"),
        ({"nodes": [], "links": [], "version": 0.4},
         "this is a workflow saved in ComfyUI's UI format (it has 'nodes' and 'links'); the "
         "server runs the API format"),
        ({"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}},
         "this looks like a whole POST /prompt body ({\"prompt\": ...}); pass the graph itself "
         "(the value of 'prompt')"),
        ({1: {"class_type": "SaveImage", "inputs": {}}},
         "node id 1 must be a non-empty string (JSON keys are strings: write \"1\")"),
        ({"3": "SaveImage"},
         "node 3 must be an object with class_type and inputs, got a string"),
        ({"3": {"inputs": {}}},
         "node 3 has no class_type: set it to the node's type, e.g. \"SaveImage\""),
        ({"3": {"class_type": "", "inputs": {}}},
         "node 3: class_type must be a non-empty string, got a string"),
        ({"3": {"class_type": "SaveImage"}},
         "node 3 (SaveImage) has no inputs: use {} for a node without inputs"),
        ({"3": {"class_type": "SaveImage", "inputs": ["1", 0]}},
         "node 3 (SaveImage): inputs must be an object of name -> value, got a list"),
        ({"3": {"class_type": "SaveImage", "inputs": {"images": ["99", 0]}}},
         "node 3 (SaveImage): input 'images' links to node '99', which is not in the workflow"),
        ({"1": {"class_type": "EmptyImage", "inputs": {}},
          "3": {"class_type": "SaveImage", "inputs": {"images": [1, 0]}}},
         "node 3 (SaveImage): input 'images' links to node 1 given as a number; node ids are "
         "strings: write [\"1\", 0]"),
        ({"3": {"class_type": "SaveImage", "inputs": {"filename_prefix": b"x"}}},
         "node 3 (SaveImage).inputs.filename_prefix is a bytes, which JSON cannot carry: use "
         "strings, numbers, booleans, null, lists and objects only"),
    ],
)
def test_invalid_workflows_name_the_node_and_the_fix(graph: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        wf.validate_workflow(graph)
    assert info.value.message == message


def test_the_missing_link_error_carries_details() -> None:
    with pytest.raises(InvalidInputError) as info:
        wf.validate_workflow({"2": {"class_type": "SaveImage",
                                    "inputs": {"images": ["99", 0]}}})
    assert info.value.details == {"node_id": "2", "input": "images", "missing_node": "99"}


def test_cycles_are_reported_not_recursed_forever() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        wf.validate_workflow({"1": {"class_type": "X", "inputs": {"v": loop}}})


def test_find_nodes_and_load_image_nodes_keep_workflow_order() -> None:
    graph = {
        "9": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}},
        "4": {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "alpha"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": ["9", 0]}},
        "7": {"class_type": "LoadImageOutput", "inputs": {"image": "o.png"}},
    }
    assert wf.find_nodes(graph, "LoadImage") == ["9", "5"]
    assert wf.find_nodes(graph, "Nope") == []
    assert wf.load_image_nodes(graph) == ["9", "4", "5"]
    assert wf.load_image_nodes_inputs(graph) == ["b.png", "m.png"]  # links are not names
    assert wf.load_image_nodes(INVERT) == ["1"]
    assert wf.load_image_nodes_inputs(None) == []
    with pytest.raises(InvalidInputError):
        wf.find_nodes(["not", "a", "graph"], "LoadImage")  # type: ignore[arg-type]


def test_set_input_returns_a_new_workflow() -> None:
    graph = copy.deepcopy(INVERT)
    out = wf.set_input(graph, "1", "image", "uploaded (1).png")
    assert out["1"]["inputs"]["image"] == "uploaded (1).png"
    assert graph["1"]["inputs"]["image"] == "fixture_invert_src.png"
    assert {k: v for k, v in out.items() if k != "1"} == {k: v for k, v in graph.items()
                                                          if k != "1"}


def test_a_validated_workflow_is_taken_as_is_and_edits_never_reach_it() -> None:
    """validate_workflow's own result is not checked and copied again (a job's graph goes
    through three validating functions); set_input on it gives a new graph and leaves the
    validated one, and the node it changed, as they were."""
    graph = wf.validate_workflow(copy.deepcopy(INVERT))
    assert isinstance(graph, wf.ValidatedWorkflow) and graph == INVERT
    assert wf.validate_workflow(graph) is graph
    out = wf.set_input(graph, "1", "image", "mine.png")
    assert isinstance(out, wf.ValidatedWorkflow) and out is not graph
    assert out["1"]["inputs"]["image"] == "mine.png"
    assert graph["1"]["inputs"]["image"] == "fixture_invert_src.png"
    assert out["2"] is graph["2"]  # untouched nodes are shared, not copied
    # a plain dict equal to it is still checked: a broken link is named
    broken = copy.deepcopy(INVERT)
    broken["2"]["inputs"]["image"] = ["9", 0]
    with pytest.raises(InvalidInputError, match="links to node '9'"):
        wf.validate_workflow(broken)


def test_set_input_errors() -> None:
    with pytest.raises(InvalidInputError) as info:
        wf.set_input(INVERT, "7", "image", "x.png")
    assert info.value.message == "node '7' is not in the workflow (nodes: 1, 2, 3)"
    with pytest.raises(InvalidInputError, match="input name"):
        wf.set_input(INVERT, "1", "", "x.png")
    with pytest.raises(InvalidInputError, match="links to node '42'"):
        wf.set_input(INVERT, "2", "image", ["42", 0])
    with pytest.raises(InvalidInputError, match="JSON cannot carry"):
        wf.set_input(INVERT, "1", "image", {1, 2})


def test_content_upload_name_is_the_bytes_sha256_with_a_plausible_extension() -> None:
    import hashlib

    digest = hashlib.sha256(b"pixels").hexdigest()
    other = hashlib.sha256(b"other pixels").hexdigest()
    assert wf.content_upload_name(digest, "photo.png", "image/png") == f"{digest}.png"
    # the caller's name gives the extension only when it names an image format
    assert wf.content_upload_name(digest, "photo.JPG", "image/png") == f"{digest}.jpg"
    assert wf.content_upload_name(digest, "archive.tar.gz", "image/webp") == f"{digest}.webp"
    assert wf.content_upload_name(digest, "noext", None) == f"{digest}.png"
    assert wf.content_upload_name(digest, None, "image/jpeg; q=1") == f"{digest}.jpg"
    # the same bytes, the same name; other bytes, another name
    assert wf.content_upload_name(digest, "a.png") == wf.content_upload_name(digest, "b.png")
    assert wf.content_upload_name(digest, "a.png") != wf.content_upload_name(other, "a.png")
    for bad in ("", digest.upper(), digest[:-1], digest + "0", "g" * 64, None):
        with pytest.raises(InvalidInputError):
            wf.content_upload_name(bad, "a.png")  # type: ignore[arg-type]


