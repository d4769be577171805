"""What the running governance service holds in memory: the log's state and one ``TaskState`` a task.

The deciding and round-closing parts share one ``ServiceState`` by reference; the transaction loop
replaces its contents when it rebuilds from the log (on start and after an aborted transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from governance.log_state import LogState
from governance.rounds import TaskState


@dataclass
class ServiceState:
    """The service's whole in-memory state; everything in it can be rebuilt from the log."""

    log: LogState = field(default_factory=LogState)
    tasks: dict[str, TaskState] = field(default_factory=dict)

    def holds(self) -> dict[int, int]:
        """Per updates partition, the offset the committed position must not pass: the lowest hold of
        any task (several tasks share a partition; the earliest waiting update must be read again)."""
        out: dict[int, int] = {}
        for state in self.tasks.values():
            for partition, offset in state.holds().items():
                out[partition] = min(out.get(partition, offset), offset)
        return out
