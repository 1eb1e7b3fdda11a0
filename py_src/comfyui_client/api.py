"""The page-facing API: the old ``comfyui.js`` function names, in Python.

``web/comfyui.js`` forwards each exported function here by name. This layer validates the
JS-shaped arguments (camelCase option objects, File/Blob handles), calls ``PoolClient`` and
returns plain data (dicts, lists, strings, and JS Blob handles the environment passes
through). It imports nothing from the browser: the environment hands it ``convert_in`` and
``is_blob``, so it runs under CPython too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from . import jobs as jobs_mod
from .client import ClientOptions, PoolClient
from .errors import ComfyClientError, ConfigError, InvalidInputError
from .protocol import workflow as wf

EXPORTS = (
    "init",
    "getApiBaseUrl",
    "ensureWebSocketConnection",
    "uploadImageToComfyUI",
    "submitWorkflow",
    "waitForCompletion",
    "getTaskHistory",
    "getGeneratedImage",
    "getImage",
    "checkComfyUIServerStatus",
    "validateServerConsistency",
    "debugWebSocketLock",
    "checkServerUnlockCondition",
    "interrupt",
    "processImage",
    "runConsistencySelfTest",
    "getJobs",
    "getAuditLog",
    "releaseTask",
)

# A 64x64 PNG made of one gradient row repeated, generated at import time by the stdlib:
# the self test uploads it and checks the inverted result came back from the same server.
SELF_TEST_WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "PLACEHOLDER"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "selftest"}},
}


def _self_test_png() -> bytes:
    import struct
    import zlib

    width = height = 64
    raw = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 4, y * 4, 128))
                   for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _opt_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _opt_str(opts: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = opts.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidInputError(f"option {key} must be a string, got {type(value).__name__}")
    return value


class PageApi:
    """Holds the one ``PoolClient`` of the page; ``init`` (re)configures it."""

    def __init__(self, env: Any, *, convert_in: Callable[[Any], Any] = lambda v: v,
                 is_blob: Callable[[Any], bool] = lambda v: False) -> None:
        self.env = env
        self.convert_in = convert_in
        self.is_blob = is_blob
        self.client: PoolClient | None = None

    def exported(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name not in EXPORTS:
            raise InvalidInputError(f"comfyui.js has no function {name!r}")
        return getattr(self, "js_" + name)

    def _client(self) -> PoolClient:
        if self.client is None:
            raise ConfigError("call init({servers: [...]}) first")
        return self.client

    # ------------------------------------------------------------------ lifecycle

    async def js_init(self, options: Any = None) -> dict[str, Any]:
        opts = _opt_dict(options, "init options")
        servers = opts.get("servers")
        if servers is None:
            raise ConfigError(
                "init() needs servers: init({servers: ['http://host:8188', ...]})"
            )
        parsed = ClientOptions.from_dict(opts)
        if self.client is not None:
            if parsed.affinity != self.client.options.affinity:
                pending = [r for r in self.client.records.values()
                           if not self.client._finished(r)]
                if pending:
                    raise ConfigError(
                        f"cannot switch affinity to {parsed.affinity!r} while "
                        f"{len(pending)} job(s) are in flight",
                        hint="wait for them (or interrupt them) and call init() again",
                    )
                await self.client.close()
                self.client = PoolClient(self.env, servers, parsed)
            else:
                changes = self.client.reconfigure(servers)
                self.client.options = parsed
                return self._summary(changes)
        else:
            self.client = PoolClient(self.env, servers, parsed)
            # a reload: jobs the previous page left in flight are picked up again
            revived = await self.client.reattach()
            return self._summary({"reattached": revived})
        return self._summary({})

    def _summary(self, changes: dict[str, Any]) -> dict[str, Any]:
        c = self._client()
        return {
            "servers": [s.url for s in c.pool.specs],
            "affinity": c.options.affinity,
            "clientId": c.client_id,
            **changes,
        }

    # ------------------------------------------------------------------ old names

    async def js_getApiBaseUrl(self, prompt_id: Any = None) -> str:
        return self._client().api_base(_opt_str({"p": prompt_id}, "p"))

    async def js_ensureWebSocketConnection(self, server: Any = None) -> dict[str, Any]:
        c = self._client()
        target = await c.ensure_connection(_opt_str({"s": server}, "s"))
        return {"server": target, "clientId": c.client_id, "wsState": c.channels[target].state}

    def _file_args(self, file: Any, opts: dict[str, Any]) -> dict[str, Any]:
        if file is None:
            raise InvalidInputError("no file given: pass a File, a Blob or bytes")
        filename = _opt_str(opts, "filename")
        content_type = "image/png"
        size = None
        if self.is_blob(file):
            content_type = str(getattr(file, "type", "") or "image/png")
            size = int(file.size)
            if filename is None:
                filename = str(getattr(file, "name", "") or "") or None
        elif isinstance(file, (bytes, bytearray, memoryview)):
            size = len(file)
        else:
            raise InvalidInputError(
                f"cannot upload a {type(file).__name__}: pass a File, a Blob or bytes"
            )
        if not content_type.startswith("image/"):
            raise InvalidInputError(
                f"the file is {content_type!r}, not an image: ComfyUI's /upload/image "
                "takes PNG, JPEG or WebP"
            )
        return {"file": file, "filename": filename or "image.png", "size": size,
                "content_type": content_type}

    async def js_uploadImageToComfyUI(self, file: Any, options: Any = None) -> dict[str, Any]:
        opts = _opt_dict(options, "upload options")
        args = self._file_args(file, opts)
        overwrite = opts.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise InvalidInputError("option overwrite must be true or false")
        return await self._client().upload(
            args["file"], filename=args["filename"], subfolder=_opt_str(opts, "subfolder", ""),
            overwrite=overwrite, content_type=args["content_type"], size=args["size"],
            server=_opt_str(opts, "server"), job=_opt_str(opts, "promptId"),
        )

    async def js_submitWorkflow(self, workflow: Any, options: Any = None) -> dict[str, Any]:
        opts = _opt_dict(options, "submit options")
        rec = await self._client().submit(
            workflow, prompt_id=_opt_str(opts, "promptId"), server=_opt_str(opts, "server"),
            on_progress=opts.get("onProgress"), on_preview=opts.get("onPreview"),
        )
        return {"promptId": rec.job.prompt_id, "server": rec.job.server,
                "number": rec.job.number}

    async def js_waitForCompletion(self, prompt_id: Any, options: Any = None) -> dict[str, Any]:
        c = self._client()
        rec = await c.wait(self._pid(prompt_id))
        return {"promptId": rec.job.prompt_id, "server": rec.job.server,
                "state": rec.job.state, "history": rec.history.raw if rec.history else None}

    @staticmethod
    def _pid(prompt_id: Any) -> str:
        if not isinstance(prompt_id, str) or not prompt_id:
            raise InvalidInputError("promptId must be the string returned by submitWorkflow")
        return prompt_id

    async def js_getTaskHistory(self, prompt_id: Any) -> Any:
        c = self._client()
        pid = self._pid(prompt_id)
        entry = await c.history(pid, retry=False)
        # the server's own shape, as the old module returned it: {prompt_id: entry} or {}
        return {pid: entry.raw} if entry is not None else {}

    async def js_getGeneratedImage(self, prompt_id: Any) -> list[dict[str, Any]]:
        return await self._client().fetch_outputs(self._pid(prompt_id))

    async def js_getImage(self, filename: Any, subfolder: Any = "", image_type: Any = "output",
                          options: Any = None) -> Any:
        opts = _opt_dict(options, "getImage options")
        if not isinstance(filename, str) or not filename:
            raise InvalidInputError("getImage needs a filename")
        return await self._client().image(
            filename, subfolder or "", image_type or "output",
            job=_opt_str(opts, "promptId"), server=_opt_str(opts, "server"),
        )

    async def js_checkComfyUIServerStatus(self) -> list[dict[str, Any]]:
        return await self._client().check_all()

    async def js_validateServerConsistency(self, operation: Any = None) -> dict[str, Any]:
        return self._client().consistency(_opt_str({"o": operation}, "o"))

    async def js_debugWebSocketLock(self) -> dict[str, Any]:
        out = self._client().debug()
        # the browser transport counts the proxies/listeners it lent to JS (leak check)
        counts = getattr(self.env, "resource_counts", None)
        if counts is not None:
            out.update(counts())
        return out

    async def js_checkServerUnlockCondition(self) -> dict[str, Any]:
        return self._client().unlock_condition()

    async def js_interrupt(self, prompt_id: Any) -> dict[str, Any]:
        return await self._client().interrupt(self._pid(prompt_id))

    async def js_releaseTask(self, prompt_id: Any) -> dict[str, Any]:
        self._client().release(self._pid(prompt_id))
        return {"promptId": prompt_id, "released": True}

    async def js_getJobs(self) -> list[dict[str, Any]]:
        return [jobs_mod.job_to_dict(r.job) for r in self._client().records.values()]

    async def js_getAuditLog(self, prompt_id: Any = None) -> list[dict[str, Any]]:
        c = self._client()
        return [r.to_dict() for r in c.audit.records(job=prompt_id or None)]

    # ------------------------------------------------------------------ whole lifecycle

    async def js_processImage(
        self, workflow: Any, file: Any, options: Any = None
    ) -> dict[str, Any]:
        """Upload -> set the LoadImage input -> submit -> wait -> history -> images, all on
        the job's one server. The uploaded name is made unique per job, so concurrent jobs
        never read each other's input whatever file names callers pass."""
        opts = _opt_dict(options, "processImage options")
        c = self._client()
        graph = wf.validate_workflow(workflow)
        node = _opt_str(opts, "imageNode")
        candidates = wf.load_image_nodes(graph)
        if node is None:
            if len(candidates) != 1:
                raise InvalidInputError(
                    f"the workflow has {len(candidates)} LoadImage nodes "
                    f"({', '.join(candidates) or 'none'}): pass imageNode to pick one"
                )
            node = candidates[0]
        elif node not in graph:
            raise InvalidInputError(
                f"imageNode {node!r} is not a node of the workflow "
                f"(LoadImage nodes: {', '.join(candidates) or 'none'})"
            )
        args = self._file_args(file, opts)
        pid = _opt_str(opts, "promptId") or wf.new_prompt_id()
        if c.options.affinity == "session":
            await c.ensure_connection()
            server = c._server_for_new_job(None, None)
            rec = c._new_record(pid, server, graph, opts)
        else:
            # select and pin in one step (no await between), so concurrent calls see each
            # other's in-flight jobs and spread out
            server = c.select()
            rec = c._new_record(pid, server, graph, opts)
            # this call holds the input file, so it alone can re-run the job elsewhere
            rec.can_move = c.options.failover != "off"
        while True:
            try:
                up, rec, images = await self._attempt(c, rec, graph, node, args)
                break
            except ComfyClientError as exc:
                if not c._finished(rec):
                    c._fail(rec, exc, "failed")
                if rec.job.state != jobs_mod.MOVED:
                    raise
                rec = c.move_job(rec, opts)  # failover: same job, new attempt elsewhere
            except asyncio.CancelledError:
                if not c._finished(rec):
                    c.release(rec.job.prompt_id)
                raise
        return {"promptId": rec.job.prompt_id, "server": rec.job.server, "images": images,
                "history": rec.history.raw if rec.history else None,
                "upload": up, "movedFrom": list(rec.moved_from)}

    @staticmethod
    async def _attempt(c: PoolClient, rec: Any, graph: dict[str, Any], node: str,
                       args: dict[str, Any]) -> tuple[dict[str, Any], Any, list[Any]]:
        """One attempt of processImage on the record's server: every step on that server."""
        pid = rec.job.prompt_id
        if c.options.affinity == "job":
            await c.connect_for_job(rec)
        unique = wf.unique_upload_name(args["filename"], pid)
        up = await c.upload(args["file"], filename=unique, overwrite=True,
                            content_type=args["content_type"], size=args["size"], job=pid)
        graph = wf.set_input(graph, node, "image", up["name"] if not up["subfolder"]
                             else f"{up['subfolder']}/{up['name']}")
        rec = await c.submit(graph, record=rec)
        rec = await c.wait(rec.job.prompt_id)
        images = await c.fetch_outputs(rec.job.prompt_id)
        return up, rec, images

    async def js_runConsistencySelfTest(self, options: Any = None) -> dict[str, Any]:
        """Run one tiny model-free job per server (job-pinned, whatever the affinity) and check
        every request of each job stayed on its server, from the audit trail."""
        c = self._client()
        png = _self_test_png()
        results = []
        for spec in c.pool.specs:
            server = spec.url
            entry: dict[str, Any] = {"server": server}
            try:
                entry.update(await self._self_test_one(c, server, png))
            except ComfyClientError as exc:
                entry.update({"ok": False, "error": exc.to_dict()})
            results.append(entry)
        return {"ok": all(r.get("ok") for r in results), "servers": results}

    async def _self_test_one(self, c: PoolClient, server: str, png: bytes) -> dict[str, Any]:
        # A job pinned to this server, outside the session lock: the self test must not move
        # the lock or wait for it.
        pid = wf.new_prompt_id()
        rec = c._new_record(pid, server, None, {}, hold_lock=False)
        try:
            await c.open_channel(server, locks=False)
            up = await c.upload(png, filename=wf.unique_upload_name("selftest.png", pid),
                                overwrite=True, job=pid, size=len(png))
            graph = wf.set_input(SELF_TEST_WORKFLOW, "1", "image", up["name"])
            # a server that names jobs itself renames ours: follow the record
            rec = await c.submit(graph, record=rec)
            await c.wait(rec.job.prompt_id)
            images = await c.fetch_outputs(rec.job.prompt_id)
        except ComfyClientError as exc:
            if not c._finished(rec):
                c._fail(rec, exc, "failed")
            raise
        pid = rec.job.prompt_id
        servers = sorted({r.server for r in c.audit.records(job=pid)})
        return {"ok": servers == [server] and len(images) == 1, "promptId": pid,
                "requests": len(c.audit.records(job=pid)), "serversSeen": servers}
