"""What outlives a page reload: the tab's client id and its job -> server map.

ComfyUI sends a job's messages to the socket of the client id the job was submitted with,
and a job's history and outputs exist only on its own server. So a reloaded page must come
back with the same client id and know where every job of the tab went: ``SessionStore``
keeps both in the page's ``sessionStorage`` (one entry, ``SESSION_KEY``), and hands them
back to ``PoolClient.reattach`` after a reload, which re-pins the jobs, reconnects to their
servers and asks what happened meanwhile (ComfyUI replays nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from .options import ClientOptions
from .records import JobBook

SESSION_KEY = "comfyui-client:v1"
# finished jobs remembered across reloads (their server, for history and outputs)
MAX_DONE = 200


class SessionStore:
    """The tab's saved state: ``{"clientId", "jobs": {pid: server}, "done": {pid: server}}``.

    ``jobs`` are the unfinished jobs (to reattach), ``done`` the finished ones (their server
    still answers for their history and images). Writing is best effort: quota and disabled
    storage are never fatal, and ``persist: false`` turns it off.
    """

    def __init__(self, env: Any, options: ClientOptions) -> None:
        self.env = env
        self.options = options
        # finished jobs known from before a reload: prompt id -> server
        self.done: dict[str, str] = {}
        self.client_id = self._load_client_id()

    def _load_client_id(self) -> str:
        if self.options.client_id:
            return self.options.client_id
        saved = self.env.storage_get(SESSION_KEY) if self.options.persist else None
        if saved:
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                data = json.loads(saved)
                if isinstance(data.get("clientId"), str) and data["clientId"]:
                    return data["clientId"]
        # 32 hex digits, the form ComfyUI's own frontend uses (uuid4().hex); os.urandom
        # directly because importing uuid costs ~16 ms of the page's boot under Pyodide
        cid = os.urandom(16).hex()
        self._write(cid, {}, dict(self.done))
        return cid

    def save(self, book: JobBook) -> None:
        """Write the job map as it stands (twice per job: when it starts and ends)."""
        if not self.options.persist:
            return
        pins: dict[str, str] = {}
        done = dict(self.done)
        for pid, rec in book.records.items():  # one pass: this runs twice per job
            (done if book.finished(rec) else pins)[pid] = rec.job.server
        if len(done) > MAX_DONE:
            done = dict(list(done.items())[-MAX_DONE:])
        self._write(self.client_id, pins, done)

    def _write(self, client_id: str, jobs: dict[str, str], done: dict[str, str]) -> None:
        if not self.options.persist:
            return
        self.env.storage_set(
            SESSION_KEY, json.dumps({"clientId": client_id, "jobs": jobs, "done": done}))

    def saved(self) -> tuple[dict[str, str], dict[str, str]]:
        """What the previous page of this tab left: ``(in flight, done)``, each
        prompt id -> server, malformed entries dropped."""
        raw = self.env.storage_get(SESSION_KEY) if self.options.persist else None
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}

        def pairs(value: Any) -> dict[str, str]:
            if not isinstance(value, dict):
                return {}
            return {p: s for p, s in value.items()
                    if isinstance(p, str) and isinstance(s, str)}

        return pairs(data.get("jobs")), pairs(data.get("done"))

    def remember_done(self, prompt_id: str, server: str) -> None:
        """A finished job from before the reload: its server stays known."""
        self.done[prompt_id] = server

    def done_server(self, prompt_id: str) -> str | None:
        return self.done.get(prompt_id)
