"""WebSocket frames -> event values, named after the wire (the shape of h11's ``_events.py``).

Each server message becomes a frozen dataclass whose class attribute ``type`` is the wire's
``type`` and which always has a ``prompt_id`` (``None`` where the message carries none), so
routing code can ask any event "which job are you for?" without knowing its class.
Unknown message types are *kept* as ``UnknownMessage``: a newer server or an extension
(``crystools.monitor``...) must never break a page.

Binary frames start with a big-endian u32 event type. Previews are decoded without copying:
``PreviewImage.image`` is a ``memoryview`` slice of the caller's buffer and ``image_offset``
tells a browser seam where the image starts, so it can cut a ``Blob`` from the JS buffer
itself after decoding only the header bytes (``binary_header`` says how many are needed).
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from ..errors import ProtocolError
from ._shared import ImageRef, image_refs, kind_of

__all__ = [
    "BINARY_PREVIEW_IMAGE",
    "BINARY_PREVIEW_IMAGE_WITH_METADATA",
    "BINARY_TEXT",
    "BINARY_UNENCODED_PREVIEW_IMAGE",
    "DEFAULT_MAX_TEXT_BYTES",
    "BinaryEvent",
    "Event",
    "Executed",
    "Executing",
    "ExecutionCached",
    "ExecutionError",
    "ExecutionInterrupted",
    "ExecutionStart",
    "ExecutionSuccess",
    "FeatureFlags",
    "ImageRef",
    "NodeProgress",
    "PreviewImage",
    "Progress",
    "ProgressState",
    "ProgressText",
    "Status",
    "TextEvent",
    "UnknownBinary",
    "UnknownMessage",
    "binary_header",
    "decode_binary",
    "decode_binary_header",
    "decode_text",
    "event_to_dict",
]

#: Text frames larger than this are refused: a frame that size is a bug or an attack, and
#: parsing it would freeze the page.
DEFAULT_MAX_TEXT_BYTES = 8 * 1024 * 1024
# json's own decoder, whose C scanner ``decode_text`` calls directly on its fast lane
_scan_once = _json.JSONDecoder().scan_once

# ComfyUI's protocol.BinaryEventTypes.
BINARY_PREVIEW_IMAGE = 1
BINARY_UNENCODED_PREVIEW_IMAGE = 2  # server-internal; never seen on the socket
BINARY_TEXT = 3
BINARY_PREVIEW_IMAGE_WITH_METADATA = 4

_IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}


# --------------------------------------------------------------------------- text events


@dataclass(frozen=True)
class Status:
    """Queue length broadcast to every socket; ``sid`` only in the first frame (our id)."""

    type: ClassVar[str] = "status"
    prompt_id: ClassVar[None] = None
    queue_remaining: int | None
    sid: str | None = None


@dataclass(frozen=True)
class ExecutionStart:
    type: ClassVar[str] = "execution_start"
    prompt_id: str | None
    timestamp: int | float | None = None


@dataclass(frozen=True)
class ExecutionCached:
    """Nodes whose outputs come from the cache: they will not run (and send no
    ``executing``), though output nodes still replay their ``executed``."""

    type: ClassVar[str] = "execution_cached"
    prompt_id: str | None
    nodes: tuple[str, ...] = ()
    timestamp: int | float | None = None


@dataclass(frozen=True)
class Executing:
    """A node started. ``node is None`` is the job's final marker (sent after
    ``execution_success``/``_error``/``_interrupted``): the end of its events."""

    type: ClassVar[str] = "executing"
    prompt_id: str | None
    node: str | None
    display_node: str | None = None

    @property
    def done(self) -> bool:
        return self.node is None


@dataclass(frozen=True)
class Progress:
    """Steps inside one node (samplers, SaveImageWebsocket...)."""

    type: ClassVar[str] = "progress"
    prompt_id: str | None
    node: str | None
    value: int | float
    max: int | float

    @property
    def fraction(self) -> float:
        return _fraction(self.value, self.max)


@dataclass(frozen=True)
class NodeProgress:
    """One node's entry in ``progress_state`` (``state``: ``running``/``finished``...)."""

    value: int | float
    max: int | float
    state: str | None = None
    node_id: str | None = None
    prompt_id: str | None = None
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None

    @property
    def fraction(self) -> float:
        if self.state == "finished":
            return 1.0
        return _fraction(self.value, self.max)


