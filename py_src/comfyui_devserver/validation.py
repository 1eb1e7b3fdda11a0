"""``POST /prompt`` validation with the error shapes the real server returns.

Mirrors ComfyUI's ``validate_prompt`` / ``validate_inputs`` control flow, because the
client parses these bodies (recorded in node_errors_400.json): which node an error is
filed under, the ``dependent_outputs`` lists, the ``details`` joined at the top level only
for errors of the output node itself, and "inner" exceptions attributed to the linked node.
Like the real server it converts widget values in place (``"64"`` -> 64) before they are
queued.
"""

from __future__ import annotations

import sys
import traceback
import uuid
from typing import Any

from .nodes import NODES, Dirs, NodeDef

INVALID_PROMPT_ID = {
    "type": "invalid_prompt_id",
    "message": "prompt_id must be a valid UUID",
    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
               "omit it to let the server generate one",
    "extra_info": {},
}
NO_PROMPT = {"type": "no_prompt", "message": "No prompt provided",
             "details": "No prompt provided", "extra_info": {}}

Result = tuple[bool, list[dict[str, Any]], str]


def is_canonical_uuid(value: object) -> bool:
    """Client-chosen ids must round-trip through ``uuid.UUID`` unchanged (lowercase, hyphens)."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def _input_info(spec: tuple[Any, ...]) -> tuple[Any, dict[str, Any]]:
    kind = spec[0]
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return kind, extra


def _types_compatible(received: str, wanted: Any) -> bool:
    if not isinstance(wanted, str):
        return False
    if received == wanted or "*" in (received, wanted):
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def _convert(kind: Any, val: Any) -> Any:
    if kind == "INT":
        return int(val)
    if kind == "FLOAT":
        return float(val)
    if kind == "STRING":
        return str(val)
    if kind == "BOOLEAN":
        return bool(val)
    return val


class _Validator:
    def __init__(self, prompt: dict[str, Any], dirs: Dirs,
                 nodes: dict[str, NodeDef]) -> None:
        self.prompt = prompt
        self.dirs = dirs
        self.nodes = nodes
        self.validated: dict[str, Result] = {}

    def inputs(self, unique_id: str) -> Result:
        if unique_id in self.validated:
            return self.validated[unique_id]
        inputs = self.prompt[unique_id]["inputs"]
        node = self.nodes[self.prompt[unique_id]["class_type"]]
        class_inputs = node.input_types(self.dirs)
        specs = {**class_inputs.get("required", {}), **class_inputs.get("optional", {})}
        required = class_inputs.get("required", {})
        errors: list[dict[str, Any]] = []
        valid = True

        for x, spec in specs.items():
            kind, extra = _input_info(spec)
            info = [kind, extra]
            if x not in inputs:
                if x in required:
                    errors.append({"type": "required_input_missing",
                                   "message": "Required input is missing",
                                   "details": f"{x}", "extra_info": {"input_name": x}})
                continue
            val = inputs[x]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of "
                                   "[node_id, slot_index]",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val}})
                    continue
                o_id = val[0]
                o_class_type = self.prompt[o_id]["class_type"]
                received = self.nodes[o_class_type].return_types[val[1]]
                if not _types_compatible(received, kind):
                    details = f"{x}, received_type({received}) mismatch input_type({kind})"
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": details,
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_type": received, "linked_node": val}})
                    continue
                try:
                    r = self.inputs(o_id)
                    if r[0] is False:
                        valid = False  # the linked node carries its own errors
                        continue
                except Exception as ex:
                    valid = False
                    self.validated[o_id] = (False, [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": x, "input_config": info,
                                       "exception_message": str(ex),
                                       "exception_type": full_type_name(type(ex)),
                                       "traceback": traceback.format_tb(ex.__traceback__),
                                       "linked_node": val}}], o_id)
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                    val = _convert(kind, val)
                    inputs[x] = val
                except Exception as ex:
                    errors.append({
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {kind} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val, "exception_message": str(ex)}})
                    continue
                if x in node.validate_inputs:
                    continue  # VALIDATE_INPUTS owns this input: no range/list checks
                if "min" in extra and val < extra["min"]:
                    errors.append({
                        "type": "value_smaller_than_min",
                        "message": f"Value {val} smaller than min of {extra['min']}",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val}})
                    continue
                if "max" in extra and val > extra["max"]:
                    errors.append({
                        "type": "value_bigger_than_max",
                        "message": f"Value {val} bigger than max of {extra['max']}",
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_value": val}})
                    continue
                if isinstance(kind, list) and val not in kind:
                    if len(kind) > 20:
                        list_info, config = f"(list of length {len(kind)})", None
                    else:
                        list_info, config = str(kind), info
                    errors.append({
                        "type": "value_not_in_list", "message": "Value not in list",
                        "details": f"{x}: '{val}' not in {list_info}",
                        "extra_info": {"input_name": x, "input_config": config,
                                       "received_value": val}})
                    continue

        if node.validate is not None and node.validate_inputs:
            args = {x: inputs.get(x) for x in node.validate_inputs}
            ret = node.validate(self.dirs, **args)
            if ret is not True:
                for x in args:
                    details = f"{x}" if ret is False else f"{x} - {ret}"
                    errors.append({"type": "custom_validation_failed",
                                   "message": "Custom validation failed for node",
                                   "details": details, "extra_info": {"input_name": x}})

        result: Result = (False, errors, unique_id) if errors or not valid else (
            True, [], unique_id)
        self.validated[unique_id] = result
        return result


def validate_prompt(prompt: dict[str, Any], dirs: Dirs,
                    partial_targets: list[str] | None = None,
                    nodes: dict[str, NodeDef] | None = None,
                    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """``(ok, error, outputs_to_execute, node_errors)`` exactly like ComfyUI's tuple."""
    nodes = NODES if nodes is None else nodes
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return (False, {"type": "invalid_prompt",
                            "message": "Cannot execute because a node is missing the "
                                       "class_type property.",
                            "details": f"Node ID '#{x}'", "extra_info": {}}, [], {})
        class_type = prompt[x]["class_type"]
        node = nodes.get(class_type) if isinstance(class_type, str) else None
        if node is None:
            title = (prompt[x].get("_meta") or {}).get("title", class_type)
            return (False, {"type": "missing_node_type",
                            "message": f"Node '{class_type}' not found. The custom node may "
                                       "not be installed.",
                            "details": f"Node ID '#{x}'",
                            "extra_info": {"node_id": x, "class_type": class_type,
                                           "node_title": title}}, [], {})
        if node.output_node and (partial_targets is None or x in partial_targets):
            outputs.append(x)
    if not outputs:
        return (False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                        "details": "", "extra_info": {}}, [], {})

    v = _Validator(prompt, dirs, nodes)
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for o in outputs:
        try:
            ok, reasons, _ = v.inputs(o)
        except Exception as ex:
            ok = False
            reasons = [{"type": "exception_during_validation",
                        "message": "Exception when validating node", "details": str(ex),
                        "extra_info": {"exception_type": full_type_name(type(ex)),
                                       "traceback": traceback.format_tb(sys.exc_info()[2])}}]
            v.validated[o] = (False, reasons, o)
        if ok is True:
            good.append(o)
            continue
        if reasons:
            failed.append((o, reasons))
        # every node with its own errors gets this output in dependent_outputs (the real
        # server loops over all validated nodes here, not only o's ancestors)
        for node_id, (node_ok, node_reasons, _) in v.validated.items():
            if node_ok is not True and node_reasons:
                entry = node_errors.setdefault(node_id, {
                    "errors": node_reasons, "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(o)

    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
        return (False, {"type": "prompt_outputs_failed_validation",
                        "message": "Prompt outputs failed validation", "details": details,
                        "extra_info": {}}, [], node_errors)
    return (True, None, good, node_errors)
