"""The client's lines on the page's console, and the phrasebook of the lock's story.

One object every part of the client writes through, so the whole client's console output
has one prefix and one place to go: the environment's ``log`` (comfyui.js writes it once
Python's call returned, where ``console.log`` is cheap) or ``print`` on the host. Tests
swap ``sink`` to read what the client said.

The lock's story (the lines the old ``comfyui.js`` printed while users watched DevTools:
the lock taken and why, each call's consistency check, a submit on the locked server, the
unlock once every task is done) is told at the level of ``init({log})``, decided here:

* ``"off"``: none of it;
* ``"lock"`` (the default): the lock taken and released;
* ``"verbose"``: also every consistency check that passed and every submit.

Callers test ``console.lock`` / ``console.verbose`` (plain attributes) *before* they build
a line, so a level that is off costs one attribute read and no string formatting: the
per-request check line sits on every request's path. Other lines (a protocol error, an
unknown message type, a reattach that failed) are not the lock's story and are written
whatever the level, as before.

Each story line is English, then `` | ``, then Simplified Chinese (the demo's two
languages): a console has no language of its own, and the old module's users read both.
The same phrases build the short summary ``debugWebSocketLock()`` and
``checkServerUnlockCondition()`` print (``lock_summary``, ``unlock_summary``), so the
console says one thing one way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

PREFIX = "[comfyui-client] "
#: init({log}) values, quietest first
LOG_LEVELS = ("off", "lock", "verbose")
SEPARATOR = " | "
# pending tasks named in debugWebSocketLock()'s summary (the rest are counted)
SHOWN_TASKS = 3

_WS_ZH = {"open": "已连接", "connecting": "连接中", "reconnecting": "重连中", "closed": "已关闭",
          "closing": "关闭中"}
# why a task stopped being pending (routing.task_done's ``why``), in Chinese
_ENDED_ZH = {"outputs fetched": "输出已取回", "released by caller": "已由调用方释放",
             "released": "已释放", "failed": "失败", "interrupted": "已中断", "lost": "已丢失",
             "server_lost": "服务器失联", "rejected": "被服务器拒绝", "moved": "已转移到其他服务器"}


class Console:
    """``console(text)`` writes one line, prefixed ``[comfyui-client]``; ``story(en, zh)``
    writes one line of the lock's story in both languages. ``lock`` and ``verbose`` say
    which story lines the level asks for (see the module doc)."""

    def __init__(self, env: Any, level: str = "lock") -> None:
        self.sink: Callable[[str], Any] = getattr(env, "log", None) or print
        self.lock = True
        self.verbose = False
        self.level = "lock"
        self.set_level(level)

    def set_level(self, level: str) -> None:
        """``"off"`` | ``"lock"`` | ``"verbose"`` (validated by ``options.ClientOptions``)."""
        if level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {LOG_LEVELS}, got {level!r}")
        self.level = level
        self.lock = level != "off"
        self.verbose = level == "verbose"

    def __call__(self, text: str) -> None:
        self.sink(PREFIX + text)

    def story(self, line: tuple[str, str]) -> None:
        """One line of the lock's story, ``(english, chinese)``."""
        self.sink(PREFIX + line[0] + SEPARATOR + line[1])


# --------------------------------------------------------------------------- phrases


def _tasks(n: int) -> tuple[str, str]:
    return f"{n} task{'s' if n != 1 else ''} pending", f"{n} 个任务待完成"


def ws_state(state: str) -> tuple[str, str]:
    return f"WebSocket {state}", f"WebSocket {_WS_ZH.get(state, state)}"


def held_reason(ws: str, pending: int) -> tuple[str, str]:
    """Why a lock is held: its socket's state and the tasks pending on it."""
    (w_en, w_zh), (t_en, t_zh) = ws_state(ws), _tasks(pending)
    return f"{w_en}, {t_en}", f"{w_zh}，{t_zh}"


def lock_taken(server: str, ws: str, pending: int) -> tuple[str, str]:
    en, zh = held_reason(ws, pending)
    return f"lock taken: {server} ({en})", f"已锁定服务器 {server}（{zh}）"


def lock_released(server: str, why: str, ended: str | None) -> tuple[str, str]:
    """``ended``: how the last pending task ended, when that is what released it."""
    if ended is not None:
        return (f"lock released: {server} (all tasks done; the last one: {ended})",
                f"已解锁服务器 {server}（所有任务已完成；最后一个：{_ENDED_ZH.get(ended, ended)}）")
    if why == "lock moved":
        return (f"lock released: {server} (nothing pending; moving to another server)",
                f"已解锁服务器 {server}（无待完成任务，转到另一台服务器）")
    return (f"lock released: {server} (WebSocket closed, nothing pending)",
            f"已解锁服务器 {server}（WebSocket 已关闭，无待完成任务）")


