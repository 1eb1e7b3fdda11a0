"""The bench's console-logging-cost instrument (``bench/logcost.py``), run for real with a
job per level (not timed): ``build.py bench`` leaves out a block whose instrument fails, so
a change that broke it would only show as a missing block; this makes it a red test."""

from __future__ import annotations

import pytest

from bench import harness as H
from bench.logcost import LEVELS, log_cost, log_cost_report
from bench.run import INVERT, _jobs_page, fmt, stats
from conftest import ROOT

pytestmark = pytest.mark.browser


def test_the_log_cost_instrument_times_jobs_at_every_level(browser, dist_server, devservers):
    page = ROOT / "dist" / "_bench_ours.html"
    page.write_text(H.OURS)
    try:
        lat = log_cost(browser, dist_server.url, devservers.urls[0], INVERT, _jobs_page,
                       rounds=2, per_block=1, warmup=1)
    finally:
        page.unlink(missing_ok=True)
    assert lat is not None, "the instrument failed (its message is in the captured output)"
    assert {k: len(v) for k, v in lat.items()} == dict.fromkeys(LEVELS, 2)
    assert all(ms > 0 for v in lat.values() for ms in v)
    lines, head = log_cost_report(lat, fmt, stats)
    assert [line.split(" |")[0] for line in lines if line.startswith('| `"')] == [
        '| `"off"`', '| `"lock"`', '| `"verbose"`']
    assert head[1].endswith('× `log: "off"`')
