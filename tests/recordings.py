"""Access to the recorded real ComfyUI 0.33 traffic, kept in the repo under
``tests/data/comfyui-traffic`` (a copy of the team's recordings, so a clone with nothing
beside it runs every test).

Tests parse these recordings instead of inventing server behaviour: the pure protocol
layer is fed every recorded message, and the dev server is compared against them.
``COMFYUI_TRAFFIC_DIR`` overrides the location.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def traffic_dir() -> Path:
    env = os.environ.get("COMFYUI_TRAFFIC_DIR")
    path = Path(env) if env else REPO / "tests" / "data" / "comfyui-traffic"
    if not path.is_dir():
        raise FileNotFoundError(
            f"recorded ComfyUI traffic not found at {path}; "
            "set COMFYUI_TRAFFIC_DIR to the folder holding invert_success.json etc."
        )
    return path


def names() -> list[str]:
    """Every recorded scenario file name without ``.json``."""
    return sorted(p.stem for p in traffic_dir().glob("*.json"))


@functools.cache
def load(name: str) -> dict[str, Any]:
    """One recording: ``{scenario, server, recorded_at, meta, events[]}``."""
    return json.loads((traffic_dir() / f"{name}.json").read_text())


def events(name: str, kind: str | None = None) -> list[dict[str, Any]]:
    evs = load(name)["events"]
    return [e for e in evs if kind is None or e["kind"] == kind]


def http(name: str, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
    """The recorded HTTP exchanges of one scenario, optionally filtered."""
    out = []
    for e in events(name, "http"):
        req = e["request"]
        if method and req["method"] != method:
            continue
        if path and req["path"] != path:
            continue
        out.append(e)
    return out


def ws_json(name: str) -> list[dict[str, Any]]:
    """Every text WebSocket message the server sent, in order."""
    return [e["json"] for e in events(name, "ws_recv") if "json" in e]


def all_ws_json() -> list[tuple[str, dict[str, Any]]]:
    return [(n, m) for n in names() if n != "timings" for m in ws_json(n)]
