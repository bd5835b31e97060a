"""The sync target interface: every backend (GCS images, BigQuery rows) looks like this.

A target reads what is pending for it from the Store (the outbox is the ``deliveries`` table,
plus ``sync_batches`` for batched writes) and pushes a bounded amount of it. Its state advances
only after the remote confirmed; any write may be repeated after a crash without duplicating.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from agent.core.errors import SkysiftError
from agent.store.db import Store
from sync.pending import Owed


class SyncError(SkysiftError):
    """A sync target failed."""


class TargetUnavailable(SyncError):
    """The remote cannot be reached or refused for a reason that may go away (network, 5xx,
    429, auth token refresh). The loop backs off and tries again; nothing is marked."""


class SyncSetupError(SyncError):
    """The remote is reachable but not set up (bucket or dataset missing, permission denied).
    Retried like an outage, but the message tells the user what to fix (``skysift sync init``)."""


class SyncTarget(ABC):
    """One destination. What it owes, and so its name, label and priority, is :attr:`owed`
    (:mod:`sync.pending`), which every backlog report counts with too."""

    owed: Owed

    @property
    def name(self) -> str:
        """The deliveries target name (``gcs``, ``bigquery``...)."""
        return self.owed.target

    @property
    def label(self) -> str:
        """The name reports give it (``gcs (damaged images)``...)."""
        return self.owed.label

    @property
    def priority(self) -> int:
        return self.owed.priority

    @property
    def service(self) -> str:
        """The remote service behind it: targets of one service share one backoff."""
        return self.owed.service

    def pending(self, store: Store) -> int:
        """How many items are waiting for this target."""
        return self.owed.count(store)

    @abstractmethod
    def push(self, store: Store, limit: int) -> int:
        """Deliver at most ``limit`` pending items (at least one when any is pending).

        Returns how many left the pending set: confirmed by the remote (delivered or found
        already there) or dropped (nothing left to send, with the reason recorded).
        Raises :class:`TargetUnavailable` / :class:`SyncSetupError`; items not confirmed stay
        pending. Safe to call again after a crash at any point.
        """

    def wait_s(self, store: Store) -> float:
        """Seconds before this target may start a new remote write although items are pending
        (a pace such as ``sync.bigquery.min_interval_s``); 0: now."""
        return 0.0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release network clients."""
