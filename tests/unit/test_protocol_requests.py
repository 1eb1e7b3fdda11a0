"""Request builders: shapes compared with the recorded real requests, URL encoding, argument
validation."""

from __future__ import annotations

import copy
import dataclasses
import email.parser
import email.policy
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

import recordings
from comfyui_client.errors import InvalidInputError
from comfyui_client.protocol import requests as rq
from comfyui_client.protocol.requests import HttpRequest, MultipartForm

PID = "05ce3d50-c709-4d64-ae82-a8cdd0f1ba8c"


def recorded_prompt_posts(name: str) -> list[dict[str, Any]]:
    return [e["request"]["json"] for e in recordings.http(name, "POST", "/prompt")
            if "json" in e["request"]]


# --------------------------------------------------------------------------- POST /prompt


def test_post_prompt_body_matches_the_recorded_request_with_client_prompt_id() -> None:
    recorded = recorded_prompt_posts("empty_image_success")[0]
    req = rq.post_prompt(recorded["prompt"], client_id=recorded["client_id"],
                         prompt_id=recorded["prompt_id"], extra_data=recorded["extra_data"])
    assert (req.method, req.path, req.expect) == ("POST", "/prompt", "json")
    assert req.json == recorded
    assert list(req.json) == list(recorded)  # prompt, client_id, prompt_id, extra_data
    assert req.form is None


def test_post_prompt_matches_invert_success_plus_the_chosen_id() -> None:
    recorded = recorded_prompt_posts("invert_success")[0]
    req = rq.post_prompt(recorded["prompt"], client_id=recorded["client_id"], prompt_id=PID)
    assert req.json["prompt_id"] == PID
    assert {k: v for k, v in req.json.items() if k != "prompt_id"} == recorded
    assert req.json["prompt"]["1"]["_meta"] == {"title": "Load Image"}  # kept as given


def test_post_prompt_front_matches_the_recorded_front_request() -> None:
    recorded = next(j for j in recorded_prompt_posts("queue_history_shapes") if j.get("front"))
    req = rq.post_prompt(recorded["prompt"], client_id=recorded["client_id"], prompt_id=PID,
                         front=True)
    assert {k: v for k, v in req.json.items() if k != "prompt_id"} == recorded
    assert list(req.json) == ["prompt", "client_id", "prompt_id", "front"]
    assert "front" not in rq.post_prompt(recorded["prompt"], client_id="c", prompt_id=PID).json


def test_post_prompt_copies_the_workflow() -> None:
    workflow = copy.deepcopy(recorded_prompt_posts("invert_success")[0]["prompt"])
    before = copy.deepcopy(workflow)
    req = rq.post_prompt(workflow, client_id="abc", prompt_id=PID)
    req.json["prompt"]["1"]["inputs"]["image"] = "changed.png"
    assert workflow == before


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("E60E7DA2-02B3-42B4-9169-117044160149", "lowercase"),  # the id the server refused
        ("not-a-uuid", "must be a UUID"),
        ("05ce3d50c7094d64ae82a8cdd0f1ba8c", "must be a UUID"),  # no hyphens
        ("05ce3d50-c709-4d64-ae82-a8cdd0f1ba8g", "must be a UUID"),  # g is not hex
        (12, "must be a UUID"),
        (None, "must be a UUID"),
    ],
)
def test_prompt_ids_must_be_lowercase_uuids(bad: Any, fragment: str) -> None:
    wf = {"1": {"class_type": "SaveImage", "inputs": {}}}
    with pytest.raises(InvalidInputError, match=fragment):
        rq.post_prompt(wf, client_id="c", prompt_id=bad)
    with pytest.raises(InvalidInputError):
        rq.get_history(bad)


def test_the_upper_case_id_error_suggests_the_lowercase_one() -> None:
    with pytest.raises(InvalidInputError) as info:
        rq.get_job("E60E7DA2-02B3-42B4-9169-117044160149")
    assert info.value.hint == "use 'e60e7da2-02b3-42b4-9169-117044160149'"


