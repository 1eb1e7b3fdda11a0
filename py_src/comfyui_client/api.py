"""The page-facing API: the old ``comfyui.js`` function names, in Python.

``web/comfyui.js`` forwards each exported function here by name. This layer is a thin
translation: it checks the JS-shaped arguments (camelCase option objects, File/Blob
handles), calls ``PoolClient``'s public methods and returns plain data (dicts, lists,
strings, and JS Blob handles the environment passes through). What a job does lives in the
core (``lifecycle.py``); nothing here reaches into it. It imports nothing from the browser:
the environment hands it ``convert_in`` and ``is_blob``, so it runs under CPython too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .client import ClientOptions, PoolClient
from .errors import ConfigError, InvalidInputError, NotInitialised
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
    "interrupt",
    "processImage",
    "runConsistencySelfTest",
    "getJobs",
    "getAuditLog",
    "releaseTask",
)
# Answered at once, without an await: the two reports the old module's console session calls
# without `await` (comfyui.js calls them through ``Bridge.call_sync``). Pure reads of the
# client's state, so nothing in them waits for the network.
SYNC_EXPORTS = (
    "debugWebSocketLock",
    "checkServerUnlockCondition",
)

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

    def exported_sync(self, name: str) -> Callable[..., Any]:
        """One of ``SYNC_EXPORTS``: a plain function, its value returned at once."""
        if name not in SYNC_EXPORTS:
            raise InvalidInputError(f"comfyui.js has no synchronous function {name!r}")
        return getattr(self, "js_" + name)

    def _client(self) -> PoolClient:
        if self.client is None:
            raise NotInitialised("call init({servers: [...]}) first")
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
                pending = self.client.jobs_in_flight()
                if pending:
                    raise ConfigError(
                        f"cannot switch affinity to {parsed.affinity!r} while "
                        f"{pending} job(s) are in flight",
                        hint="wait for them (or interrupt them) and call init() again",
                    )
                await self.client.close()
                self.client = PoolClient(self.env, servers, parsed)
            else:
                return self._summary(self.client.reconfigure(servers, parsed))
        else:
            self.client = PoolClient(self.env, servers, parsed)
            # a reload: jobs the previous page left in flight are picked up again
            revived = await self.client.reattach()
            return self._summary({"reattached": revived})
        return self._summary({})

    def _summary(self, changes: dict[str, Any]) -> dict[str, Any]:
        c = self._client()
        return {
            "servers": c.servers,
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
        return {"server": target, "clientId": c.client_id, "wsState": c.ws_state(target)}

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

    def js_debugWebSocketLock(self) -> dict[str, Any]:
        out = self._client().debug()
        # the browser transport counts the proxies/listeners it lent to JS (leak check)
        counts = getattr(self.env, "resource_counts", None)
        if counts is not None:
            out.update(counts())
        return out

    def js_checkServerUnlockCondition(self) -> dict[str, Any]:
        return self._client().unlock_condition()

    async def js_interrupt(self, prompt_id: Any) -> dict[str, Any]:
        return await self._client().interrupt(self._pid(prompt_id))

    async def js_releaseTask(self, prompt_id: Any) -> dict[str, Any]:
        self._client().release(self._pid(prompt_id))
        return {"promptId": prompt_id, "released": True}

    async def js_getJobs(self) -> list[dict[str, Any]]:
        return self._client().jobs()

    async def js_getAuditLog(self, prompt_id: Any = None) -> list[dict[str, Any]]:
        return self._client().audit_log(_opt_str({"p": prompt_id}, "p"))

    # ------------------------------------------------------------------ whole lifecycle

    async def js_processImage(
        self, workflow: Any, file: Any, options: Any = None, digest: Any = None
    ) -> dict[str, Any]:
        """The whole job on one server (``PoolClient.run_job``): the arguments are checked
        here, before anything is sent. ``digest``: the sha256 (hex) of a Blob ``file``,
        computed by comfyui.js before the call (the input is named after it)."""
        opts = _opt_dict(options, "processImage options")
        c = self._client()
        graph = wf.validate_workflow(workflow)
        node = wf.pick_image_node(graph, _opt_str(opts, "imageNode"))
        args = self._file_args(file, opts)
        return await c.run_job(
            graph, args["file"], image_node=node, filename=args["filename"],
            content_type=args["content_type"], size=args["size"],
            prompt_id=_opt_str(opts, "promptId"), on_progress=opts.get("onProgress"),
            on_preview=opts.get("onPreview"),
            digest=digest if isinstance(digest, str) and self.is_blob(file) else None,
        )

    async def js_runConsistencySelfTest(self, options: Any = None) -> dict[str, Any]:
        """One tiny model-free job per server (job-pinned, whatever the affinity); each
        must have kept every request on its server, from the audit trail."""
        _opt_dict(options, "self test options")
        return await self._client().self_test()