@dataclass(frozen=True)
class ProgressState:
    """Every node the job has touched so far, with its own progress."""

    type: ClassVar[str] = "progress_state"
    prompt_id: str | None
    nodes: Mapping[str, NodeProgress] = field(default_factory=dict)

    def overall_fraction(self, total_nodes: int | None = None) -> float:
        """Progress over the job: the nodes' fractions summed over ``total_nodes``.

        Pass the number of nodes that will run (the workflow's nodes minus cached ones):
        the message only lists nodes that have started, so dividing by ``len(nodes)``
        alone (the default) overstates early progress.
        """
        total = total_nodes if total_nodes and total_nodes > 0 else len(self.nodes)
        if not total:
            return 0.0
        done = sum(node.fraction for node in self.nodes.values())
        return min(done / total, 1.0)


@dataclass(frozen=True)
class Executed:
    """An output node finished; ``images`` lists its ``output["images"]`` as ``ImageRef``."""

    type: ClassVar[str] = "executed"
    prompt_id: str | None
    node: str | None
    display_node: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    images: tuple[ImageRef, ...] = ()


@dataclass(frozen=True)
class ExecutionSuccess:
    """The job succeeded. Sent *before* the history is written: wait for
    ``Executing(node=None)`` and still retry an empty ``/history`` a few times."""

    type: ClassVar[str] = "execution_success"
    prompt_id: str | None
    timestamp: int | float | None = None


@dataclass(frozen=True)
class ExecutionError:
    type: ClassVar[str] = "execution_error"
    prompt_id: str | None
    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()
    exception_message: str = ""
    exception_type: str = ""
    traceback: tuple[str, ...] = ()
    current_inputs: dict[str, Any] = field(default_factory=dict)
    current_outputs: Any = None
    timestamp: int | float | None = None


@dataclass(frozen=True)
class ExecutionInterrupted:
    """Interrupted (or cancelled) at a node boundary; sent to every socket."""

    type: ClassVar[str] = "execution_interrupted"
    prompt_id: str | None
    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()
    timestamp: int | float | None = None


@dataclass(frozen=True)
class FeatureFlags:
    """The server's answer to our ``feature_flags`` message."""

    type: ClassVar[str] = "feature_flags"
    prompt_id: ClassVar[None] = None
    flags: dict[str, Any] = field(default_factory=dict)

    @property
    def supports_preview_metadata(self) -> bool:
        return self.flags.get("supports_preview_metadata") is True

    @property
    def max_upload_size(self) -> int | None:
        value = self.flags.get("max_upload_size")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class UnknownMessage:
    """A message type this client does not know, kept whole (``prompt_id`` if its data has
    one, so it can still be routed)."""

    type: ClassVar[str] = "unknown"
    type_name: str
    data: Any = None
    prompt_id: str | None = None


# --------------------------------------------------------------------------- binary events


@dataclass(frozen=True)
class PreviewImage:
    """A preview frame. ``image`` is a zero-copy view into the frame (empty when only the
    header was decoded); ``image_offset`` is where the image starts in the frame.
    ``legacy`` frames (type 1) name neither job nor node."""

    type: ClassVar[str] = "preview_image"
    prompt_id: str | None
    node_id: str | None
    image_type: str
    image: memoryview = field(repr=False)
    image_offset: int
    metadata: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False


@dataclass(frozen=True)
class ProgressText:
    """Binary type 3: a node's progress text (``[u32 len][node_id][text]``)."""

    type: ClassVar[str] = "progress_text"
    node_id: str
    text: str
    prompt_id: str | None = None


@dataclass(frozen=True)
class UnknownBinary:
    type: ClassVar[str] = "unknown_binary"
    prompt_id: ClassVar[None] = None
    event_type: int
    data: memoryview = field(repr=False)


