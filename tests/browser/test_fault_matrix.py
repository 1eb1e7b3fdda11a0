"""The fault-injection matrix in a real page: every cell of ``tests/matrix_runner.py`` (WS
drops at four points, history 500s, a restart wiping history, a server killed before its
jobs start with failover off and on, 413, 403, malformed JSON), 20 concurrent jobs each,
against two dev servers of this module's own (a cell kills one).

Per cell: every job ends within its deadline (derived from the configured options), only
with the error codes the fault explains, successes have the right pixels, no request of a
job's prompt id reached another server (servers' logs and the audit trail), no prompt was
submitted twice, and live proxies / WS listeners are back at their baseline."""

from __future__ import annotations

import pytest

from matrix_runner import (
    CELLS,
    COUNTS,
    JOBS_PER_CELL,
    OPTIONS,
    _counts,
    _init,
    run_matrix,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def matrix(booted_page):
    from comfyui_devserver import ServerGroup

    with ServerGroup(count=2, cors_origin="*") as group:
        _init(booted_page, group.urls, {**OPTIONS, "affinity": "session"})
        results = {r.name: r for r in run_matrix(booted_page, group)}
    yield results


@pytest.mark.parametrize("name", [c.name for c in CELLS])
def test_cell(matrix, name):
    r = matrix[name]
    assert r.jobs == JOBS_PER_CELL
    assert r.problems == [], r.problems
    # the same facts, spelled out (the problems list above names the first offenders)
    assert "hung" not in r.failed
    assert r.wrong_pixels == 0
    assert r.misrouted_log == 0 and r.misrouted_audit == 0
    assert r.duplicates == 0
    assert r.proxies_after == r.proxies_before
    assert r.faults_fired > 0 or "killed" in name, "the fault was armed but never fired"


def test_the_proxy_count_sees_open_sockets(booted_page, devservers):
    """The count the matrix compares is not vacuous: each open socket holds four proxies
    (open, text, binary and close handlers) behind three listeners comfyui.js attached
    (open, message, close), and closing the client gives them all back."""
    page = booted_page
    urls = devservers.urls
    _init(page, urls, {**OPTIONS, "affinity": "session"})
    _init(page, urls, {**OPTIONS, "affinity": "job"})
    base = tuple(page.evaluate(COUNTS))
    for url in urls:
        page.evaluate("(u) => window.comfy.ensureWebSocketConnection(u)", url)
    assert tuple(page.evaluate(COUNTS)) == (base[0] + 4 * len(urls), base[1] + 3 * len(urls))
    _init(page, urls, {**OPTIONS, "affinity": "session"})  # closes the job client's sockets
    assert _counts(page, want=base) == base
