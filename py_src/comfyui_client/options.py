"""Every tunable of the client (``init()``'s options), validated in one place.

``ClientOptions.from_dict`` takes the page's camelCase option object and refuses unknown
names, wrong types and combinations that cannot work, each with a hint, so a typo never
silently becomes a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import jobs as jobs_mod
from .backoff import Backoff
from .console import LOG_LEVELS
from .errors import ConfigError
from .protocol import events as ev

AFFINITIES = ("session", "job")
# init() options that web/comfyui.js reads when it boots Python (the first init() only)
PAGE_BOOT_OPTIONS = ("extraPackages", "bootCache", "microtaskLoop")


@dataclass
class ClientOptions:
    """Every tunable, with the defaults documented in the README ("Options")."""

    affinity: str = "session"
    request_timeout_s: float = 30.0
    upload_timeout_s: float = 120.0
    ws_connect_timeout_s: float = 10.0
    # a job whose server stays unreachable this long ends with ServerLost
    job_deadline_s: float = 600.0
    # with no WS message for this long, a running job is checked over HTTP
    stall_check_s: float = 15.0
    history_retries: int = 8
    # how often a job without a live WebSocket is polled over HTTP
    poll_interval_s: float = 1.0
    reconnect: Backoff = field(default_factory=Backoff)
    max_audit: int = 5000
    max_events_per_job: int = 500
    # a text frame above this is refused unparsed (a server cannot make the page parse and
    # hold arbitrarily large JSON); ComfyUI's own messages are far smaller
    max_message_bytes: int = ev.DEFAULT_MAX_TEXT_BYTES
    client_id: str | None = None
    persist: bool = True
    # "before-start": a processImage job whose server is lost before it started runs on
    # another server (see jobs.failover_decision); "off": it ends with ServerLost
    failover: str = "off"
    max_moves: int = 2
    # how much of the lock's story the console tells (console.py): "off" | "lock" | "verbose"
    log: str = "lock"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ClientOptions:
        known = {
            "affinity": "affinity",
            "requestTimeout": "request_timeout_s",
            "uploadTimeout": "upload_timeout_s",
            "wsConnectTimeout": "ws_connect_timeout_s",
            "jobDeadline": "job_deadline_s",
            "stallCheck": "stall_check_s",
            "historyRetries": "history_retries",
            "pollInterval": "poll_interval_s",
            "maxAudit": "max_audit",
            "clientId": "client_id",
            "persist": "persist",
            "failover": "failover",
            "log": "log",
        }
        opts = cls()
        for key, value in raw.items():
            if key in ("servers", *PAGE_BOOT_OPTIONS) or value is None:
                continue
            if key not in known:
                raise ConfigError(
                    f"unknown option {key!r}",
                    hint="known options: " + ", ".join(
                        sorted(("servers", *PAGE_BOOT_OPTIONS, *known))),
                )
            attr = known[key]
            default = getattr(opts, attr)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"option {key} must be true or false, got {value!r}")
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"option {key} must be a non-negative number, got {value!r}")
                value = type(default)(value) if isinstance(default, float) else int(value)
            setattr(opts, attr, value)
        if opts.log not in LOG_LEVELS:
            raise ConfigError(
                f"log must be 'off', 'lock' or 'verbose', got {opts.log!r}",
                hint="'lock' (the default) prints when the lock is taken and released; "
                "'verbose' also every consistency check and submit; 'off' prints neither",
            )
        if opts.failover not in jobs_mod.FAILOVER_POLICIES:
            raise ConfigError(
                f"failover must be 'off' or 'before-start', got {opts.failover!r}",
                hint="'before-start' moves a job whose server is lost before it started to "
                "another server; 'off' (the default) ends it with server_lost",
            )
        if opts.failover != "off" and opts.affinity != "job":
            raise ConfigError(
                f"failover {opts.failover!r} needs affinity 'job'",
                hint="in session affinity every job runs on the locked server by definition; "
                "use init({affinity: 'job', failover: 'before-start'})",
            )
        if opts.affinity not in AFFINITIES:
            raise ConfigError(
                f"affinity must be 'session' or 'job', got {opts.affinity!r}",
                hint="'session' locks the page's WebSocket server for all work (the old "
                "comfyui.js behaviour); 'job' pins each job to its own server",
            )
        return opts
