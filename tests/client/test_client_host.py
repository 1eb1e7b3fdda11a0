"""The whole client (lock, pins, reconnects, lifecycle) in plain CPython: ``PoolClient`` over
the host transport against two dev server instances on 127.0.0.1. The browser tests prove the
same paths through fetch/WebSocket; these pin down the orchestration rules quickly."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import pytest
from PIL import Image

from comfyui_client._host import HostTransport
from comfyui_client.client import ClientOptions, PoolClient
from comfyui_client.errors import ServerMismatch
from comfyui_client.persistence import SESSION_KEY
from comfyui_devserver import DevServer

INVERT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "h"}},
}


def _png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(buf, "PNG")
    return buf.getvalue()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _servers(n=2, **kw):
    servers = [DevServer(name=f"s{i}", **kw) for i in range(n)]
    for s in servers:
        await s.start()
    return servers


@contextlib.asynccontextmanager
async def _env_and_servers(n=2, **kw):
    """A host transport and ``n`` fresh dev servers, stopped afterwards."""
    servers = await _servers(n, **kw)
    try:
        async with HostTransport() as env:
            yield env, tuple(servers)
    finally:
        for s in servers:
            await s.stop()


async def _process(client: PoolClient, rgb, name="in.png"):
    """processImage's steps through the client: upload -> submit -> wait -> outputs."""
    from comfyui_client.api import PageApi

    api = PageApi(client.env)
    api.client = client
    return await api.js_processImage(INVERT, _png(rgb), {"filename": name})


def _colour(item) -> tuple[int, int, int]:
    return Image.open(io.BytesIO(item["blob"])).convert("RGB").getpixel((0, 0))


def test_session_lock_holds_through_a_ws_drop_and_is_released_after_the_last_task():
    async def main():
        async with _env_and_servers() as (env, (a, b)):
            c = PoolClient(env, [a.url, b.url], ClientOptions(affinity="session"))
            a.faults.drop_ws("executing", 2)  # mid-job, after the first node started
            res = await _process(c, (10, 20, 30))
            assert res["server"] == a.url
            assert _colour(res["images"][0]) == (245, 235, 225)
            assert any(r["kind"] == "ws_drop" for r in a.request_log)
            assert c.channels.get(a.url).reconnects >= 1
            assert not [r for r in b.request_log if r.get("prompt_id") == res["promptId"]]
            assert c.routing.lock.locked_server is None and not c.routing.lock.pending
            assert [e["event"] for e in c.routing.lock_log][-1] == "released"
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())


def test_session_refuses_a_call_for_another_server_while_locked():
    async def main():
        async with _env_and_servers() as (env, (a, b)):
            c = PoolClient(env, [a.url, b.url], ClientOptions(affinity="session"))
            await c.ensure_connection()
            assert c.routing.lock.locked_server == a.url
            before = len(b.request_log)
            with pytest.raises(ServerMismatch) as err:
                await c.upload(_png((1, 2, 3)), filename="x.png", server=b.url)
            assert a.url in str(err.value) and b.url in str(err.value)
            assert len(b.request_log) == before
            await c.close()

    run(main())


def test_job_mode_pins_concurrent_jobs_to_both_servers_with_their_own_outputs():
    async def main():
        async with _env_and_servers() as (env, (a, b)):
            c = PoolClient(env, [a.url, b.url], ClientOptions(affinity="job"))
            colours = [(i * 40, 200 - i * 20, 7 * i) for i in range(6)]
            results = await asyncio.gather(*(_process(c, rgb, "same.png") for rgb in colours))
            for rgb, res in zip(colours, results, strict=True):
                assert _colour(res["images"][0]) == tuple(255 - v for v in rgb)
                other = b if res["server"] == a.url else a
                assert not [r for r in other.request_log
                            if r.get("prompt_id") == res["promptId"]]
            assert {r["server"] for r in results} == {a.url, b.url}
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())


def test_client_id_and_unfinished_jobs_persist_in_session_storage():
    async def main():
        async with _env_and_servers() as (env, (a, b)):
            c1 = PoolClient(env, [a.url, b.url])
            c2 = PoolClient(env, [a.url, b.url])  # a reload of the same tab
            assert c1.client_id == c2.client_id
            assert SESSION_KEY in env.storage.data
            await c1.close()
            await c2.close()

    run(main())