@pytest.mark.parametrize("client_id", ["", "has space", None, "x" * 300])
def test_post_prompt_needs_a_real_client_id(client_id: Any) -> None:
    with pytest.raises(InvalidInputError, match="client_id"):
        rq.post_prompt({"1": {"class_type": "SaveImage", "inputs": {}}}, client_id=client_id,
                       prompt_id=PID)


def test_post_prompt_rejects_bad_extra_data_and_front() -> None:
    wf = {"1": {"class_type": "SaveImage", "inputs": {}}}
    with pytest.raises(InvalidInputError, match="extra_data"):
        rq.post_prompt(wf, client_id="c", prompt_id=PID, extra_data=["x"])  # type: ignore
    with pytest.raises(InvalidInputError, match="JSON cannot carry"):
        rq.post_prompt(wf, client_id="c", prompt_id=PID, extra_data={"blob": b"x"})
    with pytest.raises(InvalidInputError, match="front"):
        rq.post_prompt(wf, client_id="c", prompt_id=PID, front="yes")  # type: ignore


def test_new_prompt_ids_are_lowercase_uuid4_and_unique() -> None:
    ids = {rq.new_prompt_id() for _ in range(200)}
    assert len(ids) == 200
    for pid in ids:
        rq.get_history(pid)  # accepted by the same validator the builders use
        assert pid == pid.lower()
        assert pid[14] == "4"  # version 4
        assert pid[19] in "89ab"  # RFC 4122 variant


# --------------------------------------------------------------------------- routes


def recorded_path(name: str, method: str, prefix: str) -> tuple[str, dict[str, Any]]:
    for e in recordings.http(name, method):
        if e["request"]["path"].startswith(prefix):
            return e["request"]["path"], e["request"].get("json")
    raise AssertionError(f"no {method} {prefix} in {name}")


def test_paths_and_bodies_match_the_recorded_requests() -> None:
    hist, _ = recorded_path("invert_success", "GET", "/history/")
    assert rq.get_history(hist.rsplit("/", 1)[1]).path == hist
    job, _ = recorded_path("queue_history_shapes", "GET", "/api/jobs/")
    assert rq.get_job(job.rsplit("/", 1)[1]).path == job
    cancel, _ = recorded_path("interrupt", "POST", "/api/jobs/")
    req = rq.cancel_job(cancel.split("/")[3])
    assert (req.method, req.path, req.json) == ("POST", cancel, None)
    _, delete = recorded_path("queue_history_shapes", "POST", "/queue")
    req = rq.delete_from_queue(delete["delete"])
    assert (req.path, req.json, req.expect) == ("/queue", delete, "none")
    targeted = [e["request"] for e in recordings.http("interrupt", "POST", "/interrupt")]
    assert rq.interrupt(targeted[0]["json"]["prompt_id"]).json == targeted[0]["json"]
    assert "json" not in targeted[1]  # the global interrupt sent no body...
    assert rq.interrupt().json is None  # ...and neither do we
    assert rq.interrupt().expect == "none"
    assert rq.object_info("ImageInvert").path == "/object_info/ImageInvert"
    assert rq.object_info().path == "/object_info"
    simple = {
        rq.get_prompt_queue(): ("GET", "/prompt"),
        rq.get_queue(): ("GET", "/queue"),
        rq.system_stats(): ("GET", "/system_stats"),
        rq.features(): ("GET", "/features"),
    }
    for req, (method, path) in simple.items():
        assert (req.method, req.path, req.json, req.expect) == (method, path, None, "json")


def test_delete_from_queue_validates_its_list() -> None:
    with pytest.raises(InvalidInputError, match="list"):
        rq.delete_from_queue(PID)
    with pytest.raises(InvalidInputError, match="empty"):
        rq.delete_from_queue([])
    with pytest.raises(InvalidInputError):
        rq.delete_from_queue([PID, "../x"])


def test_object_info_quotes_the_class_name() -> None:
    assert rq.object_info("Image Invert/x?").path == "/object_info/Image%20Invert%2Fx%3F"


# --------------------------------------------------------------------------- URLs


