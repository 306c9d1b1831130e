"""Handing a new run straight to a claimer that is already waiting in this process.

A worker with free slots keeps a claim long-poll parked on the server. When a run is started on
the same server and that claimer serves its workflow version and pool, the run is inserted
already claimed by it (one statement instead of an insert, a wake-up and a claim) and the
activation is given to the parked claim, which answers at once.

The offer is taken out of the exchange and out of the wake-up hub before the insert, so nothing
else can complete it meanwhile. Should the claimer stop waiting before it is handed the run
(its request cancelled or timed out), the run is put back in the queue at once: it is never left
leased to a claimer that will not execute it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiki.platform.domain.queries import DEFAULT_POOL
from aiki.platform.domain.values import Activation

_MAX_REMEMBERED = 10_000  # workers whose last empty claim is remembered (a bound, not a tuning)


@dataclass(eq=False, slots=True)
class Offer:
    """A parked claim: who claims, what it serves, and the future its activation is set on.

    The future is also the claimer's wake-up future in the hub: a wake-up sets it to None (look
    again), a handoff to the activation.
    """

    namespace_id: str
    worker_id: str
    versions: frozenset[tuple[str, str]]
    pools: frozenset[str]
    future: asyncio.Future[Activation | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def serves(self, workflow: str, version: str, pool: str | None) -> bool:
        """Whether a run of this version in ``pool`` (None: the default pool) is claimable by it."""
        return (workflow, version) in self.versions and (DEFAULT_POOL if pool is None else pool) in self.pools


class ClaimExchange:
    """The claims parked in this process, oldest first per namespace."""

    def __init__(self) -> None:
        self._parked: dict[str, list[Offer]] = {}
        # (namespace, worker) -> what its last claim found nothing for, and the version of the
        # namespace's ``ready:`` key before it looked.
        self._found_nothing: dict[tuple[str, str], tuple[int, frozenset[tuple[str, str]], frozenset[str]]] = {}

    def found_nothing(
        self, namespace_id: str, worker_id: str, versions: Sequence[tuple[str, str]], pools: Sequence[str], since: int
    ) -> None:
        """A claim of ``worker_id`` found no run for it, looking after version ``since`` of ``ready:``."""
        if len(self._found_nothing) >= _MAX_REMEMBERED:
            self._found_nothing.clear()
        self._found_nothing[(namespace_id, worker_id)] = (since, frozenset(versions), frozenset(pools))

    def nothing_since(
        self, namespace_id: str, worker_id: str, versions: Sequence[tuple[str, str]], pools: Sequence[str], now: int
    ) -> bool:
        """Whether this worker's last claim, for the same versions and pools, found nothing and the
        ``ready:`` key is still at version ``now``: no run became claimable since, so a claim may
        wait at once instead of looking (every change that queues a run notifies that key)."""
        seen = self._found_nothing.pop((namespace_id, worker_id), None)
        return seen is not None and seen == (now, frozenset(versions), frozenset(pools))

    def park(
        self, namespace_id: str, worker_id: str, versions: Sequence[tuple[str, str]], pools: Sequence[str]
    ) -> Offer:
        """Register a claim about to wait; ``pools`` as ``normalize_pools`` returns them."""
        offer = Offer(namespace_id, worker_id, frozenset(versions), frozenset(pools))
        self._parked.setdefault(namespace_id, []).append(offer)
        return offer

    def withdraw(self, offer: Offer) -> None:
        """The claim stopped waiting (or was handed a run): it is no longer offered."""
        parked = self._parked.get(offer.namespace_id)
        if parked is None:
            return
        try:
            parked.remove(offer)
        except ValueError:
            return
        if not parked:
            del self._parked[offer.namespace_id]

    def take(self, namespace_id: str, workflow: str, version: str, pool: str | None) -> Offer | None:
        """The oldest parked claim that serves such a run and still waits, withdrawn; else None."""
        for offer in self._parked.get(namespace_id, ()):
            if not offer.future.done() and offer.serves(workflow, version, pool):
                self.withdraw(offer)
                return offer
        return None

    def parked(self, namespace_id: str) -> int:
        return len(self._parked.get(namespace_id, ()))