def test_empty_history_right_after_success_is_retried():
    async def main():
        from comfyui_devserver import RouteFault

        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url])
            # the first two history reads answer {} as a server does between
            # execution_success and writing the history entry
            a.faults.route_faults["/history/*"] = RouteFault(
                200, "{}", content_type="application/json", remaining=2)
            res = await _process(c, (0, 0, 0))
            assert _colour(res["images"][0]) == (255, 255, 255)
            reads = [r for r in a.request_log if r["path"].startswith("/history/")]
            assert len(reads) >= 3, "both empty answers were retried"
            await c.close()

    run(main())


def test_a_reload_reattaches_jobs_in_flight_and_remembers_finished_ones():
    async def main():
        from comfyui_client import jobs as jobs_mod

        async with _env_and_servers(node_delay_s=0.3) as (env, (a, b)):
            # page 1: one finished job, one still running when the page "reloads"
            p1 = PoolClient(env, [a.url, b.url], ClientOptions(affinity="job"))
            finished = await _process(p1, (1, 2, 3))
            up = await p1.upload(_png((9, 9, 9)), filename="r.png", server=b.url)
            graph = {**INVERT, "1": {"class_type": "LoadImage",
                                     "inputs": {"image": up["name"]}}}
            rec = await p1.submit(graph, server=b.url)
            pid = rec.job.prompt_id
            await p1.close()  # the tab reloads: sockets gone, nothing awaited

            p2 = PoolClient(env, [a.url, b.url], ClientOptions(affinity="job"))
            assert p2.client_id == p1.client_id
            revived = await p2.reattach()
            assert revived == [pid]
            assert p2.api_base(pid) == b.url
            done = await p2.wait(pid)
            assert done.job.state in jobs_mod.AWAITING_OUTPUTS | {"succeeded"}
            images = await p2.fetch_outputs(pid)
            assert _colour(images[0]) == (246, 246, 246)
            # a job finished before the reload is still fetched from its own server
            assert p2.api_base(finished["promptId"]) == finished["server"]
            again = await p2.fetch_outputs(finished["promptId"])
            assert _colour(again[0]) == (254, 253, 252)
            assert p2.consistency()["consistent"] is True
            await p2.close()

    run(main())


def test_submit_lost_at_a_proxy_is_retried_once_with_the_same_id_and_no_duplicate():
    async def main():
        from comfyui_devserver import RouteFault

        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url])
            a.faults.route_faults["/prompt"] = RouteFault.proxy_html(502, 1)
            res = await _process(c, (100, 100, 100))
            assert _colour(res["images"][0]) == (155, 155, 155)
            posts = [r for r in a.request_log
                     if r["method"] == "POST" and r["path"] == "/prompt"]
            assert [r["status"] for r in posts] == [502, 200]
            assert a.prompt_counts == {res["promptId"]: 1}, "one job, not two"
            await c.close()

    run(main())


@pytest.mark.parametrize("queued", [False, True], ids=["not-queued", "queued"])
def test_an_unreadable_submit_answer_is_checked_before_any_resubmit(queued):
    """A 200 to POST /prompt whose body is cut off: whether ComfyUI queued the job or not,
    the job completes, and the server ends up with exactly one prompt under our id."""
    async def main():
        from comfyui_devserver import RouteFault

        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url])
            a.faults.route_faults["/prompt"] = RouteFault(
                200, '{"prompt_id": ', content_type="application/json", remaining=1,
                after_handler=queued)
            res = await _process(c, (100, 100, 100))
            assert _colour(res["images"][0]) == (155, 155, 155)
            posts = [r for r in a.request_log
                     if r["method"] == "POST" and r["path"] == "/prompt"]
            assert len(posts) == (1 if queued else 2), posts
            assert a.prompt_counts == {res["promptId"]: 1}, "one job, not two"
            await c.close()

    run(main())


def test_a_502_that_persists_fails_the_job_with_a_clear_error():
    async def main():
        from comfyui_client.errors import BadResponse
        from comfyui_devserver import RouteFault

        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url])
            a.faults.route_faults["/prompt"] = RouteFault.proxy_html(502, 5)
            with pytest.raises(BadResponse) as err:
                await _process(c, (1, 1, 1))
            assert "502" in str(err.value) and a.url in str(err.value)
            assert "HTML" in str(err.value)
            assert not a.prompt_counts
            assert c.routing.lock.locked_server is None, "a failed job does not keep the lock"
            await c.close()

    run(main())


