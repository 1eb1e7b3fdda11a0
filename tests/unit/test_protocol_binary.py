"""Binary WebSocket frames: previews (types 1 and 4), progress text (type 3), truncation,
zero-copy image views.

The recordings keep only each frame's header fields and sizes (ws_binary_frames.json), so the
frames are rebuilt here from those fields, with real PNG magic bytes, and checked to have the
recorded length and first 8 bytes before being decoded.
"""

from __future__ import annotations

import json
import struct
from array import array
from typing import Any

import pytest

import recordings
from comfyui_client.errors import ProtocolError
from comfyui_client.protocol.events import (
    PreviewImage,
    ProgressText,
    UnknownBinary,
    binary_header,
    decode_binary,
    decode_binary_header,
    event_to_dict,
)

PNG_MAGIC = bytes.fromhex("89504e470d0a1a0a")
RECORDED = [e for e in recordings.events("ws_binary_frames", "ws_recv") if e.get("binary")]


def build_frame(rec: dict[str, Any]) -> bytes:
    """The frame a recorded header describes: header fields + PNG bytes of the recorded size."""
    image = PNG_MAGIC + bytes(range(256))[: rec["image_bytes"] - len(PNG_MAGIC)]
    assert len(image) == rec["image_bytes"]
    head = struct.pack(">I", rec["event_type_u32be"])
    if rec["event_type_u32be"] == 4:
        # ComfyUI encodes the metadata with json.dumps defaults; the recorded length agrees.
        meta = json.dumps(rec["metadata"]).encode()
        assert len(meta) == rec["second_u32be"]
        return head + struct.pack(">I", len(meta)) + meta + image
    return head + struct.pack(">I", rec["second_u32be"]) + image


def text_frame(node_id: bytes, text: bytes) -> bytes:
    return struct.pack(">II", 3, len(node_id)) + node_id + text