TextEvent = (
    Status | ExecutionStart | ExecutionCached | Executing | Progress | ProgressState | Executed
    | ExecutionSuccess | ExecutionError | ExecutionInterrupted | FeatureFlags | UnknownMessage
)
BinaryEvent = PreviewImage | ProgressText | UnknownBinary
Event = TextEvent | BinaryEvent


# --------------------------------------------------------------------------- text decoding


def _fraction(value: float, maximum: float) -> float:
    if not maximum or maximum <= 0:
        return 0.0
    return min(max(value / maximum, 0.0), 1.0)


class _Fields:
    """Typed reads of one message's ``data`` whose errors name the message and the field."""

    __slots__ = ("data", "server", "type_name")

    def __init__(self, type_name: str, data: Mapping[str, Any], server: str | None) -> None:
        self.type_name = type_name
        self.data = data
        self.server = server

    def fail(self, key: str, want: str, value: Any) -> ProtocolError:
        return ProtocolError(
            f"{self.type_name} message: '{key}' must be {want}, got {kind_of(value)}",
            server=self.server,
            details={"type": self.type_name, "field": key},
        )

    def node(self, key: str) -> str | None:
        """A node id: a string (a number is accepted and turned into one), or null."""
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise self.fail(key, "a node id (string) or null", value)

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self.fail(key, "a string", value)

    def number(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is default or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        raise self.fail(key, "a number", value)

    def nodes(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, "a list of node ids", value)
        out = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                out.append(str(item))
            else:
                raise self.fail(key, "a list of node ids", item)
        return tuple(out)

    def obj(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "an object", value)
        return value


def _status(f: _Fields) -> Status:
    status = f.data.get("status")
    remaining = None
    if isinstance(status, Mapping):
        info = status.get("exec_info")
        if isinstance(info, Mapping):
            value = info.get("queue_remaining")
            if isinstance(value, int) and not isinstance(value, bool):
                remaining = value
            elif value is not None:
                raise f.fail("status.exec_info.queue_remaining", "an integer", value)
    elif status is not None:
        raise f.fail("status", "an object", status)
    return Status(queue_remaining=remaining, sid=f.text("sid"))


# Fast lane for the two messages a sampler sends per step (hundreds per second; a flood is
# tens of thousands): when every field already has its usual type, build the event directly
# from the data dict; anything else (None from these) goes through the ``_Fields`` decoders,
# which convert or name the bad field, so both lanes give the same event or error.
# ``type(x) in`` (not ``isinstance``) so a bool is not a number; JSON gives no subclasses.
_NUM_TYPES = frozenset((int, float))
_ID_TYPES = frozenset((str, type(None)))


def _progress_fast(d: dict[str, Any]) -> Progress | None:
    pid, node, value, top = d.get("prompt_id"), d.get("node"), d.get("value", 0), d.get("max", 0)
    if (type(pid) in _ID_TYPES and type(node) in _ID_TYPES and type(value) in _NUM_TYPES
            and type(top) in _NUM_TYPES):
        return Progress(pid, node, value, top)
    return None


_NODE_FIELDS = tuple(f.name for f in fields(NodeProgress))  # the order ``values`` is in
_new = object.__new__


def _progress_state_fast(d: dict[str, Any]) -> ProgressState | None:
    raw, pid = d.get("nodes"), d.get("prompt_id")
    if type(raw) is not dict or type(pid) not in _ID_TYPES:
        return None
    nodes = {}
    for node_id, e in raw.items():
        if type(e) is not dict:
            return None
        values = (e.get("value", 0), e.get("max", 0), e.get("state"), e.get("node_id"),
                  e.get("prompt_id"), e.get("display_node_id"), e.get("parent_node_id"),
                  e.get("real_node_id"))
        if (type(values[0]) not in _NUM_TYPES or type(values[1]) not in _NUM_TYPES
                or not _ID_TYPES.issuperset(map(type, values[2:]))):
            return None
        # a frozen dataclass's __init__ sets its 8 fields one object.__setattr__ at a time;
        # filling the instance dict gives the same object (tests compare both lanes) faster
        node = _new(NodeProgress)
        node.__dict__.update(zip(_NODE_FIELDS, values, strict=True))
        nodes[node_id] = node
    return ProgressState(pid, nodes)


_FAST: dict[str, Callable[[dict[str, Any]], Any]] = {
    "progress": _progress_fast,
    "progress_state": _progress_state_fast,
}


def _progress_state(f: _Fields) -> ProgressState:
    raw = f.obj("nodes")
    nodes: dict[str, NodeProgress] = {}
    for node_id, entry in raw.items():
        if not isinstance(entry, Mapping):
            raise f.fail(f"nodes.{node_id}", "an object", entry)
        e = _Fields(f.type_name, entry, f.server)
        nodes[node_id] = NodeProgress(
            value=e.number("value", 0),
            max=e.number("max", 0),
            state=e.text("state"),
            node_id=e.node("node_id"),
            prompt_id=e.text("prompt_id"),
            display_node_id=e.node("display_node_id"),
            parent_node_id=e.node("parent_node_id"),
            real_node_id=e.node("real_node_id"),
        )
    return ProgressState(prompt_id=f.text("prompt_id"), nodes=nodes)


def _executed(f: _Fields) -> Executed:
    output = f.obj("output")
    return Executed(prompt_id=f.text("prompt_id"), node=f.node("node"),
                    display_node=f.node("display_node"), output=output,
                    images=image_refs(output))


def _execution_error(f: _Fields) -> ExecutionError:
    tb = f.data.get("traceback")
    if isinstance(tb, list):
        traceback = tuple(str(line) for line in tb)
    elif isinstance(tb, str):
        traceback = (tb,)
    else:
        traceback = ()
    return ExecutionError(
        prompt_id=f.text("prompt_id"),
        node_id=f.node("node_id"),
        node_type=f.text("node_type"),
        executed=f.nodes("executed"),
        exception_message=f.text("exception_message") or "",
        exception_type=f.text("exception_type") or "",
        traceback=traceback,
        current_inputs=f.obj("current_inputs"),
        current_outputs=f.data.get("current_outputs"),
        timestamp=f.number("timestamp"),
    )


_DECODERS: dict[str, Callable[[_Fields], Any]] = {
    "status": _status,
    "execution_start": lambda f: ExecutionStart(prompt_id=f.text("prompt_id"),
                                                timestamp=f.number("timestamp")),
    "execution_cached": lambda f: ExecutionCached(prompt_id=f.text("prompt_id"),
                                                  nodes=f.nodes("nodes"),
                                                  timestamp=f.number("timestamp")),
    "executing": lambda f: Executing(prompt_id=f.text("prompt_id"), node=f.node("node"),
                                     display_node=f.node("display_node")),
    "progress": lambda f: Progress(prompt_id=f.text("prompt_id"), node=f.node("node"),
                                   value=f.number("value", 0), max=f.number("max", 0)),
    "progress_state": _progress_state,
    "executed": _executed,
    "execution_success": lambda f: ExecutionSuccess(prompt_id=f.text("prompt_id"),
                                                    timestamp=f.number("timestamp")),
    "execution_error": _execution_error,
    "execution_interrupted": lambda f: ExecutionInterrupted(
        prompt_id=f.text("prompt_id"), node_id=f.node("node_id"),
        node_type=f.text("node_type"), executed=f.nodes("executed"),
        timestamp=f.number("timestamp")),
    "feature_flags": lambda f: FeatureFlags(flags=dict(f.data)),
}


def _checked_text(text: Any, max_bytes: int, server: str | None) -> Any:
    """A frame that is not a plain ``str`` a quarter of ``max_bytes`` long: bytes decoded,
    anything else refused, and the size checked in UTF-8 bytes."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        if len(text) > max_bytes:
            raise _too_big(len(text), max_bytes, server)
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"text frame is not valid UTF-8 (byte {exc.start})",
                                server=server) from None
    if not isinstance(text, str):
        raise ProtocolError(f"a text frame must be a string, got {type(text).__name__}",
                            server=server)
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _too_big(len(text.encode("utf-8", "surrogatepass")), max_bytes, server)
    return text


def decode_text(
    text: str | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    server: str | None = None,
) -> TextEvent:
    """One text frame -> its event. ``ProtocolError`` for an oversized frame, invalid JSON,
    a non-object, a missing ``type``, or a known type with a mistyped field (named)."""
    if type(text) is not str or len(text) * 4 > max_bytes:
        text = _checked_text(text, max_bytes, server)  # the usual frame needs none of it
    whole = False
    if type(text) is str:
        # the C scanner straight away (json.loads adds ~1 µs of Python per call); anything
        # it does not take whole (errors, surrounding whitespace) goes to json.loads below,
        # and what it took whole is not parsed twice
        try:
            msg, end = _scan_once(text, 0)
            whole = end == len(text)
        except (StopIteration, ValueError):
            pass
        if whole and type(msg) is dict:
            type_name = msg.get("type")
            data = msg.get("data")
            fast = _FAST.get(type_name) if type(data) is dict else None
            event = fast(data) if fast is not None else None
            if event is not None:
                return event
    if not whole:
        try:
            msg = _json.loads(text)
        except ValueError as exc:
            why = getattr(exc, "msg", type(exc).__name__)
            pos = getattr(exc, "pos", None)
            raise ProtocolError(
                f"text frame is not valid JSON ({why}"
                f"{f' at char {pos}' if pos is not None else ''})",
                server=server, details={"excerpt": text[:80]},
            ) from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"text frame is JSON {kind_of(msg)}, not an object", server=server)
    type_name = msg.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise ProtocolError("text frame has no 'type'", server=server,
                            details={"keys": sorted(str(k) for k in msg)[:10]})
    # Every ComfyUI message nests its fields in "data"; the very first servers put them
    # next to "type" ({"type": "status", "status": ...}), read the same way.
    data = msg["data"] if "data" in msg else {k: v for k, v in msg.items() if k != "type"}
    decoder = _DECODERS.get(type_name)
    if decoder is None:
        pid = data.get("prompt_id") if isinstance(data, Mapping) else None
        return UnknownMessage(type_name=type_name, data=data,
                              prompt_id=pid if isinstance(pid, str) else None)
    if not isinstance(data, dict):
        raise ProtocolError(f"{type_name} message: 'data' must be an object, got "
                            f"{kind_of(data)}", server=server, details={"type": type_name})
    return decoder(_Fields(type_name, data, server))


def _too_big(size: int, limit: int, server: str | None) -> ProtocolError:
    return ProtocolError(f"text frame of {size} bytes exceeds the {limit}-byte limit",
                         server=server, details={"size": size, "limit": limit})


# --------------------------------------------------------------------------- binary decoding


def _view(buf: Any, server: str | None) -> memoryview:
    try:
        view = memoryview(buf)
    except TypeError:
        raise ProtocolError(f"a binary frame must be bytes-like, got {type(buf).__name__}",
                            server=server) from None
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _u32(view: memoryview, at: int) -> int:
    return int.from_bytes(view[at : at + 4], "big")


def _need(view: memoryview, n: int, what: str, server: str | None) -> None:
    if len(view) < n:
        raise ProtocolError(
            f"binary frame truncated: {what} needs {n} bytes, the frame has {len(view)}",
            server=server, details={"field": what, "needed": n, "length": len(view)},
        )


def binary_header(buf_prefix: bytes | bytearray | memoryview) -> tuple[int, int | None]:
    """``(event_type, header_length)`` from the first bytes of a binary frame.

    ``header_length`` is how many leading bytes ``decode_binary_header`` needs: 8 for a
    legacy preview, ``8 + metadata_len`` for a type-4 preview (8 while the prefix is too
    short to read the length: ask again with 8 bytes), ``None`` for every other type (decode
    the whole frame: progress text is small). Needs at least 4 bytes.
    """
    view = _view(buf_prefix, None)
    _need(view, 4, "the event type", None)
    event_type = _u32(view, 0)
    if event_type == BINARY_PREVIEW_IMAGE:
        return event_type, 8
    if event_type == BINARY_PREVIEW_IMAGE_WITH_METADATA:
        if len(view) < 8:
            return event_type, 8
        return event_type, 8 + _u32(view, 4)
    return event_type, None


def _sniff(image: memoryview) -> str:
    head = bytes(image[:12])
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _decode(view: memoryview, header_only: bool, server: str | None) -> Any:
    _need(view, 4, "the event type", server)
    event_type = _u32(view, 0)
    if event_type == BINARY_PREVIEW_IMAGE:
        _need(view, 8, "the image format field", server)
        code = _u32(view, 4)
        image = view[8:8] if header_only else view[8:]
        mime = _IMAGE_FORMATS.get(code)
        metadata: dict[str, Any] = {"image_format": code}
        if mime is None:
            mime = _sniff(image) if len(image) else "application/octet-stream"
        return PreviewImage(prompt_id=None, node_id=None, image_type=mime, image=image,
                            image_offset=8, metadata=metadata, legacy=True)
    if event_type == BINARY_PREVIEW_IMAGE_WITH_METADATA:
        _need(view, 8, "the metadata length field", server)
        size = _u32(view, 4)
        end = 8 + size
        _need(view, end, f"the metadata ({size} bytes declared)", server)
        try:
            text = bytes(view[8:end]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("binary preview: the metadata is not valid UTF-8",
                                server=server, details={"field": "metadata"}) from None
        try:
            metadata = _json.loads(text)
        except ValueError:
            raise ProtocolError("binary preview: the metadata is not valid JSON",
                                server=server, details={"field": "metadata"}) from None
        if not isinstance(metadata, dict):
            raise ProtocolError(f"binary preview: the metadata is JSON {kind_of(metadata)}, "
                                "not an object", server=server, details={"field": "metadata"})
        image = view[end:end] if header_only else view[end:]
        mime = metadata.get("image_type")
        if not isinstance(mime, str) or not mime:
            mime = _sniff(image) if len(image) else "application/octet-stream"
        pid = metadata.get("prompt_id")
        node = metadata.get("node_id")
        return PreviewImage(
            prompt_id=pid if isinstance(pid, str) else None,
            node_id=str(node) if isinstance(node, (str, int)) and not isinstance(node, bool)
            else None,
            image_type=mime, image=image, image_offset=end, metadata=metadata, legacy=False,
        )
    if event_type == BINARY_TEXT:
        _need(view, 8, "the node id length field", server)
        size = _u32(view, 4)
        end = 8 + size
        _need(view, end, f"the node id ({size} bytes declared)", server)
        try:
            node_id = bytes(view[8:end]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("progress text: the node id is not valid UTF-8", server=server,
                                details={"field": "node_id"}) from None
        try:
            text = bytes(view[end:]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("progress text: the text is not valid UTF-8", server=server,
                                details={"field": "text"}) from None
        return ProgressText(node_id=node_id, text=text)
    return UnknownBinary(event_type=event_type, data=view[4:])


def decode_binary(
    buf: bytes | bytearray | memoryview, *, server: str | None = None
) -> BinaryEvent:
    """A whole binary frame -> ``PreviewImage`` | ``ProgressText`` | ``UnknownBinary``.

    Images are never copied: ``PreviewImage.image`` views ``buf`` (keep ``buf`` alive and
    unchanged while using it). Truncated or malformed headers raise ``ProtocolError``
    naming the field.
    """
    return _decode(_view(buf, server), False, server)


def decode_binary_header(
    buf_prefix: bytes | bytearray | memoryview, *, server: str | None = None
) -> BinaryEvent:
    """Like ``decode_binary`` from only the first ``binary_header(...)[1]`` bytes: a preview
    comes back with an empty ``image`` and the ``image_offset`` at which the caller slices
    its own (e.g. JS) buffer. Types without a fixed header need the whole frame."""
    return _decode(_view(buf_prefix, server), True, server)


# --------------------------------------------------------------------------- to page JS


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)
                if not isinstance(getattr(value, f.name), memoryview)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    return str(value)


def event_to_dict(event: Event) -> dict[str, Any]:
    """Plain JSON-safe data for page JavaScript: the wire's snake_case keys plus ``type`` and
    ``prompt_id``. Binary payloads (``image``, ``data`` views) are left out."""
    out: dict[str, Any] = {"type": event.type, "prompt_id": event.prompt_id}
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, memoryview):
            continue
        out[f.name] = _plain(value)
    return out
