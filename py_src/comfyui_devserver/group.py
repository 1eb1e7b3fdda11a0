"""N dev servers in one background thread with its own event loop, for sync callers.

pytest fixtures, ``build.py serve`` and Playwright tests are synchronous; the servers are
asyncio. One thread owns the loop and every server; callers reach them only through
:meth:`ServerGroup.call`, which runs code in that loop, so no server state is ever touched
from two threads.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import string
import threading
from collections.abc import Callable
from typing import Any

from .server import DevServer


def instance_names(count: int) -> list[str]:
    letters = string.ascii_lowercase
    return [letters[i] if i < len(letters) else f"s{i}" for i in range(count)]


class ServerGroup:
    """``with ServerGroup(count=2, cors_origin="*") as group: group.urls`` .

    ``port=0`` gives every instance a free port; a fixed ``port`` gives ``port + i``.
    Extra keyword arguments go to every :class:`DevServer` (``node_delay_s=``, ...).
    """

    def __init__(self, count: int = 2, cors_origin: str | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0,
                 **server_kwargs: Any) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.servers: list[DevServer] = [
            DevServer(name=name, cors_origin=cors_origin, **server_kwargs)
            for name in instance_names(count)
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def __enter__(self) -> ServerGroup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ServerGroup already started")
        self._thread = threading.Thread(target=self._run, name="comfyui-devservers",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise TimeoutError("dev servers did not start in time")
        if self._error is not None:
            self._thread.join(self.timeout)
            self._thread = None
            raise RuntimeError("dev servers failed to start") from self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._start_all())
        except BaseException as exc:
            self._error = exc
            loop.run_until_complete(self._stop_all())
            loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._stop_all())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _start_all(self) -> None:
        for i, server in enumerate(self.servers):
            await server.start(self.host, self.port + i if self.port else 0)

    async def _stop_all(self) -> None:
        for server in self.servers:
            await server.stop()

    def stop(self) -> None:
        """Stop every server (closing sockets, deleting folders) and end the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)
        self._thread = None
        if thread.is_alive():
            raise TimeoutError("dev server thread did not stop in time")

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` (plain or async) in the servers' loop and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("ServerGroup is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError("call() from the servers' own thread would deadlock")

        async def runner() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        future = asyncio.run_coroutine_threadsafe(runner(), loop)
        return future.result(self.timeout if timeout is None else timeout)

    def log(self, i: int) -> list[dict[str, Any]]:
        """A deep copy of server ``i``'s request log, taken inside the loop."""
        return self.call(lambda: copy.deepcopy(self.servers[i].request_log))
