"""Small pieces shared by the request, response and event modules.

Kept apart so that ``events`` (on the page's hot path: every WebSocket frame) does not import
the response parsers, and so that prompt ids are checked by one function everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError

_HEX = frozenset("0123456789abcdef")
_HYPHENS = (8, 13, 18, 23)


def new_prompt_id() -> str:
    """A fresh lowercase hyphenated UUID4, the only form ComfyUI accepts as a ``prompt_id``.

    The client picks the id itself so it can record job -> server *before* ``POST /prompt``
    and retry a POST that timed out without creating a second job (a reused id overwrites,
    it does not duplicate). Built from ``os.urandom`` directly: the ``uuid`` module is not
    needed for this and costs import time on the page's boot path.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_prompt_id(value: Any) -> bool:
    """True for a canonical lowercase hyphenated UUID (what ComfyUI 0.33 accepts)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    for i, ch in enumerate(value):
        if i in _HYPHENS:
            if ch != "-":
                return False
        elif ch not in _HEX:
            return False
    return True


def check_prompt_id(value: Any, what: str = "prompt_id") -> str:
    """Return ``value`` if it is a valid prompt id, else raise a clear ``InvalidInputError``.

    Prompt ids also go into URL paths (``/history/{id}``), so this check doubles as the
    guarantee that no caller-supplied text can change the path.
    """
    if is_prompt_id(value):
        return value
    if isinstance(value, str) and is_prompt_id(value.strip().lower()):
        fix = f"use {value.strip().lower()!r}"
        problem = "must be lowercase with no surrounding spaces"
    else:
        fix = "omit it to let the client generate one"
        problem = "must be a UUID like 05ce3d50-c709-4d64-ae82-a8cdd0f1ba8c"
    raise InvalidInputError(
        f"{what} {value!r} is invalid: it {problem} (ComfyUI rejects other forms with 400 "
        "invalid_prompt_id)",
        hint=fix,
        details={"field": what, "value": repr(value)[:80]},
    )


def kind_of(value: Any) -> str:
    """A short human name for a value's JSON-ish type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class ImageRef:
    """One image a job produced, as the server names it: pass these three to ``GET /view``.

    ``type`` is ``output`` (SaveImage), ``temp`` (PreviewImage) or ``input``; the image only
    exists on the server that ran the job.
    """

    filename: str
    subfolder: str = ""
    type: str = "output"

    def to_dict(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


def image_refs(output: Any) -> tuple[ImageRef, ...]:
    """The ``images`` list of one node's output (``executed.output`` or a history node).

    Items without a string ``filename`` are skipped rather than rejected: custom nodes put
    other things in their outputs and one odd item must not hide the real images.
    """
    if not isinstance(output, Mapping):
        return ()
    items = output.get("images")
    if not isinstance(items, (list, tuple)):
        return ()
    refs = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        name = item.get("filename")
        if not isinstance(name, str) or not name:
            continue
        sub = item.get("subfolder")
        kind = item.get("type")
        refs.append(
            ImageRef(
                filename=name,
                subfolder=sub if isinstance(sub, str) else "",
                type=kind if isinstance(kind, str) and kind else "output",
            )
        )
    return tuple(refs)


def images_of_outputs(outputs: Any) -> list[ImageRef]:
    """Every image of an ``outputs`` mapping (node id -> output), flattened in node order."""
    if not isinstance(outputs, Mapping):
        return []
    refs: list[ImageRef] = []
    for output in outputs.values():
        refs.extend(image_refs(output))
    return refs
