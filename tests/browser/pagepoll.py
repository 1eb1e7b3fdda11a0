"""Waiting on a page condition that needs ``await`` (shared by the browser tests)."""

from __future__ import annotations

import time
from typing import Any


def poll(page: Any, script: str, timeout_s: float = 30.0) -> Any:
    """Evaluate a (possibly async) predicate until it returns something truthy, and return
    that value. Playwright's ``wait_for_function`` treats a returned Promise as truthy, so
    it cannot await."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value:
            return value
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for: {script}; last value {value!r}")
