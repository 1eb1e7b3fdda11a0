"""comfyui_client: a browser-side client for pools of ComfyUI servers.

Every job (upload -> submit -> progress -> history -> download) stays on one server.
The package is pure Python: the browser comes in only through ``_browser.py`` (the single
module importing ``js``/``pyodide``), so everything else runs and is tested in CPython.

Layout (where to look):
    protocol/      the wire: request builders, response parsers, WebSocket frame decoding
    pool.py        servers, health values, the selection rule (pure)
    lock.py        the session lock and job pins (rule tables, pure)
    jobs.py        the job lifecycle (state table, pure)
    audit.py       the audit trail and the consistency check (pure)
    backoff.py     reconnect delays
    options.py     init()'s options, validated
    client.py      PoolClient: the facade that wires the parts below together
    lifecycle.py   one job's life, upload -> download, on one server (run_job) and its steps
    completion.py  the wait for a job's end, its history and outputs (fetched while it runs)
    endings.py     failures, lost servers, failover decisions
    records.py     the live jobs: waiters, message application, page callbacks
    routing.py     where a job and each of its calls may go: the live lock and pins
    gate.py        the one HTTP choke point (check, credentials, audit record)
    health.py      probes, re-probes, selection over the live pool
    channels.py    the WebSockets: reconnects, frame dispatch to jobs
    persistence.py the tab's client id and job map across reloads
    selftest.py    the consistency self test
    console.py     the client's console lines: the lock's story per log level, report summaries
    api.py         the old comfyui.js function names (argument checks only)
    transport.py   the seam's protocol;  _browser.py  its browser implementation
"""

__version__ = "0.1.0"