@pytest.fixture(params=RECORDED, ids=lambda r: f"seq{r['seq']}-type{r['event_type_u32be']}")
def recorded(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param


def test_rebuilt_frames_match_the_recorded_length_and_first_bytes(recorded: dict) -> None:
    frame = build_frame(recorded)
    assert len(frame) == recorded["length"]
    assert frame[:8].hex() == recorded["first8_hex"]


def test_recorded_both_preview_kinds() -> None:
    assert sorted({r["event_type_u32be"] for r in RECORDED}) == [1, 4]


def test_recorded_preview_frames_decode_to_their_fields(recorded: dict) -> None:
    frame = build_frame(recorded)
    event = decode_binary(frame)
    assert isinstance(event, PreviewImage)
    assert event.type == "preview_image"
    assert bytes(event.image) == frame[event.image_offset:]
    assert bytes(event.image[:8]).hex() == recorded["image_magic_hex"]
    assert len(event.image) == recorded["image_bytes"]
    if recorded["event_type_u32be"] == 1:
        assert event.legacy is True
        assert (event.prompt_id, event.node_id) == (None, None)
        assert event.image_type == "image/png"  # format 2 = PNG
        assert event.image_offset == 8
    else:
        meta = recorded["metadata"]
        assert event.legacy is False
        assert event.metadata == meta
        assert event.prompt_id == meta["prompt_id"] == "be0093c7-1d81-4eb1-8bd9-027426de2de2"
        assert event.node_id == meta["node_id"]
        assert event.image_type == meta["image_type"]
        assert event.image_offset == 8 + recorded["second_u32be"]


def test_truncation_at_every_header_byte_raises_protocol_error(recorded: dict) -> None:
    frame = build_frame(recorded)
    header_len = 8 if recorded["event_type_u32be"] == 1 else 8 + recorded["second_u32be"]
    for cut in range(header_len):
        with pytest.raises(ProtocolError) as info:
            decode_binary(frame[:cut])
        msg = info.value.message
        if cut < 4:
            assert "event type" in msg
        elif cut < 8:
            assert ("image format" if recorded["event_type_u32be"] == 1
                    else "metadata length") in msg
        else:
            assert "metadata (165 bytes declared)" in msg
        assert info.value.details["length"] == cut
    # The header alone is a complete (image-less) frame.
    assert len(decode_binary(frame[:header_len]).image) == 0


def test_the_image_is_a_zero_copy_view_of_the_frame(recorded: dict) -> None:
    buf = bytearray(build_frame(recorded))
    event = decode_binary(buf)
    assert event.image.obj is buf
    assert event.image[0] == 0x89
    buf[event.image_offset] = 0x00  # mutate the source...
    assert event.image[0] == 0x00  # ...and see it through the view: nothing was copied
    frozen = build_frame(recorded)
    assert decode_binary(frozen).image.obj is frozen
    view = memoryview(frozen)
    assert decode_binary(view).image.obj is frozen


def test_binary_header_says_how_many_bytes_to_read(recorded: dict) -> None:
    frame = build_frame(recorded)
    event_type, need = binary_header(frame[:8])
    assert event_type == recorded["event_type_u32be"]
    expected = 8 if event_type == 1 else 8 + recorded["second_u32be"]
    assert need == expected
    head = decode_binary_header(frame[:need])
    assert isinstance(head, PreviewImage)
    assert len(head.image) == 0
    assert head.image_offset == need
    # The caller slices its own (JS) buffer at image_offset to get the image.
    assert frame[head.image_offset:head.image_offset + 8] == PNG_MAGIC
    assert head.prompt_id == (recorded.get("metadata") or {}).get("prompt_id")


def test_binary_header_with_only_the_type_asks_for_eight_bytes() -> None:
    assert binary_header(struct.pack(">I", 4)) == (4, 8)
    assert binary_header(struct.pack(">I", 1)) == (1, 8)
    assert binary_header(struct.pack(">II", 3, 2)) == (3, None)
    assert binary_header(struct.pack(">I", 9)) == (9, None)
    with pytest.raises(ProtocolError, match="event type"):
        binary_header(b"\x00\x00\x04")


def test_legacy_jpeg_and_unknown_format_codes() -> None:
    jpeg = decode_binary(struct.pack(">II", 1, 1) + b"\xff\xd8\xff\xe0rest")
    assert jpeg.image_type == "image/jpeg"
    assert jpeg.metadata == {"image_format": 1}
    odd = decode_binary(struct.pack(">II", 1, 9) + PNG_MAGIC)
    assert odd.image_type == "image/png"  # unknown code: sniffed from the bytes
    assert odd.metadata == {"image_format": 9}
    blank = decode_binary(struct.pack(">II", 1, 9) + b"????")
    assert blank.image_type == "application/octet-stream"


def test_metadata_without_image_type_is_sniffed() -> None:
    meta = json.dumps({"node_id": "5", "prompt_id": "p"}).encode()
    event = decode_binary(struct.pack(">II", 4, len(meta)) + meta + PNG_MAGIC)
    assert (event.node_id, event.prompt_id, event.image_type) == ("5", "p", "image/png")


@pytest.mark.parametrize(
    ("meta", "fragment"),
    [
        (b"{not json}", "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"node_id": "\xff"}', "not valid UTF-8"),
    ],
)
def test_bad_metadata_raises_protocol_error(meta: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment) as info:
        decode_binary(struct.pack(">II", 4, len(meta)) + meta + PNG_MAGIC)
    assert info.value.details["field"] == "metadata"


def test_declared_metadata_length_beyond_the_frame_raises() -> None:
    with pytest.raises(ProtocolError, match="metadata"):
        decode_binary(struct.pack(">II", 4, 0xFFFFFFFF) + b"{}")


def test_progress_text_frames() -> None:
    event = decode_binary(text_frame(b"12", "step 3/20 · ok".encode()))
    assert isinstance(event, ProgressText)
    assert (event.node_id, event.text, event.prompt_id) == ("12", "step 3/20 · ok", None)
    assert event_to_dict(event) == {"type": "progress_text", "prompt_id": None,
                                    "node_id": "12", "text": "step 3/20 · ok"}
    frame = text_frame(b"12", b"hello")
    for cut in range(8 + 2):  # every cut inside the header (type, length, node id)
        with pytest.raises(ProtocolError):
            decode_binary(frame[:cut])
    assert decode_binary(frame[:10]).text == ""


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (text_frame(b"\xff", b"x"), "node id is not valid UTF-8"),
        (text_frame(b"1", "é".encode()[:1]), "text is not valid UTF-8"),
    ],
)
def test_progress_text_with_bad_utf8_raises(frame: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        decode_binary(frame)


def test_unknown_binary_types_are_kept() -> None:
    frame = struct.pack(">I", 2) + b"raw pixels"
    event = decode_binary(frame)
    assert isinstance(event, UnknownBinary)
    assert event.event_type == 2
    assert bytes(event.data) == b"raw pixels"
    assert event.data.obj is frame
    assert event_to_dict(event) == {"type": "unknown_binary", "prompt_id": None, "event_type": 2}


def test_non_byte_buffers_are_viewed_as_bytes_and_junk_is_refused() -> None:
    frame = build_frame(RECORDED[0])
    words = array("H")
    words.frombytes(frame)  # 168 bytes -> 84 unsigned shorts
    event = decode_binary(words)
    assert bytes(event.image[:8]) == PNG_MAGIC
    with pytest.raises(ProtocolError, match="bytes-like"):
        decode_binary("not bytes")  # type: ignore[arg-type]


def test_event_to_dict_leaves_the_image_out(recorded: dict) -> None:
    out = event_to_dict(decode_binary(build_frame(recorded)))
    assert "image" not in out
    assert json.loads(json.dumps(out)) == out
    assert out["type"] == "preview_image"
    assert out["image_offset"] == (8 if recorded["event_type_u32be"] == 1
                                   else 8 + recorded["second_u32be"])
