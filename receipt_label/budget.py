"""The time a labeling call may take: a deadline that LLM work stops at, whatever the HTTP timeouts say.

The process Lambda sets it from ``context.get_remaining_time_in_millis()`` minus a margin for the
label writes, so the function ends with a retryable `TimeBudgetExceededError` (and no write) instead
of being killed by Lambda (``Sandbox.Timedout``, which no retrier matches)::

    with time_budget(TimeBudget.from_seconds(remaining - margin)):
        label_receipt(details, llm=llm)

Three places enforce it, all in `receipt_label.llm`: a chat call does not start with less than a
minimum left; each HTTP request's connect/read/write timeouts are shrunk to the time left (a
stalled stream stops at the deadline); and every streamed chunk checks the deadline (a stream that
trickles a valid answer slowly stops at the deadline too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from receipt_label.errors import TimeBudgetExceededError

_current: ContextVar[TimeBudget | None] = ContextVar("receipt_label_time_budget", default=None)


@dataclass(frozen=True)
class TimeBudget:
    """A deadline on the monotonic clock; ``clock`` is replaceable for tests."""

    deadline: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def from_seconds(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> TimeBudget:
        return cls(deadline=clock() + seconds, clock=clock)

    def remaining(self) -> float:
        """Seconds left (negative once the deadline has passed)."""
        return self.deadline - self.clock()

    def require(self, seconds: float, what: str) -> None:
        """Raise `TimeBudgetExceededError` unless at least ``seconds`` are left for ``what``."""
        left = self.remaining()
        if left < seconds:
            raise TimeBudgetExceededError(
                f"time budget exhausted before {what}: {max(left, 0.0):.1f}s left, {seconds:.1f}s needed"
            )


def current_budget() -> TimeBudget | None:
    """The budget set by the innermost `time_budget` block of this context, if any."""
    return _current.get()


@contextmanager
def time_budget(budget: TimeBudget | None) -> Iterator[TimeBudget | None]:
    """Run the block under ``budget`` (None: no deadline)."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)
