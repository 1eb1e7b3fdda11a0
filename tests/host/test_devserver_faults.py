"""Each fault and pacing knob does what ``Faults`` says, seen from a real client."""

from __future__ import annotations

import asyncio
import json
import struct
import time

import aiohttp
from devserver_testkit import Api, WsRecorder, empty_save, run, session, unique

from comfyui_devserver import Faults, RouteFault, ServerGroup


def _set(group: ServerGroup, i: int, **knobs: object) -> None:
    def apply() -> None:
        for key, value in knobs.items():
            setattr(group.servers[i].faults, key, value)
    group.call(apply)


def test_drop_ws_before_event_job_carries_on(group: ServerGroup) -> None:
    async def body() -> None:
        group.call(group.servers[0].faults.drop_ws, "executed")
        async with session() as s:
            api = Api(s, group.urls[0])
            ws = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=dropme")
            pid = await api.submit(empty_save(f"drop{unique()}"), "dropme")
            await asyncio.wait_for(ws.closed.wait(), 5)
            assert ws.ws.close_code == 1001
            types = ws.types()
            assert "executing" in types and "executed" not in types
            entry = await api.wait_history(pid)  # the job itself finished normally
            assert entry["status"]["status_str"] == "success"
            assert entry["outputs"]["2"]["images"]
        log = group.log(0)
        drops = [r for r in log if r["kind"] == "ws_drop"]
        assert drops and drops[-1]["event"] == "executed" and drops[-1]["prompt_id"] == pid
        assert group.call(lambda: group.servers[0].faults.drop_ws_at_event) is None  # one-shot
    run(body())


def test_drop_ws_nth_occurrence(group: ServerGroup) -> None:
    async def body() -> None:
        group.call(group.servers[0].faults.drop_ws, "executing", 2)
        async with session() as s:
            api = Api(s, group.urls[0])
            ws = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=dropnth")
            pid = await api.submit(empty_save(f"dropn{unique()}"), "dropnth")
            await asyncio.wait_for(ws.closed.wait(), 5)
            executing = ws.json_of("executing")
            assert [e["node"] for e in executing] == ["1"]  # the 2nd one never arrived
            assert (await api.wait_history(pid))["status"]["completed"] is True
    run(body())


def test_route_faults_html_page_then_recovery(group: ServerGroup) -> None:
    async def body() -> None:
        _set(group, 1, route_faults={"/prompt": RouteFault.proxy_html(502, remaining=2)})
        async with session() as s:
            api = Api(s, group.urls[1])
            prompt = empty_save(f"rf{unique()}")
            for attempt in range(2):
                async with s.post(f"{group.urls[1]}/api/prompt", json={"prompt": prompt}) as r:
                    assert r.status == 502, attempt
                    assert r.headers["Content-Type"].startswith("text/html")
                    assert "Bad Gateway" in await r.text()
                    assert r.headers["Access-Control-Allow-Origin"] == "*"
            status, data = await api.post("/prompt", {"prompt": prompt})
            assert status == 200 and "prompt_id" in data
        assert group.call(lambda: dict(group.servers[1].faults.route_faults)) == {}
    run(body())


def test_route_fault_prefix_and_no_cors(group: ServerGroup) -> None:
    async def body() -> None:
        _set(group, 1, route_faults={"/history/*": RouteFault(503, "busy", cors=False)})
        async with session() as s:
            async with s.get(f"{group.urls[1]}/history/abc") as r:
                assert r.status == 503 and await r.text() == "busy"
                assert "Access-Control-Allow-Origin" not in r.headers
            async with s.get(f"{group.urls[1]}/history") as r:
                assert r.status == 200  # the prefix is "/history/", not "/history"
    run(body())


def test_route_delay(group: ServerGroup) -> None:
    async def body() -> None:
        _set(group, 1, route_delay_s={"/system_stats": 0.3})
        async with session() as s:
            t0 = time.monotonic()
            async with s.get(f"{group.urls[1]}/api/system_stats") as r:
                assert r.status == 200
            slow = time.monotonic() - t0
            t0 = time.monotonic()
            async with s.get(f"{group.urls[1]}/features") as r:
                assert r.status == 200
            fast = time.monotonic() - t0
        assert slow >= 0.3 > fast
    run(body())


