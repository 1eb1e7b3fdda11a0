"""Running one queued prompt, with the event order of the recorded real server.

For every job (see invert_success.json, invert_cached_rerun.json, execution_error.json,
interrupt.json, ws_binary_frames.json):

``execution_start`` -> ``execution_cached{nodes}`` -> per executed node: ``progress_state``
(running) -> ``executing`` -> [``progress_state`` + ``progress`` + preview per step] ->
``executed`` (output nodes) -> ``progress_state`` (finished) -> ``execution_success`` |
``execution_error`` | ``execution_interrupted``. The worker then writes history and sends
``status`` and ``executing{node: null}`` (``server.py``).

Routing is the real server's: ``execution_*`` (except interrupted), ``executing`` and
``executed`` go only to the job's client and not at all without one; ``progress_state``,
``progress``, previews and ``execution_interrupted`` go to the job's client, or to every
socket when the job has no client_id (``send_sync(..., sid=None)`` broadcasts).

Caching is ComfyUI's default "classic" cache: a node whose signature (class, inputs,
upstream signatures, ``IS_CHANGED``) matches one from the previous prompt is not run; a
cached output node replays its ``executed`` message. Interrupts land at the next node
boundary, or at the next progress step of a node that reports progress, like a sampler.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image, ImageOps

from . import wire
from .faults import Faults
from .nodes import NODES, Dirs, NodeDef, RunContext, hidden_values
from .validation import full_type_name


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    """One queued prompt; ``queue_item`` is the 5-tuple ``/queue`` and history show."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    sensitive: dict[str, Any] = field(default_factory=dict)
    interrupt: bool = False
    current_node: str | None = None
    start_ms: int | None = None

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return cid if isinstance(cid, str) and cid else None

    def queue_item(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


@dataclass
class Outcome:
    success: bool
    messages: list[list[Any]]
    outputs: dict[str, Any]
    meta: dict[str, Any]


class Host(Protocol):
    """What the executor needs from the server (kept small so the order lives here)."""

    faults: Faults
    dirs: Dirs
    cache: dict[str, CacheEntry]
    node_state: dict[tuple[str, str], dict[str, Any]]

    def emit(self, event: str, data: dict[str, Any], sid: str | None, job: Job | None) -> None:
        ...

    def emit_bytes(self, frame: bytes, sid: str | None, job: Job | None, event: str) -> None:
        ...

    def supports_preview_metadata(self, sid: str | None) -> bool:
        ...

    def record_output(self, ui: dict[str, Any], prompt_id: str) -> None:
        ...

    async def flush(self) -> None:
        ...


class Interrupted(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class NodeFailed(Exception):
    def __init__(self, node_id: str, details: dict[str, Any]) -> None:
        super().__init__(node_id)
        self.node_id = node_id
        self.details = details


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _format_value(x: Any) -> Any:
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


def signatures(prompt: dict[str, Any], dirs: Dirs,
               nodes: dict[str, NodeDef] = NODES) -> dict[str, str]:
    """Cache keys per node: class, IS_CHANGED, literal inputs, upstream keys (no node id)."""
    memo: dict[str, str] = {}

    def sig(node_id: str, stack: tuple[str, ...] = ()) -> str:
        if node_id in memo:
            return memo[node_id]
        if node_id in stack or node_id not in prompt:
            return f"missing:{node_id}"
        node = prompt[node_id]
        definition = nodes[node["class_type"]]
        changed = definition.is_changed(dirs, node["inputs"]) if definition.is_changed else ""
        parts: list[Any] = [node["class_type"], changed]
        for key in sorted(node["inputs"]):
            value = node["inputs"][key]
            if is_link(value):
                parts.append([key, "link", sig(str(value[0]), (*stack, node_id)), value[1]])
            else:
                parts.append([key, value])
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
        memo[node_id] = digest.hexdigest()
        return memo[node_id]

    for node_id in prompt:
        sig(node_id)
    return memo


class Execution:
    """The state of one running job: messages for history, progress registry, outputs."""

    def __init__(self, host: Host, job: Job) -> None:
        self.host = host
        self.job = job
        self.client = job.client_id
        self.pid = job.prompt_id
        self.messages: list[list[Any]] = []
        self.registry: dict[str, dict[str, Any]] = {}
        self.values: dict[str, tuple[Any, ...]] = {}
        self.executed: list[str] = []
        self.ui_outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.flooded = False

    # ------------------------------------------------------------------ sending

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        if self.client is not None or broadcast:
            self.host.emit(event, data, self.client, self.job)

    def to_client(self, event: str, data: dict[str, Any]) -> None:
        if self.client is not None:
            self.host.emit(event, data, self.client, self.job)

    def progress_state(self) -> None:
        nodes = {
            nid: {"value": st["value"], "max": st["max"], "state": st["state"],
                  "node_id": nid, "prompt_id": self.pid, "display_node_id": nid,
                  "parent_node_id": None, "real_node_id": nid}
            for nid, st in self.registry.items() if st["state"] != "pending"
        }
        self.host.emit("progress_state", {"prompt_id": self.pid, "nodes": nodes}, self.client,
                       self.job)

    def start_progress(self, node_id: str) -> None:
        self.registry[node_id] = {"value": 0.0, "max": 1.0, "state": "running"}
        self.progress_state()

    def finish_progress(self, node_id: str) -> None:
        entry = self.registry.setdefault(node_id, {"value": 0, "max": 1, "state": "pending"})
        entry["state"] = "finished"
        entry["value"] = entry["max"]
        self.progress_state()

    def preview(self, node_id: str, img: Image.Image, max_size: int | None = None) -> None:
        png = wire.encode_png(img, compress_level=1, max_size=max_size)
        if self.host.supports_preview_metadata(self.client):
            frame = wire.metadata_preview_frame(png, wire.preview_metadata(node_id, self.pid))
        else:
            frame = wire.legacy_preview_frame(png)
        self.host.emit_bytes(frame, self.client, self.job, "preview")

    def progress_update(self, node_id: str, value: int, maximum: int,
                        img: Image.Image | None = None, max_size: int | None = None) -> None:
        """ComfyUI's ProgressBar hook: interrupt point, progress_state, progress, preview."""
        if self.job.interrupt:
            raise Interrupted(node_id)
        self.registry[node_id] = {"value": value, "max": maximum, "state": "running"}
        self.progress_state()
        metadata = self.host.supports_preview_metadata(self.client)
        if img is not None and metadata:
            self.preview(node_id, img, max_size)
        self.host.emit("progress", {"value": value, "max": maximum, "prompt_id": self.pid,
                                    "node": node_id}, self.client, self.job)
        if img is not None and not metadata:
            self.preview(node_id, img, max_size)

    # ------------------------------------------------------------------ planning

    def plan(self, sigs: dict[str, str]) -> list[str]:
        """Output nodes and their uncached ancestors, dependencies first."""
        prompt, outputs = self.job.prompt, set(self.job.outputs)
        order: list[str] = []
        seen: set[str] = set()

        def visit(node_id: str) -> None:
            if node_id in seen or node_id not in prompt:
                return
            seen.add(node_id)
            if sigs.get(node_id) in self.host.cache:
                if node_id in outputs:
                    order.append(node_id)  # replays its `executed` from the cache
                return
            for value in prompt[node_id]["inputs"].values():
                if is_link(value):
                    visit(str(value[0]))
            order.append(node_id)

        for o in self.job.outputs:
            visit(o)
        return order

    # ------------------------------------------------------------------ running

    def _resolve(self, node_id: str, sigs: dict[str, str]) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for key, value in self.job.prompt[node_id]["inputs"].items():
            if is_link(value):
                src = str(value[0])
                outs = self.values.get(src)
                if outs is None:
                    entry = self.host.cache.get(sigs.get(src, ""))
                    outs = entry.outputs if entry is not None else None
                if outs is None:
                    raise KeyError(src)
                inputs[key] = outs[value[1]]
            else:
                inputs[key] = value
        return inputs

    async def _simulate_steps(self, node_id: str, before: Any, result: Any) -> None:
        """The sampler stand-in: N steps, each a blend from input towards the result."""
        faults = self.host.faults
        steps = faults.progress_steps
        src = before[0] if isinstance(before, list) and before else None
        dst = result[0] if isinstance(result, list) and result else None
        if dst is None:
            return
        small_dst = ImageOps.contain(dst.convert("RGB"), (256, 256))
        small_src = (ImageOps.contain(src.convert("RGB"), (256, 256)).resize(small_dst.size)
                     if src is not None else small_dst)
        for i in range(1, steps + 1):
            await asyncio.sleep(faults.progress_step_delay_s)
            frame = Image.blend(small_src, small_dst, i / steps)
            self.progress_update(node_id, i, steps, frame)
            if faults.progress_text:
                self.host.emit_bytes(wire.progress_text_frame(node_id, f"step {i}/{steps}"),
                                     self.client, self.job, "progress_text")

    def _flood(self, node_id: str) -> None:
        faults = self.host.faults
        m, k = max(0, faults.flood_progress), max(0, faults.flood_previews)
        tiny = Image.new("RGB", (8, 8), (32, 96, 160))
        for i in range(max(m, k)):
            if i < m:
                self.registry[node_id] = {"value": i + 1, "max": m, "state": "running"}
                self.progress_state()
                self.host.emit("progress", {"value": i + 1, "max": m, "prompt_id": self.pid,
                                            "node": node_id}, self.client, self.job)
            if i < k:
                self.preview(node_id, tiny)

    async def _run_node(self, node_id: str, sigs: dict[str, str]) -> None:
        job, host = self.job, self.host
        node_json = job.prompt[node_id]
        definition = NODES[node_json["class_type"]]
        self.start_progress(node_id)
        self.to_client("executing", {"node": node_id, "display_node": node_id,
                                     "prompt_id": self.pid})
        job.current_node = node_id
        inputs: dict[str, Any] | None = None
        try:
            inputs = self._resolve(node_id, sigs)
            if job.interrupt:  # before_node_execution: the boundary where interrupts land
                raise Interrupted(node_id)
            faults = host.faults
            if not self.flooded and (faults.flood_progress > 0 or faults.flood_previews > 0):
                self.flooded = True
                self._flood(node_id)
            if faults.node_delay_s > 0:
                await asyncio.sleep(faults.node_delay_s)
            ctx = RunContext(host.dirs, node_id, job.prompt, job.extra_data,
                             host.node_state.setdefault((node_id, definition.name), {}))
            result = await asyncio.to_thread(definition.run, ctx, **inputs)
            for value, maximum, img in result.previews:
                self.progress_update(node_id, value, maximum, img)
            if definition.sampler_like and faults.progress_steps > 0 and result.outputs:
                first_image = next((v for k, v in inputs.items()
                                    if isinstance(v, list) and k in ("image", "images")), None)
                await self._simulate_steps(node_id, first_image, result.outputs[0])
        except Interrupted:
            raise
        except Exception as ex:
            formatted: dict[str, Any] = {}
            if inputs is not None:
                shown = {**inputs, **hidden_values(definition, host.dirs, job.prompt,
                                                   job.extra_data)}
                formatted = {k: [_format_value(v)] for k, v in shown.items()}
            raise NodeFailed(node_id, {
                "exception_message": f"{ex}\n",
                "exception_type": full_type_name(type(ex)),
                "traceback": traceback.format_tb(ex.__traceback__),
                "current_inputs": formatted,
                "current_outputs": list(job.prompt),
            }) from ex
        self.values[node_id] = result.outputs
        if result.ui is not None:
            self.ui_outputs[node_id] = result.ui
            self.meta[node_id] = _meta(node_id)
            host.record_output(result.ui, self.pid)
            self.to_client("executed", {"node": node_id, "display_node": node_id,
                                        "output": result.ui, "prompt_id": self.pid})
        self.finish_progress(node_id)
        self.executed.append(node_id)
        host.cache[sigs[node_id]] = CacheEntry(result.outputs, result.ui)

    async def run(self) -> Outcome:
        job, host = self.job, self.host
        job.start_ms = now_ms()
        self.add_message("execution_start", {"prompt_id": self.pid}, False)
        sigs = signatures(job.prompt, host.dirs)
        keep = set(sigs.values())
        for key in [k for k in host.cache if k not in keep]:
            del host.cache[key]
        cached = [n for n in job.prompt if sigs.get(n) in host.cache]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.pid}, False)
        success = False
        try:
            for node_id in self.plan(sigs):
                entry = host.cache.get(sigs[node_id])
                if entry is not None:
                    self.to_client("executed", {"node": node_id, "display_node": node_id,
                                                "output": entry.ui, "prompt_id": self.pid})
                    if entry.ui is not None:
                        self.ui_outputs[node_id] = entry.ui
                        self.meta[node_id] = _meta(node_id)
                    self.finish_progress(node_id)
                    continue
                await self._run_node(node_id, sigs)
            success = True
        except Interrupted as it:
            self.add_message("execution_interrupted", {
                "prompt_id": self.pid, "node_id": it.node_id,
                "node_type": job.prompt[it.node_id]["class_type"],
                "executed": list(self.executed)}, True)
        except NodeFailed as nf:
            self.add_message("execution_error", {
                "prompt_id": self.pid, "node_id": nf.node_id,
                "node_type": job.prompt[nf.node_id]["class_type"],
                "executed": list(self.executed), **nf.details}, False)
        finally:
            job.current_node = None
        if success:
            self.add_message("execution_success", {"prompt_id": self.pid}, False)
        return Outcome(success, self.messages, self.ui_outputs, self.meta)


def _meta(node_id: str) -> dict[str, Any]:
    return {"node_id": node_id, "display_node": node_id, "parent_node": None,
            "real_node_id": node_id}