def test_a_server_that_dies_mid_job_ends_it_with_server_lost_by_the_deadline():
    async def main():
        from comfyui_client.errors import ServerLost

        async with _env_and_servers(1, node_delay_s=0.5) as (env, (a,)):
            opts = ClientOptions(affinity="job", job_deadline_s=1.0, stall_check_s=0.3)
            c = PoolClient(env, [a.url], opts)
            job = asyncio.ensure_future(_process(c, (5, 5, 5)))
            while not any(r.job.state == "running" for r in c.book.records.values()):
                await asyncio.sleep(0.02)
            await a.stop()  # killed mid-job: no close handshake for its jobs
            with pytest.raises(ServerLost) as err:
                await asyncio.wait_for(job, 15)
            assert a.url in str(err.value)
            [rec] = c.book.records.values()
            assert rec.job.state == "server_lost"
            assert not c.routing.lock.pending
            await c.close()

    run(main())


def test_job_mode_completes_by_polling_when_websockets_are_blocked():
    async def main():
        from comfyui_devserver import RouteFault

        async with _env_and_servers(1, node_delay_s=0.2) as (env, (a,)):
            # a proxy that refuses the WebSocket upgrade but passes plain HTTP
            a.faults.route_faults["/ws"] = RouteFault(403, "websockets disabled")
            c = PoolClient(env, [a.url], ClientOptions(affinity="job", poll_interval_s=0.1))
            res = await _process(c, (50, 60, 70))
            assert _colour(res["images"][0]) == (205, 195, 185)
            assert not [r for r in a.request_log if r["kind"] == "ws"], "no socket was ever open"
            assert any(r["path"] == "/queue" for r in a.request_log), "progress came from polling"
            await c.close()

    run(main())


def test_a_reopened_socket_the_server_rejects_once_is_reopened_again():
    async def main():
        # nodes slow enough (3 x 0.6 s) that the job is still running through both
        # reconnects (each waits at most 0.5 s with the default backoff)
        async with _env_and_servers(1, node_delay_s=0.6) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="session"))
            a.faults.drop_ws("executing", 1)
            a.faults.reject_ws_reopen_once = True
            res = await _process(c, (30, 30, 30))
            assert _colour(res["images"][0]) == (225, 225, 225)
            assert c.channels.get(a.url).reconnects >= 2, "rejected once, then reopened"
            assert a.prompt_counts == {res["promptId"]: 1}
            await c.close()

    run(main())


def test_each_server_gets_only_its_own_credentials_and_logs_never_show_them():
    class Recording(HostTransport):
        def __init__(self):
            super().__init__()
            self.sent: list[tuple[str, dict]] = []
            self.sockets: list[str] = []

        async def request(self, base, req, *, extra_headers, timeout):
            self.sent.append((base, dict(extra_headers)))
            return await super().request(base, req, extra_headers=extra_headers,
                                         timeout=timeout)

        def open_socket(self, url, handlers):
            self.sockets.append(url)
            return super().open_socket(url, handlers)

    async def main():
        a, b = await _servers()
        try:
            async with Recording() as env:
                servers = [{"url": a.url, "token": "alpha-secret"},
                           {"url": b.url, "token": "beta-secret"}]
                c = PoolClient(env, servers, ClientOptions(affinity="job"))
                results = await asyncio.gather(*(_process(c, (i, i, i)) for i in range(4)))
                assert {r["server"] for r in results} == {a.url, b.url}
                for base, headers in env.sent:
                    want = "alpha-secret" if base == a.url else "beta-secret"
                    assert headers.get("Authorization") == f"Bearer {want}"
                for url in env.sockets:
                    port = a.url.rsplit(":", 1)[1] if "alpha" in url else b.url.rsplit(":", 1)[1]
                    assert f":{port}/" in url and url.count("secret") == 1
                shown = repr(c.debug()) + repr([r.to_dict() for r in c.audit.records()])
                shown += repr(c.consistency()) + repr(c.server_status(a.url))
                assert "secret" not in shown
                await c.close()
        finally:
            for s in (a, b):
                await s.stop()

    run(main())


