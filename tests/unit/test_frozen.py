"""``_frozen.evolve`` gives what ``dataclasses.replace`` gives, for the core's state classes."""

from __future__ import annotations

import dataclasses

import pytest

from comfyui_client import jobs, pool
from comfyui_client._frozen import evolve


def test_evolve_equals_replace_and_leaves_the_original() -> None:
    job = jobs.new_job("j", "http://a:1", now=1.0, workflow={"1": {}, "2": {}})
    changed = evolve(job, {"state": jobs.RUNNING, "node_value": 3.0, "updated_at": 2.0})
    assert changed == dataclasses.replace(job, state=jobs.RUNNING, node_value=3.0,
                                          updated_at=2.0)
    assert job.state == jobs.CREATED and job.node_value is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.state = "x"  # type: ignore[misc]


def test_a_misspelt_field_is_refused_like_replace() -> None:
    health = pool.ServerHealth()
    with pytest.raises(TypeError, match="queue_remainig"):
        evolve(health, {"queue_remainig": 3})


def test_classes_with_post_init_or_slots_go_through_replace() -> None:
    seen = []

    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            seen.append(self.n)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        n: int

    assert evolve(Checked(1), {"n": 2}) == Checked(2)
    assert seen == [1, 2, 2], "__post_init__ ran for the evolved copy too"
    assert evolve(Slotted(1), {"n": 5}) == Slotted(5)
