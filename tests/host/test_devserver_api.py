"""Behaviour beyond what one recording shows: routing across sockets, reconnects, the
request log, interrupts and the jobs API statuses, partial validation, /api aliases."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
from devserver_testkit import Api, WsRecorder, empty_save, png_bytes, run, session, unique
from PIL import Image

from comfyui_devserver import ServerGroup

SLOW_BLUR = {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3,
                                                   "sigma": 1.0}}


def _slow(prefix: str) -> dict:
    """EmptyImage -> ImageBlur -> ImageBlur -> SaveImage (4 nodes to interrupt between)."""
    prompt = empty_save(prefix, 32, 32)
    prompt["10"] = SLOW_BLUR
    prompt["11"] = {**SLOW_BLUR, "inputs": {**SLOW_BLUR["inputs"], "image": ["10", 0]}}
    prompt["2"]["inputs"]["images"] = ["11", 0]
    return prompt


def test_events_only_reach_the_jobs_client(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[0])
            a = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=routeA")
            b = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=routeB")
            pid, _ = await api.run(empty_save(f"rt{unique()}"), a, "routeA")
            await asyncio.sleep(0.1)
            assert "execution_success" in a.types()
            assert set(b.types()) == {"status"}
            # no client id: progress_state goes to everyone, execution events to nobody
            pid = await api.submit(empty_save(f"rt{unique()}"))
            await api.wait_history(pid)
            await asyncio.sleep(0.1)
            for rec in (a, b):
                tail = [m.json for m in rec.messages if m.kind == "json"
                        and m.json["data"].get("prompt_id") == pid]
                assert tail and {m["type"] for m in tail} == {"progress_state"}
            await a.close()
            await b.close()
    run(body())


def test_nothing_is_replayed_to_a_socket_that_was_down(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[1])
            pid = await api.submit(empty_save(f"down{unique()}"), "wasdown")
            await api.wait_history(pid)
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=wasdown")
            await ws.wait_count(1)
            await asyncio.sleep(0.15)
            assert ws.types() == ["status"]
            await ws.close()
    run(body())


def test_reconnect_replaces_socket_and_reports_current_node(group: ServerGroup) -> None:
    async def body() -> None:
        group.call(lambda: setattr(group.servers[0].faults, "node_delay_s", 0.3))
        async with session() as s:
            api = Api(s, group.urls[0])
            url = f"{group.urls[0]}/ws?clientId=reconnector"
            old = await WsRecorder.open(s, url)
            pid = await api.submit(_slow(f"rc{unique()}"), "reconnector")
            await old.wait_for(lambda m: m.kind == "json" and m.json["type"] == "executing")
            await old.close()
            new = await WsRecorder.open(s, url)
            first_two = [await new.wait_for(lambda m: m.kind == "json"),
                         await new.wait_for(lambda m: m.kind == "json"
                                            and m.json["type"] == "executing")]
            assert first_two[0].json["data"]["sid"] == "reconnector"
            assert set(first_two[1].json["data"]) == {"node"}  # the real server's short form
            await new.wait_done(pid)
            assert "execution_success" in new.types()
            assert "execution_success" not in old.types()
            await new.close()
    run(body())


def test_request_log_and_prompt_counts(group: ServerGroup) -> None:
    async def body() -> str:
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=logged")
            chosen = "9b2f6c1e-1d3a-4c55-8a77-0a1b2c3d4e5f"
            pid, entry = await api.run(empty_save(f"lg{unique()}"), ws, "logged",
                                       prompt_id=chosen)
            assert pid == chosen
            # the client retries the POST with the same id: counted twice, run again
            status, again = await api.post("/prompt", {"prompt": empty_save(f"lg{unique()}"),
                                                       "client_id": "logged",
                                                       "prompt_id": chosen})
            assert status == 200 and again["prompt_id"] == chosen
            await ws.wait_until(lambda: ws.json_of("executing").count(
                {"node": None, "prompt_id": chosen}) == 2)
            entry = await api.history(chosen)
            await api.view(entry["outputs"]["2"]["images"][0])
            await ws.close()
            return chosen
    pid = run(body())
    assert group.call(lambda: group.servers[1].prompt_counts[pid]) == 2
    log = group.log(1)
    mine = [r for r in log if r["prompt_id"] == pid]
    assert [r["status"] for r in mine if r["path"] == "/prompt"] == [200, 200]
    assert any(r["path"] == "/view" and r["status"] == 200 for r in mine)
    assert any(r["path"] == f"/history/{pid}" for r in mine)
    sockets = [r for r in log if r["kind"] == "ws" and r["client_id"] == "logged"]
    assert sockets and sockets[0]["status"] == 101 and sockets[0]["path"] == "/ws"
    assert all({"time", "method", "path", "query", "status"} <= set(r) for r in log)
    assert not any(r["prompt_id"] == pid for r in group.log(0))  # the other server saw none


def test_interrupt_targets_only_the_named_running_job(group: ServerGroup) -> None:
    async def body() -> None:
        group.call(lambda: setattr(group.servers[0].faults, "node_delay_s", 0.15))
        async with session() as s:
            api = Api(s, group.urls[0])
            ws = await WsRecorder.open(s, f"{group.urls[0]}/ws?clientId=interrupter")
            first = await api.submit(_slow(f"it{unique()}"), "interrupter")
            second = await api.submit(_slow(f"it{unique()}"), "interrupter")
            await ws.wait_for(lambda m: m.kind == "json" and m.json["type"] == "executing"
                              and m.json["data"].get("node") == "10")
            assert (await api.post("/interrupt", {"prompt_id": second}))[0] == 200  # pending
            assert (await api.post("/api/interrupt", {"prompt_id": first}))[0] == 200
            await ws.wait_done(second)
            h1, h2 = await api.wait_history(first), await api.wait_history(second)
            assert h1["status"]["status_str"] == "error"
            assert h1["status"]["messages"][-1][0] == "execution_interrupted"
            assert h1["status"]["messages"][-1][1]["node_id"] == "11"  # next boundary
            assert h2["status"]["status_str"] == "success"
            status, jobs = await api.get("/api/jobs", ids=f"{first},{second}")
            assert status == 200
            assert {j["id"]: j["status"] for j in jobs["jobs"]} == {first: "cancelled",
                                                                   second: "completed"}
            await ws.close()
    run(body())


def test_jobs_api_pending_cancel_failed_and_unknown(group: ServerGroup) -> None:
    async def body() -> None:
        group.call(lambda: setattr(group.servers[1].faults, "node_delay_s", 0.2))
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=jobsapi")
            running = await api.submit(_slow(f"ja{unique()}"), "jobsapi")
            pending = await api.submit(empty_save(f"ja{unique()}"), "jobsapi")
            status, job = await api.get(f"/api/jobs/{pending}")
            assert status == 200 and job["status"] == "pending"
            status, cancelled = await api.post(f"/api/jobs/{pending}/cancel")
            assert cancelled == {"cancelled": True}
            status, queue = await api.get("/queue")
            assert [item[1] for item in queue["queue_pending"]] == []
            status, job = await api.get(f"/api/jobs/{pending}")
            assert status == 404 and job == {"error": "Job not found"}
            await api.post(f"/api/jobs/{running}/cancel")
            await ws.wait_done(running)
            group.call(lambda: setattr(group.servers[1].faults, "node_delay_s", 0.0))
            # a run-time failure: a corrupt upload passes validation, fails in LoadImage
            name = f"broken{unique()}.png"
            await api.upload(name, b"\x89PNG\r\n\x1a\nnot an image at all", overwrite="true")
            prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                      "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                                  "filename_prefix": "x"}}}
            failed, entry = await api.run(prompt, ws, "jobsapi")
            error = ws.json_of("execution_error")[-1]
            assert error["exception_type"] == "PIL.UnidentifiedImageError"
            assert error["current_inputs"] == {"image": [name]}
            assert entry["status"] == {**entry["status"], "status_str": "error",
                                       "completed": False}
            status, job = await api.get(f"/api/jobs/{failed}")
            assert job["status"] == "failed" and job["execution_error"]["node_id"] == "1"
            await ws.close()
    run(body())


def test_partial_validation_runs_the_good_output(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[0])
            prompt = empty_save(f"pv{unique()}")
            prompt["5"] = {"class_type": "ImageScale", "inputs": {
                "image": ["1", 0], "upscale_method": "nope", "width": 8, "height": 8,
                "crop": "disabled"}}
            prompt["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0],
                                                                 "filename_prefix": "bad"}}
            status, data = await api.post("/prompt", {"prompt": prompt})
            assert status == 200
            assert data["node_errors"]["5"]["dependent_outputs"] == ["6"]
            entry = await api.wait_history(data["prompt_id"])
            assert list(entry["outputs"]) == ["2"] and entry["prompt"][4] == ["2"]
    run(body())


def test_cached_rerun_replays_executed_and_reupload_invalidates(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[1])
            ws = await WsRecorder.open(s, f"{group.urls[1]}/ws?clientId=cacher")
            name = f"cache{unique()}.png"
            await api.upload(name, png_bytes(Image.new("RGB", (8, 8), (1, 2, 3))),
                             overwrite="true")
            prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                      "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                      "3": {"class_type": "SaveImage", "inputs": {
                          "images": ["2", 0], "filename_prefix": f"c{unique()}"}}}
            _, h1 = await api.run(prompt, ws, "cacher")
            second, h2 = await api.run(prompt, ws, "cacher")
            assert h2["status"]["messages"][1][1]["nodes"] == ["1", "2", "3"]
            assert h2["outputs"] == h1["outputs"]
            second_events = [m.json for m in ws.messages if m.kind == "json"
                             and m.json["data"].get("prompt_id") == second]
            assert "executing" not in [e["type"] for e in second_events[:-1]]
            await api.upload(name, png_bytes(Image.new("RGB", (8, 8), (9, 9, 9))),
                             overwrite="true")
            _, h3 = await api.run(prompt, ws, "cacher")
            assert h3["status"]["messages"][1][1]["nodes"] == []
            assert h3["outputs"] != h1["outputs"]
            img = await api.image(h3, "3")
            assert img.convert("RGB").getpixel((0, 0)) == (246, 246, 246)
            await ws.close()
    run(body())


def test_every_route_also_under_api(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[0])
            for path in ("/prompt", "/queue", "/history", "/system_stats", "/features",
                         "/object_info/ImageBlur", "/embeddings", "/models",
                         "/models/checkpoints", "/jobs"):
                plain, api_prefixed = await api.get(path), await api.get("/api" + path)
                assert plain[0] == api_prefixed[0] == 200, path
            status, info = await api.get("/object_info")
            assert set(info) == {"LoadImage", "ImageInvert", "ImageBlur", "ImageScale",
                                 "ImageScaleBy", "EmptyImage", "ImageCrop", "SaveImage",
                                 "PreviewImage", "SaveImageWebsocket"}
            assert (await api.get("/models/nope"))[0] == 404
            status, stats = await api.get("/system_stats")
            assert status == 200 and "devserver" in stats["system"]["comfyui_version"]
            ws = await s.ws_connect(f"{group.urls[0]}/api/ws")
            hello = await ws.receive_json(timeout=5)
            assert len(hello["data"]["sid"]) == 32  # a generated hex sid
            await ws.close()
            async with s.options(f"{group.urls[0]}/prompt") as r:
                assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    run(body())


def test_upload_mask_copies_alpha_onto_the_original(group: ServerGroup) -> None:
    async def body() -> None:
        async with session() as s:
            api = Api(s, group.urls[0])
            name = f"masked{unique()}.png"
            await api.upload(name, png_bytes(Image.new("RGB", (6, 4), (200, 100, 50))),
                             overwrite="true")
            mask = Image.new("RGBA", (6, 4), (0, 0, 0, 255))
            mask.putpixel((2, 1), (0, 0, 0, 0))
            form = aiohttp.FormData()
            form.add_field("image", png_bytes(mask), filename=f"clip_{name}",
                           content_type="image/png")
            form.add_field("original_ref", json.dumps({"filename": name, "type": "input",
                                                       "subfolder": ""}))
            async with s.post(f"{group.urls[0]}/upload/mask", data=form) as r:
                assert r.status == 200
                ref = await r.json()
            assert ref == {"name": f"clip_{name}", "subfolder": "", "type": "input"}
            status, data, _ = await api.view({"filename": ref["name"], "subfolder": "",
                                              "type": "input"})
            out = Image.open(io.BytesIO(data))
            assert status == 200 and out.mode == "RGBA"
            assert out.getpixel((2, 1)) == (200, 100, 50, 0)
            assert out.getpixel((0, 0)) == (200, 100, 50, 255)
    run(body())