@pytest.mark.parametrize("affinity", ["session", "job"])
def test_old_step_by_step_calls_keep_one_job_on_one_server(affinity):
    """The old module's flow: upload, then submit a workflow naming the uploaded file, then
    wait, history and images — the submit follows the upload's server in both modes."""
    from comfyui_client.api import PageApi

    async def main():
        async with _env_and_servers() as (env, (a, b)):
            api = PageApi(env)
            await api.js_init({"servers": [a.url, b.url], "affinity": affinity})
            # make the second server the less loaded one for job mode's selection
            api.client.health.queue_update(a.url, 3)
            up = await api.js_uploadImageToComfyUI(_png((40, 80, 120)), {"filename": "s.png"})
            graph = {**INVERT, "1": {"class_type": "LoadImage", "inputs": {"image": up["name"]}}}
            # job mode: make the OTHER server look idler now; the submit must still follow
            # the file, not the selection
            other = a.url if up["server"] == b.url else b.url
            api.client.health.queue_update(up["server"], 5)
            api.client.health.queue_update(other, 0)
            sub = await api.js_submitWorkflow(graph)
            assert sub["server"] == up["server"]
            done = await api.js_waitForCompletion(sub["promptId"])
            assert done["state"] in ("fetching_outputs", "succeeded")
            history = await api.js_getTaskHistory(sub["promptId"])
            assert sub["promptId"] in history
            images = await api.js_getGeneratedImage(sub["promptId"])
            assert _colour(images[0]) == (215, 175, 135)
            other_srv = a if other == a.url else b
            assert not [r for r in other_srv.request_log
                        if r.get("prompt_id") == sub["promptId"]]
            assert (await api.js_validateServerConsistency())["consistent"] is True
            await api.client.close()

    run(main())


def test_reconfiguring_the_pool_keeps_jobs_in_flight_on_their_server():
    async def main():
        async with _env_and_servers(node_delay_s=0.3) as (env, (a, b)):
            c = PoolClient(env, [a.url, b.url], ClientOptions(affinity="job"))
            c.health.queue_update(a.url, 4)  # steer the first job to b
            first = asyncio.ensure_future(_process(c, (0, 0, 255)))
            while not any(r.job.state == "running" for r in c.book.records.values()):
                await asyncio.sleep(0.02)
            changes = c.reconfigure([a.url])  # b removed while its job runs
            assert changes["removed"] == [b.url]
            res = await first
            assert res["server"] == b.url
            assert _colour(res["images"][0]) == (255, 255, 0)
            assert c.health.pool.select().url == a.url
            later = await _process(c, (255, 0, 0))
            assert later["server"] == a.url
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())


# LoadImage -> invert -> save, then blur -> save: the first output exists (an `executed`
# event) while the job is still running, so a server lost then has produced something.
TWO_SAVES = {
    **INVERT,
    "4": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 1,
                                                "sigma": 1.0}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "b"}},
}


@pytest.mark.parametrize("failover", ["off", "before-start"])
def test_a_server_killed_before_a_job_started_moves_it_only_with_failover(failover):
    """Two jobs on server a: one running (one output already made), one queued behind it.
    a is killed. The started job ends with ServerLost carrying that output's reference;
    the queued one runs on b under a new prompt id when failover is on (a MOVE record in
    the audit trail) and ends with ServerLost when it is off. Nothing of either attempt
    reaches the other server; nothing is downloaded from a server that did not make it."""
    from comfyui_client.api import PageApi
    from comfyui_client.errors import ServerLost

    async def main():
        async with _env_and_servers(node_delay_s=0.4) as (env, (a, b)):
            b.faults.node_delay_s = 0.0
            opts = ClientOptions(affinity="job", failover=failover, job_deadline_s=1.0,
                                 stall_check_s=0.3, poll_interval_s=0.2)
            c = PoolClient(env, [a.url, b.url], opts)
            c.health.queue_update(b.url, 10)  # steer both jobs to a
            api = PageApi(env)
            api.client = c
            first = asyncio.ensure_future(api.js_processImage(TWO_SAVES, _png((9, 9, 9)),
                                                              {"imageNode": "1"}))
            while not any(r.job.state == "running" for r in c.book.records.values()):
                await asyncio.sleep(0.02)
            second = asyncio.ensure_future(api.js_processImage(INVERT, _png((40, 50, 60))))
            while not (any(r.job.outputs for r in c.book.records.values())
                       and any(r.job.state == "queued" for r in c.book.records.values())):
                await asyncio.sleep(0.02)
            started = next(r for r in c.book.records.values() if r.job.outputs)
            waiting = next(r for r in c.book.records.values() if r.job.state == "queued")
            assert started.job.server == waiting.job.server == a.url
            old_pid = waiting.job.prompt_id
            await a.stop()

            with pytest.raises(ServerLost) as lost:
                await asyncio.wait_for(first, 15)
            assert lost.value.details["started"] is True
            assert lost.value.details["outputsServer"] == a.url
            [ref] = lost.value.details["outputs"]["3"]
            assert ref["filename"].startswith("h")
            if failover == "off":
                with pytest.raises(ServerLost) as lost2:
                    await asyncio.wait_for(second, 15)
                assert lost2.value.details["started"] is False
                assert not b.prompt_counts
            else:
                res = await asyncio.wait_for(second, 15)
                assert res["server"] == b.url and res["promptId"] != old_pid
                assert res["movedFrom"] == [{"server": a.url, "promptId": old_pid}]
                assert _colour(res["images"][0]) == (215, 205, 195)
                assert b.prompt_counts == {res["promptId"]: 1}
                moves = [r for r in c.audit.records(job=res["promptId"]) if r.method == "MOVE"]
                assert len(moves) == 1 and a.url in moves[0].path and old_pid in moves[0].path
                assert moves[0].server == b.url
                new_rec = c.book.records[res["promptId"]]
                assert new_rec.job.job_id == waiting.job.job_id, "same job, new attempt"
                assert c.book.records[old_pid].job.state == "moved"
                assert not [r for r in a.request_log if r.get("prompt_id") == res["promptId"]]
            # no request of the lost attempts ever went to b, and nothing was downloaded
            # from b that b did not make
            for pid in (started.job.prompt_id, old_pid):
                assert not [r for r in b.request_log if r.get("prompt_id") == pid]
                assert set(c.audit.servers_for(pid)) == {a.url}
            assert not [r for r in b.request_log
                        if r["path"] == "/view" and r.get("prompt_id") is None]
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())


