"""Every HTTP request the client makes, as immutable values (no I/O here).

A builder validates its arguments and returns an ``HttpRequest``; a transport (the browser's
``fetch`` or a host implementation) sends it to one server's base URL. Keeping the request a
plain value is what lets the client record *which server* a request was made for before it is
sent, and lets tests compare requests with the recorded real traffic byte for byte.

Routes are the ones ComfyUI 0.33 serves (each also exists under ``/api``); shapes are checked
against ``comfyui-traffic/*.json``.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InvalidInputError
from ._shared import check_prompt_id, new_prompt_id
from .workflow import _copy_json, validate_filename, validate_workflow

__all__ = [
    "FEATURE_FLAGS",
    "HttpRequest",
    "MultipartForm",
    "cancel_job",
    "delete_from_queue",
    "encode_multipart",
    "feature_flags_message",
    "features",
    "get_history",
    "get_job",
    "get_prompt_queue",
    "get_queue",
    "interrupt",
    "new_prompt_id",
    "object_info",
    "post_prompt",
    "system_stats",
    "upload_image",
    "view",
    "ws_path",
]

Expect = Literal["json", "bytes", "blob", "none"]

#: What the client announces in its first WebSocket message. ``supports_preview_metadata``
#: makes the server send previews as binary type 4, the only preview frame naming its job.
FEATURE_FLAGS: dict[str, Any] = {"supports_preview_metadata": True}

_UPLOAD_TYPES = ("input", "temp", "output")
_VIEW_TYPES = ("output", "temp", "input")
_PREVIEW_FORMATS = ("webp", "jpeg")
_CHANNELS = ("rgba", "rgb", "a")


@dataclass(frozen=True)
class MultipartForm:
    """A ``multipart/form-data`` body: ordered text fields plus one file part.

    ``file`` is opaque here (Python ``bytes`` or a browser ``Blob``/``File`` proxy): only the
    transport knows how to send it, so the pure layer never reads or copies it.
    """

    fields: tuple[tuple[str, str], ...]
    filename: str
    content_type: str
    file: Any = field(repr=False, compare=False)
    file_field: str = "image"


@dataclass(frozen=True)
class HttpRequest:
    """One request, independent of the server it will be sent to.

    ``path`` is already percent-encoded and starts with ``/``; ``query`` holds raw (unencoded)
    pairs, encoded by ``url()``. ``expect`` tells the transport how to read a 2xx body:
    ``json``/``bytes`` -> bytes for a parser, ``blob`` -> an opaque handle (images are never
    copied through Python in the page), ``none`` -> nothing to read.
    Only ``Content-Type`` and ``Authorization`` headers survive a ComfyUI CORS preflight, so
    builders add no headers of their own; the transport adds ``Content-Type`` for ``json``.
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    json: Any | None = None
    form: MultipartForm | None = None
    expect: Expect = "json"

    def url(self, base: str = "") -> str:
        """``base`` (``https://host:8188`` or ``https://host/comfy`` behind a proxy) joined
        with the path and the encoded query. ``base=""`` gives the relative target (used for
        audit records). Query values are encoded with ``%20`` for spaces, never ``+``, so a
        file name survives any server's decoding unchanged."""
        target = base.rstrip("/") + self.path
        if self.query:
            target += "?" + "&".join(
                f"{percent_encode(k)}={percent_encode(v)}" for k, v in self.query
            )
        return target

    @property
    def label(self) -> str:
        """``METHOD /path`` for messages and logs (no query: it may carry a token)."""
        return f"{self.method} {self.path}"


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_UNRESERVED_TEXT = frozenset(map(chr, _UNRESERVED))


def percent_encode(value: str) -> str:
    """What ``urllib.parse.quote(value, safe="")`` gives: UTF-8, every byte but RFC 3986's
    unreserved characters as ``%XX`` (so ``/``, ``&``, ``+`` and spaces never change
    meaning). Written out because importing ``urllib.parse`` costs ~60 ms in the page."""
    if _UNRESERVED_TEXT.issuperset(value):  # ids and plain names, several per job
        return value
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def _segment(value: str) -> str:
    return percent_encode(value)


def _check_text(value: Any, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise InvalidInputError(f"{what} must be a {'' if allow_empty else 'non-empty '}string, "
                                f"got {value!r}")
    return value


def _check_subfolder(subfolder: Any) -> str:
    """A relative folder below the server's input/output folder (may contain ``/``)."""
    _check_text(subfolder, "subfolder", allow_empty=True)
    if not subfolder:
        return ""
    if subfolder.startswith(("/", "\\")) or (len(subfolder) > 1 and subfolder[1] == ":"):
        raise InvalidInputError(f"subfolder {subfolder!r} must be relative (no leading / or drive)")
    parts = subfolder.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts):
        raise InvalidInputError(f"subfolder {subfolder!r} must not contain '.' or '..' parts")
    if not subfolder.isprintable() and any(ord(ch) < 32 for ch in subfolder):
        raise InvalidInputError(f"subfolder {subfolder!r} contains control characters")
    return subfolder


