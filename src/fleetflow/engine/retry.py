"""How run_playbook retries hosts that failed or were unreachable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RetryPolicy"]


class RetryPolicy(BaseModel):
    """Retry only the hosts that failed or were unreachable, with exponential backoff.

    ``RetryPolicy(attempts=3, delay_seconds=10)`` runs at most three times: the second and
    third attempts are limited to the hosts still failing, after 10 s and then 20 s.
    """

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(default=1, ge=1, le=10, description="Total attempts, first included.")
    delay_seconds: float = Field(default=10.0, ge=0, description="Wait before the first retry.")
    backoff: float = Field(default=2.0, ge=1, description="Each further wait is this much longer.")
    max_delay_seconds: float = Field(default=300.0, ge=0, description="Upper bound of one wait.")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 is the first retry)."""
        return min(self.delay_seconds * self.backoff ** max(attempt - 2, 0), self.max_delay_seconds)