def test_failover_option_is_validated():
    from comfyui_client.errors import ConfigError

    assert ClientOptions.from_dict({"affinity": "job", "failover": "before-start"}).failover \
        == "before-start"
    assert ClientOptions.from_dict({}).failover == "off"
    with pytest.raises(ConfigError, match="'off' or 'before-start'"):
        ClientOptions.from_dict({"affinity": "job", "failover": "always"})
    with pytest.raises(ConfigError, match="needs affinity 'job'"):
        ClientOptions.from_dict({"failover": "before-start"})


def test_a_hostile_websocket_peer_cannot_break_a_job_or_flood_the_log():
    """Mid-job the server sends an HTML page, cut-off JSON, an oversized frame, a message
    whose data is not an object, an unknown type (twice) and truncated binary frames. The
    job still completes with its own pixels; every bad frame is counted by kind, each kind
    and the unknown type are logged once, and none of it ends up in the job's state."""
    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="job",
                                                       max_message_bytes=64 * 1024))
            lines: list[str] = []
            c.console.sink = lines.append
            a.faults.ws_junk = [
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
                '{"type": "progress", "data": ',
                '{"type": "status", "data": "' + "x" * 70_000 + '"}',
                '{"type": "executing", "data": [1, 2]}',
                '{"type": "mystery_event", "data": {}}',
                '{"type": "mystery_event", "data": {"again": true}}',
                b"\x00\x00",
                b"\x00\x00\x00\x01\x00\x00",
                "<html>again</html>",
            ]
            res = await _process(c, (12, 34, 56))
            assert _colour(res["images"][0]) == (243, 221, 199)
            assert any(r["kind"] == "ws_junk" for r in a.request_log), "the junk was sent"
            report = c.debug()
            assert report["protocolErrors"] == {a.url: {
                "malformed_text": 4, "oversized_text": 1, "truncated_binary": 2}}
            assert report["unknownMessageTypes"] == ["mystery_event"]
            for needle in ("malformed text", "oversized text", "truncated binary",
                           "mystery_event"):
                assert sum(needle in line for line in lines) == 1, (needle, lines)
            assert c.book.records[res["promptId"]].job.state == "succeeded"
            await c.close()

    run(main())


def test_history_5xx_is_retried_and_a_persisting_one_is_a_typed_error():
    """GET /history is idempotent: a 500 from the server or its proxy is asked again (the
    job itself is fine); one that never clears ends the job with BadResponse, not a hang."""
    async def main():
        from comfyui_client.errors import BadResponse
        from comfyui_devserver import RouteFault

        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="job", history_retries=4))
            a.faults.route_faults["/history/*"] = RouteFault(500, "boom", remaining=2)
            res = await _process(c, (1, 2, 3))
            assert _colour(res["images"][0]) == (254, 253, 252)
            statuses = [r["status"] for r in a.request_log
                        if r["path"].startswith("/history/")]
            assert statuses[:3] == [500, 500, 200]
            a.faults.route_faults["/history/*"] = RouteFault.proxy_html(500)
            with pytest.raises(BadResponse) as err:
                await _process(c, (4, 5, 6))
            assert "500" in str(err.value) and a.url in str(err.value)
            await c.close()

    run(main())


