"""The sync target interface: every backend (GCS images, BigQuery rows) looks like this.

A target reads what is pending for it from the Store (the outbox is the ``deliveries`` table,
plus ``sync_batches`` for batched writes) and pushes a bounded amount of it. Its state advances
only after the remote confirmed; any write may be repeated after a crash without duplicating.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from agent.core.errors import SkysiftError
from agent.store.db import Store


class SyncError(SkysiftError):
    """A sync target failed."""


class TargetUnavailable(SyncError):
    """The remote cannot be reached or refused for a reason that may go away (network, 5xx,
    429, auth token refresh). The loop backs off and tries again; nothing is marked."""


class SyncSetupError(SyncError):
    """The remote is reachable but not set up (bucket or dataset missing, permission denied).
    Retried like an outage, but the message tells the user what to fix (``skysift sync init``)."""


class SyncTarget(ABC):
    """One destination. ``name`` is the deliveries target name (``gcs``, ``bigquery``...)."""

    name: str
    #: lower runs first: rows (small) before damaged images before the other images
    priority: int = 0

    @abstractmethod
    def pending(self, store: Store) -> int:
        """How many items are waiting for this target."""

    @abstractmethod
    def push(self, store: Store, limit: int) -> int:
        """Deliver at most ``limit`` pending items (at least one when any is pending).

        Returns how many left the pending set: confirmed by the remote (delivered or found
        already there) or dropped (nothing left to send, with the reason recorded).
        Raises :class:`TargetUnavailable` / :class:`SyncSetupError`; items not confirmed stay
        pending. Safe to call again after a crash at any point.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release network clients."""
