"""Parsers for every HTTP answer: ``(status, headers, body)`` in, a typed result or error out.

The shape of gidgethub's ``sansio.decipher_response``: no I/O, so each parser is tested on the
recorded real answers. Every parser takes the same arguments::

    parse_x(status, headers, body, *, server, prompt_id=None, page_origin=None,
            max_upload_size=None)

``headers`` has lower-case keys; ``body`` is bytes (or str). ``server``/``prompt_id`` only go
into the errors, so each one says on which server and for which job it happened;
``page_origin`` completes the CORS hint, ``max_upload_size`` the 413 message.

All status handling is in one place, ``check_status``: an empty 403 is ComfyUI's origin check
(``CrossOriginBlocked``), 413 is ``UploadTooLarge``, a 404 from the router means the server
is too old or not ComfyUI, an HTML body is a proxy or login page; everything else unexpected
is ``BadResponse`` with a short, sanitised excerpt of what came back.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadResponse, CrossOriginBlocked, InvalidWorkflow, ServerError, UploadTooLarge
from ._shared import ImageRef, images_of_outputs, kind_of

__all__ = [
    "ORIGIN_PLACEHOLDER",
    "Features",
    "HistoryEntry",
    "ImageRef",
    "JobStatus",
    "PromptAccepted",
    "QueueState",
    "SystemStats",
    "UploadResult",
    "answer_matches",
    "check_status",
    "missing_input_files",
    "normalize_node_errors",
    "parse_cancel",
    "parse_empty",
    "parse_features",
    "parse_history",
    "parse_interrupt",
    "parse_job",
    "parse_object_info",
    "parse_prompt_info",
    "parse_prompt_response",
    "parse_queue",
    "parse_system_stats",
    "parse_upload",
    "summarize_node_errors",
    "upload_too_large",
]

#: Stands in for the page origin in hints when the caller does not know it.
ORIGIN_PLACEHOLDER = "<this page's origin>"

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")

_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
_HTML_PAGE = "got an HTML page (likely from a proxy or login page) instead of JSON"
_EXCERPT_CHARS = 200


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PromptAccepted:
    """``POST /prompt`` answered 200. ``number`` orders the queue (negative with ``front``;
    ``None`` from servers too old to send it). ``node_errors`` lists outputs the server
    dropped while still accepting the others (normalised like a 400's)."""

    prompt_id: str
    number: int | float | None
    node_errors: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryEntry:
    """One finished job from ``GET /history/{id}``.

    ``images`` flattens every node's ``images`` in the order of ``outputs``; ``status_str``
    is ``success``/``error`` (``None`` on servers that predate it); ``messages`` is the
    job's recorded event list as ``(name, data)`` pairs.
    """

    prompt_id: str
    outputs: dict[str, Any]
    images: list[ImageRef]
    status_str: str | None
    completed: bool | None
    messages: list[tuple[str, Any]]
    meta: dict[str, Any]
    number: int | float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def message(self, name: str) -> Any:
        """The data of the first recorded message called ``name`` (or ``None``)."""
        for msg_name, data in self.messages:
            if msg_name == name:
                return data
        return None

    @property
    def succeeded(self) -> bool:
        return self.status_str == "success" and not self.interrupted

    @property
    def failed(self) -> bool:
        return self.status_str == "error" and not self.interrupted

    @property
    def interrupted(self) -> bool:
        return any(name == "execution_interrupted" for name, _ in self.messages)


@dataclass(frozen=True)
class QueueState:
    """``GET /queue``. ``pending`` is in run order: the server's list is a heap, so it is
    sorted here by queue number (what the official frontend shows)."""

    running: list[str]
    pending: list[str]
    numbers: dict[str, int | float] = field(default_factory=dict)

    def contains(self, prompt_id: str) -> bool:
        return prompt_id in self.running or prompt_id in self.pending

    def jobs_ahead(self, prompt_id: str) -> int | None:
        """How many jobs run before ``prompt_id`` (0 when running, None when not queued)."""
        if prompt_id in self.running:
            return 0
        if prompt_id in self.pending:
            return len(self.running) + self.pending.index(prompt_id)
        return None


@dataclass(frozen=True)
class SystemStats:
    """``GET /system_stats``: ``version`` is ``comfyui_version`` (``None`` on old servers)."""

    version: str | None
    python_version: str | None
    pytorch_version: str | None
    devices: list[dict[str, Any]]
    ram_total: int | None
    ram_free: int | None
    os: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Features:
    """``GET /features``. ``available`` is False for servers older than the route (their
    404): they have none of the features, and no published upload limit."""

    max_upload_size: int | None
    supports_preview_metadata: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    available: bool = True


@dataclass(frozen=True)
class JobStatus:
    """``GET /api/jobs/{id}``: unlike ``/history`` it tells "unknown" (``None``) from "not
    finished" (``pending``/``in_progress``). ``status`` is kept as sent when a newer server
    adds a value."""

    prompt_id: str
    status: str
    outputs: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def images(self) -> list[ImageRef]:
        return images_of_outputs(self.outputs)

    @property
    def is_terminal(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class UploadResult:
    """``POST /upload/image``: the name the server stored the file under (it may differ
    from the one sent: ``x (1).png``), to put into the workflow."""

    name: str
    subfolder: str
    type: str

    @property
    def workflow_value(self) -> str:
        """What a LoadImage ``image`` input needs: ``subfolder/name`` or ``name``."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


# --------------------------------------------------------------------------- body helpers


class _Call:
    """What every error of one parse needs to say where it happened."""

    __slots__ = ("bad_request_hint", "max_upload_size", "page_origin", "prompt_id", "route",
                 "server")

    def __init__(self, route: str | None, server: str | None, prompt_id: str | None,
                 page_origin: str | None, max_upload_size: int | None,
                 bad_request_hint: str | None = None) -> None:
        self.route = route
        self.server = server
        self.prompt_id = prompt_id
        self.page_origin = page_origin
        self.max_upload_size = max_upload_size
        self.bad_request_hint = bad_request_hint

    def error(self, cls: type[ServerError], message: str, *, hint: str | None = None,
              **details: Any) -> ServerError:
        if self.route:
            message = f"{self.route}: {message}"
            details.setdefault("route", self.route)
        return cls(message, server=self.server, prompt_id=self.prompt_id, hint=hint,
                   details=details)


def _header(headers: Any, name: str) -> str:
    if not isinstance(headers, Mapping):
        return ""
    value = headers.get(name)
    if value is None:
        for key, item in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = item
                break
    return "" if value is None else str(value)


def _is_empty(body: Any) -> bool:
    if body is None:
        return True
    if isinstance(body, (bytes, bytearray, str)):
        return len(body) == 0 or (isinstance(body, str) and not body.strip())
    if isinstance(body, memoryview):
        return body.nbytes == 0
    return False


def _text(body: Any, limit: int = 8192) -> str:
    if isinstance(body, str):
        return body[:limit]
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body[:limit]).decode("utf-8", "replace")
    return ""


# C0 controls and DEL -> space, in one C-level pass (a per-character generator costs ~1 ms
# per 8 KiB under Pyodide).
_CONTROLS = {**{i: " " for i in range(32)}, 127: " "}


def _clean(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """One line, printable, bounded: safe to show in a page and in a log."""
    printable = text.translate(_CONTROLS)
    line = " ".join(printable.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _html_title(text: str) -> str | None:
    low = text.lower()
    start = low.find("<title")
    if start < 0:
        return None
    start = low.find(">", start)
    end = low.find("</title", start)
    if start < 0 or end < 0:
        return None
    title = _clean(text[start + 1 : end], 80)
    return title or None


def _html_text(headers: Any, text: str) -> bool:
    head = text.lstrip()[:64].lower()
    ctype = _header(headers, "content-type").lower()
    return "text/html" in ctype or head.startswith(("<!doctype html", "<html", "<head", "<body"))


def _is_html(headers: Any, body: Any) -> bool:
    """An HTML page (a proxy's or a login page) where JSON was expected: the check of
    ``_describe`` without building the excerpt, for the success path."""
    return _html_text(headers, _text(body))


def _describe(headers: Any, body: Any) -> tuple[str, bool]:
    """``(excerpt, is_html)``: what came back, in one short sanitised line."""
    text = _text(body)
    if _html_text(headers, text):
        title = _html_title(text)
        return (_HTML_PAGE + (f' (page title "{title}")' if title else ""), True)
    if text and text.count("\ufffd") * 10 > len(text):
        size = len(body) if isinstance(body, (bytes, bytearray, str)) else 0
        return (f"binary data ({size} bytes)" if size else "binary data", False)
    return _clean(text), False


def _fmt_size(n: int) -> str:
    mb = f"{n / 1048576:.1f}".rstrip("0").rstrip(".")
    return f"{mb} MB"


def _origin_hint(page_origin: str | None) -> str:
    origin = page_origin or ORIGIN_PLACEHOLDER
    return (f"start ComfyUI with --enable-cors-header {origin} (or '*'), or serve this page "
            "from the server's own origin")


def upload_too_large(
    server: str | None,
    *,
    size: int | None = None,
    limit: int | None = None,
    prompt_id: str | None = None,
    excerpt: str | None = None,
) -> UploadTooLarge:
    """The ``UploadTooLarge`` for a 413, or for a file known to exceed ``limit`` before it is
    sent (``/features`` publishes the limit, so a big file can fail without a long upload)."""
    message = "the upload is larger than the server accepts"
    if size is not None and limit:
        message += f" ({_fmt_size(size)}, limit {_fmt_size(limit)})"
    elif limit:
        message += f" (limit {_fmt_size(limit)})"
    elif size is not None:
        message += f" ({_fmt_size(size)})"
    details: dict[str, Any] = {"status": 413, "size": size, "limit": limit}
    if excerpt:
        details["excerpt"] = excerpt
    return UploadTooLarge(
        message,
        server=server,
        prompt_id=prompt_id,
        hint="send a smaller image, or start ComfyUI with a larger --max-upload-size (in MB)",
        details=details,
    )


def _check(status: int, headers: Any, body: Any, call: _Call) -> None:
    if 200 <= status < 300:
        return
    if status == 403 and _is_empty(body):
        # ComfyUI's origin middleware (no --enable-cors-header) answers an empty 403 to any
        # cross-origin request, preflight included (rec: origin_check_default).
        raise call.error(
            CrossOriginBlocked,
            "the server refused this page's origin (403 with an empty body)",
            hint=_origin_hint(call.page_origin),
            status=status,
            page_origin=call.page_origin,
        )
    excerpt, is_html = _describe(headers, body)
    if status == 413:
        err = upload_too_large(call.server, limit=call.max_upload_size, prompt_id=call.prompt_id,
                               excerpt=excerpt)
        if call.route:
            err.details["route"] = call.route
        raise err
    reason = _REASONS.get(status)
    answered = f"the server answered {status}" + (f" {reason}" if reason else "")
    details: dict[str, Any] = {"status": status, "excerpt": excerpt, "html": is_html,
                               "route_missing": False}
    if status in (404, 405) and not is_html and (_is_empty(body) or _error_field(body)):
        # ComfyUI's own "no such item" (an empty 404 from /view, a JSON error from /api/jobs).
        said = _error_field(body)
        raise call.error(BadResponse, f"not found ({status})" + (f": {said}" if said else ""),
                         **details)
    if status in (404, 405):
        details["route_missing"] = True
        raise call.error(
            BadResponse,
            f"{answered}: this server has no such route"
            + ("" if not is_html else f"; {excerpt}"),
            hint="the server may be too old for this client or not a ComfyUI server: check the "
            "URL (and any path prefix)",
            **details,
        )
    hint = None
    if status == 401:
        hint = "a proxy in front of the server wants credentials: set this server's token"
    elif status == 403:
        hint = ("the server or a proxy refused the request: check this server's token; "
                + _origin_hint(call.page_origin))
    elif status == 400:
        hint = call.bad_request_hint
    elif status in (502, 503, 504):
        hint = "a proxy could not reach ComfyUI: is it running?"
    elif status >= 500:
        hint = "the server failed while answering: its console log says why"
    if is_html:
        hint = hint or "check the server URL; a proxy or login page answered instead of ComfyUI"
    raise call.error(BadResponse, f"{answered}" + (f": {excerpt}" if excerpt else ""), hint=hint,
                     **details)


def _error_field(body: Any) -> str | None:
    """The ``error`` text of a small JSON error body (``{"error": "Job not found"}``)."""
    data = _try_json(body)
    if isinstance(data, Mapping):
        err = data.get("error")
        if isinstance(err, str):
            return _clean(err, 120)
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return _clean(err["message"], 120)
    return None


def _try_json(body: Any) -> Any:
    if _is_empty(body):
        return None
    try:
        return _json.loads(bytes(body) if isinstance(body, memoryview) else body)
    except (ValueError, TypeError):
        return None


def _json_body(status: int, headers: Any, body: Any, call: _Call) -> Any:
    _check(status, headers, body, call)
    if _is_empty(body):
        raise call.error(BadResponse, f"the server answered {status} with an empty body where "
                         "JSON was expected", status=status)
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        raise call.error(BadResponse, f"the body is {kind_of(body)}, not bytes: the transport "
                         "must read JSON answers as bytes", status=status)
    # The excerpt is built only when it will be shown: on every successful answer it cost
    # a sanitising pass over the first 8 KiB of the body (three times per job).
    if _is_html(headers, body):
        excerpt, _ = _describe(headers, body)
        raise call.error(BadResponse, f"{excerpt} (HTTP {status})",
                         hint="check the server URL; if a proxy or login page sits in front of "
                         "ComfyUI, configure this server's token",
                         status=status, excerpt=excerpt, html=True)
    try:
        return _json.loads(bytes(body) if isinstance(body, memoryview) else body)
    except ValueError as exc:
        why = getattr(exc, "msg", None) or type(exc).__name__
        excerpt, _ = _describe(headers, body)
        raise call.error(BadResponse, f"the answer is not valid JSON ({why}): {excerpt}",
                         status=status, excerpt=excerpt, html=False) from None


def _json_object(status: int, headers: Any, body: Any, call: _Call) -> dict[str, Any]:
    data = _json_body(status, headers, body, call)
    if not isinstance(data, dict):
        raise call.error(BadResponse, f"expected a JSON object, got {kind_of(data)}",
                         status=status)
    return data


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def check_status(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    server: str | None = None,
    prompt_id: str | None = None,
    page_origin: str | None = None,
    max_upload_size: int | None = None,
    route: str | None = None,
) -> None:
    """Return on 2xx; otherwise raise the typed error the status means (see module doc).

    Used by every parser, and directly for answers with no body to parse (``/view``,
    ``POST /queue``). ``route`` (``"GET /view"``) prefixes the messages when known.
    """
    _check(status, headers, body, _Call(route, server, prompt_id, page_origin, max_upload_size))


def parse_empty(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> None:
    """Answers whose body is not used (``POST /queue``, ``POST /history``, ``POST /free``)."""
    _check(status, headers, body, _Call(None, server, prompt_id, page_origin, max_upload_size))


# --------------------------------------------------------------------------- POST /prompt


def _norm_error(raw: Any) -> dict[str, Any]:
    """One error as ``{type, message, details, extra_info}``, whatever the server's era.

    A string (``{"error": "no prompt"}`` from ComfyUI's server.py before 2025; the very first
    servers answered a bare string) becomes the message; a multi-line string keeps its first
    line as the message and the rest as details.
    """
    if isinstance(raw, Mapping):
        extra = raw.get("extra_info")
        details = raw.get("details")
        return {
            "type": raw.get("type") if isinstance(raw.get("type"), str) else "",
            "message": raw.get("message") if isinstance(raw.get("message"), str) else "",
            "details": details if isinstance(details, str) else ("" if details is None
                                                                 else str(details)),
            "extra_info": dict(extra) if isinstance(extra, Mapping) else {},
        }
    if isinstance(raw, str):
        first, _, rest = raw.strip().partition("\n")
        return {"type": "", "message": first.strip(), "details": " ".join(rest.split()),
                "extra_info": {}}
    return {"type": "", "message": "", "details": "", "extra_info": {}}


def _looks_like_error(value: Any) -> bool:
    return isinstance(value, Mapping) and ("message" in value or "type" in value) \
        and "errors" not in value


def _norm_node_entry(entry: Any) -> dict[str, Any]:
    if isinstance(entry, Mapping):
        errors = entry.get("errors")
        if errors is None and _looks_like_error(entry):
            errs = [_norm_error(entry)]
        elif isinstance(errors, (list, tuple)):
            errs = [_norm_error(e) for e in errors]
        elif errors is None:
            errs = []
        else:
            errs = [_norm_error(errors)]
        deps = entry.get("dependent_outputs")
        cls = entry.get("class_type")
        return {
            "errors": errs,
            "dependent_outputs": [str(d) for d in deps] if isinstance(deps, (list, tuple))
            else [],
            "class_type": cls if isinstance(cls, str) else None,
        }
    if isinstance(entry, (list, tuple)):
        return {"errors": [_norm_error(e) for e in entry], "dependent_outputs": [],
                "class_type": None}
    return {"errors": [_norm_error(entry)], "dependent_outputs": [], "class_type": None}


def normalize_node_errors(raw: Any) -> dict[str, dict[str, Any]]:
    """``node_errors`` in today's dict form, whatever shape the server sent.

    ComfyUI 0.33 sends ``{node_id: {"errors": [...], "dependent_outputs": [...],
    "class_type": ...}}``. Older servers sent a *list*: ``[]`` from server.py's "no prompt"
    branch and from execution.py's early returns (``return (False, error, [], [])``), and
    hand-rolled servers send ``[{"node_id", ...error}]`` or ``[[node_id, error], ...]``;
    each of those lands under its node id (``""`` when it names none).
    """
    if raw is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    if isinstance(raw, Mapping):
        for node_id, entry in raw.items():
            out[str(node_id)] = _norm_node_entry(entry)
        return out
    if isinstance(raw, (list, tuple)):
        for item in raw:
            if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (str,
                                                                                          int)):
                node_id, entry = str(item[0]), item[1]
            elif isinstance(item, Mapping) and isinstance(item.get("node_id"), (str, int)):
                node_id, entry = str(item["node_id"]), {k: v for k, v in item.items()
                                                         if k != "node_id"}
            else:
                node_id, entry = "", item
            norm = _norm_node_entry(entry)
            slot = out.setdefault(node_id, {"errors": [], "dependent_outputs": [],
                                            "class_type": None})
            slot["errors"].extend(norm["errors"])
            slot["dependent_outputs"].extend(norm["dependent_outputs"])
            slot["class_type"] = slot["class_type"] or norm["class_type"]
        return out
    return {"": _norm_node_entry(raw)}


def _error_text(err: Mapping[str, Any]) -> str:
    """``input: message (what the details add)`` for one normalised error."""
    message = err.get("message") or err.get("type") or "invalid"
    details = err.get("details") or ""
    extra = err.get("extra_info") or {}
    name = extra.get("input_name") if isinstance(extra.get("input_name"), str) else None
    rest = details
    if name:
        if rest == name:
            rest = ""
        else:
            for sep in (": ", ", ", " - ", " "):
                if rest.startswith(name + sep):
                    rest = rest[len(name) + len(sep):]
                    break
    etype = extra.get("exception_type")
    if rest and isinstance(etype, str) and etype and etype not in rest:
        rest = f"{etype}: {rest}"
    text = f"{name}: {message}" if name else message
    if rest and rest not in message:
        text += f" ({_clean(rest, 240)})"
    return _clean(text, 400)


def _node_label(node_id: str, cls: str | None) -> str:
    return f"node {node_id} ({cls})" if cls else f"node {node_id}"


def summarize_node_errors(error: Mapping[str, Any], node_errors: Mapping[str, Any]) -> list[str]:
    """One human line per node error: ``node 3 (ImageScale): width: Value 100000 bigger than
    max of 16384``. Without node errors, one line from the top-level error, naming the
    node when the server says which (``missing_node_type``)."""
    lines: list[str] = []
    for node_id, entry in node_errors.items():
        cls = entry.get("class_type")
        errors = entry.get("errors") or [{}]
        for err in errors:
            text = _error_text(err)
            lines.append(f"{_node_label(node_id, cls)}: {text}" if node_id else text)
    if lines:
        return lines
    message = error.get("message") or error.get("type") or ""
    details = error.get("details") or ""
    extra = error.get("extra_info") or {}
    node_id = extra.get("node_id")
    if isinstance(node_id, (str, int)) and str(node_id):
        cls = extra.get("class_type") if isinstance(extra.get("class_type"), str) else None
        return [_clean(f"{_node_label(str(node_id), cls)}: {message}", 400)]
    if details and details not in message:
        message = f"{message}: {details}" if message else details
    return [_clean(message, 400)] if message else []


_FIX_BY_TYPE = {
    "prompt_no_outputs": "add an output node such as SaveImage or PreviewImage",
    "invalid_prompt_id": "let the client generate the prompt id (a lowercase UUID)",
}


def _invalid_workflow(data: Mapping[str, Any], call: _Call, status: int) -> InvalidWorkflow:
    error = _norm_error(data.get("error"))
    node_errors = normalize_node_errors(data.get("node_errors"))
    summary = summarize_node_errors(error, node_errors)
    message = error["message"] or (summary[0] if summary else "the server rejected the workflow")
    if error["type"] == "missing_node_type":
        cls = error["extra_info"].get("class_type")
        hint: str | None = (f"install the node pack that provides {cls} on this server, or "
                            "remove that node" if isinstance(cls, str) else None)
    elif error["type"] in _FIX_BY_TYPE:
        hint = _FIX_BY_TYPE[error["type"]]
    elif node_errors:
        hint = "; ".join(summary[:3]) + (f" (and {len(summary) - 3} more)"
                                         if len(summary) > 3 else "")
    else:
        hint = summary[0] if summary and summary[0] != message else None
    return InvalidWorkflow(
        message,
        server=call.server,
        prompt_id=call.prompt_id,
        hint=hint,
        details={"status": status, "error": error, "node_errors": node_errors,
                 "summary": summary},
    )


def parse_prompt_response(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> PromptAccepted:
    """``POST /prompt``: ``PromptAccepted``, or ``InvalidWorkflow`` for a 400 whose body is
    ComfyUI's ``{"error", "node_errors"}`` (in any of its historical shapes)."""
    call = _Call("POST /prompt", server, prompt_id, page_origin, max_upload_size)
    if status == 400:
        data = _try_json(body)
        if isinstance(data, Mapping) and ("error" in data or "node_errors" in data):
            raise _invalid_workflow(data, call, status)
        if isinstance(data, str) and data.strip():
            raise _invalid_workflow({"error": data}, call, status)
        if data is None and not _is_empty(body) and not _describe(headers, body)[1]:
            # The first servers answered a rejected prompt with the reason as plain text.
            text = _text(body).strip()
            if text and not text.startswith(("{", "[")):
                raise _invalid_workflow({"error": text}, call, status)
    data = _json_object(status, headers, body, call)
    pid = data.get("prompt_id")
    if not isinstance(pid, str) or not pid:
        if "error" in data or "node_errors" in data:
            # Some wrappers answer a rejection with 200: the body still says it all.
            raise _invalid_workflow(data, call, status)
        raise call.error(BadResponse, "the answer has no prompt_id: the job may not be queued",
                         hint="check the server's queue before retrying", status=status)
    return PromptAccepted(
        prompt_id=pid,
        number=_number(data.get("number")),
        node_errors=normalize_node_errors(data.get("node_errors")),
    )


# --------------------------------------------------------------------------- history & queue


def parse_history(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> HistoryEntry | None:
    """``GET /history/{id}``: the entry, or ``None`` for ``{}``.

    ``{}`` means "unknown" *or* "not finished yet" (``execution_success`` is sent before the
    history is written): callers retry a few times before believing a job lost.
    """
    call = _Call("GET /history", server, prompt_id, page_origin, max_upload_size)
    data = _json_object(status, headers, body, call)
    if not data:
        return None
    if prompt_id is not None:
        if prompt_id not in data:
            return None
        pid, entry = prompt_id, data[prompt_id]
    elif len(data) == 1:
        pid, entry = next(iter(data.items()))
    else:
        raise call.error(BadResponse, f"{len(data)} history entries where one was expected: "
                         "pass the prompt_id to pick one")
    if not isinstance(entry, dict):
        raise call.error(BadResponse, f"history entry {pid} is {kind_of(entry)}, not an object")
    outputs = entry.get("outputs", {})
    if not isinstance(outputs, dict):
        raise call.error(BadResponse, f"history entry {pid}: outputs is {kind_of(outputs)}")
    st = entry.get("status")
    st = st if isinstance(st, Mapping) else {}
    messages = []
    for item in st.get("messages") or ():
        if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
            messages.append((item[0], item[1]))
    completed = st.get("completed")
    prompt = entry.get("prompt")
    meta = entry.get("meta")
    return HistoryEntry(
        prompt_id=pid,
        outputs=outputs,
        images=images_of_outputs(outputs),
        status_str=_str(st.get("status_str")),
        completed=completed if isinstance(completed, bool) else None,
        messages=messages,
        meta=meta if isinstance(meta, dict) else {},
        number=_number(prompt[0]) if isinstance(prompt, list) and prompt else None,
        raw=entry,
    )


def parse_queue(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> QueueState:
    """``GET /queue``: items are ``[number, prompt_id, prompt, extra_data, outputs, ...]``."""
    call = _Call("GET /queue", server, prompt_id, page_origin, max_upload_size)
    data = _json_object(status, headers, body, call)
    numbers: dict[str, int | float] = {}

    def ids(key: str) -> list[tuple[int | float, str]]:
        items = data.get(key, [])
        if not isinstance(items, list):
            raise call.error(BadResponse, f"{key} is {kind_of(items)}, not a list")
        out = []
        for item in items:
            if not (isinstance(item, list) and len(item) >= 2 and isinstance(item[1], str)):
                raise call.error(BadResponse, f"{key} has an item that is not "
                                 "[number, prompt_id, ...]")
            number = _number(item[0])
            out.append((0 if number is None else number, item[1]))
            numbers[item[1]] = 0 if number is None else number
        return out

    running = [pid for _, pid in ids("queue_running")]
    pending = [pid for _, pid in sorted(ids("queue_pending"), key=lambda p: p[0])]
    return QueueState(running=running, pending=pending, numbers=numbers)


def parse_prompt_info(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> int:
    """``GET /prompt`` -> ``queue_remaining`` (running + pending jobs)."""
    call = _Call("GET /prompt", server, prompt_id, page_origin, max_upload_size)
    data = _json_object(status, headers, body, call)
    info = data.get("exec_info")
    remaining = _int(info.get("queue_remaining")) if isinstance(info, Mapping) else None
    if remaining is None:
        raise call.error(BadResponse, "no exec_info.queue_remaining in the answer")
    return remaining


# --------------------------------------------------------------------------- jobs API


def parse_job(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> JobStatus | None:
    """``GET /api/jobs/{id}``: ``None`` for ComfyUI's ``404 {"error": "Job not found"}``.

    A 404 *without* that JSON is the router's (a server older than the jobs API): that
    raises ``BadResponse`` with ``details["route_missing"]`` so the caller falls back to
    ``/queue`` + ``/history``.
    """
    call = _Call("GET /api/jobs", server, prompt_id, page_origin, max_upload_size)
    if status == 404:
        data = _try_json(body)
        if isinstance(data, Mapping) and "error" in data:
            return None
    data = _json_object(status, headers, body, call)
    job_status = data.get("status")
    if not isinstance(job_status, str) or not job_status:
        raise call.error(BadResponse, "the job has no status")
    pid = data.get("id") if isinstance(data.get("id"), str) else prompt_id
    if not pid:
        raise call.error(BadResponse, "the job has no id")
    outputs = data.get("outputs")
    return JobStatus(prompt_id=pid, status=job_status,
                     outputs=outputs if isinstance(outputs, dict) else {}, raw=data)


def parse_cancel(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> bool:
    """``POST /api/jobs/{id}/cancel`` -> whether a job was cancelled (False: already over)."""
    call = _Call("POST /api/jobs/cancel", server, prompt_id, page_origin, max_upload_size)
    data = _json_object(status, headers, body, call)
    cancelled = data.get("cancelled")
    if not isinstance(cancelled, bool):
        raise call.error(BadResponse, "no boolean 'cancelled' in the answer")
    return cancelled


def parse_interrupt(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> None:
    """``POST /interrupt``: 200 with an empty body, also when nothing matched (no-op)."""
    _check(status, headers, body,
           _Call("POST /interrupt", server, prompt_id, page_origin, max_upload_size))


# --------------------------------------------------------------------------- uploads


def parse_upload(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> UploadResult:
    """``POST /upload/image`` -> the stored name (413 -> ``UploadTooLarge``)."""
    call = _Call("POST /upload/image", server, prompt_id, page_origin, max_upload_size,
                 bad_request_hint="the server refused the file name or subfolder (a path "
                 "outside its folder?) or got no file part")
    data = _json_object(status, headers, body, call)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise call.error(BadResponse, "the answer has no file name")
    sub = data.get("subfolder")
    kind = data.get("type")
    return UploadResult(name=name, subfolder=sub if isinstance(sub, str) else "",
                        type=kind if isinstance(kind, str) and kind else "input")


def answer_matches(status: int, body: Any, expect: Mapping[str, Any]) -> bool:
    """Is this a 2xx JSON object answer with every field of ``expect`` equal? The condition
    under which a prepared follow-up request may go out at once (``HttpGate.send_pair``):
    e.g. an upload answered with the very name the follow-up's workflow reads. The page's
    comfyui.js checks the same, field by field, in ``requestPair``."""
    if not 200 <= status < 300:
        return False
    data = _try_json(body)
    return isinstance(data, Mapping) and all(data.get(k) == v for k, v in expect.items())


def missing_input_files(node_errors: Any, names: list[str] | tuple[str, ...]) -> list[str]:
    """Which of ``names`` a rejected ``POST /prompt`` says the server does not hold: a
    load-image node's ``custom_validation_failed`` whose details end with ``Invalid image
    file: NAME`` (recorded in node_errors_400.json). How a client learns that a server lost
    an input it uploaded before (a restart, a cleaned input folder)."""
    found = []
    for entry in normalize_node_errors(node_errors).values():
        for err in entry.get("errors") or ():
            details = str(err.get("details") or "") if isinstance(err, Mapping) else ""
            for name in names:
                if name not in found and details.endswith(f"Invalid image file: {name}"):
                    found.append(name)
    return found


# --------------------------------------------------------------------------- server info


def parse_system_stats(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> SystemStats:
    """``GET /system_stats`` -> version, Python/PyTorch, devices and memory (health probe)."""
    call = _Call("GET /system_stats", server, prompt_id, page_origin, max_upload_size)
    data = _json_object(status, headers, body, call)
    system = data.get("system")
    if not isinstance(system, Mapping):
        raise call.error(BadResponse, "no 'system' object: this does not look like ComfyUI",
                         hint="check the server URL")
    devices = []
    for dev in data.get("devices") or ():
        if isinstance(dev, Mapping):
            devices.append({
                "name": _str(dev.get("name")),
                "type": _str(dev.get("type")),
                "index": _int(dev.get("index")),
                "vram_total": _int(dev.get("vram_total")),
                "vram_free": _int(dev.get("vram_free")),
            })
    return SystemStats(
        version=_str(system.get("comfyui_version")),
        python_version=_str(system.get("python_version")),
        pytorch_version=_str(system.get("pytorch_version")),
        devices=devices,
        ram_total=_int(system.get("ram_total")),
        ram_free=_int(system.get("ram_free")),
        os=_str(system.get("os")),
        raw=data,
    )


def parse_features(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> Features:
    """``GET /features``. The router's 404 (a server older than the route, answering
    aiohttp's plain ``404: Not Found``) gives ``Features(available=False)``; an HTML 404
    still raises, since that is a proxy, not ComfyUI."""
    call = _Call("GET /features", server, prompt_id, page_origin, max_upload_size)
    if status == 404 and not _describe(headers, body)[1]:
        return Features(max_upload_size=None, supports_preview_metadata=False, raw={},
                        available=False)
    data = _json_object(status, headers, body, call)
    limit = _int(data.get("max_upload_size"))
    return Features(
        max_upload_size=limit if limit and limit > 0 else None,
        supports_preview_metadata=data.get("supports_preview_metadata") is True,
        raw=data,
    )


def parse_object_info(
    status: int, headers: Mapping[str, str], body: Any, *, server: str | None = None,
    prompt_id: str | None = None, page_origin: str | None = None,
    max_upload_size: int | None = None,
) -> dict[str, Any]:
    """``GET /object_info[/{class}]`` -> ``{class_type: definition}`` (``{}`` if unknown)."""
    call = _Call("GET /object_info", server, prompt_id, page_origin, max_upload_size)
    return _json_object(status, headers, body, call)