def test_progress_callbacks_get_the_short_view_and_the_rest_the_full_one():
    """A sampler-like node sends many progress messages: those callbacks carry what a
    progress bar needs (with the node's own steps); every other event the whole job."""
    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            a.faults.progress_steps, a.faults.progress_step_delay_s = 3, 0.0
            c = PoolClient(env, [a.url], ClientOptions(affinity="job"))
            seen: list[dict] = []
            from comfyui_client.api import PageApi

            api = PageApi(c.env)
            api.client = c
            await api.js_processImage(INVERT, _png((1, 2, 3)),
                                      {"filename": "p.png", "onProgress": seen.append})
            progress = [p for p in seen if p["event"] == "progress"]
            assert len(progress) == 3
            assert [p["nodeProgress"] for p in progress] == [
                {"value": i, "max": 3} for i in (1, 2, 3)]
            assert all(set(p) == {"event", "jobId", "promptId", "server", "state", "progress",
                                  "currentNode", "nodeProgress", "totalNodes"}
                       for p in progress)
            done = next(p for p in seen if p["event"] == "execution_success")
            assert done["images"] and "outputs" in done and done["server"] == a.url
            await c.close()

    run(main())


@pytest.mark.parametrize("affinity", ["session", "job"])
def test_a_server_that_names_the_job_itself_and_finishes_it_before_answering(affinity):
    """Older ComfyUI (and the installable 2024 fork on PyPI) ignores our prompt id and names
    the job itself; a job that runs and ends before the ``POST /prompt`` answer arrives sends
    every message under a name we do not know yet. Those messages are kept until the answer
    names the job, then applied in order: the job ends from its own messages, not from the
    stall check's history read."""
    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            a.faults.ignore_prompt_id = True
            a.faults.answer_delay_s = {"/prompt": 0.4}
            c = PoolClient(env, [a.url], ClientOptions(affinity=affinity, stall_check_s=2))
            res = await _process(c, (0, 0, 255))
            assert _colour(res["images"][0]) == (255, 255, 0)
            posted = [r for r in a.request_log if r.get("path") == "/prompt"
                      and r.get("method") == "POST"]
            assert posted and posted[-1]["prompt_id"] == res["promptId"], "the server's name"
            rec = c.book.records[res["promptId"]]
            assert rec.job.state == "succeeded"
            # every message of the job reached it, in order, ending with executing{node: null}
            assert rec.events[0] == "execution_start", rec.events
            assert list(rec.events)[-2:] == ["execution_success", "executing"], rec.events
            assert rec.job.total_nodes == 3 and len(rec.job.executed_nodes) == 3
            # one audit trail under the server's name, the upload made under ours included
            assert [r.path.split("?")[0] for r in c.audit.records(job=res["promptId"])][:2] \
                == ["/upload/image", "/prompt"]
    run(main())


def test_messages_kept_for_an_unknown_job_are_bounded_and_progress_runs_collapse():
    from comfyui_client.channels import ServerChannel
    from comfyui_client.protocol import events as ev

    chan = ServerChannel(None, "http://127.0.0.1:1")  # type: ignore[arg-type]
    start = ev.decode_text('{"type": "execution_start", "data": {"prompt_id": "p1"}}')
    steps = [ev.decode_text(json.dumps({"type": "progress", "data": {
        "value": i, "max": 9, "prompt_id": "p1", "node": "2"}})) for i in range(9)]
    chan.keep_unclaimed("p1", start, start.type)
    for step in steps:
        chan.keep_unclaimed("p1", step, step.type)
    assert [(k, getattr(e, "value", None)) for e, k in chan.unclaimed["p1"]] == [
        ("execution_start", None), ("progress", 8)]
    for _ in range(2 * ServerChannel.UNCLAIMED_EVENTS):
        chan.keep_unclaimed("p1", start, start.type)
    assert len(chan.unclaimed["p1"]) == ServerChannel.UNCLAIMED_EVENTS
    for i in range(3 * ServerChannel.UNCLAIMED_IDS):
        chan.keep_unclaimed(f"other-{i}", start, start.type)
    assert len(chan.unclaimed) == ServerChannel.UNCLAIMED_IDS
    chan.submits_open = 1
    chan.submit_done()
    assert chan.unclaimed == {}


@pytest.mark.parametrize("affinity", ["session", "job"])
def test_self_test_passes_on_a_server_that_names_jobs_itself(affinity):
    """The self test's job runs outside the session lock; when the server renames it, the
    rename must not try to hand over a lock the job never held, and the check must follow
    the job to its new name (its upload was made under ours)."""
    from comfyui_client.api import PageApi

    async def main():
        async with _env_and_servers(2) as (env, (a, b)):
            for s in (a, b):
                s.faults.ignore_prompt_id = True
            c = PoolClient(env, [a.url, b.url], ClientOptions(affinity=affinity))
            api = PageApi(c.env)
            api.client = c
            out = await api.js_runConsistencySelfTest()
            assert out["ok"], out
            for entry, srv in zip(out["servers"], (a, b), strict=True):
                assert entry["serversSeen"] == [srv.url]
                posted = [r for r in srv.request_log if r.get("path") == "/prompt"
                          and r.get("method") == "POST"]
                assert [r["prompt_id"] for r in posted] == [entry["promptId"]]
                assert entry["requests"] >= 4  # upload, prompt, history, view
            assert c.routing.lock.locked_server is None and not c.routing.lock.pending
    run(main())


