"""The console's levels and phrases (``console.py``) and the ``log`` option: what a user
reading DevTools gets at each ``init({log})`` level, in English and Chinese."""

from __future__ import annotations

import pytest

from comfyui_client import console as console_mod
from comfyui_client.console import Console
from comfyui_client.errors import ConfigError
from comfyui_client.options import ClientOptions

S = "http://gpu1:8188"


class _Env:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, text: str) -> None:
        self.lines.append(text)


@pytest.mark.parametrize(("level", "lock", "verbose"),
                         [("off", False, False), ("lock", True, False), ("verbose", True, True)])
def test_each_level_says_which_story_lines_to_write(level, lock, verbose):
    c = Console(_Env(), level)
    assert (c.level, c.lock, c.verbose) == (level, lock, verbose)


def test_a_story_line_is_english_then_chinese_and_other_lines_stay_as_they_were():
    env = _Env()
    c = Console(env)
    c.story(console_mod.lock_taken(S, "open", 0))
    c("unknown message type 'x' from s (reported once)")
    assert env.lines == [
        f"[comfyui-client] lock taken: {S} (WebSocket open, 0 tasks pending) | "
        f"已锁定服务器 {S}（WebSocket 已连接，0 个任务待完成）",
        "[comfyui-client] unknown message type 'x' from s (reported once)",
    ]


def test_a_level_can_change_and_a_wrong_one_is_refused():
    c = Console(_Env(), "off")
    c.set_level("verbose")
    assert c.lock and c.verbose
    with pytest.raises(ValueError, match="loud"):
        c.set_level("loud")


def test_the_log_option_defaults_to_lock_and_refuses_other_values():
    assert ClientOptions().log == "lock"
    assert ClientOptions.from_dict({"log": "verbose"}).log == "verbose"
    assert ClientOptions.from_dict({"log": None}).log == "lock"
    for bad in ("loud", "", 1, True):
        with pytest.raises(ConfigError, match="'off', 'lock' or 'verbose'") as info:
            ClientOptions.from_dict({"log": bad})
        assert info.value.hint and "verbose" in info.value.hint


def test_the_unlock_says_why_in_both_languages():
    assert console_mod.lock_released(S, "last pending task ended (outputs fetched)",
                                     "outputs fetched") == (
        f"lock released: {S} (all tasks done; the last one: outputs fetched)",
        f"已解锁服务器 {S}（所有任务已完成；最后一个：输出已取回）")
    en, zh = console_mod.lock_released(S, "WebSocket closed, nothing pending", None)
    assert "WebSocket closed, nothing pending" in en and "WebSocket 已关闭" in zh
    en, zh = console_mod.lock_released(S, "lock moved", None)
    assert "another server" in en and "另一台服务器" in zh


def _report(**kw):
    base = {"affinity": "session", "lock": None, "lockedServer": None, "wsState": "closed",
            "reconnectAttempts": 0, "pendingTasks": [], "sockets": {}}
    return {**base, **kw}


def test_the_lock_summary_names_the_server_why_the_socket_and_the_tasks():
    job = {"promptId": "p1", "jobId": "p1", "server": S, "state": "running"}
    lines = console_mod.lock_summary(_report(
        lock={"held": True, "wsState": "open", "pendingTasks": ["p1"]}, lockedServer=S,
        wsState="open", reconnectAttempts=1, pendingTasks=[job]))
    assert lines == [
        f"[comfyui-client] lock: held on {S} (WebSocket open, 1 task pending) | "
        f"锁：已锁定 {S}（WebSocket 已连接，1 个任务待完成）",
        f"[comfyui-client] WebSocket to {S}: open, 1 reconnect attempt | "
        f"到 {S} 的 WebSocket：已连接，重连尝试 1 次",
        f"[comfyui-client] pending tasks | 待完成任务 (1): p1 (running) on {S}",
    ]
    idle = console_mod.lock_summary(_report(
        lock={"held": False, "wsState": "closed", "pendingTasks": []},
        sockets={S: {"state": "open", "attempts": 0, "reconnects": 0}}))
    assert idle[0].startswith("[comfyui-client] lock: not held; the next job selects")
    assert idle[1] == f"[comfyui-client] WebSockets: {S} open | WebSocket：{S} 已连接"
    job_mode = console_mod.lock_summary(_report(affinity="job"))
    assert "job affinity" in job_mode[0] and "job 模式" in job_mode[0]
    assert idle[2] == "[comfyui-client] pending tasks | 待完成任务 (0): —"
    many = console_mod.lock_summary(_report(pendingTasks=[job] * 7))
    assert many[-1].count(" on ") == 3 and many[-1].endswith(" (+4)") and "(7)" in many[-1]


@pytest.mark.parametrize(("check", "needle"), [
    ({"lockedServer": None, "pendingTasks": 0, "wsState": "closed", "canUnlock": True},
     "nothing to unlock"),
    ({"lockedServer": S, "pendingTasks": 0, "wsState": "open", "canUnlock": True},
     "unlock: possible, 0 tasks pending"),
    ({"lockedServer": S, "pendingTasks": 2, "wsState": "reconnecting", "canUnlock": False},
     "unlock: not yet, 2 tasks pending"),
])
def test_the_unlock_summary_is_one_line(check, needle):
    [line] = console_mod.unlock_summary(check)
    assert needle in line and " | " in line
