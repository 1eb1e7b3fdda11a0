"""Backoff delays: capped, monotone, jitter within documented bounds."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from comfyui_client.backoff import Backoff, deadline_exceeded
from comfyui_client.errors import ConfigError, InvalidInputError

RANDS = (0.0, 0.1, 0.5, 0.9, 0.999999)


def test_default_ceilings_double_then_cap() -> None:
    b = Backoff()
    assert [b.ceiling(n) for n in range(0, 10)] == [
        0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0,
    ]


@pytest.mark.parametrize("rand", RANDS)
def test_delay_is_monotone_up_to_cap(rand: float) -> None:
    b = Backoff()
    delays = [b.delay(n, rand) for n in range(1, 40)]
    assert all(a <= c for a, c in itertools.pairwise(delays))
    assert max(delays) <= b.cap
    # it does reach the capped region: the last delays equal cap * (1 - jitter * rand)
    assert delays[-1] == pytest.approx(b.cap * (1 - b.jitter * rand))


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("attempt", [1, 2, 5, 12])
def test_jitter_bounds(jitter: float, attempt: int) -> None:
    b = Backoff(jitter=jitter)
    ceiling = b.ceiling(attempt)
    for rand in RANDS:
        d = b.delay(attempt, rand)
        assert ceiling * (1 - jitter) <= d <= ceiling
    assert b.delay(attempt, 0.0) == ceiling  # rand 0: the un-jittered value


def test_full_jitter_can_go_near_zero_equal_jitter_keeps_half() -> None:
    assert Backoff(jitter=1.0).delay(3, 0.999) == pytest.approx(2.0 * 0.001)
    assert Backoff(jitter=0.5).delay(3, 0.999) == pytest.approx(2.0 * (1 - 0.4995))


def test_zero_jitter_is_deterministic() -> None:
    b = Backoff(jitter=0.0)
    assert {b.delay(4, r) for r in RANDS} == {4.0}


def test_huge_attempt_does_not_overflow() -> None:
    b = Backoff()
    assert b.delay(100_000, 0.0) == 30.0
    assert b.ceiling(2_000) == 30.0


@pytest.mark.parametrize("rand", [1.0, -0.1, 2, True, "0.5", math.nan])
def test_rand_out_of_range_is_refused(rand: object) -> None:
    with pytest.raises(InvalidInputError, match="rand must be"):
        Backoff().delay(1, rand)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempt", [-1, 1.5, True, "2"])
def test_bad_attempt_is_refused(attempt: object) -> None:
    with pytest.raises(InvalidInputError, match="attempt must be"):
        Backoff().delay(attempt, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"base": 0}, "base must be > 0"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"cap": 0.1}, "cap"),
        ({"jitter": 1.5}, "jitter must be within"),
        ({"jitter": -0.1}, "jitter must be within"),
        ({"base": math.inf}, "finite"),
        ({"cap": "30"}, "must be a number"),
    ],
)
def test_bad_policy_is_a_config_error(kwargs: dict, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        Backoff(**kwargs)


def test_backoff_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Backoff().cap = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("first", "now", "deadline", "expected"),
    [
        (None, 1e9, 1.0, False),  # nothing failing
        (100.0, 100.0, 600.0, False),
        (100.0, 699.9, 600.0, False),
        (100.0, 700.0, 600.0, True),  # boundary counts as exceeded
        (100.0, 5000.0, 600.0, True),
    ],
)
def test_deadline_exceeded(first: float | None, now: float, deadline: float,
                           expected: bool) -> None:
    assert deadline_exceeded(first, now, deadline) is expected