@pytest.mark.parametrize("untargeted", [False, True])
def test_interrupting_a_queued_job_never_stops_the_one_running(untargeted):
    """``POST /interrupt`` stops whatever runs on servers that ignore its ``prompt_id``
    (ComfyUI before targeted interrupts): cancelling a queued job must only dequeue it,
    and the running job (maybe another client's) goes on."""
    from comfyui_client.api import PageApi

    async def main():
        async with _env_and_servers(1, node_delay_s=0.3) as (env, (a,)):
            a.faults.untargeted_interrupt = untargeted
            c = PoolClient(env, [a.url], ClientOptions(affinity="session"))
            api = PageApi(c.env)
            api.client = c
            up = await api.js_uploadImageToComfyUI(_png((1, 2, 3)), {"filename": "q.png"})
            graph = {**INVERT, "1": {"class_type": "LoadImage", "inputs": {"image": up["name"]}}}
            first = await api.js_submitWorkflow(graph)
            second = await api.js_submitWorkflow(graph)
            while c.book.records[first["promptId"]].job.state != "running":
                await asyncio.sleep(0.02)
            out = await api.js_interrupt(second["promptId"])
            assert out["interrupted"] is True
            with pytest.raises(Exception) as err:
                await api.js_waitForCompletion(second["promptId"])
            assert getattr(err.value, "code", None) == "job_interrupted"
            done = await api.js_waitForCompletion(first["promptId"])
            assert done["state"] in ("fetching_outputs", "succeeded"), done
            images = await api.js_getGeneratedImage(first["promptId"])
            assert _colour(images[0]) == (254, 253, 252)
            # the stop request went only where it was meant: never while another job ran
            sent = [r for r in a.request_log if r.get("path") == "/interrupt"]
            assert sent == []

            # a running job is still stopped (at its next node); another input, so that
            # the server's cache does not answer it at once
            up = await api.js_uploadImageToComfyUI(_png((4, 5, 6)), {"filename": "r.png"})
            graph = {**INVERT, "1": {"class_type": "LoadImage", "inputs": {"image": up["name"]}}}
            third = await api.js_submitWorkflow(graph)
            while c.book.records[third["promptId"]].job.state != "running":
                await asyncio.sleep(0.02)
            await api.js_interrupt(third["promptId"])
            with pytest.raises(Exception) as err:
                await api.js_waitForCompletion(third["promptId"])
            assert getattr(err.value, "code", None) == "job_interrupted"
    run(main())


def _requests(server, method, path):
    return [r for r in server.request_log if r.get("kind") == "http"
            and r["method"] == method and r["path"] == path]


def test_the_same_image_again_is_not_uploaded_again_and_hits_the_servers_cache():
    """Inputs are named after their bytes: a job repeated on the same image reuses the file
    this page gave the server (no second upload) and ComfyUI answers it from its cache,
    as the old module's fixed file names let it; another image is another name."""
    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="session"))
            first = await _process(c, (10, 20, 30), "one.png")
            again = await _process(c, (10, 20, 30), "renamed.png")
            other = await _process(c, (11, 20, 30), "one.png")
            for res, rgb in ((first, (10, 20, 30)), (again, (10, 20, 30)),
                             (other, (11, 20, 30))):
                assert _colour(res["images"][0]) == tuple(255 - v for v in rgb)
            assert first["upload"]["name"] == again["upload"]["name"] != other["upload"]["name"]
            assert first["upload"]["reused"] is False and again["upload"]["reused"] is True
            uploads = _requests(a, "POST", "/upload/image")
            assert [u["upload_name"] for u in uploads] == [first["upload"]["name"],
                                                           other["upload"]["name"]]
            cached = c.book.records[again["promptId"]].job.cached_nodes
            assert set(cached) == {"1", "2", "3"}, "the server answered it from its cache"
            assert not c.book.records[first["promptId"]].job.cached_nodes
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())


