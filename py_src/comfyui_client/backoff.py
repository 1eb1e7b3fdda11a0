"""Retry delays: capped exponential backoff with a caller-supplied random number.

Why pure: the delay is a *decision*, the sleep is I/O. Passing ``rand`` in (the caller
draws it from its own source, e.g. ``random.random()`` or a seeded one in tests) keeps this
module deterministic and testable without mocking.

Jitter choice. The un-jittered delay for failure number ``attempt`` (1-based) is::

    ceiling(attempt) = min(cap, base * factor ** (attempt - 1))

and the delay actually used is::

    delay(attempt, rand) = ceiling(attempt) * (1 - jitter * rand)      rand in [0, 1)

so ``jitter`` is the fraction of the delay that is randomised: ``jitter=1.0`` is AWS's
"full jitter" (uniform in ``(0, ceiling]``), the default ``jitter=0.5`` is "equal jitter"
(uniform in ``(ceiling/2, ceiling]``), ``jitter=0`` is none. We keep a guaranteed floor
because the clients being spread out here are browser tabs reconnecting to a server that
just restarted: full jitter's near-zero delays would send a burst of immediate retries
at a server that needs seconds to start (7-12 s measured). "Decorrelated jitter" was
rejected because it needs the previous delay as state, so ``delay`` would no longer be a
function of the attempt number alone (and the lock/health tables only keep a counter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError, InvalidInputError

__all__ = ["Backoff", "deadline_exceeded"]


@dataclass(frozen=True)
class Backoff:
    """Backoff policy (seconds). Frozen: one value shared by every server and job."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        # Validate once at construction so ``delay`` never has to (it runs on every retry).
        for name in ("base", "factor", "cap", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"backoff {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"backoff {name} must be finite, got {value!r}")
        if self.base <= 0:
            raise ConfigError(f"backoff base must be > 0 seconds, got {self.base!r}")
        if self.factor < 1:
            raise ConfigError(
                f"backoff factor must be >= 1, got {self.factor!r}",
                hint="a factor below 1 would make retries come faster and faster",
            )
        if self.cap < self.base:
            raise ConfigError(
                f"backoff cap ({self.cap!r}) must be >= base ({self.base!r})",
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"backoff jitter must be within [0, 1], got {self.jitter!r}")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (1-based); 0 for attempt 0.

        Attempt 0 means "nothing failed yet", so there is nothing to wait for.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise InvalidInputError(f"attempt must be an integer >= 0, got {attempt!r}")
        if attempt == 0:
            return 0.0
        try:
            raw = self.base * self.factor ** (attempt - 1)
        except OverflowError:  # attempt in the thousands: long past the cap anyway
            return float(self.cap)
        return float(min(self.cap, raw))

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry ``attempt``: ``ceiling(attempt) * (1 - jitter*rand)``.

        For a fixed ``rand`` this is non-decreasing in ``attempt`` and never exceeds ``cap``;
        for a fixed attempt it lies in ``(ceiling * (1 - jitter), ceiling]``.
        """
        if isinstance(rand, bool) or not isinstance(rand, (int, float)) or not 0 <= rand < 1:
            raise InvalidInputError(f"rand must be a number in [0, 1), got {rand!r}")
        return self.ceiling(attempt) * (1.0 - self.jitter * rand)


def deadline_exceeded(first_failure_at: float | None, now: float, deadline_s: float) -> bool:
    """True once failures have lasted ``deadline_s`` seconds (monotonic clock).

    ``first_failure_at`` is None while nothing is failing, which never exceeds anything:
    the deadline counts from the *first* failure of the current streak, not the last, so a
    flapping server cannot keep a job alive forever by failing at slightly different times.
    """
    if first_failure_at is None:
        return False
    return now - first_failure_at >= deadline_s