def _check_client_id(client_id: Any) -> str:
    # Not necessarily a UUID (the official frontend uses 32 hex chars without hyphens), but
    # it must be the exact sid of this client's socket: a job posted with another (or no)
    # client_id produces no executing/executed/success events on our socket at all.
    _check_text(client_id, "client_id")
    if len(client_id) > 256 or any(ch.isspace() for ch in client_id):
        raise InvalidInputError(f"client_id {client_id!r} must be a short token without spaces")
    return client_id


# --------------------------------------------------------------------------- jobs


def post_prompt(
    workflow: Any,
    *,
    client_id: str,
    prompt_id: str,
    extra_data: dict[str, Any] | None = None,
    front: bool = False,
) -> HttpRequest:
    """``POST /prompt``: queue ``workflow`` under a prompt id the client chose.

    Body: ``{"prompt", "client_id", "prompt_id"[, "extra_data"][, "front"]}`` (the shape of
    the recorded requests). The workflow is validated and copied; ``front`` is only sent
    when true (it queues the job first, with a negative number).
    """
    graph = validate_workflow(workflow)
    body: dict[str, Any] = {
        "prompt": graph,
        "client_id": _check_client_id(client_id),
        "prompt_id": check_prompt_id(prompt_id),
    }
    if extra_data is not None:
        if not isinstance(extra_data, dict):
            raise InvalidInputError(
                f"extra_data must be an object, got {type(extra_data).__name__}")
        body["extra_data"] = _copy_json(extra_data, "extra_data")
    if not isinstance(front, bool):
        raise InvalidInputError(f"front must be true or false, got {front!r}")
    if front:
        body["front"] = True
    return HttpRequest("POST", "/prompt", json=body)


def get_prompt_queue() -> HttpRequest:
    """``GET /prompt`` -> ``{"exec_info": {"queue_remaining": N}}``: the cheapest load probe."""
    return HttpRequest("GET", "/prompt")


def get_queue() -> HttpRequest:
    """``GET /queue``: running and pending jobs with their prompt ids."""
    return HttpRequest("GET", "/queue")


def delete_from_queue(ids: Any) -> HttpRequest:
    """``POST /queue {"delete": [ids]}``: drop queued (not yet running) jobs."""
    if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
        raise InvalidInputError("ids must be a list of prompt ids")
    if not ids:
        raise InvalidInputError("ids is empty: name at least one prompt id to delete")
    checked = [check_prompt_id(i) for i in ids]
    return HttpRequest("POST", "/queue", json={"delete": checked}, expect="none")


def get_history(prompt_id: str) -> HttpRequest:
    """``GET /history/{id}``: ``{}`` for an unknown *or unfinished* job, else its entry."""
    return HttpRequest("GET", f"/history/{check_prompt_id(prompt_id)}")


def get_job(prompt_id: str) -> HttpRequest:
    """``GET /api/jobs/{id}`` (newer servers): tells "unknown" (404) from "not finished"."""
    return HttpRequest("GET", f"/api/jobs/{check_prompt_id(prompt_id)}")


def cancel_job(prompt_id: str) -> HttpRequest:
    """``POST /api/jobs/{id}/cancel`` -> ``{"cancelled": bool}`` (newer servers)."""
    return HttpRequest("POST", f"/api/jobs/{check_prompt_id(prompt_id)}/cancel")


def interrupt(prompt_id: str | None = None) -> HttpRequest:
    """``POST /interrupt``: with a prompt id, stops that job only (if it is the one
    running); without, whatever runs, which on a shared server may be someone else's job."""
    if prompt_id is None:
        return HttpRequest("POST", "/interrupt", expect="none")
    return HttpRequest(
        "POST", "/interrupt", json={"prompt_id": check_prompt_id(prompt_id)}, expect="none"
    )


# --------------------------------------------------------------------------- files


