"""The client's error hierarchy.

Every error says *what* failed, *on which server*, *for which job*, and *what the
user can do about it* (``hint``).  ``code`` is a stable machine-readable name the page
uses to pick a translated message, so the English text can change without breaking
callers.  Shaped after h11's Local/RemoteProtocolError split and the ComfyUI
frontend's ``PromptExecutionError`` that carries ``node_errors``.
"""

from __future__ import annotations

from typing import Any


class ComfyClientError(Exception):
    """Base class: everything this library raises on purpose derives from it."""

    code: str = "client_error"

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        prompt_id: str | None = None,
        hint: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.server = server
        self.prompt_id = prompt_id
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        where = []
        if self.server:
            where.append(f"server {self.server}")
        if self.prompt_id:
            where.append(f"job {self.prompt_id}")
        if where:
            parts.append(f"({', '.join(where)})")
        text = " ".join(parts)
        if self.hint:
            text += f". {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form handed to page JavaScript (no proxies, JSON-safe)."""
        return {
            "name": type(self).__name__,
            "code": self.code,
            "message": str(self),
            "summary": self.message,
            "server": self.server,
            "promptId": self.prompt_id,
            "hint": self.hint,
            "details": self.details,
        }


class ConfigError(ComfyClientError, ValueError):
    """The caller's configuration is unusable (bad server URL, empty list, bad option)."""

    code = "config_error"


class NotInitialised(ConfigError):
    """A call that needs the pool came before ``init()`` configured it (or after every
    ``init()`` so far failed)."""

    code = "not_initialised"


class InvalidInputError(ComfyClientError, ValueError):
    """An argument of a public call is wrong (workflow shape, file, node id...)."""

    code = "invalid_input"


class ServerError(ComfyClientError):
    """Base for failures reported by (or while talking to) one server."""

    code = "server_error"


class ServerUnreachable(ServerError):
    """The network request never got an HTTP answer (down, refused, DNS, timeout)."""

    code = "server_unreachable"


class CrossOriginBlocked(ServerError):
    """The server (or the browser's CORS check) refused this page's origin."""

    code = "cross_origin_blocked"


class UploadTooLarge(ServerError):
    """The upload exceeds the server's ``max_upload_size``."""

    code = "upload_too_large"


class InvalidWorkflow(ServerError):
    """``POST /prompt`` answered 400: the graph did not validate.

    ``details["node_errors"]`` keeps the server's per-node errors;
    ``details["summary"]`` is a list of one-line human summaries.
    """

    code = "invalid_workflow"


class BadResponse(ServerError):
    """The server answered, but not with what the protocol says (HTML, bad JSON, bad status)."""

    code = "bad_response"


class UploadConflict(ServerError):
    """The server stored an upload under another name than the one asked for: it already
    holds a different file under that name. The job that was to read it is not submitted,
    so a wrong input is never used."""

    code = "upload_conflict"


class ProtocolError(ServerError):
    """A WebSocket frame could not be decoded (truncated, oversized, malformed)."""

    code = "protocol_error"


class ServerMismatch(ComfyClientError):
    """A call would have gone to a server other than the one its job/lock is on."""

    code = "server_mismatch"


class JobError(ComfyClientError):
    """Base for a job that reached a terminal state other than success."""

    code = "job_error"


class ExecutionFailed(JobError):
    """The server ran the job and a node raised (``execution_error``)."""

    code = "execution_failed"


class JobInterrupted(JobError):
    """The job was interrupted or cancelled before it finished."""

    code = "job_interrupted"


class JobLost(JobError):
    """The server no longer knows the job (restart wiped history, or it was deleted)."""

    code = "job_lost"


class ServerLost(JobError):
    """The job's server stayed unreachable past the job's deadline."""

    code = "server_lost"
