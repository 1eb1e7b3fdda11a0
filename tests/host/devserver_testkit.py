"""Helpers for the dev server host tests: a WS recorder, PNG fixtures, shape comparison
and a replayer that re-sends a recorded real-ComfyUI scenario to a dev server.

The replayer sends each recorded request only once every socket has received as many
messages as the real server had sent before that request left (causality: a message
caused by a request always arrives after it), so slow or fast, the dev server is asked the
same questions in the same states as the real one was.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from PIL import Image

import recordings

T = TypeVar("T")
TIMEOUT = 10.0
TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one test body with a hard upper bound (no network test may hang the suite)."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


# --------------------------------------------------------------------------- images


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def gradient(width: int = 512, height: int = 512) -> Image.Image:
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1),
                  (x + y) % 256) for y in range(height) for x in range(width)])
    return img


def noise(width: int, height: int, seed: int) -> Image.Image:
    rnd = __import__("random").Random(seed)
    return Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))


def fixture_upload(scenario: str, seq: int, filename: str) -> bytes:
    """The bytes a recorded upload carried, regenerated (real PNGs; corrupt when recorded so).

    upload_variants seq 2 had different bytes under the same name (hence "(1)"), so it
    gets a different image; every other upload of fixture_up.png carries the same one.
    """
    if filename == "fixture_invert_src.png":
        return png_bytes(gradient(512, 512))
    if filename == "fixture_corrupt.png":
        return b"\x89PNG\r\n\x1a\n" + b"this is not really a png image " * 3 + b"!" * 1
    if scenario == "upload_variants" and seq == 2:
        return png_bytes(noise(24, 24, seed=2))
    return png_bytes(noise(24, 24, seed=1))


# --------------------------------------------------------------------------- sockets


@dataclass
class Received:
    kind: str  # "json" | "binary"
    json: dict[str, Any] | None = None
    data: bytes = b""

    @property
    def type(self) -> str:
        if self.kind == "json":
            assert self.json is not None
            return str(self.json["type"])
        return f"binary:{struct.unpack('>I', self.data[:4])[0]}"


@dataclass
class WsRecorder:
    """One client socket whose every incoming message is kept, in order."""

    ws: aiohttp.ClientWebSocketResponse
    messages: list[Received] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str,
                   **kwargs: Any) -> WsRecorder:
        ws = await asyncio.wait_for(session.ws_connect(url, **kwargs), TIMEOUT)
        rec = cls(ws)
        rec.task = asyncio.create_task(rec._pump())
        return rec

    async def _pump(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(Received("json", json.loads(msg.data)))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.messages.append(Received("binary", data=msg.data))
        finally:
            self.closed.set()

    def types(self) -> list[str]:
        return [m.type for m in self.messages]

    def json_of(self, kind: str) -> list[dict[str, Any]]:
        return [m.json["data"] for m in self.messages if m.kind == "json" and m.json
                and m.json["type"] == kind]

    async def wait_for(self, pred: Callable[[Received], bool], timeout: float = TIMEOUT
                       ) -> Received:
        """The first message (already received or coming) that satisfies ``pred``."""
        async def poll() -> Received:
            seen = 0
            while True:
                while seen < len(self.messages):
                    if pred(self.messages[seen]):
                        return self.messages[seen]
                    seen += 1
                if self.closed.is_set():
                    raise ConnectionError("socket closed before the awaited message")
                await asyncio.sleep(0.005)
        return await asyncio.wait_for(poll(), timeout)

    async def wait_until(self, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async def poll() -> None:
            while not cond():
                await asyncio.sleep(0.005)
        await asyncio.wait_for(poll(), timeout)

    async def wait_count(self, n: int, timeout: float = TIMEOUT) -> bool:
        async def poll() -> None:
            while len(self.messages) < n and not self.closed.is_set():
                await asyncio.sleep(0.005)
        try:
            await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            return False
        return len(self.messages) >= n

    async def wait_done(self, prompt_id: str, timeout: float = TIMEOUT) -> Received:
        """``executing{node: null}`` for this prompt: the recorded end of a job."""
        return await self.wait_for(
            lambda m: m.kind == "json" and m.json is not None
            and m.json["type"] == "executing" and m.json["data"].get("node") is None
            and m.json["data"].get("prompt_id") == prompt_id, timeout)

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), TIMEOUT)
        if self.task is not None:
            await asyncio.wait_for(self.task, TIMEOUT)


# --------------------------------------------------------------------------- comparison

VOLATILE_KEYS = {
    "timestamp", "create_time", "execution_start_time", "execution_end_time", "ram_total",
    "ram_free", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free",
    "python_version", "comfyui_version", "pytorch_version", "argv", "comfy_package_versions",
    "deploy_environment", "required_frontend_version", "installed_templates_version",
    "required_templates_version", "traceback", "exception_message", "sid",
}
UNORDERED_KEYS = {"executed"}  # a set on the real server: its order is arbitrary


def _type_name(x: Any) -> str:
    return type(x).__name__


def compare(expected: Any, actual: Any, path: str = "$", problems: list[str] | None = None,
            key: str = "") -> list[str]:
    """Differences between a recorded JSON value and ours: same keys and value types
    everywhere; same values except under keys known to vary between runs/machines."""
    problems = [] if problems is None else problems
    if key in VOLATILE_KEYS:
        if key == "exception_message" and isinstance(expected, str):
            head = expected.split(" '", 1)[0]
            if not (isinstance(actual, str) and actual.startswith(head)):
                problems.append(f"{path}: {actual!r} does not start like {head!r}")
        elif isinstance(expected, list) and expected and all(isinstance(e, str)
                                                              for e in expected):
            if not (isinstance(actual, list) and all(isinstance(a, str) for a in actual)):
                problems.append(f"{path}: expected a list of str, got {actual!r}")
        elif _type_name(expected) != _type_name(actual):
            problems.append(f"{path}: type {_type_name(actual)} != {_type_name(expected)}")
        return problems
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            problems.append(f"{path}: expected an object, got {actual!r:.80}")
            return problems
        if set(expected) != set(actual):
            problems.append(f"{path}: keys {sorted(actual)} != {sorted(expected)}")
        for k in expected:
            if k in actual:
                compare(expected[k], actual[k], f"{path}.{k}", problems, k)
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            problems.append(f"{path}: expected a list, got {actual!r:.80}")
            return problems
        if key in UNORDERED_KEYS:
            if sorted(map(str, expected)) != sorted(map(str, actual)):
                problems.append(f"{path}: {actual} != {expected} (as sets)")
            return problems
        if len(expected) != len(actual):
            problems.append(f"{path}: length {len(actual)} != {len(expected)}: "
                            f"{actual!r:.200} vs {expected!r:.200}")
            return problems
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            compare(e, a, f"{path}[{i}]", problems, key)
        return problems
    if _type_name(expected) != _type_name(actual):
        problems.append(f"{path}: type {_type_name(actual)} ({actual!r:.60}) != "
                        f"{_type_name(expected)} ({expected!r:.60})")
    elif isinstance(expected, str) and TEMP_NAME.search(expected):
        if TEMP_NAME.sub("T", expected) != TEMP_NAME.sub("T", actual):
            problems.append(f"{path}: {actual!r} != {expected!r}")
    elif expected != actual:
        problems.append(f"{path}: {actual!r:.200} != {expected!r:.200}")
    return problems


def substitute(value: Any, mapping: dict[str, str]) -> Any:
    """Replace recorded ids/names with ours, in keys and string values, recursively."""
    if isinstance(value, dict):
        return {mapping.get(k, k): substitute(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, mapping) for v in value]
    if isinstance(value, str):
        for old, new in mapping.items():
            if old in value:
                value = value.replace(old, new)
    return value


def learn_temp_names(expected: Any, actual: Any, mapping: dict[str, str]) -> None:
    """Pair the recorded PreviewImage temp names with ours (their 5 letters are random)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k, v in expected.items():
            if k in actual:
                learn_temp_names(v, actual[k], mapping)
    elif isinstance(expected, list) and isinstance(actual, list):
        for e, a in zip(expected, actual, strict=False):
            learn_temp_names(e, a, mapping)
    elif (isinstance(expected, str) and isinstance(actual, str) and expected != actual
          and TEMP_NAME.search(expected) and TEMP_NAME.search(actual)):
        mapping[TEMP_NAME.search(expected).group(0)] = TEMP_NAME.search(actual).group(0)  # type: ignore[union-attr]


