"""A ComfyUI-compatible dev/test server for the host side (never shipped to the page).

It gives the browser tests and the demo a real peer on 127.0.0.1 that speaks the protocol
as recorded from a real ComfyUI 0.33 (``tests/data/comfyui-traffic``): the same routes
(also under ``/api``), validation errors, WebSocket event order and routing, binary preview
frames, origin/CORS rules, and the history-after-success race. Model-free nodes really run
on pixels with Pillow. Per instance it keeps a request log and fault hooks so tests can
prove which server saw which job and how the client copes with drops and stalls.

    from comfyui_devserver import DevServer, ServerGroup, Faults

- :class:`DevServer`: one asyncio instance (``await srv.start()``, ``srv.url``, ...).
- :class:`ServerGroup`: N instances in a background thread for synchronous callers.
- :class:`Faults` / :class:`RouteFault`: the run-time knobs.
"""

from __future__ import annotations

from .faults import Faults, RouteFault
from .group import ServerGroup
from .server import DevServer

__all__ = ["DevServer", "Faults", "RouteFault", "ServerGroup"]
