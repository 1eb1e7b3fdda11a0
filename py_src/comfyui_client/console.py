"""The client's lines on the page's console.

One object every part of the client writes through, so the whole client's console output
has one prefix and one place to go: the environment's ``log`` (comfyui.js writes it once
Python's call returned, where ``console.log`` is cheap) or ``print`` on the host. Tests
swap ``sink`` to read what the client said.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PREFIX = "[comfyui-client] "


class Console:
    """``console(text)`` writes one line, prefixed ``[comfyui-client]``."""

    def __init__(self, env: Any) -> None:
        self.sink: Callable[[str], Any] = getattr(env, "log", None) or print

    def __call__(self, text: str) -> None:
        self.sink(PREFIX + text)
