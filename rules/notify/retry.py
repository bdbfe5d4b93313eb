"""How long to wait before trying a receiver again: exponential backoff to a cap, per receiver.

Retryable failures are retried for as long as the message still matters (see `delivery.still_matters`); the cap
bounds the wait between attempts, not their number. `max_attempts` > 0 is for embedders who prefer to give up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 0  # 0: retry until the message no longer matters
    initial_backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    multiplier: float = 2.0
    timeout_s: float = 30.0  # one attempt longer than this is a (retryable) timeout

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based): initial, ×multiplier each time, at most the cap."""
        if attempt < 1:
            return 0.0
        exponent = min(attempt - 1, 64)  # beyond this the cap has long been reached
        return float(min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**exponent))

    def gave_up(self, attempts: int) -> bool:
        return self.max_attempts > 0 and attempts >= self.max_attempts

    def with_intervals(self, initial_s: float | None, max_s: float | None) -> RetryPolicy:
        """This policy with a receiver's own `retry: {initial, max}` (either may be unset)."""
        out = self
        if initial_s is not None:
            out = replace(out, initial_backoff_s=initial_s)
        if max_s is not None:
            out = replace(out, max_backoff_s=max_s)
        return out
