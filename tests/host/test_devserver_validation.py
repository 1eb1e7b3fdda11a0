"""Validation details the recordings do not cover, checked on the pure function."""

from __future__ import annotations

from pathlib import Path

from comfyui_devserver.faults import RouteFault, match_route
from comfyui_devserver.nodes import Dirs
from comfyui_devserver.validation import is_canonical_uuid, validate_prompt


def _dirs(tmp_path: Path) -> Dirs:
    for sub in ("input", "output", "temp"):
        (tmp_path / sub).mkdir()
    return Dirs(tmp_path / "input", tmp_path / "output", tmp_path / "temp")


def test_widget_values_are_converted_in_place(tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": "64", "height": 8.0,
                                                           "batch_size": 1, "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                          "filename_prefix": 5}}}
    ok, error, outputs, node_errors = validate_prompt(prompt, _dirs(tmp_path))
    assert (ok, error, outputs, node_errors) == (True, None, ["2"], {})
    assert prompt["1"]["inputs"]["width"] == 64 and prompt["2"]["inputs"]["filename_prefix"] == "5"


def test_inner_exception_is_filed_under_the_linked_node(tmp_path: Path) -> None:
    prompt = {"2": {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                          "filename_prefix": "x"}}}
    ok, error, _, node_errors = validate_prompt(prompt, _dirs(tmp_path))
    assert not ok and error is not None and error["details"] == ""
    (err,) = node_errors["2"]["errors"]
    assert err["type"] == "exception_during_inner_validation"
    assert err["extra_info"]["linked_node"] == ["2", 0] and err["details"] == "'99'"
    assert node_errors["2"]["dependent_outputs"] == ["3"] and "3" not in node_errors


def test_partial_execution_targets_and_missing_class_type(tmp_path: Path) -> None:
    dirs = _dirs(tmp_path)
    save = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                           "batch_size": 1, "color": 0}},
              "2": dict(save), "3": dict(save)}
    assert validate_prompt(prompt, dirs, ["3"])[2] == ["3"]
    ok, error, _, _ = validate_prompt({"1": {"inputs": {}}}, dirs)
    assert not ok and error is not None and error["type"] == "invalid_prompt"


def test_canonical_uuid_and_route_matching() -> None:
    assert is_canonical_uuid("e60e7da2-02b3-42b4-9169-117044160149")
    assert not is_canonical_uuid("E60E7DA2-02B3-42B4-9169-117044160149")
    assert not is_canonical_uuid("e60e7da202b342b49169117044160149")
    assert not is_canonical_uuid(123)
    table = {"/prompt": RouteFault(500), "/view*": RouteFault(502)}
    assert match_route(table, "/api/prompt") == "/prompt"
    assert match_route(table, "/prompt") == "/prompt"
    assert match_route(table, "/api/view") == "/view*"
    assert match_route(table, "/queue") is None
