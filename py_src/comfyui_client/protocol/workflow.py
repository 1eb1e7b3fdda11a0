"""The API-format workflow graph: validation and small edits that never mutate the caller's.

A ComfyUI "API format" workflow is ``{node_id: {"class_type": str, "inputs": {...}}}``; an
input is either a literal (JSON scalar) or a link ``[source_node_id, output_index]``.
Checking the shape here, before any request, turns the server's opaque 400/500 answers for
the commonest mistakes (the UI-format file, the whole request body instead of the graph, a
missing ``inputs``, a link to a deleted node) into messages that name the node and the fix.

Every function returns new data: the caller's dicts (often a page's JS object converted once)
are copied, never edited, so one workflow object can be submitted many times concurrently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError
from ._shared import kind_of, new_prompt_id

__all__ = [
    "LOAD_IMAGE_CLASSES",
    "ValidatedWorkflow",
    "content_upload_name",
    "find_nodes",
    "load_image_nodes",
    "load_image_nodes_inputs",
    "new_prompt_id",
    "pick_image_node",
    "set_input",
    "validate_filename",
    "validate_workflow",
]

#: Core nodes whose ``image`` input names a file in the server's input folder: the nodes an
#: upload feeds. (``LoadImageOutput`` reads the *output* folder, so it is not one of them.)
LOAD_IMAGE_CLASSES: tuple[str, ...] = ("LoadImage", "LoadImageMask")

_MAX_DEPTH = 64
_MAX_NAME_BYTES = 255  # a file name longer than this fails on every common file system
_API_FORMAT_HINT = (
    "export the workflow with 'Save (API Format)' / 'Export (API)' in ComfyUI: the API format "
    "maps node ids to {class_type, inputs}"
)


def _label(node_id: str, node: Any) -> str:
    cls = node.get("class_type") if isinstance(node, Mapping) else None
    return f"node {node_id} ({cls})" if isinstance(cls, str) and cls else f"node {node_id}"


def _copy_json(value: Any, where: str, depth: int = 0) -> Any:
    """Deep-copy ``value`` keeping only what JSON can carry (tuples become lists).

    Catches, with the path to the bad value, objects that would fail later inside
    ``json.dumps`` or be silently mangled (a JS proxy, bytes, a set, a cycle).
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if depth > _MAX_DEPTH:
        raise InvalidInputError(f"{where} is nested too deeply (more than {_MAX_DEPTH} levels; "
                                "is there a cycle?)")
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"{where} has a key {key!r} that is {kind_of(key)}: JSON object keys are "
                    "strings")
            out[key] = _copy_json(item, f"{where}.{key}", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_copy_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise InvalidInputError(
        f"{where} is {kind_of(value)}, which JSON cannot carry: use strings, numbers, booleans, "
        "null, lists and objects only"
    )


def _is_link(value: Any) -> bool:
    """A link as ComfyUI's validator reads it: a 2-list ``[source_node_id, output_index]``."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _check_graph_shape(obj: Any) -> None:
    if not isinstance(obj, Mapping):
        raise InvalidInputError(
            f"the workflow must be an object mapping node ids to nodes, got {kind_of(obj)}",
            hint=_API_FORMAT_HINT,
        )
    if not obj:
        raise InvalidInputError(
            "the workflow is empty: it needs nodes, including an output node such as SaveImage"
        )
    if isinstance(obj.get("nodes"), list) and "links" in obj:
        raise InvalidInputError(
            "this is a workflow saved in ComfyUI's UI format (it has 'nodes' and 'links'); the "
            "server runs the API format",
            hint=_API_FORMAT_HINT,
        )
    inner = obj.get("prompt")
    if isinstance(inner, Mapping) and "class_type" not in inner:
        raise InvalidInputError(
            "this looks like a whole POST /prompt body ({\"prompt\": ...}); pass the graph "
            "itself (the value of 'prompt')"
        )


def _validate_node(node_id: Any, node: Any) -> dict[str, Any]:
    if not isinstance(node_id, str) or not node_id:
        raise InvalidInputError(
            f"node id {node_id!r} must be a non-empty string (JSON keys are strings: write "
            f"\"{node_id}\")"
        )
    label = _label(node_id, node)
    if not isinstance(node, Mapping):
        raise InvalidInputError(
            f"{label} must be an object with class_type and inputs, got {kind_of(node)}",
            hint=_API_FORMAT_HINT,
        )
    cls = node.get("class_type")
    if cls is None:
        raise InvalidInputError(
            f"{label} has no class_type: set it to the node's type, e.g. \"SaveImage\"",
            hint=_API_FORMAT_HINT,
        )
    if not isinstance(cls, str) or not cls.strip():
        raise InvalidInputError(f"{label}: class_type must be a non-empty string, got "
                                f"{kind_of(cls)}")
    inputs = node.get("inputs")
    if inputs is None:
        raise InvalidInputError(f"{label} has no inputs: use {{}} for a node without inputs")
    if not isinstance(inputs, Mapping):
        raise InvalidInputError(f"{label}: inputs must be an object of name -> value, got "
                                f"{kind_of(inputs)}")
    return _copy_json(node, f"{label}")


class ValidatedWorkflow(dict):  # type: ignore[type-arg]
    """What ``validate_workflow`` returns: a checked private copy. Passed back in, it is
    taken as it is, without checking and copying it again (a job's graph goes through
    three functions that each validate their input; under Pyodide that was ~0.5 ms a job).
    Treat it as read-only: ``set_input`` returns a new one sharing the unchanged nodes."""


def validate_workflow(obj: Any) -> dict[str, dict[str, Any]]:
    """Check an API-format workflow and return a deep copy of it (the caller's is untouched),
    a ``ValidatedWorkflow``; one of those is returned as it is.

    Raises ``InvalidInputError`` naming the node and what to fix. Checks: the mapping shape,
    the UI-format and wrapped-body mistakes, each node's ``class_type``/``inputs``, JSON-only
    values, and that every link points at a node of the graph (ComfyUI answers that case
    with an ``exception_during_validation`` KeyError that names neither node).
    What only the server knows (node types installed, value ranges, file names) is left to it.
    """
    if type(obj) is ValidatedWorkflow:
        return obj
    _check_graph_shape(obj)
    graph = ValidatedWorkflow()
    for node_id, node in obj.items():
        graph[node_id] = _validate_node(node_id, node)
    for node_id, node in graph.items():
        for name, value in node["inputs"].items():
            _check_link(graph, node_id, name, value)
    return graph


def _check_link(graph: Mapping[str, Any], node_id: str, name: str, value: Any) -> None:
    if not _is_link(value):
        return
    source = value[0]
    label = _label(node_id, graph[node_id])
    if isinstance(source, int):
        raise InvalidInputError(
            f"{label}: input {name!r} links to node {source} given as a number; node ids are "
            f"strings: write [\"{source}\", {value[1]}]"
        )
    if source not in graph:
        raise InvalidInputError(
            f"{label}: input {name!r} links to node {source!r}, which is not in the workflow",
            hint="reconnect the input or re-export the workflow",
            details={"node_id": node_id, "input": name, "missing_node": source},
        )


def find_nodes(workflow: Mapping[str, Any], class_type: str) -> list[str]:
    """Ids of the nodes of type ``class_type``, in the workflow's order."""
    if not isinstance(workflow, Mapping):
        raise InvalidInputError(f"the workflow must be an object, got {kind_of(workflow)}")
    return [
        node_id
        for node_id, node in workflow.items()
        if isinstance(node, Mapping) and node.get("class_type") == class_type
    ]


def load_image_nodes(workflow: Mapping[str, Any]) -> list[str]:
    """Ids of the nodes an uploaded image can feed (``LoadImage``, ``LoadImageMask``)."""
    if not isinstance(workflow, Mapping):
        raise InvalidInputError(f"the workflow must be an object, got {kind_of(workflow)}")
    return [
        node_id
        for node_id, node in workflow.items()
        if isinstance(node, Mapping) and node.get("class_type") in LOAD_IMAGE_CLASSES
    ]


def pick_image_node(workflow: Mapping[str, Any], node: str | None) -> str:
    """The load-image node a job's uploaded file feeds: ``node`` if it is in the workflow,
    else the workflow's only LoadImage node. Raises ``InvalidInputError`` listing the
    candidates when there is none, several, or ``node`` is not in the workflow."""
    candidates = load_image_nodes(workflow)
    if node is None:
        if len(candidates) != 1:
            raise InvalidInputError(
                f"the workflow has {len(candidates)} LoadImage nodes "
                f"({', '.join(candidates) or 'none'}): pass imageNode to pick one"
            )
        return candidates[0]
    if node not in workflow:
        raise InvalidInputError(
            f"imageNode {node!r} is not a node of the workflow "
            f"(LoadImage nodes: {', '.join(candidates) or 'none'})"
        )
    return node


def load_image_nodes_inputs(workflow: Any) -> list[str]:
    """The file names the workflow's load-image nodes read (their ``image`` input).

    Tolerant on purpose (a non-mapping gives ``[]``): it is asked about workflows before
    validation, to find which server already holds an uploaded input.
    """
    if not isinstance(workflow, Mapping):
        return []
    names = []
    for node in workflow.values():
        if not isinstance(node, Mapping) or node.get("class_type") not in LOAD_IMAGE_CLASSES:
            continue
        inputs = node.get("inputs")
        value = inputs.get("image") if isinstance(inputs, Mapping) else None
        if isinstance(value, str) and value:
            names.append(value)
    return names


def set_input(workflow: Mapping[str, Any], node_id: str, name: str, value: Any) -> dict[str, Any]:
    """A validated copy of ``workflow`` with ``inputs[name] = value`` on ``node_id``."""
    graph = validate_workflow(workflow)
    if not isinstance(node_id, str) or node_id not in graph:
        known = ", ".join(graph) or "none"
        raise InvalidInputError(f"node {node_id!r} is not in the workflow (nodes: {known})")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"the input name must be a non-empty string, got {name!r}")
    node = graph[node_id]
    copied = _copy_json(value, f"{_label(node_id, node)}.inputs.{name}")
    _check_link(graph, node_id, name, copied)
    # a new graph and a new node; the other nodes are shared (read-only, see above)
    out = ValidatedWorkflow(graph)
    out[node_id] = {**node, "inputs": {**node["inputs"], name: copied}}
    return out


def validate_filename(filename: Any, what: str = "filename") -> str:
    """A bare file name: non-empty, no path separators, not ``.``/``..``, no control chars.

    Names that merely contain ``..`` (``a..b.png``) are fine: without a separator they cannot
    leave the folder, which is what the rule protects. ComfyUI also refuses escapes (400), but
    only after the whole upload was sent; this says why before anything is sent.
    """
    if not isinstance(filename, str) or not filename:
        raise InvalidInputError(f"{what} must be a non-empty string, got {filename!r}")
    if "/" in filename or "\\" in filename:
        raise InvalidInputError(
            f"{what} {filename!r} contains a path separator: pass the bare name and put the "
            "folder in subfolder"
        )
    if filename in (".", ".."):
        raise InvalidInputError(f"{what} {filename!r} is not a file name")
    # isprintable() (C) clears the usual name at once; it also refuses some harmless
    # characters (a no-break space...), so only then is each character looked at
    if not filename.isprintable() and any(ord(ch) < 32 or ord(ch) == 127 for ch in filename):
        raise InvalidInputError(f"{what} {filename!r} contains control characters")
    if len(filename.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise InvalidInputError(f"{what} is longer than {_MAX_NAME_BYTES} bytes")
    return filename


# what a content-named upload's extension is taken from: the caller's file name if it names
# an image format, else the file's type; PIL (ComfyUI's LoadImage) reads the format from
# the bytes either way, so the extension only has to be a plausible one
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif",
                               ".tiff"})
