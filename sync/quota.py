"""BigQuery quotas: recognise a refusal for quota, and say how long to wait before the next try.

BigQuery's limits on table modifications are fixed (load, copy and query jobs that write a table;
for partitioned tables a per-table limit on partition modifications; per project, load jobs per
day). They cannot be raised and failed jobs count too. A refusal is HTTP 403 with reason
``quotaExceeded`` (a daily limit: it refills over a rolling 24 hours) or ``rateLimitExceeded``
(a short-term rate: seconds), either on the request itself or as the ``errorResult`` of a job
that ran. Neither is a credentials problem, and retrying at once only spends more quota: the
sync loop pauses the service (:class:`QuotaPaused`) with every row kept in its batch.

No cloud library is imported at module level: the classification reads the exception's
``errors`` list, which every ``google.api_core`` HTTP error carries.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sync.base import TargetUnavailable

#: the long-term refusal: a daily limit is spent
QUOTA = "quotaExceeded"
#: the short-term refusal: too many requests in the last seconds
RATE = "rateLimitExceeded"
REASONS = (QUOTA, RATE)


class QuotaPaused(TargetUnavailable):
    """BigQuery refused for quota: wait, keep the data, do not count it as an outage.

    ``job_created`` says whether the refused job exists remotely (it ran and failed: its id is
    spent) or not (the insert itself was refused: the same id is still free)."""

    def __init__(self, message: str, reason: str, job_created: bool):
        super().__init__(message)
        self.reason = reason
        self.job_created = job_created


def reason_of(exc: BaseException) -> str | None:
    """``quotaExceeded`` / ``rateLimitExceeded`` when ``exc`` is BigQuery refusing for quota
    (403 Forbidden or 429 TooManyRequests with that reason), else None."""
    code = getattr(exc, "code", None)
    if code not in (403, 429):
        return None
    errors = getattr(exc, "errors", None) or []
    return _reason(errors[0] if errors else None)


def reason_of_result(error_result: dict[str, Any] | None) -> str | None:
    """The quota reason of a finished job's ``errorResult``, else None."""
    return _reason(error_result)


def _reason(err: Any) -> str | None:
    reason = err.get("reason") if isinstance(err, dict) else None
    return reason if reason in REASONS else None


def next_utc_midnight(now: datetime) -> datetime:
    """The start of the next UTC day after ``now`` (an aware datetime)."""
    day = now.astimezone(timezone.utc).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def quota_wait_s(now: datetime, window_s: float | None) -> float:
    """How long a ``quotaExceeded`` pause lasts: ``window_s`` when configured, else until the
    next UTC midnight.

    BigQuery refills a daily quota gradually over a rolling 24 hours, so some room usually comes
    back well before that; without a configured window the device waits for the day to turn,
    the one moment by which a whole day's worth has certainly come back. One try after the
    pause costs at most one more refused job.
    """
    if window_s is not None:
        return window_s
    return (next_utc_midnight(now) - now).total_seconds()


def rate_wait_s(consecutive: int, base_s: float, cap_s: float) -> float:
    """A ``rateLimitExceeded`` pause: seconds, doubling with each refusal in a row."""
    return min(cap_s, base_s * 2 ** max(0, consecutive - 1))
