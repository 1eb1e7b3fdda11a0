"""The old module's console session, in a real page: ``web/comfyui.js`` -> Pyodide -> dev
servers on 127.0.0.1, as a user types it into DevTools.

* ``window.debugWebSocketLock()`` and ``window.checkServerUnlockCondition()`` answer at
  once (no Promise), print a short summary, and say plainly when ``init()`` has not
  succeeded yet; the awaitable helpers reject at once with the same sentence.
* ``test-server-consistency.js``, served at the root of ``dist/``, fetched and ``eval``'d:
  a pass/fail table and a verdict after ``init()`` (English or Chinese after the page's
  language), and what to do before it.
* The console tells the lock's story at the level of ``init({log})``.
"""

from __future__ import annotations

import itertools

import pytest
from test_client_page import INVERT, TINY_PNG_JS

from conftest import harness_page

pytestmark = pytest.mark.browser

EVAL_SCRIPT = "() => fetch('/test-server-consistency.js').then(r => r.text()).then(eval)"

# The four steps of the old console session, as written (two without await), each value
# kept with whether it came back as a promise.
FOUR_STEPS = """async () => {
  const isPromise = (v) => v != null && typeof v.then === "function";
  const lock = window.debugWebSocketLock();
  const out = { lockIsPromise: isPromise(lock), lock };
  out.consistency = await window.validateServerConsistency();
  out.bases = [];
  for (let i = 0; i < 5; i++) out.bases.push(await window.getApiBaseUrl());
  const unlock = window.checkServerUnlockCondition();
  out.unlockIsPromise = isPromise(unlock);
  out.unlock = unlock;
  return out;
}"""

# Every helper on window before any init() succeeded: what each returns or rejects with.
BEFORE_INIT = """async () => {
  const isPromise = (v) => v != null && typeof v.then === "function";
  const lock = window.debugWebSocketLock();
  const unlock = window.checkServerUnlockCondition();
  const rejected = {};
  for (const name of ["validateServerConsistency", "getApiBaseUrl", "runConsistencySelfTest"]) {
    try {
      await window[name]();
      rejected[name] = null;
    } catch (e) {
      rejected[name] = { name: e.name, code: e.code, message: e.message };
    }
  }
  return { lock, unlock, lockIsPromise: isPromise(lock), unlockIsPromise: isPromise(unlock),
           rejected };
}"""

_markers = itertools.count()


def _console_during(page, logs: list[str], script: str, arg=None) -> tuple[object, list[str]]:
    """Run ``script`` in the page; return its value and the console lines it caused (up to
    a marker logged after it: console events reach the host in order)."""
    start = f"console-mark-{next(_markers)}"
    end = f"console-mark-{next(_markers)}"
    page.evaluate("(m) => console.log(m)", start)
    value = page.evaluate(script, arg)
    # the client writes its lines once its call returned (in a microtask or a task of their
    # own): the end marker goes after a few task turns, so it never overtakes them
    page.evaluate("(m) => new Promise((r) => setTimeout(() => { console.log(m); r(); }, 50))",
                  end)
    for _ in range(500):
        if any(line.endswith(end) for line in logs):
            break
        page.wait_for_timeout(10)
    text = list(logs)
    first = next(i for i, line in enumerate(text) if line.endswith(start))
    last = next(i for i, line in enumerate(text) if line.endswith(end))
    return value, text[first + 1:last]


@pytest.fixture
def fresh_page(browser, dist_server):
    """A page in a context of its own that imported comfyui.js and called nothing yet."""
    with harness_page(browser, dist_server, "_console_harness.html") as page:
        yield page


