"""comfyui_client: a browser-side client for pools of ComfyUI servers.

Every job (upload -> submit -> progress -> history -> download) stays on one server.
The package is pure Python: the browser comes in only through ``_browser.py`` (the single
module importing ``js``/``pyodide``), so everything else runs and is tested in CPython.

Layout (where to look):
    protocol/   the wire: request builders, response parsers, WebSocket frame decoding
    pool.py     servers, health, selection rule
    lock.py     the session lock and job pins (tables)
    jobs.py     the job lifecycle (table)
    audit.py    the audit trail and the consistency check
    backoff.py  reconnect delays
    client.py   orchestration and the one HTTP choke point
    api.py      the old comfyui.js function names
    transport.py the seam's protocol;  _browser.py  its browser implementation
"""

__version__ = "0.1.0"