def test_view_url_encoding_with_spaces_unicode_and_ampersands() -> None:
    req = rq.view("my photo & co=1 #2 é.png", "sub dir/ü", "output")
    url = req.url("https://host/comfy")
    assert url == ("https://host/comfy/view?filename=my%20photo%20%26%20co%3D1%20%232%20%C3%A9"
                   ".png&subfolder=sub%20dir%2F%C3%BC&type=output")
    assert "+" not in url
    parts = urlsplit(url)
    assert parts.path == "/comfy/view"
    assert parse_qsl(parts.query, keep_blank_values=True) == [
        ("filename", "my photo & co=1 #2 é.png"), ("subfolder", "sub dir/ü"), ("type", "output")]
    assert req.expect == "blob"


@pytest.mark.parametrize(
    "base",
    ["https://host/comfy", "https://host/comfy/", "https://host/comfy//"],
)
def test_base_with_path_prefix_joins_without_double_slashes(base: str) -> None:
    assert rq.get_queue().url(base) == "https://host/comfy/queue"
    assert rq.get_history(PID).url(base) == f"https://host/comfy/history/{PID}"


def test_url_without_base_is_the_relative_target() -> None:
    assert rq.get_queue().url() == "/queue"
    assert rq.view("a.png", "", "temp").url("") == "/view?filename=a.png&subfolder=&type=temp"
    assert rq.get_queue().url("http://127.0.0.1:8188") == "http://127.0.0.1:8188/queue"