def test_before_init_every_helper_says_so_and_after_init_the_session_works(fresh_page,
                                                                           devservers):
    page, logs = fresh_page, fresh_page.console_logs
    out, lines = _console_during(page, logs, BEFORE_INIT)
    # the synchronous reports: an object at once, never a throw, one plain line printed
    for key in ("lock", "unlock"):
        assert out[f"{key}IsPromise"] is False
        assert out[key]["initialised"] is False
        assert "init()" in out[key]["message"] and "servers" in out[key]["message"]
    assert "debugWebSocketLock() needs init() first" in out["lock"]["message"]
    assert any(line.startswith("warning: [comfyui-client] debugWebSocketLock() needs init()")
               and "需要先调用 init()" in line for line in lines), lines
    # the awaitable ones: rejected at once with the same plain sentence and a stable code
    for name, err in out["rejected"].items():
        assert err is not None, f"{name} resolved before init()"
        assert err["code"] == "not_initialised", err
        assert err["message"].startswith(f"{name}() needs init() first"), err
    # the prepared script, eval'd: says what to do, does not throw
    res, lines = _console_during(page, logs, EVAL_SCRIPT)
    assert res["initialised"] is False and res["ok"] is False
    assert "await init({servers:" in res["verdict"]
    assert any("not initialised" in line for line in lines), lines

    # while the first init() still boots Python: the same plain answer, at once
    during = page.evaluate("""(servers) => {
      window.initDone = window.comfy.init({servers, bootCache: false});
      return window.debugWebSocketLock({ print: false });
    }""", devservers.urls)
    assert during["initialised"] is False
    assert "has not finished yet" in during["message"]
    page.evaluate("() => window.initDone")

    # after init(): the four steps as written, then the script
    page.evaluate("() => window.comfy.ensureWebSocketConnection()")
    steps, lines = _console_during(page, logs, FOUR_STEPS)
    assert steps["lockIsPromise"] is False and steps["unlockIsPromise"] is False
    lock = steps["lock"]
    assert lock["initialised"] is True and lock["lock"]["held"] is True
    locked = lock["lockedServer"]
    assert locked in devservers.urls
    assert steps["consistency"]["consistent"] is True
    assert steps["bases"] == [locked] * 5, "while locked every call names the locked server"
    assert steps["unlock"]["canUnlock"] is True and steps["unlock"]["lockedServer"] == locked
    # what the two reports printed: the locked server, why, the socket, the tasks
    assert f"log: [comfyui-client] lock: held on {locked} (WebSocket open, 0 tasks pending)" \
        f" | 锁：已锁定 {locked}（WebSocket 已连接，0 个任务待完成）" in lines, lines
    assert f"log: [comfyui-client] WebSocket to {locked}: open, 0 reconnect attempts" \
        f" | 到 {locked} 的 WebSocket：已连接，重连尝试 0 次" in lines, lines
    assert "log: [comfyui-client] pending tasks | 待完成任务 (0): —" in lines, lines
    assert any(line.startswith(f"log: [comfyui-client] unlock: possible, 0 tasks pending on "
                               f"{locked}") for line in lines), lines

    res, lines = _console_during(page, logs, EVAL_SCRIPT)
    assert res["initialised"] is True
    assert [c["check"] for c in res["checks"]] == [
        "debugWebSocketLock()", "validateServerConsistency()", "getApiBaseUrl() x5",
        "checkServerUnlockCondition()", "runConsistencySelfTest()",
        "validateServerConsistency() after the self test"]
    assert all(c["ok"] for c in res["checks"]), res["checks"]
    assert res["ok"] is True
    assert any(line.startswith("table: ") for line in lines), lines
    assert "log: [comfyui-client check] PASS: all 6 checks passed, every request stayed on " \
        "its server" in lines, lines


def test_the_reports_answer_at_once_with_pending_tasks_and_the_socket(booted_page,
                                                                      devservers):
    """A job submitted step by step holds the lock until its outputs are fetched: both
    reports say so at once, the window helpers print it, the module's exports only when
    asked."""
    page, logs = booted_page, booted_page.console_logs
    page.evaluate("(s) => window.comfy.init({servers: s, affinity: 'session'})", devservers.urls)
    pid = page.evaluate(f"""async (wf) => {{
      const up = await window.comfy.uploadImageToComfyUI(await {TINY_PNG_JS},
                                                         {{filename: "report.png"}});
      wf = {{...wf, "1": {{...wf["1"], inputs: {{image: up.name}}}}}};
      const {{promptId}} = await window.comfy.submitWorkflow(wf);
      await window.comfy.waitForCompletion(promptId);
      return promptId;
    }}""", INVERT)
    try:
        _reports_while_a_task_is_pending(page, logs, pid)
    finally:  # the task must not hold the shared page's lock for the next test
        page.evaluate("(pid) => window.comfy.getGeneratedImage(pid)", pid)
    assert page.evaluate("() => window.checkServerUnlockCondition().pendingTasks") == 0


