"""Response parsers, fed the recorded real answers (and the documented older shapes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import recordings
from comfyui_client.errors import (
    BadResponse,
    ComfyClientError,
    CrossOriginBlocked,
    InvalidWorkflow,
    UploadTooLarge,
)
from comfyui_client.protocol import responses as rs
from comfyui_client.protocol.responses import ImageRef

SERVER = "http://127.0.0.1:8188"
PID = "05ce3d50-c709-4d64-ae82-a8cdd0f1ba8c"


def wire(exchange: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """``(status, lower-case headers, body bytes)`` of one recorded HTTP exchange."""
    resp = exchange["response"]
    headers = {k.lower(): v for k, v in resp["headers"].items()}
    body = resp["body"]
    if "json" in body:
        raw = json.dumps(body["json"]).encode()
    elif "text" in body:
        raw = body["text"].encode()
    else:
        raise AssertionError("binary bodies are not parsed")
    return resp["status"], headers, raw


def exchanges(name: str, method: str, prefix: str) -> list[dict[str, Any]]:
    return [e for e in recordings.http(name, method)
            if e["request"]["path"].startswith(prefix)]


def parse(fn: Any, exchange: dict[str, Any], **kw: Any) -> Any:
    status, headers, body = wire(exchange)
    return fn(status, headers, body, server=SERVER, **kw)


# --------------------------------------------------------------------------- POST /prompt


ACCEPTED = [e for n in recordings.names() if n != "timings"
            for e in recordings.http(n, "POST", "/prompt") if e["response"]["status"] == 200]


@pytest.mark.parametrize("exchange", ACCEPTED, ids=lambda e: e["response"]["body"]["json"]
                         ["prompt_id"][:8])
def test_every_recorded_accepted_prompt_parses(exchange: dict[str, Any]) -> None:
    recorded = exchange["response"]["body"]["json"]
    result = parse(rs.parse_prompt_response, exchange)
    assert result == rs.PromptAccepted(recorded["prompt_id"], recorded["number"], {})


def test_front_jobs_get_a_negative_number() -> None:
    numbers = [parse(rs.parse_prompt_response, e).number
               for e in recordings.http("queue_history_shapes", "POST", "/prompt")]
    assert numbers == [21, 22, -23, 24]


REJECTED = [e for e in recordings.http("node_errors_400", "POST", "/prompt")
            if e["response"]["status"] == 400]

# (error type, node error types, summary lines) per recorded case, in recording order.
EXPECTED_400 = [
    ("prompt_outputs_failed_validation", ["value_bigger_than_max"],
     ["node 1 (EmptyImage): width: Value 99999 bigger than max of 16384"]),
    ("prompt_outputs_failed_validation", ["invalid_input_type"],
     ["node 1 (EmptyImage): width: Failed to convert an input value to a INT value "
      "(abc, invalid literal for int() with base 10: 'abc')"]),
    ("prompt_outputs_failed_validation", ["required_input_missing"],
     ["node 1 (ImageInvert): image: Required input is missing"]),
    ("prompt_outputs_failed_validation", ["value_not_in_list"],
     ["node 2 (ImageScale): upscale_method: Value not in list ('foo' not in "
      "['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos'])"]),
    ("prompt_outputs_failed_validation", ["custom_validation_failed"],
     ["node 1 (LoadImage): image: Custom validation failed for node "
      "(Invalid image file: does_not_exist.png)"]),
    ("prompt_outputs_failed_validation", ["return_type_mismatch"],
     ["node 2 (SaveImage): images: Return type mismatch between linked nodes "
      "(received_type(MASK) mismatch input_type(IMAGE))"]),
    ("prompt_outputs_failed_validation", ["exception_during_validation"],
     ["node 2 (SaveImage): Exception when validating node (KeyError: '99')"]),
    ("missing_node_type", [],
     ["node 1 (NoSuchNode): Node 'NoSuchNode' not found. The custom node may not be installed."]),
    ("prompt_no_outputs", [], ["Prompt has no outputs"]),
    ("prompt_outputs_failed_validation", ["value_smaller_than_min"],
     ["node 1 (EmptyImage): width: Value 0 smaller than min of 1"]),
    ("invalid_prompt_id", [],
     ["prompt_id must be a valid UUID: prompt_id must be a UUID string in canonical lowercase "
      "hyphenated form; omit it to let the server generate one"]),
    ("no_prompt", [], ["No prompt provided"]),
]


def test_the_recording_has_every_expected_rejection() -> None:
    assert len(REJECTED) == len(EXPECTED_400) == 12


@pytest.mark.parametrize(("exchange", "expected"), list(zip(REJECTED, EXPECTED_400, strict=True)),
                         ids=[x[0] + "-" + "-".join(x[1]) for x in EXPECTED_400])
def test_recorded_400s_become_invalid_workflow(exchange: dict[str, Any],
                                               expected: tuple[str, list[str], list[str]]
                                               ) -> None:
    error_type, node_error_types, summary = expected
    recorded = exchange["response"]["body"]["json"]
    with pytest.raises(InvalidWorkflow) as info:
        parse(rs.parse_prompt_response, exchange, prompt_id=PID)
    err = info.value
    assert err.message == recorded["error"]["message"]  # the server's own words
    assert err.details["error"] == recorded["error"]
    assert err.details["error"]["type"] == error_type
    # ComfyUI 0.33 already sends the dict form: normalising keeps it as is.
    assert err.details["node_errors"] == recorded["node_errors"]
    assert [e["type"] for n in err.details["node_errors"].values() for e in n["errors"]] == \
        node_error_types
    assert err.details["summary"] == summary
    assert (err.server, err.prompt_id, err.code) == (SERVER, PID, "invalid_workflow")
    json.dumps(err.to_dict())


def test_a_node_error_summary_is_also_the_hint() -> None:
    with pytest.raises(InvalidWorkflow) as info:
        parse(rs.parse_prompt_response, REJECTED[0])
    assert info.value.hint == "node 1 (EmptyImage): width: Value 99999 bigger than max of 16384"
    assert str(info.value) == (
        "Prompt outputs failed validation (server http://127.0.0.1:8188). "
        "node 1 (EmptyImage): width: Value 99999 bigger than max of 16384")


def test_rejections_without_node_errors_get_a_fix_as_hint() -> None:
    hints = {}
    for exchange, (etype, _, _) in zip(REJECTED, EXPECTED_400, strict=True):
        with pytest.raises(InvalidWorkflow) as info:
            parse(rs.parse_prompt_response, exchange)
        hints[etype] = info.value.hint
    assert hints["missing_node_type"] == ("install the node pack that provides NoSuchNode on "
                                          "this server, or remove that node")
    assert hints["prompt_no_outputs"] == "add an output node such as SaveImage or PreviewImage"
    assert "lowercase UUID" in hints["invalid_prompt_id"]


def test_the_rejected_upper_case_prompt_id_is_invalid_workflow() -> None:
    exchange = next(e for e in recordings.http("empty_image_success", "POST", "/prompt")
                    if e["response"]["status"] == 400)
    with pytest.raises(InvalidWorkflow) as info:
        parse(rs.parse_prompt_response, exchange)
    assert info.value.details["error"]["type"] == "invalid_prompt_id"


def test_the_recorded_non_json_body_500_is_bad_response() -> None:
    exchange = next(e for e in recordings.http("node_errors_400", "POST", "/prompt")
                    if e["response"]["status"] == 500)
    with pytest.raises(BadResponse) as info:
        parse(rs.parse_prompt_response, exchange)
    err = info.value
    assert err.message == ("POST /prompt: the server answered 500 Internal Server Error: "
                           "500 Internal Server Error Server got itself in trouble")
    assert err.details["status"] == 500
    assert err.hint == "the server failed while answering: its console log says why"


def test_the_cors_enabled_server_rejection_parses_too() -> None:
    exchange = recordings.http("cors_enabled", "POST", "/prompt")[0]
    with pytest.raises(InvalidWorkflow) as info:
        parse(rs.parse_prompt_response, exchange)
    assert info.value.details["summary"] == ["Prompt has no outputs"]


# ----- older node_errors / error shapes


def reject(body: Any, status: int = 400) -> InvalidWorkflow:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidWorkflow) as info:
        rs.parse_prompt_response(status, {"content-type": "application/json"}, raw, server=SERVER)
    return info.value


def test_old_string_error_with_list_node_errors() -> None:
    # server.py (2023-2025) for a body without "prompt":
    #   return web.json_response({"error": "no prompt", "node_errors": []}, status=400)
    err = reject({"error": "no prompt", "node_errors": []})
    assert err.message == "no prompt"
    assert err.details["error"] == {"type": "", "message": "no prompt", "details": "",
                                    "extra_info": {}}
    assert err.details["node_errors"] == {}
    assert err.details["summary"] == ["no prompt"]


def test_old_dict_error_with_empty_list_node_errors() -> None:
    # execution.py validate_prompt before node_errors became {} on early returns:
    #   error = {"type": "prompt_no_outputs", ...}; return (False, error, [], [])
    err = reject({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                            "details": "", "extra_info": {}}, "node_errors": []})
    assert err.message == "Prompt has no outputs"
    assert err.details["node_errors"] == {}


def test_first_servers_plain_text_rejection() -> None:
    # The first server.py answered a rejected prompt with web.Response(body=reason, status=400),
    # validate_prompt's reason being a multi-line string.
    err = reject(b"Prompt has no properly connected outputs\n Required input is missing: image")
    assert err.message == "Prompt has no properly connected outputs"
    assert err.details["error"]["details"] == "Required input is missing: image"
    assert err.details["summary"] == [
        "Prompt has no properly connected outputs: Required input is missing: image"]


def test_list_node_errors_are_grouped_by_node() -> None:
    # Hand-rolled servers and proxies: [[node_id, error]] pairs and [{"node_id", ...}] items.
    err = reject({
        "error": "Prompt outputs failed validation",
        "node_errors": [
            ["3", {"type": "value_bigger_than_max", "message": "Value 100000 bigger than max "
                   "of 16384", "details": "width", "extra_info": {"input_name": "width"}}],
            {"node_id": "3", "class_type": "ImageScale", "errors": [
                {"type": "required_input_missing", "message": "Required input is missing",
                 "details": "image", "extra_info": {"input_name": "image"}}]},
            "something else went wrong",
        ],
    })
    nodes = err.details["node_errors"]
    assert list(nodes) == ["3", ""]
    assert nodes["3"]["class_type"] == "ImageScale"
    assert [e["type"] for e in nodes["3"]["errors"]] == ["value_bigger_than_max",
                                                         "required_input_missing"]
    assert err.details["summary"] == [
        "node 3 (ImageScale): width: Value 100000 bigger than max of 16384",
        "node 3 (ImageScale): image: Required input is missing",
        "something else went wrong",
    ]


def test_node_entries_that_are_a_bare_error_or_string() -> None:
    # A shape seen in third-party API docs: {node_id: {type, message, details, extra_info}}.
    nodes = rs.normalize_node_errors({
        "3": {"type": "value_not_in_list", "message": "Value not in list",
              "details": "sampler_name: 'x' not in ['euler']", "extra_info": {}},
        "4": "broken",
        5: ["first", {"message": "second"}],
    })
    assert nodes["3"]["errors"][0]["type"] == "value_not_in_list"
    assert nodes["4"]["errors"] == [{"type": "", "message": "broken", "details": "",
                                     "extra_info": {}}]
    assert [e["message"] for e in nodes["5"]["errors"]] == ["first", "second"]
    summary = rs.summarize_node_errors({}, nodes)
    assert summary[0] == "node 3: Value not in list (sampler_name: 'x' not in ['euler'])"


def test_more_than_three_node_errors_are_counted_in_the_hint() -> None:
    node_errors = {str(i): {"errors": [{"type": "t", "message": f"bad {i}", "details": "",
                                        "extra_info": {}}], "class_type": "X"}
                   for i in range(5)}
    err = reject({"error": {"message": "Prompt outputs failed validation"},
                  "node_errors": node_errors})
    assert err.hint == "node 0 (X): bad 0; node 1 (X): bad 1; node 2 (X): bad 2 (and 2 more)"
    assert len(err.details["summary"]) == 5


def test_accepted_prompt_with_dropped_outputs_keeps_their_errors() -> None:
    body = {"prompt_id": PID, "number": 3, "node_errors": {
        "9": {"errors": [{"type": "required_input_missing", "message": "Required input is "
                          "missing", "details": "images", "extra_info": {"input_name":
                                                                         "images"}}],
              "dependent_outputs": ["9"], "class_type": "SaveImage"}}}
    result = rs.parse_prompt_response(200, {}, json.dumps(body).encode(), server=SERVER)
    assert result.node_errors["9"]["class_type"] == "SaveImage"


def test_a_200_without_prompt_id_is_bad_response_or_rejection() -> None:
    with pytest.raises(BadResponse, match="no prompt_id"):
        rs.parse_prompt_response(200, {}, b'{"number": 1}', server=SERVER)
    with pytest.raises(InvalidWorkflow):  # wrappers that answer a rejection with 200
        rs.parse_prompt_response(200, {}, b'{"error": {"message": "nope"}}', server=SERVER)
    old = rs.parse_prompt_response(200, {}, json.dumps({"prompt_id": PID}).encode())
    assert old == rs.PromptAccepted(PID, None, {})  # servers before "number" was sent


# --------------------------------------------------------------------------- status handling


@pytest.mark.parametrize("exchange", [e for e in recordings.http("origin_check_default")
                                      if e["response"]["status"] == 403],
                         ids=lambda e: e["request"]["method"] + e["request"]["path"])
def test_recorded_empty_403s_are_cross_origin_blocked(exchange: dict[str, Any]) -> None:
    with pytest.raises(CrossOriginBlocked) as info:
        parse(rs.check_status, exchange, page_origin="https://app.example")
    assert "--enable-cors-header https://app.example" in info.value.hint
    with pytest.raises(CrossOriginBlocked) as info:
        parse(rs.parse_system_stats, exchange)
    assert "--enable-cors-header <this page's origin>" in info.value.hint
    assert info.value.server == SERVER


def test_a_403_with_a_body_is_not_the_origin_check() -> None:
    with pytest.raises(BadResponse) as info:
        rs.check_status(403, {"content-type": "text/plain"}, b"invalid token", server=SERVER)
    assert not isinstance(info.value, CrossOriginBlocked)
    assert "token" in info.value.hint


def test_413_is_upload_too_large_with_the_known_limit() -> None:
    # aiohttp's own 413 text (ComfyUI sets client_max_size from --max-upload-size).
    body = b"Maximum request body size 104857600 exceeded, actual body size 209715200"
    with pytest.raises(UploadTooLarge) as info:
        rs.parse_upload(413, {"content-type": "text/plain; charset=utf-8"}, body, server=SERVER,
                        prompt_id=PID, max_upload_size=104857600)
    err = info.value
    assert err.message == "the upload is larger than the server accepts (limit 100 MB)"
    assert err.details["limit"] == 104857600
    assert err.details["excerpt"] == body.decode()
    assert "--max-upload-size" in err.hint
    assert err.prompt_id == PID
    with pytest.raises(UploadTooLarge) as info:
        rs.check_status(413, {}, b"", server=SERVER)
    assert info.value.message == "the upload is larger than the server accepts"


def test_upload_too_large_before_sending_names_both_sizes() -> None:
    err = rs.upload_too_large(SERVER, size=150 * 1048576, limit=104857600, prompt_id=PID)
    assert isinstance(err, UploadTooLarge)
    assert err.message == "the upload is larger than the server accepts (150 MB, limit 100 MB)"


LOGIN_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Sign in \xc2\xb7 Proxy</title></head>"
              b"<body><form>...</form></body></html>")


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", ""])
def test_an_html_page_on_200_is_described_as_such(content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    with pytest.raises(BadResponse) as info:
        rs.parse_queue(200, headers, LOGIN_PAGE, server=SERVER)
    err = info.value
    assert err.message == ('GET /queue: got an HTML page (likely from a proxy or login page) '
                           'instead of JSON (page title "Sign in · Proxy") (HTTP 200)')
    assert err.details["html"] is True
    assert "<" not in err.message


def test_an_html_error_page_from_a_proxy() -> None:
    with pytest.raises(BadResponse) as info:
        rs.parse_history(502, {"content-type": "text/html"},
                         b"<html><head><title>502 Bad Gateway</title></head></html>",
                         server=SERVER, prompt_id=PID)
    err = info.value
    assert err.message.startswith("GET /history: the server answered 502 Bad Gateway: got an "
                                  "HTML page (likely from a proxy or login page) instead of JSON")
    assert err.hint == "a proxy could not reach ComfyUI: is it running?"
    assert err.details["status"] == 502


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{\"queue_running\": [", "not valid JSON"),
        (b"[]", "expected a JSON object, got a list"),
        (b"", "empty body"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
    ],
)
def test_malformed_json_on_200_is_bad_response(body: bytes, fragment: str) -> None:
    with pytest.raises(BadResponse, match=fragment):
        rs.parse_queue(200, {"content-type": "application/json"}, body, server=SERVER)


def test_the_routers_404_means_an_old_server_or_not_comfyui() -> None:
    with pytest.raises(BadResponse) as info:
        rs.parse_job(404, {"content-type": "text/plain; charset=utf-8"}, b"404: Not Found",
                     server=SERVER, prompt_id=PID)
    err = info.value
    assert err.details["route_missing"] is True
    assert "too old" in err.hint and "not a ComfyUI server" in err.hint
    assert err.message == ("GET /api/jobs: the server answered 404 Not Found: this server has "
                           "no such route")


def test_recorded_view_errors() -> None:
    views = {e["request"]["query"]["filename"]: e
             for e in recordings.http("queue_history_shapes", "GET", "/view")}
    with pytest.raises(BadResponse) as info:
        parse(rs.check_status, views["no_such_file.png"], route="GET /view")
    assert info.value.message == "GET /view: not found (404)"
    assert info.value.details["route_missing"] is False
    with pytest.raises(BadResponse) as info:
        parse(rs.check_status, views["../server.py"])
    assert info.value.message == "the server answered 400 Bad Request"
    ok = views["example.png"]["response"]
    assert ok["status"] == 200
    assert rs.check_status(ok["status"], ok["headers"], b"\x89PNG", server=SERVER) is None


def test_excerpts_are_one_short_printable_line() -> None:
    body = ("Traceback:\n\x1b[31m" + "x" * 5000 + "\x00end").encode()
    with pytest.raises(BadResponse) as info:
        rs.check_status(500, {"content-type": "text/plain"}, body, server=SERVER)
    excerpt = info.value.details["excerpt"]
    assert len(excerpt) <= 200
    assert excerpt.startswith("Traceback: [31mxxx")
    assert excerpt.endswith("…")
    assert all(ch.isprintable() for ch in excerpt)


def test_401_asks_for_the_token() -> None:
    with pytest.raises(BadResponse) as info:
        rs.check_status(401, {}, b"Unauthorized", server=SERVER)
    assert info.value.hint == ("a proxy in front of the server wants credentials: set this "
                               "server's token")


# --------------------------------------------------------------------------- history


def history_exchanges() -> list[dict[str, Any]]:
    return [e for n in recordings.names() if n != "timings"
            for e in exchanges(n, "GET", "/history/")]


@pytest.mark.parametrize("exchange", history_exchanges(),
                         ids=lambda e: e["request"]["path"].rsplit("/", 1)[1][:8])
def test_every_recorded_history_answer_parses(exchange: dict[str, Any]) -> None:
    pid = exchange["request"]["path"].rsplit("/", 1)[1]
    recorded = exchange["response"]["body"]["json"]
    entry = parse(rs.parse_history, exchange, prompt_id=pid)
    if not recorded:
        assert entry is None
        return
    raw = recorded[pid]
    assert entry.prompt_id == pid
    assert entry.outputs == raw["outputs"]
    assert entry.images == [ImageRef(**img) for out in raw["outputs"].values()
                            for img in out.get("images", [])]
    assert entry.status_str == raw["status"]["status_str"]
    assert entry.completed == raw["status"]["completed"]
    assert entry.messages == [tuple(m) for m in raw["status"]["messages"]]
    assert entry.meta == raw["meta"]
    assert entry.number == raw["prompt"][0]


def test_history_images_are_flattened_in_node_order() -> None:
    exchange = next(e for e in exchanges("queue_history_shapes", "GET", "/history/")
                    if e["request"]["path"].endswith("7739cc28-6b6d-4f92-be79-a5421c93d3d8"))
    entry = parse(rs.parse_history, exchange,
                  prompt_id="7739cc28-6b6d-4f92-be79-a5421c93d3d8")
    assert entry.images == [
        ImageRef("fixture_qB_00001_.png", "", "output"),
        ImageRef("ComfyUI_temp_vvofa_00001_.png", "", "temp"),
    ]
    assert entry.succeeded and not entry.failed and not entry.interrupted
    assert entry.message("execution_cached") == {
        "nodes": ["1", "3"], "prompt_id": "7739cc28-6b6d-4f92-be79-a5421c93d3d8",
        "timestamp": 1795878590143}


def test_failed_and_interrupted_history_entries() -> None:
    failed = parse(rs.parse_history, exchanges("execution_error", "GET", "/history/")[0])
    assert (failed.status_str, failed.completed, failed.failed) == ("error", False, True)
    assert failed.images == []
    assert failed.message("execution_error")["exception_type"] == "PIL.UnidentifiedImageError"
    stopped = parse(rs.parse_history, exchanges("interrupt", "GET", "/history/")[0])
    assert stopped.interrupted and not stopped.succeeded
    assert stopped.message("execution_interrupted")["node_id"] == "11"


def test_history_of_another_job_or_several_jobs() -> None:
    body = json.dumps({"a": {"outputs": {}}, "b": {"outputs": {}}}).encode()
    assert rs.parse_history(200, {}, body, server=SERVER, prompt_id=PID) is None
    with pytest.raises(BadResponse, match="2 history entries"):
        rs.parse_history(200, {}, body, server=SERVER)
    with pytest.raises(BadResponse, match="outputs"):
        rs.parse_history(200, {}, json.dumps({PID: {"outputs": []}}).encode(), prompt_id=PID)
    old = rs.parse_history(200, {}, json.dumps({PID: {"outputs": {}}}).encode(), prompt_id=PID)
    assert (old.status_str, old.completed, old.messages) == (None, None, [])  # no "status" yet


# --------------------------------------------------------------------------- queue & info


def test_recorded_queue_with_running_and_pending_jobs() -> None:
    meta = recordings.load("queue_history_shapes")["meta"]["prompt_ids"]
    first = exchanges("queue_history_shapes", "GET", "/queue")[1]
    queue = parse(rs.parse_queue, first)
    assert queue.running == [meta["A_slow"]]
    assert queue.pending == [meta["C_front"], meta["B_quick"], meta["D_deleted"]]
    assert queue.numbers == {meta["A_slow"]: 21, meta["C_front"]: -23, meta["B_quick"]: 22,
                             meta["D_deleted"]: 24}
    assert queue.contains(meta["B_quick"]) and not queue.contains(PID)
    assert [queue.jobs_ahead(meta[k]) for k in ("A_slow", "C_front", "B_quick")] == [0, 1, 2]
    assert queue.jobs_ahead(PID) is None
    after_delete = parse(rs.parse_queue, exchanges("queue_history_shapes", "GET", "/queue")[2])
    assert not after_delete.contains(meta["D_deleted"])
    empty = parse(rs.parse_queue, exchanges("queue_history_shapes", "GET", "/queue")[0])
    assert (empty.running, empty.pending) == ([], [])


def test_pending_is_sorted_by_number_because_the_server_sends_a_heap() -> None:
    body = {"queue_running": [], "queue_pending": [[5, "e", {}, {}, []], [2, "b", {}, {}, []],
                                                   [-1, "f", {}, {}, []], [3, "c", {}, {}, []]]}
    queue = rs.parse_queue(200, {}, json.dumps(body).encode(), server=SERVER)
    assert queue.pending == ["f", "b", "c", "e"]
    with pytest.raises(BadResponse, match="not \\[number, prompt_id"):
        rs.parse_queue(200, {}, b'{"queue_running": [[1]], "queue_pending": []}')


def test_recorded_prompt_info() -> None:
    values = [parse(rs.parse_prompt_info, e)
              for e in exchanges("queue_history_shapes", "GET", "/prompt")]
    assert values == [0, 4, 0]
    with pytest.raises(BadResponse, match="queue_remaining"):
        rs.parse_prompt_info(200, {}, b'{"exec_info": {}}', server=SERVER)


def test_recorded_system_stats() -> None:
    stats = parse(rs.parse_system_stats, exchanges("queue_history_shapes", "GET",
                                                   "/system_stats")[0])
    assert stats.version == "0.33.0"
    assert stats.python_version.startswith("3.11.7")
    assert stats.pytorch_version == "2.14.1+cu130"
    assert stats.os == "linux"
    assert (stats.ram_total, stats.ram_free) == (25276510208, 24018423808)
    assert stats.devices == [{"name": "cpu", "type": "cpu", "index": None,
                              "vram_total": 25276510208, "vram_free": 24018423808}]
    api = parse(rs.parse_system_stats, exchanges("queue_history_shapes", "GET",
                                                 "/api/system_stats")[0])
    assert api == stats
    with pytest.raises(BadResponse, match="does not look like ComfyUI"):
        rs.parse_system_stats(200, {}, b'{"status": "ok"}', server=SERVER)


def test_recorded_features_and_old_servers_without_the_route() -> None:
    feats = parse(rs.parse_features, exchanges("queue_history_shapes", "GET", "/features")[0])
    assert (feats.max_upload_size, feats.supports_preview_metadata, feats.available) == (
        104857600, True, True)
    assert feats.raw["node_replacements"] is True
    old = rs.parse_features(404, {"content-type": "text/plain"}, b"404: Not Found",
                            server=SERVER)
    assert (old.max_upload_size, old.supports_preview_metadata, old.available) == (
        None, False, False)
    with pytest.raises(BadResponse):
        rs.parse_features(404, {"content-type": "text/html"}, b"<html>nginx</html>")


def test_recorded_object_info() -> None:
    by_path = {e["request"]["path"]: e for e in exchanges("queue_history_shapes", "GET",
                                                          "/object_info/")}
    assert parse(rs.parse_object_info, by_path["/object_info/NoSuchNode"]) == {}
    info = parse(rs.parse_object_info, by_path["/object_info/SaveImage"])
    assert info["SaveImage"]["output_node"] is True


# --------------------------------------------------------------------------- jobs API


def test_recorded_jobs_api_answers() -> None:
    meta = recordings.load("queue_history_shapes")["meta"]["prompt_ids"]
    by_id = {e["request"]["path"].rsplit("/", 1)[1]: e
             for e in exchanges("queue_history_shapes", "GET", "/api/jobs/")}
    pending = parse(rs.parse_job, by_id[meta["B_quick"]])
    assert (pending.prompt_id, pending.status, pending.outputs) == (meta["B_quick"], "pending",
                                                                    {})
    assert not pending.is_terminal
    done = parse(rs.parse_job, by_id[meta["A_slow"]])
    assert done.status == "completed" and done.is_terminal
    assert done.images == [ImageRef("fixture_qA_00001_.png", "", "output")]
    unknown = next(k for k, e in by_id.items() if e["response"]["status"] == 404)
    assert parse(rs.parse_job, by_id[unknown]) is None


def test_recorded_cancel_and_interrupt() -> None:
    cancels = exchanges("interrupt", "POST", "/api/jobs/")
    assert [parse(rs.parse_cancel, e) for e in cancels] == [True, False]
    for exchange in recordings.http("interrupt", "POST", "/interrupt"):
        assert parse(rs.parse_interrupt, exchange) is None
    delete = exchanges("queue_history_shapes", "POST", "/queue")[0]
    assert parse(rs.parse_empty, delete) is None
    with pytest.raises(BadResponse, match="cancelled"):
        rs.parse_cancel(200, {}, b'{"ok": true}', server=SERVER)


# --------------------------------------------------------------------------- uploads


def test_every_recorded_upload_answer_parses() -> None:
    uploads = [e for n in recordings.names() if n != "timings"
               for e in recordings.http(n, "POST", "/upload/image")]
    ok = [e for e in uploads if e["response"]["status"] == 200]
    assert len(ok) >= 8
    for exchange in ok:
        recorded = exchange["response"]["body"]["json"]
        result = parse(rs.parse_upload, exchange)
        assert (result.name, result.subfolder, result.type) == (
            recorded["name"], recorded["subfolder"], recorded["type"])
    renamed = next(parse(rs.parse_upload, e) for e in ok
                   if "(1)" in json.dumps(e["response"]))
    assert renamed.name == "fixture_up (1).png"
    sub = next(parse(rs.parse_upload, e) for e in ok
               if e["response"]["body"]["json"]["subfolder"])
    assert sub.workflow_value == "fixtures_sub/fixture_up.png"


def test_recorded_upload_400s_explain_the_likely_cause() -> None:
    refused = [e for e in recordings.http("upload_variants", "POST", "/upload/image")
               if e["response"]["status"] == 400]
    assert len(refused) == 2
    for exchange in refused:
        with pytest.raises(BadResponse) as info:
            parse(rs.parse_upload, exchange)
        assert info.value.message == "POST /upload/image: the server answered 400 Bad Request"
        assert "subfolder" in info.value.hint


def test_answer_matches_only_a_2xx_json_object_with_every_expected_field() -> None:
    """The condition on which the page sends a prepared POST /prompt right after the
    upload: the recorded answers, the renamed one ("name (1).png") among them."""
    ok = [e for e in recordings.http("upload_variants", "POST", "/upload/image")
          if e["response"]["status"] == 200]
    for exchange in ok:
        status, _headers, body = wire(exchange)
        data = exchange["response"]["body"]["json"]
        assert rs.answer_matches(status, body, {"name": data["name"],
                                                "subfolder": data["subfolder"]})
        assert not rs.answer_matches(status, body, {"name": data["name"] + "x"})
        assert not rs.answer_matches(status, body, {"name": data["name"], "subfolder": "z"})
    for status, body in ((400, b'{"name": "a.png"}'), (200, b"<html>"), (200, b"[]"),
                         (200, b""), (500, b'{"name": "a.png"}')):
        assert not rs.answer_matches(status, body, {"name": "a.png"})
    assert rs.answer_matches(200, b'{"name": "a.png", "subfolder": ""}', {"name": "a.png"})


def test_missing_input_files_reads_the_recorded_loadimage_rejection() -> None:
    """A rejected prompt tells which uploaded input the server does not hold (its details
    end with 'Invalid image file: NAME'); other rejections name none."""
    missing = []
    for exchange in REJECTED:
        with pytest.raises(InvalidWorkflow) as info:
            parse(rs.parse_prompt_response, exchange)
        errors = info.value.details.get("node_errors")
        missing.append(rs.missing_input_files(errors, ["does_not_exist.png", "other.png"]))
    assert missing.count(["does_not_exist.png"]) == 1
    assert all(m in ([], ["does_not_exist.png"]) for m in missing)
    # a name that only ends like the missing one is not it
    assert rs.missing_input_files(
        {"1": {"errors": [{"type": "custom_validation_failed",
                           "details": "image - Invalid image file: xdoes_not_exist.png"}]}},
        ["does_not_exist.png"]) == []
    assert rs.missing_input_files(None, ["a.png"]) == []


def test_errors_are_json_safe_for_the_page() -> None:
    with pytest.raises(ComfyClientError) as info:
        rs.parse_history(502, {"content-type": "text/html"}, LOGIN_PAGE, server=SERVER,
                         prompt_id=PID, page_origin="https://app.example")
    data = info.value.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["server"] == SERVER and data["promptId"] == PID


# --------------------------------------------------------------------------- every recording


def _check_queue(result: rs.QueueState, raw: dict[str, Any]) -> None:
    assert result.running == [item[1] for item in raw["queue_running"]]
    assert result.pending == [item[1] for item in sorted(raw["queue_pending"],
                                                         key=lambda i: i[0])]
    assert result.numbers == {item[1]: item[0]
                              for item in raw["queue_running"] + raw["queue_pending"]}


def _check_stats(result: rs.SystemStats, raw: dict[str, Any]) -> None:
    system = raw["system"]
    assert (result.version, result.python_version, result.pytorch_version) == (
        system["comfyui_version"], system["python_version"], system["pytorch_version"])
    assert (result.ram_total, result.ram_free) == (system["ram_total"], system["ram_free"])
    assert [(d["name"], d["vram_total"], d["vram_free"]) for d in result.devices] == [
        (d["name"], d["vram_total"], d["vram_free"]) for d in raw["devices"]]


def _check_upload(result: rs.UploadResult, raw: dict[str, Any]) -> None:
    assert (result.name, result.subfolder, result.type) == (raw["name"], raw["subfolder"],
                                                            raw["type"])


# (method, path prefix) -> (parser, check(result, recorded json or None))
ROUTES: dict[tuple[str, str], tuple[Any, Any]] = {
    ("GET", "/queue"): (rs.parse_queue, _check_queue),
    ("GET", "/prompt"): (rs.parse_prompt_info,
                         lambda r, raw: r == raw["exec_info"]["queue_remaining"]),
    ("GET", "/system_stats"): (rs.parse_system_stats, _check_stats),
    ("GET", "/api/system_stats"): (rs.parse_system_stats, _check_stats),
    ("GET", "/features"): (rs.parse_features,
                           lambda r, raw: (r.max_upload_size, r.raw) == (raw["max_upload_size"],
                                                                         raw)),
    ("GET", "/object_info/"): (rs.parse_object_info, lambda r, raw: r == raw),
    ("POST", "/upload/image"): (rs.parse_upload, _check_upload),
    ("POST", "/interrupt"): (rs.parse_interrupt, lambda r, raw: r is None),
    ("POST", "/queue"): (rs.parse_empty, lambda r, raw: r is None),
    ("POST", "/history"): (rs.parse_empty, lambda r, raw: r is None),
    ("POST", "/free"): (rs.parse_empty, lambda r, raw: r is None),
}


def _route_of(exchange: dict[str, Any]) -> tuple[str, str] | None:
    req = exchange["request"]
    for method, prefix in ROUTES:
        exact = not prefix.endswith("/")
        if req["method"] == method and (req["path"] == prefix if exact
                                        else req["path"].startswith(prefix)):
            return method, prefix
    return None


OK_EXCHANGES = [
    e for n in recordings.names() if n != "timings" for e in recordings.http(n)
    if e["response"]["status"] == 200 and _route_of(e) is not None
]


def test_the_route_table_covers_many_recorded_answers() -> None:
    assert {_route_of(e) for e in OK_EXCHANGES} == set(ROUTES)
    assert len(OK_EXCHANGES) > 40


@pytest.mark.parametrize("exchange", OK_EXCHANGES,
                         ids=lambda e: e["request"]["method"] + e["request"]["path"])
def test_every_recorded_2xx_answer_of_a_parsed_route(exchange: dict[str, Any]) -> None:
    parser, check = ROUTES[_route_of(exchange)]
    result = parse(parser, exchange)
    body = exchange["response"]["body"]
    assert check(result, body.get("json")) is not False