_TYPE_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
                    "image/gif": ".gif", "image/bmp": ".bmp", "image/tiff": ".tiff"}


def content_upload_name(digest: str, filename: str | None = None,
                        content_type: str | None = None) -> str:
    """``<sha256 hex of the bytes><ext>``: an input file named after its content.

    Why: two jobs with different images never share a name (so concurrent jobs never read
    each other's input), and the same image always gets the same name, so ComfyUI's cache
    (keyed by the LoadImage input's name and the file's hash) answers a job repeated on it,
    and a server that already holds the file need not get it again. Uploaded with
    ``overwrite`` off, ComfyUI keeps an existing file of that name whose bytes hash the
    same and answers with the name: it never rewrites an input a running job reads.
    """
    if not isinstance(digest, str) or len(digest) != 64 or digest.strip(
            "0123456789abcdef"):
        raise InvalidInputError(f"not a lowercase sha256 hex digest: {digest!r}")
    ext = ""
    if isinstance(filename, str):
        dot = filename.rfind(".")
        if dot > 0 and filename[dot:].lower() in _IMAGE_EXTENSIONS:
            ext = filename[dot:].lower()
    if not ext:
        ext = _TYPE_EXTENSIONS.get((content_type or "").split(";")[0].strip().lower(), ".png")
    return digest + ext