# --------------------------------------------------------------------------- replay

IGNORED_HEADERS = {"date", "server", "content-length", "etag", "last-modified"}
VALUE_HEADERS = {"content-type", "content-disposition", "x-content-type-options",
                 "access-control-allow-origin", "access-control-allow-methods",
                 "access-control-allow-headers", "access-control-allow-credentials"}


@dataclass
class ScenarioResult:
    name: str
    problems: list[str] = field(default_factory=list)
    exchanges: list[tuple[dict[str, Any], int, Any]] = field(default_factory=list)
    sockets: dict[str, WsRecorder] = field(default_factory=dict)
    expected_ws: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Replayer:
    """Replays recorded scenarios against one server, remembering ids across scenarios."""

    def __init__(self, base_url: str, recorded_server: str = "http://127.0.0.1:8188") -> None:
        self.base = base_url
        self.recorded_netloc = recorded_server.split("//", 1)[1]
        self.netloc = base_url.split("//", 1)[1]
        self.mapping: dict[str, str] = {}
        self.before_request: dict[tuple[str, int], Callable[[], Any]] = {}

    async def replay(self, name: str) -> ScenarioResult:
        result = ScenarioResult(name)
        events = recordings.events(name)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as sess:
            letters: dict[str, str] = {}
            expected_ws: dict[str, list[dict[str, Any]]] = result.expected_ws
            recv_times: dict[str, list[float]] = {}
            for ev in events:
                if ev["kind"] == "ws_open":
                    cid = ev["url"].split("clientId=", 1)[1]
                    letters[ev.get("client", "main")] = cid
                    expected_ws.setdefault(cid, [])
                    recv_times.setdefault(cid, [])
                elif ev["kind"] == "ws_recv":
                    cid = letters[ev.get("client", "main")]
                    expected_ws[cid].append(ev)
                    recv_times[cid].append(ev["t_ms"])
            letters.clear()
            for ev in events:
                kind = ev["kind"]
                if kind == "ws_open":
                    cid = ev["url"].split("clientId=", 1)[1]
                    letters[ev.get("client", "main")] = cid
                    rec = await WsRecorder.open(sess, self.base + ev["url"])
                    result.sockets[cid] = rec
                elif kind == "ws_send":
                    cid = letters[ev.get("client", "main")]
                    await result.sockets[cid].ws.send_str(json.dumps(ev["json"]))
                elif kind == "ws_closed":
                    cid = letters[ev.get("client", "main")]
                    rec = result.sockets[cid]
                    await rec.wait_count(len(expected_ws[cid]))
                    await asyncio.sleep(0.05)
                    await rec.close()
                elif kind == "http":
                    sent = ev["request"].get("sent_t_ms", ev["t_ms"])
                    for cid, times in recv_times.items():
                        if cid in result.sockets and not result.sockets[cid].closed.is_set():
                            need = sum(1 for t in times if t < sent)
                            if not await result.sockets[cid].wait_count(need):
                                result.problems.append(
                                    f"seq {ev['seq']}: socket {cid[:6]} got "
                                    f"{len(result.sockets[cid].messages)} < {need} messages "
                                    "before this request")
                    hook = self.before_request.get((name, ev["seq"]))
                    if hook is not None:
                        await _maybe_await(hook())
                    await self._exchange(sess, name, ev, result)
            for cid, rec in result.sockets.items():
                if not rec.closed.is_set():
                    await rec.wait_count(len(expected_ws[cid]))
                    await asyncio.sleep(0.05)
                    await rec.close()
        self._compare_ws(result)
        return result

    def _request_args(self, name: str, ev: dict[str, Any]) -> dict[str, Any]:
        req = substitute(ev["request"], self.mapping)
        args: dict[str, Any] = {"method": req["method"], "url": self.base + req["path"]}
        if "query" in req:
            args["params"] = req["query"]
        headers = dict(req.get("headers") or {})
        for h, v in list(headers.items()):
            headers[h] = v.replace(self.recorded_netloc, self.netloc)
        if "json" in req:
            args["json"] = req["json"]
        elif "raw_body" in req:
            args["data"] = req["raw_body"].encode()
        elif "form" in req:
            args["data"] = req["form"]
        elif "multipart" in req:
            form = aiohttp.FormData()
            for fname, finfo in req["multipart"]["files"].items():
                form.add_field(fname, fixture_upload(name, ev["seq"], finfo["filename"]),
                               filename=finfo["filename"], content_type=finfo["content_type"])
            for k, v in req["multipart"]["fields"].items():
                form.add_field(k, v)
            args["data"] = form
        if headers:
            args["headers"] = headers
        return args

    async def _exchange(self, sess: aiohttp.ClientSession, name: str, ev: dict[str, Any],
                        result: ScenarioResult) -> None:
        args = self._request_args(name, ev)
        where = f"{name} seq {ev['seq']} {args['method']} {ev['request']['path']}"
        async with sess.request(**args) as resp:
            body = await resp.read()
            status, headers = resp.status, resp.headers
        exp = ev["response"]
        if status != exp["status"]:
            result.problems.append(f"{where}: status {status} != {exp['status']}: {body[:200]!r}")
        exp_headers = {k.lower(): v for k, v in exp["headers"].items()}
        got_headers = {k.lower(): v for k, v in headers.items()}
        missing = set(exp_headers) - set(got_headers) - {"server"}
        extra = set(got_headers) - set(exp_headers) - IGNORED_HEADERS
        if missing or extra:
            result.problems.append(f"{where}: headers missing {sorted(missing)} extra "
                                   f"{sorted(extra)}")
        for h in VALUE_HEADERS & set(exp_headers) & set(got_headers):
            want = substitute(exp_headers[h], self.mapping)
            if TEMP_NAME.sub("T", want) != TEMP_NAME.sub("T", got_headers[h]):
                result.problems.append(f"{where}: header {h}: {got_headers[h]!r} != {want!r}")
        exp_body = exp["body"]
        actual: Any = body
        if "json" in exp_body:
            try:
                actual = json.loads(body)
            except ValueError:
                result.problems.append(f"{where}: body is not JSON: {body[:200]!r}")
                return
            self._learn_ids(ev, actual)
            learn_temp_names(substitute(exp_body["json"], self.mapping), actual, self.mapping)
            expected = substitute(exp_body["json"], self.mapping)
            compare(expected, actual, where, result.problems)
        elif "text" in exp_body:
            if body.decode(errors="replace") != exp_body["text"]:
                result.problems.append(f"{where}: text {body[:200]!r} != {exp_body['text']!r}")
        elif exp_body.get("binary"):
            if headers.get("Content-Type") != exp_body["content_type"]:
                result.problems.append(f"{where}: content type {headers.get('Content-Type')}")
            magic = bytes.fromhex(exp_body["first8_hex"])[:4]
            if body[:4] != magic:
                result.problems.append(f"{where}: magic {body[:4]!r} != {magic!r}")
        result.exchanges.append((ev, status, actual))

    def _learn_ids(self, ev: dict[str, Any], actual: Any) -> None:
        """Our server picks its own prompt ids: map the recorded ones when they appear."""
        exp = ev["response"]["body"].get("json")
        req_json = ev["request"].get("json") or {}
        if (ev["request"]["path"] in ("/prompt", "/api/prompt") and isinstance(exp, dict)
                and isinstance(actual, dict) and "prompt_id" in exp and "prompt_id" in actual
                and "prompt_id" not in req_json):
            self.mapping[exp["prompt_id"]] = actual["prompt_id"]

    def _compare_ws(self, result: ScenarioResult) -> None:
        for cid, expected_events in result.expected_ws.items():
            rec = result.sockets.get(cid)
            if rec is None:
                result.problems.append(f"{result.name}: socket {cid} never opened")
                continue
            exp = [_summary(e) for e in expected_events]
            got = [_summary_ours(m) for m in rec.messages]
            where = f"{result.name} ws {cid[:6]}"
            exp_types = [e["type"] for e in exp if e["type"] != "status"]
            got_types = [g["type"] for g in got if g["type"] != "status"]
            if exp_types != got_types:
                result.problems.append(f"{where}: event types\n  ours {got_types}\n  real "
                                       f"{exp_types}")
                continue
            exp_status = [e["data"] for e in exp if e["type"] == "status"]
            got_status = [g["data"] for g in got if g["type"] == "status"]
            compare(exp_status, got_status, f"{where} status", result.problems)
            exp_rest = [e for e in exp if e["type"] != "status"]
            got_rest = [g for g in got if g["type"] != "status"]
            for i, (e, g) in enumerate(zip(exp_rest, got_rest, strict=True)):
                compare(substitute(e["data"], self.mapping), g["data"],
                        f"{where} #{i} {e['type']}", result.problems)