def _reports_while_a_task_is_pending(page, logs: list[str], pid: str) -> None:
    lock, lines = _console_during(page, logs, "() => window.comfy.debugWebSocketLock()")
    assert not lines, "the module's export prints nothing unless asked"
    server = lock["lockedServer"]
    assert lock["initialised"] is True and lock["lock"]["pendingTasks"] == [pid]
    assert [j["promptId"] for j in lock["pendingTasks"]] == [pid]
    assert isinstance(lock["liveProxies"], int) and isinstance(lock["wsListeners"], int)

    lock, lines = _console_during(page, logs, "() => window.debugWebSocketLock()")
    assert lock["summary"] == [line.removeprefix("log: ") for line in lines]
    assert lines[0] == (f"log: [comfyui-client] lock: held on {server} (WebSocket open, "
                        f"1 task pending) | 锁：已锁定 {server}"
                        "（WebSocket 已连接，1 个任务待完成）")
    assert lines[2] == (f"log: [comfyui-client] pending tasks | 待完成任务 (1): {pid} "
                        f"(fetching_outputs) on {server}")

    unlock, lines = _console_during(page, logs, "() => window.checkServerUnlockCondition()")
    assert unlock["canUnlock"] is False and unlock["pendingTasks"] == 1
    assert lines == [f"log: [comfyui-client] unlock: not yet, 1 task pending on {server} "
                     f"(WebSocket open) | 解锁：暂不能解锁，{server} 上有 1 个任务待完成"
                     "（WebSocket 已连接）"]
    _, lines = _console_during(page, logs,
                               "() => window.comfy.checkServerUnlockCondition({print: true})")
    assert len(lines) == 1 and "unlock: not yet" in lines[0]


def test_the_prepared_script_speaks_the_pages_language(booted_page, devservers):
    page, logs = booted_page, booted_page.console_logs
    page.evaluate("(s) => window.comfy.init({servers: s})", devservers.urls)
    page.evaluate("() => { document.documentElement.lang = 'zh-CN'; }")
    try:
        res, lines = _console_during(page, logs, EVAL_SCRIPT)
    finally:
        page.evaluate("() => { document.documentElement.lang = ''; }")
    assert res["ok"] is True, res
    assert res["verdict"] == ("[comfyui-client check] 通过：全部 6 项检查通过，"
                              "每个请求都留在自己的服务器上")
    assert f"log: {res['verdict']}" in lines
    assert "自检后的 validateServerConsistency()" in [c["check"] for c in res["checks"]]


def _lock_story(lines: list[str]) -> list[str]:
    needles = ("] lock taken", "] lock released", "] consistency check passed", "] submit of job")
    return [line for line in lines if any(n in line for n in needles)]


def test_the_console_tells_the_lock_story_at_each_log_level(booted_page, devservers):
    page, logs = booted_page, booted_page.console_logs
    server = devservers.urls[0]
    # a new image each time: one this page gave the server before is not uploaded again
    job = """async (wf) => {
      const c = new OffscreenCanvas(8, 8);
      const px = crypto.getRandomValues(new Uint8ClampedArray(8 * 8 * 4)).map(
        (v, i) => (i % 4 === 3 ? 255 : v));
      c.getContext("2d").putImageData(new ImageData(px, 8, 8), 0, 0);
      const blob = await c.convertToBlob({ type: "image/png" });
      return (await window.comfy.processImage(wf, blob)).promptId;
    }"""
    seen = {}
    for level in (None, "verbose", "off"):
        opts = {"servers": [server], "affinity": "session"}
        if level:
            opts["log"] = level
        page.evaluate("(o) => window.comfy.init(o)", opts)
        pid, lines = _console_during(page, logs, job, INVERT)
        seen[level] = (pid, _lock_story(lines))

    pid, story = seen[None]  # the default, "lock": taken and released only
    assert story == [
        f"log: [comfyui-client] lock taken: {server} (WebSocket open, 0 tasks pending) | "
        f"已锁定服务器 {server}（WebSocket 已连接，0 个任务待完成）",
        f"log: [comfyui-client] lock released: {server} (all tasks done; the last one: "
        f"outputs fetched) | 已解锁服务器 {server}（所有任务已完成；最后一个：输出已取回）",
    ]

    pid, story = seen["verbose"]  # every check that passed, and the submit
    assert story[0].startswith("log: [comfyui-client] lock taken: ")
    assert story[-1].startswith("log: [comfyui-client] lock released: ")
    assert (f"log: [comfyui-client] consistency check passed: upload of job {pid} -> "
            f"{server}, its server | 一致性检查通过：任务 {pid} 的 upload -> {server}"
            "（该任务的服务器）") in story
    assert (f"log: [comfyui-client] submit of job {pid} -> {server}, the locked server "
            f"(1 task pending) | 任务 {pid} 提交到已锁定的服务器 {server}"
            "（1 个任务待完成）") in story
    checked = [line.split(" of job ")[0].split("passed: ")[1] for line in story
               if "consistency check passed" in line]
    assert "history" in checked and "image download" in checked, story

    assert seen["off"][1] == []  # none of it

    err = page.evaluate("""() => window.comfy.init({servers: ['http://127.0.0.1:1'], log: 'loud'})
                           .then(() => null, (e) => ({code: e.code, message: e.message}))""")
    assert err["code"] == "config_error"
    assert "'off', 'lock' or 'verbose'" in err["message"] and "loud" in err["message"]
    page.evaluate("(s) => window.comfy.init({servers: s})", devservers.urls)
