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