def test_view_queries_match_the_recorded_ones() -> None:
    for e in recordings.http("queue_history_shapes", "GET", "/view"):
        q = e["request"]["query"]
        if q["filename"].startswith(".."):
            with pytest.raises(InvalidInputError, match="path separator"):
                rq.view(q["filename"], q.get("subfolder", ""), q["type"])
            continue
        req = rq.view(q["filename"], q.get("subfolder", ""), q["type"],
                      preview=q.get("preview"), channel=q.get("channel"))
        got = dict(parse_qsl(urlsplit(req.url("http://x")).query, keep_blank_values=True))
        assert got == {"subfolder": "", **q}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"preview": "png"}, "preview"),
        ({"preview": "webp;0"}, "preview"),
        ({"preview": "jpeg;abc"}, "preview"),
        ({"channel": "r"}, "channel"),
    ],
)
def test_view_validates_preview_and_channel(kwargs: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        rq.view("a.png", "", "output", **kwargs)
    assert rq.view("a.png", "", "output", preview="jpeg;80").query[-1] == ("preview", "jpeg;80")


def test_view_validates_type_and_subfolder() -> None:
    with pytest.raises(InvalidInputError, match="image_type"):
        rq.view("a.png", "", "outputs")
    for bad in ("../x", "a/../b", "/abs", "C:/win"):
        with pytest.raises(InvalidInputError, match="subfolder"):
            rq.view("a.png", bad, "output")
    assert rq.view("a.png", "a/b", "input").query[1] == ("subfolder", "a/b")


# --------------------------------------------------------------------------- uploads


def recorded_uploads() -> list[dict[str, Any]]:
    return [e["request"]["multipart"] for e in recordings.http("upload_variants", "POST",
                                                                "/upload/image")
            if "multipart" in e["request"]]


def test_upload_fields_match_the_recorded_multipart_requests() -> None:
    cases = {
        (("overwrite", "true"),): {},
        (): {"overwrite": False},
        (("overwrite", "true"), ("subfolder", "fixtures_sub")): {"subfolder": "fixtures_sub"},
        (("overwrite", "true"), ("type", "temp")): {"image_type": "temp"},
    }
    recorded_fields = [tuple(m["fields"].items()) for m in recorded_uploads()]
    blob = object()  # stands for a browser Blob: opaque, never inspected
    for fields, kwargs in cases.items():
        assert fields in recorded_fields
        req = rq.upload_image(blob, filename="fixture_up.png", **kwargs)
        assert (req.method, req.path, req.json, req.expect) == ("POST", "/upload/image", None,
                                                                "json")
        assert req.form.fields == fields
        assert req.form.file is blob
        assert (req.form.file_field, req.form.filename, req.form.content_type) == (
            "image", "fixture_up.png", "image/png")


def test_the_recorded_path_escape_is_refused_before_sending() -> None:
    escape = next(m for m in recorded_uploads() if m["fields"].get("subfolder") == "../..")
    name = escape["files"]["image"]["filename"]
    with pytest.raises(InvalidInputError, match="path separator"):
        rq.upload_image(b"x", filename=name)
    with pytest.raises(InvalidInputError, match="subfolder"):
        rq.upload_image(b"x", filename="ok.png", subfolder="../..")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "non-empty"),
        ("a/b.png", "path separator"),
        ("a\\b.png", "path separator"),
        ("..", "not a file name"),
        (".", "not a file name"),
        ("bad\nname.png", "control"),
        ("x" * 256, "longer than 255"),
        (None, "non-empty"),
    ],
)
def test_upload_filenames_are_validated(name: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        rq.upload_image(b"x", filename=name)


def test_upload_accepts_unusual_but_safe_names() -> None:
    for name in ("x..y.png", "photo (1).png", "été & co.png", ".hidden.png"):
        assert rq.upload_image(b"x", filename=name).form.filename == name


def test_upload_rejects_bad_options() -> None:
    with pytest.raises(InvalidInputError, match="file"):
        rq.upload_image(None, filename="a.png")
    with pytest.raises(InvalidInputError, match="image_type"):
        rq.upload_image(b"x", filename="a.png", image_type="models")
    with pytest.raises(InvalidInputError, match="overwrite"):
        rq.upload_image(b"x", filename="a.png", overwrite="1")  # type: ignore[arg-type]


def test_encode_multipart_round_trips_through_a_mime_parser() -> None:
    png = bytes.fromhex("89504e470d0a1a0a") + b"\r\n--not-a-boundary\r\n"
    req = rq.upload_image(png, filename='we"ird.png', subfolder="s", image_type="temp")
    ctype, body = rq.encode_multipart(req.form, boundary="BOUNDARY123")
    assert ctype == "multipart/form-data; boundary=BOUNDARY123"
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
    assert list(parts) == ["overwrite", "subfolder", "type", "image"]
    assert parts["subfolder"].get_content() == "s"
    assert parts["type"].get_content() == "temp"
    image = parts["image"]
    assert image.get_content_type() == "image/png"
    assert image.get_filename() == "we%22ird.png"  # quotes escaped the way browsers do
    assert image.get_payload(decode=True) == png
    with pytest.raises(InvalidInputError, match="pass bytes"):
        rq.encode_multipart(rq.upload_image(object(), filename="a.png").form)


# --------------------------------------------------------------------------- WebSocket


def test_ws_path_matches_the_recorded_handshake() -> None:
    url = recordings.events("invert_success", "ws_open")[0]["url"]
    client_id = url.split("clientId=")[1]
    assert rq.ws_path(client_id) == url


def test_ws_path_encodes_the_token() -> None:
    path = rq.ws_path("abc", token="t&k=1 /é")
    assert path == "/ws?clientId=abc&token=t%26k%3D1%20%2F%C3%A9"
    assert dict(parse_qsl(urlsplit(path).query)) == {"clientId": "abc", "token": "t&k=1 /é"}
    with pytest.raises(InvalidInputError):
        rq.ws_path("")


def test_feature_flags_message_is_the_exact_first_frame() -> None:
    text = rq.feature_flags_message()
    assert text == '{"type":"feature_flags","data":{"supports_preview_metadata":true}}'
    sent = recordings.events("ws_binary_frames", "ws_send")[0]["json"]
    assert sent["type"] == "feature_flags"
    # What the recorder sent (which made the server switch to type-4 previews) includes ours.
    assert json.loads(text)["data"].items() <= sent["data"].items()


# --------------------------------------------------------------------------- values


def test_requests_and_forms_are_immutable_values() -> None:
    req = rq.get_queue()
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.path = "/other"  # type: ignore[misc]
    assert req == HttpRequest("GET", "/queue")
    form = MultipartForm((), "a.png", "image/png", b"1")
    assert form == MultipartForm((), "a.png", "image/png", b"2")  # the file is opaque
    assert rq.get_history(PID).label == f"GET /history/{PID}"