def _summary(ev: dict[str, Any]) -> dict[str, Any]:
    if "json" in ev:
        return {"type": ev["json"]["type"], "data": ev["json"]["data"]}
    kind = ev["event_type_u32be"]
    data: dict[str, Any] = {"second": ev["second_u32be"], "magic": ev["image_magic_hex"]}
    if "metadata" in ev:
        data = {"metadata": ev["metadata"], "magic": ev["image_magic_hex"]}
    return {"type": f"binary:{kind}", "data": data}


def _summary_ours(m: Received) -> dict[str, Any]:
    if m.kind == "json":
        assert m.json is not None
        return {"type": m.json["type"], "data": m.json["data"]}
    kind, second = struct.unpack(">II", m.data[:8])
    if kind == 4:
        meta = json.loads(m.data[8:8 + second])
        return {"type": "binary:4", "data": {"metadata": meta,
                                             "magic": m.data[8 + second:16 + second].hex()}}
    return {"type": f"binary:{kind}", "data": {"second": second, "magic": m.data[8:16].hex()}}


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


# --------------------------------------------------------------------------- client API

_counter = iter(range(1, 1 << 30))


def unique() -> int:
    """A fresh number per call: varied node inputs keep the node cache out of a test."""
    return next(_counter)


def empty_save(prefix: str, width: int = 32, height: int = 24, color: int | None = None,
               batch: int = 1) -> dict[str, Any]:
    """EmptyImage -> SaveImage with a colour nobody used before (so nothing is cached)."""
    color = (unique() * 2654435761) & 0xFFFFFF if color is None else color
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height,
                                                     "batch_size": batch, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                    "filename_prefix": prefix}},
    }


