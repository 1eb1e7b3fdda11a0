"""Fixtures for the dev server host tests: one module-wide pair of servers in a thread.

Each test clears the servers' fault knobs afterwards, so a knob can never leak into the
next test; tests vary node inputs (``devserver_testkit.unique``) to stay clear of the node
cache that the real server keeps between prompts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfyui_devserver import ServerGroup


@pytest.fixture(scope="module")
def group() -> Iterator[ServerGroup]:
    with ServerGroup(count=2, cors_origin="*") as g:
        yield g


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "group" in request.fixturenames:
        g: ServerGroup = request.getfixturevalue("group")
        for server in g.servers:
            g.call(server.faults.clear)
