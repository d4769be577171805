"""Governance's view of the data catalog: which domains serve which task, read from the compacted topic.

The view is fed without broker round trips in the loop (``take``) and read to its end only at start-up and
when a catalog policy rejects an update (``drain``): a domain that registered a moment before its first
update must not be rejected for a stale view. A descriptor enters the view only when signed by the domain
it names (``IdentityGate``): a forged one (say, a retired status over a live product) is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from meshfl.bus import Envelope, EventConsumer
from meshfl.domain.data import serves
from meshfl.events import DataProductDescriptor, TrainingTask

if TYPE_CHECKING:
    from meshfl.identity.trust import EnvelopeVerifier


class CatalogView:
    """The latest descriptor of every data product, by domain and product id."""

    def __init__(self, verifier: EnvelopeVerifier) -> None:
        self.products: dict[str, dict[str, DataProductDescriptor]] = {}
        self.consumer: EventConsumer | None = None
        self._verifier = verifier
        self._generation = 0  # bumped by every change, so cached answers know they are stale
        self._serving: dict[str, tuple[int, TrainingTask, tuple[str, ...]]] = {}
        self._snapshot: tuple[int, Mapping[str, Sequence[DataProductDescriptor]]] | None = None

    def attach(self, consumer: EventConsumer) -> None:
        self.consumer = consumer

    def record(self, env: Envelope) -> None:
        if isinstance(env.event, DataProductDescriptor):
            if not self._verifier.accept(env):
                return
            product = env.event
            self.products.setdefault(product.domain, {})[product.id] = product
            self._generation += 1

    def forget(self, _topic: str, key: str | None) -> None:
        """A catalog tombstone: the product keyed ``key`` was withdrawn."""
        for products in self.products.values():
            products.pop(key or "", None)
        self._generation += 1

    def take(self) -> None:
        """Take in whatever catalog records are already fetched, without a broker round trip."""
        if self.consumer is None:
            return
        env = self.consumer.poll(0.0)
        while env is not None:
            self.record(env)
            env = self.consumer.poll(0.0)

    def drain(self) -> bool:
        """Read the catalog up to its end (asks the broker where the end is: for startup and doubts).

        Returns False when there is no consumer to read from.
        """
        consumer = self.consumer
        if consumer is None:
            return False
        while True:
            env = consumer.poll(0.0 if consumer.at_end() else 0.5)
            if env is None:
                if consumer.at_end():
                    return True
                continue
            self.record(env)

    def snapshot(self) -> Mapping[str, Sequence[DataProductDescriptor]]:
        """The products of every domain, as the policies take them (read-only; rebuilt only after
        the catalog changed, not for each of a round's 1,000 updates)."""
        if self._snapshot is None or self._snapshot[0] != self._generation:
            frozen = {domain: tuple(products.values()) for domain, products in self.products.items()}
            self._snapshot = (self._generation, MappingProxyType(frozen))
        return self._snapshot[1]

    def serving_domains(self, task: TrainingTask) -> list[str]:
        """Domains with a product that serves the task and not suspended by its admission rules.

        Cached until the catalog changes: round readiness asks after every update, and checking
        1,000 domains' contracts took 0.3 s, once per update (``bench/scale.py``)."""
        return list(self._serving_now(task))

    def serving_count(self, task: TrainingTask) -> int:
        """``len(serving_domains(task))`` without copying the list (asked after every decision)."""
        return len(self._serving_now(task))

    def _serving_now(self, task: TrainingTask) -> tuple[str, ...]:
        cached = self._serving.get(task.id)
        if cached is not None and cached[0] == self._generation and (cached[1] is task or cached[1] == task):
            return cached[2]
        serving = tuple(
            sorted(
                domain
                for domain, products in self.products.items()
                if any(serves(product, task) is None for product in products.values())
                and domain not in task.admission.suspended_domains
            )
        )
        self._serving[task.id] = (self._generation, task, serving)
        return serving