def check_passed(operation: str, server: str, job: str | None,
                 locked: str | None) -> tuple[str, str]:
    """A request's consistency check passed (``Routing.check``)."""
    if job is not None:
        return (f"consistency check passed: {operation} of job {job} -> {server}, its server",
                f"一致性检查通过：任务 {job} 的 {operation} -> {server}（该任务的服务器）")
    if locked is not None:
        return (f"consistency check passed: {operation} -> {server}, the locked server",
                f"一致性检查通过：{operation} -> {server}（已锁定的服务器）")
    return (f"consistency check passed: {operation} -> {server} (no lock held)",
            f"一致性检查通过：{operation} -> {server}（未锁定）")


def submit_on(job: str, server: str, locked: bool, pending: int) -> tuple[str, str]:
    """A ``POST /prompt`` about to go to its server (after its check)."""
    if locked:
        t_en, t_zh = _tasks(pending)
        return (f"submit of job {job} -> {server}, the locked server ({t_en})",
                f"任务 {job} 提交到已锁定的服务器 {server}（{t_zh}）")
    return (f"submit of job {job} -> {server}, the server it is pinned to",
            f"任务 {job} 提交到其固定的服务器 {server}")


# --------------------------------------------------------------------------- summaries


def _join(lines: Iterable[tuple[str, str]]) -> list[str]:
    return [PREFIX + en + SEPARATOR + zh for en, zh in lines]


def lock_summary(report: dict[str, Any]) -> list[str]:
    """The few lines ``debugWebSocketLock()`` prints: the locked server, why it is held, the
    WebSocket's state and the pending tasks (``report``: ``PoolClient.debug()``)."""
    pending = report["pendingTasks"]
    lines: list[tuple[str, str]] = []
    if report["affinity"] == "job":
        lines.append(("lock: none in job affinity; each job stays on its own server",
                      "锁：job 模式下没有会话锁，每个任务固定在自己的服务器上"))
    elif report["lock"] and report["lock"]["held"]:
        server = report["lockedServer"]
        lock = report["lock"]
        en, zh = held_reason(lock["wsState"], len(lock["pendingTasks"]))
        lines.append((f"lock: held on {server} ({en})", f"锁：已锁定 {server}（{zh}）"))
    else:
        lines.append(("lock: not held; the next job selects a server",
                      "锁：未锁定，下一个任务将重新选择服务器"))
    if report["lockedServer"] is not None:
        n = report["reconnectAttempts"]
        state, state_zh = report["wsState"], _WS_ZH.get(report["wsState"], report["wsState"])
        lines.append((f"WebSocket to {report['lockedServer']}: {state}, {n} reconnect "
                      f"attempt{'s' if n != 1 else ''}",
                      f"到 {report['lockedServer']} 的 WebSocket：{state_zh}，重连尝试 {n} 次"))
    else:
        sockets = report["sockets"]
        shown = ", ".join(f"{s} {c['state']}" for s, c in sockets.items())
        shown_zh = "，".join(f"{s} {_WS_ZH.get(c['state'], c['state'])}"
                            for s, c in sockets.items())
        lines.append((f"WebSockets: {shown or 'none'}", f"WebSocket：{shown_zh or '无'}"))
    out = _join(lines)
    # the tasks themselves are ids, states and servers: written once, after both labels
    shown = ", ".join(f"{j['promptId'] or j['jobId']} ({j['state']}) on {j['server']}"
                      for j in pending[:SHOWN_TASKS])
    if len(pending) > SHOWN_TASKS:
        shown += f" (+{len(pending) - SHOWN_TASKS})"
    out.append(f"{PREFIX}pending tasks{SEPARATOR}待完成任务 ({len(pending)}): {shown or '—'}")
    return out


def unlock_summary(check: dict[str, Any]) -> list[str]:
    """The line ``checkServerUnlockCondition()`` prints (``check``:
    ``PoolClient.unlock_condition()``)."""
    server, n, ws = check["lockedServer"], check["pendingTasks"], check["wsState"]
    (w_en, w_zh), (t_en, t_zh) = ws_state(ws), _tasks(n)
    if server is None:
        return _join([("unlock: nothing to unlock, no server is locked",
                       "解锁：无需解锁，没有锁定的服务器")])
    if check["canUnlock"]:
        return _join([(f"unlock: possible, {t_en} on {server} ({w_en})",
                       f"解锁：可以解锁，{server} 上有 {t_zh}（{w_zh}）")])
    return _join([(f"unlock: not yet, {t_en} on {server} ({w_en})",
                   f"解锁：暂不能解锁，{server} 上有 {t_zh}（{w_zh}）")])
