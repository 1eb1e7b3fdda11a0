"""The whole client (lock, pins, reconnects, lifecycle) in plain CPython: ``PoolClient`` over
the host transport against two dev server instances on 127.0.0.1. The browser tests prove the
same paths through fetch/WebSocket; these pin down the orchestration rules quickly."""

from __future__ import annotations

import asyncio
import contextlib
import io

import pytest
from PIL import Image

from comfyui_client._host import HostTransport
from comfyui_client.client import SESSION_KEY, ClientOptions, PoolClient
from comfyui_client.errors import ServerMismatch
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
            assert c.channels[a.url].reconnects >= 1
            assert not [r for r in b.request_log if r.get("prompt_id") == res["promptId"]]
            assert c.lock.locked_server is None and not c.lock.pending
            assert [e["event"] for e in c.lock_log][-1] == "released"
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())


def test_session_refuses_a_call_for_another_server_while_locked():
    async def main():
        async with _env_and_servers() as (env, (a, b)):
            c = PoolClient(env, [a.url, b.url], ClientOptions(affinity="session"))
            await c.ensure_connection()
            assert c.lock.locked_server == a.url
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
            images = await p2.fetch_outputs(pid, make_urls=False)
            assert _colour(images[0]) == (246, 246, 246)
            # a job finished before the reload is still fetched from its own server
            assert p2.api_base(finished["promptId"]) == finished["server"]
            again = await p2.fetch_outputs(finished["promptId"], make_urls=False)
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
            assert c.lock.locked_server is None, "a failed job does not keep the lock"
            await c.close()

    run(main())


def test_a_server_that_dies_mid_job_ends_it_with_server_lost_by_the_deadline():
    async def main():
        from comfyui_client.errors import ServerLost

        async with _env_and_servers(1, node_delay_s=0.5) as (env, (a,)):
            opts = ClientOptions(affinity="job", job_deadline_s=1.0, stall_check_s=0.3)
            c = PoolClient(env, [a.url], opts)
            job = asyncio.ensure_future(_process(c, (5, 5, 5)))
            while not any(r.job.state == "running" for r in c.records.values()):
                await asyncio.sleep(0.02)
            await a.stop()  # killed mid-job: no close handshake for its jobs
            with pytest.raises(ServerLost) as err:
                await asyncio.wait_for(job, 15)
            assert a.url in str(err.value)
            [rec] = c.records.values()
            assert rec.job.state == "server_lost"
            assert not c.lock.pending
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
            assert c.channels[a.url].reconnects >= 2, "rejected once, then reopened"
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
            api.client.pool = api.client.pool.queue_update(a.url, 3)
            up = await api.js_uploadImageToComfyUI(_png((40, 80, 120)), {"filename": "s.png"})
            graph = {**INVERT, "1": {"class_type": "LoadImage", "inputs": {"image": up["name"]}}}
            # job mode: make the OTHER server look idler now; the submit must still follow
            # the file, not the selection
            other = a.url if up["server"] == b.url else b.url
            api.client.pool = api.client.pool.queue_update(up["server"], 5)
            api.client.pool = api.client.pool.queue_update(other, 0)
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
            c.pool = c.pool.queue_update(a.url, 4)  # steer the first job to b
            first = asyncio.ensure_future(_process(c, (0, 0, 255)))
            while not any(r.job.state == "running" for r in c.records.values()):
                await asyncio.sleep(0.02)
            changes = c.reconfigure([a.url])  # b removed while its job runs
            assert changes["removed"] == [b.url]
            res = await first
            assert res["server"] == b.url
            assert _colour(res["images"][0]) == (255, 255, 0)
            assert c.pool.select().url == a.url
            later = await _process(c, (255, 0, 0))
            assert later["server"] == a.url
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())
