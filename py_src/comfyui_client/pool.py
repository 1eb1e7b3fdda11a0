"""Servers, their health, and the rule that picks one for a new job.

Everything here is pure: values in, values out, no clock, no network. The client feeds in
probe results and WebSocket ``status`` messages and asks ``select_server`` where a new job
should go; once chosen, a job never consults this module again (its server is pinned in
``lock.Pins``), which is what fixes the old per-call selection.

A server is named everywhere by its *key*: the base URL as configured, normalised
(lower-case scheme and host, no trailing slash). See ``normalize_servers``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from ._frozen import evolve
from .backoff import Backoff
from .errors import ConfigError, ServerUnreachable

__all__ = [
    "HEALTH_STATES",
    "Pool",
    "ServerHealth",
    "ServerSpec",
    "due_for_probe",
    "effective_load",
    "health_to_dict",
    "normalize_servers",
    "record_features",
    "record_latency",
    "record_probe_failed",
    "record_probe_ok",
    "record_queue",
    "select_server",
    "server_key",
]

HEALTH_STATES = ("unknown", "up", "down")
_SPEC_KEYS = frozenset({"url", "weight", "label", "token"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Host names as they occur in practice, Docker's underscores included; IPv6 goes in brackets.
_HOST_RE = re.compile(r"^(?:[a-z0-9._~%-]+|\[[0-9a-f:.]+\])$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_SCHEME_ONLY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(?!\d)")


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ServerSpec:
    """One configured server. ``url`` is its key (normalised base URL, no trailing slash).

    ``token`` is kept out of ``repr`` so a logged spec never leaks the credential.
    """

    url: str
    weight: float = 1.0
    label: str | None = None
    token: str | None = field(default=None, repr=False)


def _redacted(url: str) -> str:
    """The URL for an error message: ``user:password@`` and any query/fragment (where a
    token could sit) replaced by ``***``."""
    url = re.sub(r"(?<=://)[^/@?#]*@", "***@", url)
    return re.sub(r"([?#]).*", r"\1***", url, count=1)


def _fail(where: str, problem: str, hint: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}", hint=hint)


def _normalize_url(url: Any, where: str) -> tuple[str, str]:
    """Return ``(key, identity)``: the key users see, and the identity used for duplicates.

    The identity also drops a default port, so ``http://a:80`` and ``http://a`` (the same
    server) are reported as duplicates, while the key keeps the port as the user wrote it.
    """
    if not isinstance(url, str):
        raise _fail(where, f"the URL must be a string, got {type(url).__name__}",
                    "write the server's base URL, e.g. 'http://127.0.0.1:8188'")
    text = url.strip()
    if not text:
        raise _fail(where, "the URL is empty", "write the server's base URL, "
                    "e.g. 'http://127.0.0.1:8188'")
    shown = repr(_redacted(text))
    if any(ch.isspace() for ch in text):
        raise _fail(where, f"{shown} contains whitespace", "remove the spaces from the URL")
    if "://" not in text:
        # "javascript:alert(1)" names a scheme; "myhost:8188" is a host and port.
        named = _SCHEME_ONLY_RE.match(text)
        if named:
            raise _fail(where, f"{shown}: scheme {named.group(1).lower()!r} is not allowed",
                        "only http:// and https:// server URLs are accepted")
        raise _fail(where, f"{shown} has no scheme",
                    f"write it with http:// or https://, e.g. 'http://{text.rstrip('/')}'")
    parts = _split_url(text)
    scheme = parts.scheme
    if scheme not in ("http", "https"):
        hint = "only http:// and https:// server URLs are accepted"
        if scheme in ("ws", "wss"):
            hint += "; give the HTTP base URL, the client derives the WebSocket URL itself"
        raise _fail(where, f"{shown}: scheme {scheme!r} is not allowed", hint)
    if "@" in parts.netloc:
        raise _fail(where, f"{shown} embeds credentials (user:password@host)",
                    "remove them from the URL and give the credential as the server's "
                    "'token' option instead ({url, token})")
    if "?" in text or "#" in text:
        raise _fail(where, f"{shown} has a query or fragment",
                    "give only the base URL (scheme, host, optional port and path prefix); "
                    "put an access token in the server's 'token' option")
    host = (parts.hostname or "").lower()
    if not host:
        raise _fail(where, f"{shown} has no host", "write it as http://host:port")
    try:
        port = parts.port
    except ValueError:
        raise _fail(where, f"{shown} has an invalid port",
                    "the port must be a number between 1 and 65535") from None
    if port == 0:
        raise _fail(where, f"{shown} has port 0", "the port must be between 1 and 65535")
    netloc_host = f"[{host}]" if ":" in host else host
    if not _HOST_RE.match(netloc_host):
        raise _fail(where, f"{shown} has an invalid host {host!r}",
                    "use a host name or IP address")
    path = parts.path.rstrip("/")
    key = f"{scheme}://{netloc_host}{'' if port is None else f':{port}'}{path}"
    same_port = port is None or port == _DEFAULT_PORTS[scheme]
    identity = f"{scheme}://{netloc_host}{'' if same_port else f':{port}'}{path}"
    return key, identity


@dataclass(frozen=True)
class _UrlParts:
    scheme: str
    netloc: str
    path: str

    @property
    def hostname(self) -> str | None:
        host = self._host_port()[0]
        return host.lower() if host else None

    @property
    def port(self) -> int | None:
        raw = self._host_port()[1]
        if not raw:
            return None
        if not (raw.isascii() and raw.isdigit()) or int(raw) > 65535:
            raise ValueError(f"invalid port {raw!r}")
        return int(raw)

    def _host_port(self) -> tuple[str, str | None]:
        hostport = self.netloc.rpartition("@")[2]
        if hostport.startswith("["):
            close = hostport.find("]")
            if close == -1:
                return "", None
            rest = hostport[close + 1:]
            port = rest[1:] if rest.startswith(":") else (None if not rest else "?")
            return hostport[1:close], port
        host, sep, port = hostport.partition(":")
        return host, (port if sep else None)


def _split_url(text: str) -> _UrlParts:
    """``scheme://netloc/path`` of a URL known to contain ``://``: the part of
    ``urllib.parse.urlsplit`` this module needs. Written out because importing
    ``urllib.parse`` costs ~60 ms of the page's boot under Pyodide (``python3 build.py
    bench``), and ``init()`` validates URLs during boot."""
    scheme, _, rest = text.partition("://")
    end = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if i != -1:
            end = min(end, i)
    path = rest[end:].split("#", 1)[0].split("?", 1)[0]
    if not _SCHEME_RE.match(scheme):
        scheme = ""  # as urlsplit: not a scheme at all
    return _UrlParts(scheme.lower(), rest[:end], path)


@functools.lru_cache(maxsize=256)
def server_key(url: str) -> str:
    """The name of a server everywhere: its normalised base URL without a trailing slash.

    Raises ``ConfigError`` for a URL ``normalize_servers`` would reject. Cached: it runs on
    every call that names a server, with a handful of distinct inputs.
    """
    return _normalize_url(url, "server URL")[0]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"weight must be a number, got {value!r}",
                    "use a positive number such as 1 or 2.5 (not a string)")
    if not math.isfinite(value) or value <= 0:
        raise _fail(where, f"weight must be a positive finite number, got {value!r}",
                    "use a positive number such as 1 or 2.5")
    return float(value)


def _optional_text(value: Any, where: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        # Never echo a token back: it may be a real credential typed in the wrong place.
        shown = "a non-empty string" if name == "token" else repr(value)
        raise _fail(where, f"{name} must be a non-empty string or null, got "
                    f"{type(value).__name__ if name == 'token' else shown}",
                    f"pass {name} as text, or leave it out")
    return value


def _one_spec(entry: Any, index: int) -> ServerSpec:
    where = f"servers[{index}]"
    if isinstance(entry, ServerSpec):
        key, _ = _normalize_url(entry.url, where)
        return replace(entry, url=key, weight=_number(entry.weight, where))
    if isinstance(entry, str):
        key, _ = _normalize_url(entry, where)
        return ServerSpec(url=key)
    if isinstance(entry, Mapping):
        unknown = sorted(str(k) for k in entry if k not in _SPEC_KEYS)
        if unknown:
            raise _fail(where, f"unknown key(s) {', '.join(map(repr, unknown))}",
                        "a server entry accepts only url, weight, label and token")
        if "url" not in entry:
            raise _fail(where, "the entry has no 'url'",
                        "write it as {url: 'http://host:port', weight?, label?, token?}")
        key, _ = _normalize_url(entry["url"], where)
        weight = entry.get("weight")
        return ServerSpec(
            url=key,
            weight=1.0 if weight is None else _number(weight, where),
            label=_optional_text(entry.get("label"), where, "label"),
            token=_optional_text(entry.get("token"), where, "token"),
        )
    raise _fail(where, f"expected a URL string or an object, got {type(entry).__name__}",
                "write 'http://host:port' or {url: 'http://host:port', weight: 2}")


def normalize_servers(config: Any) -> tuple[ServerSpec, ...]:
    """Validate and normalise the configured server list.

    Accepts a list/tuple of URL strings, ``{url, weight?, label?, token?}`` mappings or
    ``ServerSpec`` values. Only http/https; lower-case scheme and host; explicit port and
    path prefix kept; trailing slashes removed. Rejected with a ``ConfigError`` naming the
    entry and the fix: an empty list, a non-list, ``javascript:``/``file:``/``ws:`` URLs, a
    missing host, ``user:pw@`` credentials, a query or fragment (tokens belong in ``token``,
    where they are never logged), a non-positive or non-finite weight, unknown keys, and
    duplicates after normalisation (``http://A:80/`` duplicates ``http://a``).
    """
    if isinstance(config, (str, bytes)) or not isinstance(config, (list, tuple)):
        hint = "pass a list, e.g. servers: ['http://127.0.0.1:8188']"
        if isinstance(config, str):
            hint = f"wrap the URL in a list: servers: [{config!r}]"
        raise ConfigError(f"servers must be a list, got {type(config).__name__}", hint=hint)
    if not config:
        raise ConfigError("servers is empty",
                          hint="configure at least one server, e.g. ['http://127.0.0.1:8188']")
    specs: list[ServerSpec] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(config):
        spec = _one_spec(entry, index)
        identity = _normalize_url(spec.url, f"servers[{index}]")[1]
        if identity in seen:
            raise ConfigError(
                f"servers[{index}]: {spec.url} duplicates servers[{seen[identity]}]",
                hint="list each server once; use 'weight' to prefer one",
            )
        seen[identity] = index
        specs.append(spec)
    return tuple(specs)


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class ServerHealth:
    """What the client knows about one server. Times are monotonic seconds.

    ``unknown`` until the first probe; ``up`` after a successful one; ``down`` after a
    failure, with ``reason`` and ``next_probe_at`` pushed out by the backoff.
    ``first_failure_at`` starts the current failure streak (for job deadlines).
    """

    state: str = "unknown"
    reason: str | None = None
    version: str | None = None
    devices: tuple[str, ...] = ()
    queue_remaining: int | None = None
    last_latency_ms: float | None = None
    consecutive_failures: int = 0
    next_probe_at: float = 0.0
    first_failure_at: float | None = None
    last_ok_at: float | None = None
    max_upload_size: int | None = None


def _devices_summary(devices: Iterable[Any] | None) -> tuple[str, ...]:
    """Device names as short text: accepts names or ``system_stats`` device dicts."""
    out: list[str] = []
    for dev in devices or ():
        if dev is None:
            continue
        if isinstance(dev, Mapping):
            name = dev.get("name") or dev.get("type")
            if name:
                out.append(str(name))
        else:
            out.append(str(dev))
    return tuple(out)


def _queue_value(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def record_probe_ok(
    health: ServerHealth,
    *,
    now: float,
    latency_ms: float | None,
    version: str | None = None,
    devices: Iterable[Any] | None = None,
    queue_remaining: int | None = None,
    probe_interval: float = 30.0,
) -> ServerHealth:
    """A probe answered: the server is ``up``; the failure streak is over."""
    queue = _queue_value(queue_remaining)
    return replace(
        health,
        state="up",
        reason=None,
        version=version if version is not None else health.version,
        devices=_devices_summary(devices) if devices is not None else health.devices,
        queue_remaining=queue if queue is not None else health.queue_remaining,
        last_latency_ms=latency_ms,
        consecutive_failures=0,
        next_probe_at=now + probe_interval,
        first_failure_at=None,
        last_ok_at=now,
    )


def record_probe_failed(
    health: ServerHealth,
    *,
    now: float,
    reason: str,
    backoff: Backoff,
    rand: float = 0.0,
) -> ServerHealth:
    """A probe (or any request) got no usable answer: ``down``, retried after the backoff.

    ``rand`` is the jitter draw (see ``backoff``); the default 0.0 gives the un-jittered,
    longest delay, which is the conservative choice for a caller that does not care.
    """
    failures = health.consecutive_failures + 1
    return replace(
        health,
        state="down",
        reason=reason,
        consecutive_failures=failures,
        next_probe_at=now + backoff.delay(failures, rand),
        first_failure_at=health.first_failure_at if health.first_failure_at is not None
        else now,
    )


def record_queue(health: ServerHealth, queue_remaining: Any) -> ServerHealth:
    """A live WS ``status`` message: update the queue depth only.

    The health *state* is left alone on purpose: a message proves the socket is alive, but
    the HTTP side (what jobs need) is judged by probes and requests. An invalid value (not
    a non-negative int) is ignored rather than trusted.
    """
    queue = _queue_value(queue_remaining)
    if queue is None or queue == health.queue_remaining:
        return health
    return evolve(health, {"queue_remaining": queue})


def record_latency(health: ServerHealth, latency_ms: float) -> ServerHealth:
    """Latency of an ordinary request (not a probe): informational only."""
    return evolve(health, {"last_latency_ms": latency_ms})


def record_features(health: ServerHealth, *, max_upload_size: Any) -> ServerHealth:
    """From ``GET /features``: remember the upload limit, so big files fail before sending."""
    size = max_upload_size if isinstance(max_upload_size, int) and not isinstance(
        max_upload_size, bool) and max_upload_size > 0 else None
    return replace(health, max_upload_size=size)


def due_for_probe(health: ServerHealth, now: float) -> bool:
    """Never-probed servers are always due; others once ``next_probe_at`` has passed."""
    return health.state == "unknown" or now >= health.next_probe_at


def health_to_dict(server: str, health: ServerHealth) -> dict[str, Any]:
    """Plain JSON-safe form for page JavaScript (camelCase keys)."""
    return {
        "server": server,
        "status": health.state,
        "reason": health.reason,
        "version": health.version,
        "devices": list(health.devices),
        "queueRemaining": health.queue_remaining,
        "latencyMs": health.last_latency_ms,
        "consecutiveFailures": health.consecutive_failures,
        "nextProbeAt": health.next_probe_at,
    }


# --------------------------------------------------------------------------- selection

_UNKNOWN = ServerHealth()


def effective_load(health: ServerHealth, inflight: int = 0) -> int:
    """``max(queue_remaining, inflight)``: the load the selection rule compares.

    ``queue_remaining`` comes from WS ``status`` messages and lags our own submissions by a
    round trip, so two jobs submitted back to back would both see an empty queue and land
    on the same server. Counting our own unfinished jobs on the server fixes that. It is
    ``max`` and not the sum because once the server has seen our jobs its queue already
    counts them: the sum would count them twice.
    """
    return max(health.queue_remaining or 0, inflight)


def select_server(
    servers: Sequence[ServerSpec],
    health: Mapping[str, ServerHealth],
    *,
    exclude: Iterable[str] = (),
    inflight: Mapping[str, int] | None = None,
) -> ServerSpec:
    """Pick the server for a new job. One pass over ``servers``: O(n).

    Rule:
      1. Candidates are the servers whose state is ``up``. If none is ``up``, the servers
         still ``unknown`` (never probed; missing from ``health`` counts as unknown) are the
         candidates, so a fresh page can work before its first probe. ``down`` servers are
         never chosen, nor those in ``exclude`` (keys, e.g. draining or just failed).
      2. Among candidates the smallest key wins:
         ``(effective load, -weight, index in config)`` where effective load is
         ``max(queue_remaining, inflight[server])`` (see ``effective_load``): fewer queued
         first, then the higher weight, then the one listed first.
    Raises ``ServerUnreachable`` listing each server's reason when nothing is selectable.
    """
    if not servers:
        raise ConfigError("no servers configured", hint="configure at least one server")
    if isinstance(exclude, str):
        skip: Set[str] | Mapping[str, Any] = frozenset((exclude,))
    elif isinstance(exclude, (Set, Mapping)):
        skip = exclude
    else:
        skip = frozenset(exclude)
    counts = inflight or {}
    best_up: tuple[tuple[int, float, int], ServerSpec] | None = None
    best_unknown: tuple[tuple[int, float, int], ServerSpec] | None = None
    for index, spec in enumerate(servers):
        if spec.url in skip:
            continue
        h = health.get(spec.url, _UNKNOWN)
        if h.state == "down":
            continue
        key = (effective_load(h, counts.get(spec.url, 0)), -spec.weight, index)
        if h.state == "up":
            if best_up is None or key < best_up[0]:
                best_up = (key, spec)
        elif best_up is None and (best_unknown is None or key < best_unknown[0]):
            best_unknown = (key, spec)
    if best_up is not None:
        return best_up[1]
    if best_unknown is not None:
        return best_unknown[1]
    reasons: dict[str, str] = {}
    for spec in servers:
        if spec.url in skip:
            reasons[spec.url] = "excluded"
        else:
            h = health.get(spec.url, _UNKNOWN)
            reasons[spec.url] = f"down ({h.reason or 'no reason recorded'})"
    listing = "; ".join(f"{url}: {why}" for url, why in reasons.items())
    raise ServerUnreachable(
        f"no server available: {listing}",
        hint="start a server or check the URLs; down servers are retried with backoff",
        details={"servers": reasons},
    )


# --------------------------------------------------------------------------- the pool


def _proxy(mapping: Mapping[str, ServerHealth]) -> Mapping[str, ServerHealth]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Pool:
    """The configured servers (``specs``, selectable, in config order), the ``draining`` ones
    (removed from the config while jobs are still pinned to them: not selectable, but still
    known, with their token, so those jobs finish where they started), and every server's
    health. Every update returns a new ``Pool``.
    """

    specs: tuple[ServerSpec, ...]
    healths: Mapping[str, ServerHealth] = field(default_factory=lambda: MappingProxyType({}))
    draining: tuple[ServerSpec, ...] = ()

    @classmethod
    def create(cls, config: Any) -> Pool:
        """A pool from a server list (raw config or ``ServerSpec`` values), all ``unknown``."""
        specs = normalize_servers(config)
        return cls(specs=specs, healths=_proxy({s.url: ServerHealth() for s in specs}))

    # -- lookups ----------------------------------------------------------------------

    def spec(self, server: str) -> ServerSpec | None:
        """The spec of an active or draining server, else None."""
        for spec in self.specs:
            if spec.url == server:
                return spec
        for spec in self.draining:
            if spec.url == server:
                return spec
        return None

    def health_of(self, server: str) -> ServerHealth | None:
        return self.healths.get(server)

    def is_draining(self, server: str) -> bool:
        return any(s.url == server for s in self.draining)

    def max_upload_size(self, server: str) -> int | None:
        health = self.healths.get(server)
        return health.max_upload_size if health is not None else None

    def select(
        self, *, exclude: Iterable[str] = (), inflight: Mapping[str, int] | None = None
    ) -> ServerSpec:
        """``select_server`` over the active specs (draining servers are never candidates)."""
        return select_server(self.specs, self.healths, exclude=exclude, inflight=inflight)

    # -- health updates ---------------------------------------------------------------

    def _with(self, server: str, health: ServerHealth) -> Pool:
        if server not in self.healths or self.healths[server] is health:
            return self  # unknown server (e.g. removed meanwhile): nothing to update
        updated = dict(self.healths)
        updated[server] = health
        return evolve(self, {"healths": MappingProxyType(updated)})

    def probe_ok(self, server: str, **kwargs: Any) -> Pool:
        health = self.healths.get(server)
        return self if health is None else self._with(server, record_probe_ok(health, **kwargs))

    def probe_failed(self, server: str, **kwargs: Any) -> Pool:
        health = self.healths.get(server)
        return self if health is None else self._with(
            server, record_probe_failed(health, **kwargs))

    def queue_update(self, server: str, queue_remaining: Any) -> Pool:
        health = self.healths.get(server)
        return self if health is None else self._with(
            server, record_queue(health, queue_remaining))

    def with_latency(self, server: str, latency_ms: float) -> Pool:
        health = self.healths.get(server)
        return self if health is None else self._with(server, record_latency(health, latency_ms))

    def with_features(self, server: str, *, max_upload_size: Any) -> Pool:
        health = self.healths.get(server)
        return self if health is None else self._with(
            server, record_features(health, max_upload_size=max_upload_size))

    # -- reconfiguration --------------------------------------------------------------

    def reconfigure(
        self, new_config: Any, pinned: Set[str] | Iterable[str]
    ) -> tuple[Pool, tuple[str, ...], tuple[str, ...]]:
        """Replace the server list at run time without losing jobs in flight.

        Returns ``(pool, removed, added)`` (server keys, in old/new config order).
        A removed server that still has pinned jobs (``pinned``: servers with jobs) becomes
        *draining*: not selectable, but its spec and health stay so those jobs keep running
        there. A draining server no longer pinned is dropped; one listed again is active
        again. Kept servers keep their health; their weight/label/token follow the new
        config.
        """
        specs = normalize_servers(new_config)
        pinned_set = pinned if isinstance(pinned, Set) else frozenset(pinned)
        new_keys = {s.url for s in specs}
        old_keys = {s.url for s in self.specs}
        removed = tuple(s.url for s in self.specs if s.url not in new_keys)
        added = tuple(s.url for s in specs if s.url not in old_keys)
        draining = [s for s in self.specs if s.url not in new_keys and s.url in pinned_set]
        draining += [s for s in self.draining if s.url not in new_keys and s.url in pinned_set]
        healths = {
            s.url: self.healths.get(s.url, ServerHealth()) for s in (*specs, *draining)
        }
        pool = Pool(specs=specs, healths=MappingProxyType(healths), draining=tuple(draining))
        return pool, removed, added

    def release_drained(self, pinned: Set[str] | Iterable[str]) -> tuple[Pool, tuple[str, ...]]:
        """Forget draining servers whose last pinned job has ended; returns the dropped keys."""
        pinned_set = pinned if isinstance(pinned, Set) else frozenset(pinned)
        keep = tuple(s for s in self.draining if s.url in pinned_set)
        dropped = tuple(s.url for s in self.draining if s.url not in pinned_set)
        if not dropped:
            return self, ()
        healths = {k: v for k, v in self.healths.items() if k not in dropped}
        return replace(self, draining=keep, healths=MappingProxyType(healths)), dropped

    def describe(self) -> list[dict[str, Any]]:
        """Every known server as plain data (debug helper), draining ones flagged."""
        out = []
        for spec in (*self.specs, *self.draining):
            item = health_to_dict(spec.url, self.healths.get(spec.url, _UNKNOWN))
            item.update(label=spec.label, weight=spec.weight,
                        draining=self.is_draining(spec.url))
            out.append(item)
        return out