def upload_image(
    file: Any,
    *,
    filename: str,
    subfolder: str = "",
    image_type: str = "input",
    overwrite: bool = True,
    content_type: str = "image/png",
) -> HttpRequest:
    """``POST /upload/image`` (multipart): the file part is named ``image``.

    Fields are sent as the recordings show: ``overwrite=true`` only when overwriting (absent
    means "dedupe by content, else rename to ``name (1).png``"), ``subfolder`` only when set,
    ``type`` only when not ``input``. The server may rename: use the name it returns.
    """
    if file is None:
        raise InvalidInputError("file is missing: pass the image as bytes, a Blob or a File")
    validate_filename(filename)
    sub = _check_subfolder(subfolder)
    if image_type not in _UPLOAD_TYPES:
        raise InvalidInputError(f"image_type must be one of {', '.join(_UPLOAD_TYPES)}, "
                                f"got {image_type!r}")
    if not isinstance(overwrite, bool):
        raise InvalidInputError(f"overwrite must be true or false, got {overwrite!r}")
    _check_text(content_type, "content_type")
    fields: list[tuple[str, str]] = []
    if overwrite:
        fields.append(("overwrite", "true"))
    if sub:
        fields.append(("subfolder", sub))
    if image_type != "input":
        fields.append(("type", image_type))
    form = MultipartForm(tuple(fields), filename, content_type, file)
    return HttpRequest("POST", "/upload/image", form=form)


def view(
    filename: str,
    subfolder: str,
    image_type: str,
    *,
    preview: str | None = None,
    channel: str | None = None,
) -> HttpRequest:
    """``GET /view?filename=&subfolder=&type=`` -> the image bytes (``expect="blob"``).

    ``preview`` (``"webp"``, ``"jpeg;80"``) asks for a re-encoded copy; ``channel``
    (``rgb``/``rgba``/``a``) for one channel set. Always the job's own server: outputs exist
    nowhere else.
    """
    validate_filename(filename)
    sub = _check_subfolder(subfolder)
    if image_type not in _VIEW_TYPES:
        raise InvalidInputError(f"image_type must be one of {', '.join(_VIEW_TYPES)}, "
                                f"got {image_type!r}")
    query: list[tuple[str, str]] = [("filename", filename), ("subfolder", sub),
                                    ("type", image_type)]
    if preview is not None:
        fmt, _, quality = str(preview).partition(";")
        ok_quality = not quality or (quality.isdigit() and 1 <= int(quality) <= 100)
        if fmt not in _PREVIEW_FORMATS or not ok_quality:
            raise InvalidInputError(
                f"preview must be 'webp' or 'jpeg', optionally with ';quality' (1-100), "
                f"got {preview!r}")
        query.append(("preview", preview))
    if channel is not None:
        if channel not in _CHANNELS:
            raise InvalidInputError(f"channel must be one of {', '.join(_CHANNELS)}, "
                                    f"got {channel!r}")
        query.append(("channel", channel))
    return HttpRequest("GET", "/view", query=tuple(query), expect="blob")


def encode_multipart(form: MultipartForm, boundary: str | None = None) -> tuple[str, bytes]:
    """``(content_type, body)`` for a form whose file is bytes-like (host transports).

    The browser builds its own body with ``FormData``; a CPython transport has no such
    helper in the standard library, and building it here keeps it testable.
    """
    import os

    data = form.file
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInputError(
            f"cannot encode a {type(data).__name__} as a file part: pass bytes")
    boundary = boundary or f"----comfyui-client-{os.urandom(12).hex()}"

    def quoted(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace(
            "\n", "%0A")

    chunks: list[bytes] = []
    for name, value in form.fields:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(form.file_field)}"; '
        f'filename="{quoted(form.filename)}"\r\nContent-Type: {form.content_type}\r\n\r\n'
        .encode()
    )
    chunks.append(bytes(data))
    chunks.append(f"\r\n--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


# --------------------------------------------------------------------------- server info


def system_stats() -> HttpRequest:
    """``GET /system_stats``: version, Python/PyTorch, devices, RAM/VRAM (health probe)."""
    return HttpRequest("GET", "/system_stats")


def features() -> HttpRequest:
    """``GET /features``: e.g. ``max_upload_size``; absent on servers older than it."""
    return HttpRequest("GET", "/features")


def object_info(node_class: str | None = None) -> HttpRequest:
    """``GET /object_info[/{class}]``: node definitions (an unknown class answers ``{}``)."""
    if node_class is None:
        return HttpRequest("GET", "/object_info")
    _check_text(node_class, "node_class")
    return HttpRequest("GET", f"/object_info/{_segment(node_class)}")


# --------------------------------------------------------------------------- WebSocket


def ws_path(client_id: str, token: str | None = None) -> str:
    """``/ws?clientId=SID[&token=T]``, to append to the server's ws(s):// base.

    Browsers cannot add headers to a WebSocket handshake, so a proxy's credential travels as
    the ``token`` query parameter.
    """
    path = f"/ws?clientId={percent_encode(_check_client_id(client_id))}"
    if token is not None:
        _check_text(token, "token")
        path += f"&token={percent_encode(token)}"
    return path


def feature_flags_message() -> str:
    """The first text frame the client sends:
    ``{"type":"feature_flags","data":{"supports_preview_metadata":true}}``."""
    return _json.dumps({"type": "feature_flags", "data": FEATURE_FLAGS}, separators=(",", ":"))
