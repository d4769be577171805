"""Which governance instance runs which task: the owner of the task's updates partition, fenced per partition.

Updates are keyed by task id, so every update (and every chunk of one) of a task lands on one partition
of the updates topic: ``task_partition`` (librdkafka's default partitioner for keyed records, CRC-32 of
the key modulo the partition count). The consumer group gives each partition to exactly one member, and
each partition has its own transactional id, the same in every instance and every service id
(``transactional_id``): whoever starts work on a partition first calls ``init_transactions``, which fences
every earlier producer of that partition (a zombie, a second instance with another service id) and
settles its open transaction before the new owner reads the log. So at most one instance can commit
decisions and versions for a task, and instances in one group share the tasks by partition.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence

from meshfl.bus import EventProducer
from meshfl.events import Event, TrainingTask
from meshfl.identity import Signer
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, governance_id

log = get_logger("meshfl.governance")


def task_partition(task_id: str, partitions: int) -> int:
    """The updates partition of a task: librdkafka's partitioner for a keyed record (CRC-32 of the key)."""
    return zlib.crc32(task_id.encode()) % partitions


def transactional_id(settings: MeshflSettings, partition: int) -> str:
    """One transactional id per updates partition, whatever the service id: two instances working a
    partition fence each other. Inside governance's prefixed ACL (``<prefix>governance-``)."""
    return governance_id(settings, f"partition-{partition}")


class PartitionProducers:
    """One fenced transactional producer per owned updates partition."""

    def __init__(
        self,
        settings: MeshflSettings,
        client_prefix: str,
        *,
        on_committed: Callable[[Topic, Event], None] | None = None,
        signer: Signer | None = None,
    ) -> None:
        self._settings = settings
        self._client_prefix = client_prefix
        self._on_committed = on_committed
        self._signer = signer
        self._producers: dict[int, EventProducer] = {}

    def own(self, partitions: Iterable[int]) -> None:
        """Own exactly ``partitions``: close the producers of the others, fence new ones first."""
        wanted = set(partitions)
        for partition in sorted(set(self._producers) - wanted):
            self._producers.pop(partition).close()
        for partition in sorted(wanted - set(self._producers)):
            producer = EventProducer(
                self._settings,
                transactional_id=transactional_id(self._settings, partition),
                client_id=f"{self._client_prefix}-p{partition}",
                on_committed=self._on_committed,
                signer=self._signer,
            )
            try:
                producer.init_transactions()
            except BaseException:
                producer.close()
                raise
            self._producers[partition] = producer
            log.info("partition fenced and owned", partition=partition)

    def get(self, partition: int) -> EventProducer:
        return self._producers[partition]

    @property
    def partitions(self) -> list[int]:
        return sorted(self._producers)

    def close(self) -> None:
        for producer in self._producers.values():
            producer.close()
        self._producers.clear()


def owned_tasks(
    tasks: Sequence[TrainingTask], partitions: Iterable[int], partition_count: int
) -> list[TrainingTask]:
    """The configured tasks whose updates partition this instance owns."""
    owned = set(partitions)
    return [task for task in tasks if task_partition(task.id, partition_count) in owned]
