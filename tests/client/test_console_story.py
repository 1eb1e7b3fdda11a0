"""The lock's story on the console, from the whole client in CPython (host transport, dev
servers on 127.0.0.1): which lines a session job writes at each ``log`` level, and a later
``init()`` (``reconfigure``) changing the level. The browser test reads the same lines
from a real page's console."""

from __future__ import annotations

from test_client_host import _env_and_servers, _process, run

from comfyui_client.client import ClientOptions, PoolClient


def _story(lines: list[str]) -> list[str]:
    kinds = ("lock taken", "lock released", "consistency check passed", "submit of job")
    return [line.split("] ", 1)[1].split(":")[0] for line in lines
            if any(f"] {k}" in line for k in kinds)]


def test_a_session_job_tells_the_lock_story_at_each_level():
    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions(affinity="session"))
            lines: list[str] = []
            c.console.sink = lines.append
            await _process(c, (1, 2, 3))
            assert _story(lines) == ["lock taken", "lock released"]

            lines.clear()
            c.reconfigure([a.url], ClientOptions.from_dict({"log": "verbose"}))
            res = await _process(c, (4, 5, 6))
            story = _story(lines)
            assert story[0] == "lock taken" and story[-1] == "lock released"
            assert "submit of job " + res["promptId"] + " -> " + a.url in "\n".join(lines)
            assert story.count("consistency check passed") >= 3  # upload, history, image

            lines.clear()
            c.reconfigure([a.url], ClientOptions.from_dict({"log": "off"}))
            await _process(c, (7, 8, 9))
            assert _story(lines) == []
            assert c.consistency()["consistent"] is True
            await c.close()

    run(main())


def test_health_probes_are_no_jobs_work_and_tell_nothing():
    async def main():
        async with _env_and_servers(1) as (env, (a,)):
            c = PoolClient(env, [a.url], ClientOptions.from_dict({"log": "verbose"}))
            lines: list[str] = []
            c.console.sink = lines.append
            await c.check_all()
            assert _story(lines) == []
            await c.close()

    run(main())