def test_history_gap_after_success(group: ServerGroup) -> None:
    """The recorded race: execution_success is out, /history/{id} is still {}."""
    async def body() -> None:
        _set(group, 0, history_gap_s=0.4)
        async with session() as s:
            api = Api(s, group.urls[0])
            ws = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=gapper")
            pid = await api.submit(empty_save(f"gap{unique()}"), "gapper")
            await ws.wait_for(lambda m: m.kind == "json"
                              and m.json["type"] == "execution_success")
            status, data = await api.get(f"/history/{pid}")
            assert status == 200 and data == {}
            status, job = await api.get(f"/api/jobs/{pid}")
            assert job["status"] == "in_progress"
            await ws.wait_done(pid)
            assert (await api.history(pid))["status"]["status_str"] == "success"
            await ws.close()
    run(body())


def test_restart_wipes_history_queue_and_sockets(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=restarted")
            done_pid, _ = await api.run(empty_save(f"rs{unique()}"), ws, "restarted")
            _set(group, 1, node_delay_s=0.3)
            await api.submit(empty_save(f"rs{unique()}"), "restarted")
            await api.submit(empty_save(f"rs{unique()}"), "restarted")
            port = group.servers[1].port
            group.call(group.servers[1].restart)
            await asyncio.wait_for(ws.closed.wait(), 5)
            assert ws.ws.close_code == 1012
            assert group.servers[1].port == port
            assert await api.history(done_pid) == {}
            status, queue = await api.get("/queue")
            assert queue == {"queue_running": [], "queue_pending": []}
            status, data = await api.post("/prompt", {"prompt": empty_save(f"rs{unique()}")})
            assert status == 200 and data["number"] == 0  # a fresh process counts from 0
    run(body())


def test_reject_ws_reopen_once(group: ServerGroup) -> None:
    async def body() -> None:
        url = f"{group.urls[0]}/ws?clientId=reopener"
        async with session() as s:
            first = await WsRecorder.open(s, url)
            await first.wait_count(1)
            await first.close()
            _set(group, 0, reject_ws_reopen_once=True)
            other = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=newcomer")
            await other.wait_count(1)  # an unknown clientId is not affected
            rejected = await WsRecorder.open(s, url)
            await asyncio.wait_for(rejected.closed.wait(), 5)
            assert rejected.messages == [] and rejected.ws.close_code == 1013
            again = await WsRecorder.open(s, url)
            status = await again.wait_for(lambda m: m.kind == "json")
            assert status.json["data"]["sid"] == "reopener"
            await again.close()
            await other.close()
    run(body())


def test_stall_holds_http_and_ws_until_cleared(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=staller")
            await ws.wait_count(1)
            _set(group, 1, stall=True)
            api = Api(s, group.urls[1])
            request = asyncio.ensure_future(api.get("/prompt"))
            await asyncio.sleep(0.3)
            assert not request.done()
            # a job posted before the stall would be held too: check WS is silent
            before = len(ws.messages)
            await asyncio.sleep(0.1)
            assert len(ws.messages) == before
            _set(group, 1, stall=False)
            status, data = await asyncio.wait_for(request, 5)
            assert status == 200 and "exec_info" in data
            await ws.close()
    run(body())


def test_stall_holds_job_messages(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=heldmsgs")
            await ws.wait_count(1)
            _set(group, 1, node_delay_s=0.2)
            pid = await api.submit(empty_save(f"st{unique()}"), "heldmsgs")
            await ws.wait_for(lambda m: m.kind == "json" and m.json["type"] == "executing")
            _set(group, 1, stall=True)
            count = len(ws.messages)
            await asyncio.sleep(0.6)  # the job finishes meanwhile, but nothing is sent
            assert len(ws.messages) == count
            _set(group, 1, stall=False)
            await ws.wait_done(pid)
            await ws.close()
    run(body())


def test_stale_close_unregisters_the_replacement(group: ServerGroup) -> None:
    """Real ComfyUI's reconnect race, and the knob that turns it off."""
    async def attempt(stale: bool) -> list[str]:
        _set(group, 0, stale_close_unregisters=stale)
        cid = f"stale{unique()}"
        async with session() as s:
            api = Api(s, group.urls[0])
            old = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId={cid}")
            await old.wait_count(1)
            new = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId={cid}")
            await new.wait_count(1)
            await old.close()  # closing the OLD socket after the new one opened
            await asyncio.sleep(0.1)
            pid = await api.submit(empty_save(f"sc{unique()}"), cid)
            await api.wait_history(pid)
            await asyncio.sleep(0.1)
            await new.close()
            return new.types()
    assert "execution_success" not in run(attempt(True))
    assert "execution_success" in run(attempt(False))


def test_progress_steps_previews_legacy_and_metadata(group: ServerGroup) -> None:
    async def body() -> None:
        _set(group, 0, progress_steps=3, progress_step_delay_s=0.0, progress_text=True)
        async with session() as s:
            api = Api(s, group.urls[0])
            prompt = empty_save(f"ps{unique()}", 40, 40)
            prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
            prompt["2"]["inputs"]["images"] = ["3", 0]
            legacy = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=legacyprev")
            await api.run(prompt, legacy, "legacyprev")
            progress = legacy.json_of("progress")
            assert [(p["value"], p["max"], p["node"]) for p in progress] == [
                (1, 3, "3"), (2, 3, "3"), (3, 3, "3")]
            frames = [m.data for m in legacy.messages if m.kind == "binary"]
            previews = [f for f in frames if struct.unpack(">I", f[:4])[0] == 1]
            assert len(previews) == 3
            assert all(struct.unpack(">I", f[4:8])[0] == 2 and f[8:12] == b"\x89PNG"
                       for f in previews)
            texts = [f for f in frames if struct.unpack(">I", f[:4])[0] == 3]
            assert texts[0][8:9] == b"3" and texts[0][9:] == b"step 1/3"
            await legacy.close()

            modern = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=metaprev")
            await modern.ws.send_str(json.dumps({"type": "feature_flags",
                                                 "data": {"supports_preview_metadata": True}}))
            await modern.wait_for(lambda m: m.kind == "json"
                                  and m.json["type"] == "feature_flags")
            prompt["1"]["inputs"]["color"] = unique()
            pid, _ = await api.run(prompt, modern, "metaprev")
            frames = [m.data for m in modern.messages if m.kind == "binary"
                      and struct.unpack(">I", m.data[:4])[0] == 4]
            assert len(frames) == 3
            size = struct.unpack(">I", frames[0][4:8])[0]
            meta = json.loads(frames[0][8:8 + size])
            assert meta["prompt_id"] == pid and meta["node_id"] == "3"
            assert frames[0][8 + size:12 + size] == b"\x89PNG"
            await modern.close()
    run(body())


def test_node_delay_paces_execution(group: ServerGroup) -> None:
    async def body() -> None:
        _set(group, 1, node_delay_s=0.25)
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=paced")
            t0 = time.monotonic()
            await api.run(empty_save(f"nd{unique()}"), ws, "paced")
            assert time.monotonic() - t0 >= 0.5  # two nodes
            await ws.close()
    run(body())


def test_flood_mode(group: ServerGroup) -> None:
    async def body() -> None:
        _set(group, 1, flood_progress=300, flood_previews=50)
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=flooded")
            await ws.ws.send_str(json.dumps({"type": "feature_flags",
                                             "data": {"supports_preview_metadata": True}}))
            await ws.wait_for(lambda m: m.kind == "json" and m.json["type"] == "feature_flags")
            await api.run(empty_save(f"fl{unique()}"), ws, "flooded")
            assert len(ws.json_of("progress")) == 300
            assert len(ws.json_of("progress_state")) >= 300
            assert sum(1 for m in ws.messages if m.kind == "binary"
                       and m.data[:4] == b"\x00\x00\x00\x04") == 50
            await ws.close()
    run(body())


def test_faults_clear_and_drop_ws_arming() -> None:
    f = Faults(node_delay_s=1.0, stall=True, route_faults={"/x": RouteFault(500)})
    f.drop_ws("status", 3)
    assert (f.drop_ws_at_event, f.drop_ws_nth, f.drop_ws_seen) == ("status", 3, 0)
    f.clear()
    assert f == Faults()


def test_upload_limit_is_plain_text_413(tmp_path) -> None:
    with ServerGroup(count=1, cors_origin=None, max_upload_size=2048) as g:
        async def body() -> None:
            async with session() as s:
                api = Api(s, g.urls[0])
                status, features = await api.get("/features")
                assert features["max_upload_size"] == 2048
                status, text = await api.upload("big.png", b"\x89PNG" + b"0" * 4096)
                assert status == 413 and isinstance(text, str) and "2048" in text
                status, ok = await api.upload("small.png", b"\x89PNG" + b"0" * 64)
                assert status == 200 and ok["name"] == "small.png"
        run(body())


def test_ws_handshake_refused_cross_origin_without_cors() -> None:
    with ServerGroup(count=1, cors_origin=None) as g:
        async def body() -> None:
            async with session() as s:
                try:
                    await s.ws_connect(f"{g.urls[0]}/ws?clientId=x",
                                       headers={"Origin": "http://evil.example"})
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 403
                else:
                    raise AssertionError("cross-origin handshake was accepted")
                same = await s.ws_connect(f"{g.urls[0]}/ws?clientId=y",
                                          headers={"Origin": g.urls[0]})
                assert (await same.receive_json(timeout=5))["type"] == "status"
                await same.close()
        run(body())