class Api:
    """A thin aiohttp client for one dev server (every call bounded by TIMEOUT)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.session.get(self.base + path, params=params or None) as resp:
            return resp.status, await _body(resp)

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body) as resp:
            return resp.status, await _body(resp)

    async def upload(self, filename: str, data: bytes, **fields: str) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="image/png")
        for k, v in fields.items():
            form.add_field(k, v)
        async with self.session.post(self.base + "/upload/image", data=form) as resp:
            return resp.status, await _body(resp)

    async def submit(self, prompt: dict[str, Any], client_id: str | None = None,
                     **extra: Any) -> str:
        body: dict[str, Any] = {"prompt": prompt, **extra}
        if client_id is not None:
            body["client_id"] = client_id
        status, data = await self.post("/prompt", body)
        assert status == 200, data
        return str(data["prompt_id"])

    async def history(self, prompt_id: str) -> dict[str, Any]:
        status, data = await self.get(f"/history/{prompt_id}")
        assert status == 200
        return data.get(prompt_id, {}) if isinstance(data, dict) else {}

    async def wait_history(self, prompt_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        async def poll() -> dict[str, Any]:
            while True:
                entry = await self.history(prompt_id)
                if entry:
                    return entry
                await asyncio.sleep(0.02)
        return await asyncio.wait_for(poll(), timeout)

    async def view(self, image: dict[str, Any], **params: str) -> tuple[int, bytes, Any]:
        query = {"filename": image["filename"], "subfolder": image["subfolder"],
                 "type": image["type"], **params}
        async with self.session.get(self.base + "/view", params=query) as resp:
            return resp.status, await resp.read(), resp.headers

    async def image(self, entry: dict[str, Any], node: str, index: int = 0) -> Image.Image:
        ref = entry["outputs"][node]["images"][index]
        status, data, _ = await self.view(ref)
        assert status == 200, ref
        return Image.open(io.BytesIO(data))

    async def run(self, prompt: dict[str, Any], ws: WsRecorder, client_id: str,
                  **extra: Any) -> tuple[str, dict[str, Any]]:
        """Submit, wait for ``executing{node: null}``, return (prompt_id, history entry)."""
        pid = await self.submit(prompt, client_id, **extra)
        await ws.wait_done(pid)
        return pid, await self.wait_history(pid)


async def _body(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    if resp.content_type == "application/json":
        return json.loads(raw)
    return raw.decode(errors="replace")


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