def test_a_server_that_lost_the_input_gets_it_again_and_the_job_runs():
    """The page gave the server these bytes before, but the server no longer holds them
    (a cleaned input folder): the prompt it refuses is followed by the upload and the
    prompt again, and the job runs with the right input."""
    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="job"))
            first = await _process(c, (40, 50, 60))
            (a.dirs.input / first["upload"]["name"]).unlink()
            res = await _process(c, (40, 50, 60))
            assert _colour(res["images"][0]) == (215, 205, 195)
            assert res["upload"]["reused"] is False
            mine = [(r["method"], r["path"], r["status"]) for r in a.request_log
                    if r.get("kind") == "http" and r["path"] in ("/prompt", "/upload/image")
                    and r["time"] >= _requests(a, "GET", "/view")[0]["time"]]
            assert mine == [("POST", "/prompt", 400), ("POST", "/upload/image", 200),
                            ("POST", "/prompt", 200)]
            assert a.prompt_counts[res["promptId"]] == 2, "refused once, then queued"
            assert c.book.records[res["promptId"]].job.state == "succeeded"
            await c.close()

    run(main())


def test_an_upload_stored_under_another_name_never_submits_the_job():
    """The server already holds a different file under the input's content name, so it
    stores ours as 'name (1).png': the prompt that would read the wrong file is never sent,
    and the job ends with a clear error instead."""
    import hashlib

    from comfyui_client.errors import UploadConflict

    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            png = _png((70, 80, 90))
            name = hashlib.sha256(png).hexdigest() + ".png"
            (a.dirs.input / name).write_bytes(_png((1, 1, 1)))  # not what its name says
            c = PoolClient(env, [a.url], ClientOptions(affinity="session"))
            from comfyui_client.api import PageApi

            api = PageApi(env)
            api.client = c
            with pytest.raises(UploadConflict) as err:
                await api.js_processImage(INVERT, png, {"filename": "in.png"})
            assert name in str(err.value) and "(1)" in str(err.value)
            assert err.value.details["stored"] == name.replace(".png", " (1).png")
            assert not _requests(a, "POST", "/prompt"), "no prompt read the wrong file"
            assert not a.prompt_counts
            [rec] = c.book.records.values()
            assert rec.job.state == "failed"
            assert c.routing.lock.locked_server is None or not c.routing.lock.pending
            await c.close()

    run(main())


def test_outputs_download_while_the_job_runs_and_history_runs_beside_them():
    """The first SaveImage's output is fetched as soon as its `executed` message names it,
    while the rest of the job still runs: its GET /view reaches the server before the
    job's GET /history. Nothing is downloaded twice, and both outputs come back in the
    history's order with their own pixels."""
    async def main():
        async with _env_and_servers(1, node_delay_s=0.2) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="job"))
            from comfyui_client.api import PageApi

            api = PageApi(env)
            api.client = c
            res = await api.js_processImage(TWO_SAVES, _png((0, 100, 200)), {"imageNode": "1"})
            order = [r["path"] for r in a.request_log if r.get("kind") == "http"
                     and r["path"] in ("/view", f"/history/{res['promptId']}")]
            assert order.index("/view") < order.index(f"/history/{res['promptId']}"), order
            assert order.count("/view") == 2, "each output downloaded once"
            assert [im["filename"][0] for im in res["images"]] == ["h", "b"]
            assert _colour(res["images"][0]) == (255, 155, 55)
            assert res["unexpectedOutputs"] == []
            await c.close()

    run(main())


def test_an_output_the_history_does_not_list_is_reported_not_returned():
    """The job's `executed` message named an image (downloaded early), but its history
    lists no outputs: the result does not carry it, and says so."""
    from comfyui_devserver import RouteFault

    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="job"))
            lines: list[str] = []
            c.console.sink = lines.append
            pid = "0b8a8f9e-6c1e-4f7e-9d55-3c2f8a1b2c3d"
            entry = {pid: {"prompt": [], "outputs": {},
                           "status": {"status_str": "success", "completed": True,
                                      "messages": []}, "meta": {}}}
            a.faults.route_faults["/history/*"] = RouteFault(
                200, json.dumps(entry), content_type="application/json")
            from comfyui_client.api import PageApi

            api = PageApi(env)
            api.client = c
            res = await api.js_processImage(INVERT, _png((5, 6, 7)), {"promptId": pid})
            assert res["images"] == []
            [extra] = res["unexpectedOutputs"]
            assert extra["type"] == "output" and extra["filename"].startswith("h")
            assert any(extra["filename"] in line and "not in its history" in line
                       for line in lines), lines
            assert c.book.records[pid].job.state == "succeeded"
            await c.close()

    run(main())
