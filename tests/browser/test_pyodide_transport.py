"""Python in the page talks to a real dev server through the browser's own fetch, FormData and
WebSocket (``_browser.BrowserTransport``), driven by pytest-pyodide's ``run_in_pyodide``.

The page is served by pytest-pyodide on one port and the dev servers listen on others, so every
call here is cross-origin, as in a real deployment.
"""

from __future__ import annotations

import io

import pytest
from pytest_pyodide import run_in_pyodide

pytestmark = pytest.mark.browser


def _gradient_png(w: int = 64, h: int = 48) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (w, h))
    img.putdata([((x * 4) % 256, (y * 5) % 256, (x + y) % 256) for y in range(h) for x in range(w)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@run_in_pyodide(packages=["comfyui-client"])
async def _invert_in_page(selenium, server: str, png: bytes) -> dict:
    import asyncio
    import dataclasses
    import json
    import uuid

    from comfyui_client._browser import BrowserTransport
    from comfyui_client.protocol import events as ev
    from comfyui_client.protocol import requests as rq
    from comfyui_client.protocol import responses as rs
    from comfyui_client.transport import SocketHandlers

    t = BrowserTransport()
    client_id = uuid.uuid4().hex
    seen: list[str] = []
    done = asyncio.get_event_loop().create_future()
    opened = asyncio.get_event_loop().create_future()

    def on_text(text: str) -> None:
        event = ev.decode_text(text)
        seen.append(event.type)
        if event.type == "executing" and event.node is None and not done.done():
            done.set_result(event.prompt_id)

    sock = t.open_socket(
        server.replace("http://", "ws://") + rq.ws_path(client_id),
        SocketHandlers(
            on_open=lambda: opened.set_result(True),
            on_text=on_text,
            on_binary=lambda buf: seen.append("binary"),
            on_close=lambda code, reason: None,
        ),
    )
    await asyncio.wait_for(opened, 10)

    resp = await t.request(
        server,
        rq.upload_image(png, filename="page-upload.png", overwrite=True),
        extra_headers={},
        timeout=20,
    )
    uploaded = rs.parse_upload(resp.status, resp.headers, resp.body, server=server)
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": uploaded.name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pg"}},
    }
    prompt_id = rq.new_prompt_id()
    resp = await t.request(
        server, rq.post_prompt(workflow, client_id=client_id, prompt_id=prompt_id),
        extra_headers={}, timeout=20,
    )
    accepted = rs.parse_prompt_response(resp.status, resp.headers, resp.body, server=server)
    finished = await asyncio.wait_for(done, 20)

    entry = None
    for _ in range(20):
        resp = await t.request(server, rq.get_history(prompt_id), extra_headers={}, timeout=20)
        entry = rs.parse_history(resp.status, resp.headers, resp.body, server=server,
                                 prompt_id=prompt_id)
        if entry is not None:
            break
        await asyncio.sleep(0.05)
    image = entry.images[0]
    # the client keeps /view bodies as JS Blobs; ask for bytes here to check the pixels
    view = dataclasses.replace(rq.view(image.filename, image.subfolder, image.type),
                               expect="bytes")
    resp = await t.request(server, view, extra_headers={}, timeout=20)
    await sock.close()
    return {
        "accepted": accepted.prompt_id,
        "finished": finished,
        "events": seen,
        "status": resp.status,
        "content_type": resp.headers.get("content-type"),
        "png": resp.body,
        "ws_state": sock.ready_state,
        "sent_json": json.dumps(workflow),
    }


def test_page_uploads_submits_listens_and_downloads_inverted_image(selenium, devservers):
    from PIL import Image, ImageChops

    png = _gradient_png()
    server = devservers.urls[0]
    out = _invert_in_page(selenium, server, png)

    assert out["accepted"] == out["finished"]
    events = out["events"]
    # the recorded order: start ... executed ... success ... final executing{node: null}
    for name in ("execution_start", "executing", "executed", "execution_success"):
        assert name in events, events
    assert events.index("execution_start") < events.index("executed")
    assert events.index("executed") < events.index("execution_success")
    assert events[-1] == "executing"
    assert out["status"] == 200 and out["content_type"].startswith("image/png")
    assert out["ws_state"] == "closed"

    src = Image.open(io.BytesIO(png)).convert("RGB")
    got = Image.open(io.BytesIO(out["png"])).convert("RGB")
    assert got.size == src.size
    expected = ImageChops.invert(src)
    assert ImageChops.difference(got, expected).getbbox() is None

    # the server saw this job's requests, with our client id on the socket
    log = devservers.log(0)
    paths = [r["path"] for r in log]
    assert "/upload/image" in paths and "/prompt" in paths and "/view" in paths
