"""Run-time knobs of one dev server: injected faults and the simulated-sampler pacing.

Every field is read by the server at the moment it matters (per request, per event, per
node), so a test can flip a knob while a job runs. From another thread set fields through
``loop.call_soon_threadsafe`` or ``ServerGroup.call`` so the write lands between two steps
of the server's event loop; plain attribute writes are all the server ever sees.

Defaults reproduce the recorded real ComfyUI: no delays, no faults, history written 0.5 ms
after ``execution_success`` (the real server's race: in invert_success.json its
``execution_success`` came 0.5 ms before ``executing{node: null}``, which follows the history
write; ``history_gap_s`` widens it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HTML_PROXY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass
class RouteFault:
    """A canned answer for one route, as a proxy or an overloaded server would give.

    ``remaining`` counts how many more requests get the fault (``None`` = until removed);
    when it reaches 0 the fault removes itself, so "fail twice then recover" is one line.
    ``cors=False`` leaves the ``Access-Control-*`` headers off even on a CORS server, the
    way an error page from a proxy in front of ComfyUI looks to a browser (opaque failure).
    ``after_handler=True`` lets the server act on the request first and only replaces its
    answer: a proxy that mangled the reply to a ``POST /prompt`` ComfyUI did queue.
    """

    status: int
    body: str = ""
    content_type: str = "text/plain"
    remaining: int | None = None
    cors: bool = True
    after_handler: bool = False

    @classmethod
    def proxy_html(cls, status: int = 502, remaining: int | None = None) -> RouteFault:
        """The nginx-style HTML error page a reverse proxy answers when ComfyUI is away."""
        return cls(status=status, body=HTML_PROXY_PAGE, content_type="text/html",
                   remaining=remaining)


@dataclass
class Faults:
    """Fault injection and pacing knobs (see the module docstring for thread rules).

    - ``drop_ws_at_event`` / ``drop_ws_nth``: right BEFORE the job's ``nth`` event of that
      type (``"executing"``, ``"executed"``, ``"progress"``, ``"execution_success"``,
      ``"status"``, ... or ``"preview"`` for binary preview frames) the server closes the
      socket of the job's client; the event is lost, the job carries on. One-shot: it
      clears itself after firing. Use :meth:`drop_ws` to arm it (resets the counter).
    - ``route_faults``: path -> :class:`RouteFault`. A key matches the request path with or
      without the ``/api`` prefix; a key ending in ``*`` matches by prefix.
    - ``route_delay_s``: path -> seconds to wait before answering (same matching).
    - ``answer_delay_s``: path -> seconds to hold the answer AFTER the server acted on the
      request (same matching): a ``POST /prompt`` whose job is queued, runs and ends
      before its client hears back, as on a busy network or a cached workflow.
    - ``ignore_prompt_id``: act like ComfyUI releases before client-chosen ids (and the
      installable 2024 fork on PyPI): a ``prompt_id`` in ``POST /prompt`` is ignored and the
      server names the job itself.
    - ``untargeted_interrupt``: act like ComfyUI releases before targeted interrupts (and
      that fork): ``POST /interrupt`` ignores its ``prompt_id`` and stops whatever runs.
    - ``history_gap_s``: time between sending ``execution_success`` and writing history.
    - ``stall``: while true the server answers nothing (HTTP and WS handshakes hang, queued
      WS messages are held back); clearing it lets everything through again.
    - ``drop_ws_on_request``: a route key (as in ``route_faults``); the next request to it
      first drops every open socket, as a proxy or a network blip would (e.g. on
      ``/upload/image``: the socket goes before the job is submitted). One-shot.
    - ``restart_after_event`` / ``restart_after_nth``: right AFTER the ``nth`` job event of
      that type is on the wire
      the server restarts (:meth:`DevServer.restart`: history, queue and sockets gone),
      e.g. ``"execution_success"`` with a ``history_gap_s`` wide enough: the job succeeded
      but its history is never written. One-shot.
    - ``ws_junk``: frames (``str`` text, ``bytes`` binary) a hostile or broken peer might
      send: HTML, cut-off JSON, unknown types, truncated binary headers... They go to a
      job's client socket right before its first ``executing`` event, then the list is
      cleared. One-shot.
    - ``reject_ws_reopen_once``: the next socket opened with a clientId this server has
      seen before is closed right after the handshake; clears itself.
    - ``stale_close_unregisters``: real ComfyUI pops ``sockets[sid]`` when ANY socket of
      that sid closes, so closing an old socket after opening its replacement unregisters
      the replacement. True reproduces that; False only unregisters the socket itself.
    - ``node_delay_s``: sleep per executed node (after ``executing``), so progress is
      watchable and interrupts have a node to land on.
    - ``progress_steps`` / ``progress_step_delay_s``: ImageBlur, ImageInvert and
      ImageScale act like a sampler: N ``progress`` steps, each with a preview frame of the
      image so far (type 4 after the feature_flags handshake, else legacy type 1 PNG).
    - ``progress_text``: also send a binary type 3 progress-text frame per step.
    - ``flood_progress`` / ``flood_previews``: per job, M progress+progress_state messages
      and K small preview frames as fast as possible, for throughput benchmarks.
    """

    drop_ws_at_event: str | None = None
    drop_ws_nth: int = 1
    route_faults: dict[str, RouteFault] = field(default_factory=dict)
    route_delay_s: dict[str, float] = field(default_factory=dict)
    answer_delay_s: dict[str, float] = field(default_factory=dict)
    ignore_prompt_id: bool = False
    untargeted_interrupt: bool = False
    history_gap_s: float = 0.0005
    stall: bool = False
    reject_ws_reopen_once: bool = False
    drop_ws_on_request: str | None = None
    ws_junk: list[str | bytes] = field(default_factory=list)
    restart_after_event: str | None = None
    restart_after_nth: int = 1
    restart_seen: int = field(default=0, repr=False, compare=False)
    stale_close_unregisters: bool = True
    node_delay_s: float = 0.0
    progress_steps: int = 0
    progress_step_delay_s: float = 0.02
    progress_text: bool = False
    flood_progress: int = 0
    flood_previews: int = 0
    drop_ws_seen: int = field(default=0, repr=False, compare=False)

    def drop_ws(self, event: str, nth: int = 1) -> None:
        """Arm ``drop_ws_at_event`` afresh: the count starts again from zero."""
        if nth < 1:
            raise ValueError("nth counts from 1")
        self.drop_ws_at_event = event
        self.drop_ws_nth = nth
        self.drop_ws_seen = 0

    def clear(self) -> None:
        """Back to the recorded behaviour (pacing knobs included)."""
        fresh = Faults()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


def match_route(table: dict[str, object], path: str) -> str | None:
    """The key of ``table`` that applies to ``path`` (exact first, then prefix ``*``).

    ``/api/x`` and ``/x`` are the same route on ComfyUI, so a key written either way hits both.
    """
    bare = path[4:] if path.startswith("/api/") else path
    for candidate in (path, bare, "/api" + bare):
        if candidate in table:
            return candidate
    for key in table:
        if key.endswith("*") and (path.startswith(key[:-1]) or bare.startswith(key[:-1])):
            return key
    return None
