"""The consistency self test: one tiny model-free job per server, checked from the audit.

``runConsistencySelfTest()`` proves the lock's promise on the live pool: each server runs
one job (LoadImage -> ImageInvert -> SaveImage on a 64x64 PNG made here with the stdlib),
pinned to that server and outside the session lock (it neither moves the lock nor waits for
it), through the same ``run_job`` as every other job; then the audit trail must show every
request of that job on that one server, and one image must have come back.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Any

from .errors import ComfyClientError

if TYPE_CHECKING:
    from .client import PoolClient

SELF_TEST_WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "PLACEHOLDER"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "selftest"}},
}


def self_test_png() -> bytes:
    """A 64x64 PNG made of one gradient row repeated, by the stdlib (no image library)."""
    width = height = 64
    raw = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 4, y * 4, 128))
                   for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


async def run_self_test(client: PoolClient) -> dict[str, Any]:
    """``{ok, servers: [{server, ok, promptId, requests, serversSeen} | {server, ok: false,
    error}]}``, servers in the configured order, one after the other."""
    png = self_test_png()
    results = []
    for server in client.servers:
        entry: dict[str, Any] = {"server": server}
        try:
            entry.update(await _one(client, server, png))
        except ComfyClientError as exc:
            entry.update({"ok": False, "error": exc.to_dict()})
        results.append(entry)
    return {"ok": all(r.get("ok") for r in results), "servers": results}


async def _one(client: PoolClient, server: str, png: bytes) -> dict[str, Any]:
    out = await client.run_job(SELF_TEST_WORKFLOW, png, image_node="1",
                               filename="selftest.png", size=len(png), server=server)
    # a server that names jobs itself renamed ours: the result names it as the server does
    pid = out["promptId"]
    records = client.audit_log(pid)
    servers = sorted({r["server"] for r in records})
    return {"ok": servers == [server] and len(out["images"]) == 1, "promptId": pid,
            "requests": len(records), "serversSeen": servers}
