"""What the console shows, folded from bus events: a pure, JSON-ready view of a running federation.

``ConsoleView.apply`` takes events in log order and keeps only what an operator looks at: domains
and their last heartbeat, the catalog, each task's versions with their lineage, the decisions (the
most recent ``max_decisions``, rejections kept longer than acceptances) and the DP budget. It never
does I/O, so the page's content is unit-tested without Kafka or a browser.

Under central DP the domains' own training metrics are not covered by the mechanism, so a task with
``privacy`` set shows no per-version accuracy or loss (only epsilon spent against its budget).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meshfl.events import (
    DataProductDescriptor,
    DecisionOutcome,
    DomainHeartbeat,
    Event,
    GovernanceDecision,
    ModelUpdate,
    ModelVersion,
    TrainingTask,
)

PLOTTED_METRICS: dict[str, str] = {"accuracy": "holdout_accuracy", "loss": "holdout_loss"}
"""Shown name -> the update metric averaged over a version's contributing updates (weighted by their
examples): each domain scores its trained local model on its own holdout rows."""
_MAX_ORPHANS = 10_000


def _iso(stamp: datetime) -> str:
    return stamp.isoformat(timespec="seconds")


@dataclass
class _TaskView:
    task: TrainingTask
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    # update id -> (domain, round, num_examples, metrics) of the task's updates seen so far
    updates: dict[str, tuple[str, int, int, dict[str, float]]] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    replay: dict[int, dict[str, Any]] = field(default_factory=dict)

    def latest(self) -> dict[str, Any] | None:
        return self.versions[max(self.versions)] if self.versions else None


class ConsoleView:
    """The folded state of the bus; ``snapshot()`` is what ``/api/state`` serves."""

    def __init__(self, *, max_decisions: int = 500) -> None:
        self._domains: dict[str, dict[str, Any]] = {}
        self._catalog: dict[str, dict[str, Any]] = {}
        self._tasks: dict[str, _TaskView] = {}
        self._rejections: deque[dict[str, Any]] = deque(maxlen=max_decisions)
        self._acceptances: deque[dict[str, Any]] = deque(maxlen=max_decisions)
        # events of a task whose TrainingTask was not read yet (topics interleave in any order)
        self._orphans: dict[str, list[Event]] = {}
        self._orphan_count = 0
        self.events_seen = 0

    # --- folding ----------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event (any meshfl event type; unknown ones are counted and ignored)."""
        self.events_seen += 1
        if isinstance(event, DomainHeartbeat):
            self._heartbeat(event)
        elif isinstance(event, DataProductDescriptor):
            self._descriptor(event)
        elif isinstance(event, TrainingTask):
            if event.id not in self._tasks:
                self._tasks[event.id] = _TaskView(task=event)
                for waiting in self._orphans.pop(event.id, []):
                    self._orphan_count -= 1
                    self.apply(waiting)
                    self.events_seen -= 1
        elif isinstance(event, ModelUpdate | GovernanceDecision | ModelVersion) and not self._known(event):
            return
        elif isinstance(event, ModelUpdate):
            self._update(event)
        elif isinstance(event, GovernanceDecision):
            self._decision(event)
        elif isinstance(event, ModelVersion):
            self._version(event)

    def _known(self, event: ModelUpdate | GovernanceDecision | ModelVersion) -> bool:
        """Whether the event's task is known; if not, keep it (bounded) for when the task arrives."""
        if event.task_id in self._tasks:
            return True
        if self._orphan_count < _MAX_ORPHANS:
            self._orphans.setdefault(event.task_id, []).append(event)
            self._orphan_count += 1
        return False

    def record_replay(self, task_id: str, verdicts: dict[int, dict[str, Any]]) -> None:
        """Attach replay verdicts (version -> {reproduced, problems}) computed off the fold."""
        view = self._tasks.get(task_id)
        if view is not None:
            view.replay.update(verdicts)

    def _heartbeat(self, beat: DomainHeartbeat) -> None:
        self._domains[beat.domain] = {
            "domain": beat.domain,
            "agent_id": beat.agent_id,
            "status": beat.status.value,
            "current_round": beat.current_round,
            "tasks": list(beat.tasks),
            "data_products": list(beat.data_products),
            "last_heartbeat": _iso(beat.sent_at),
        }

    def _descriptor(self, product: DataProductDescriptor) -> None:
        self._catalog[product.id] = {
            "id": product.id,
            "domain": product.domain,
            "owner": product.owner,
            "version": product.version,
            "status": product.status.value,
            "contract": f"{product.contract_id} {product.contract_version}".strip(),
            "num_rows": product.num_rows,
            "quality": [
                {"name": q.name, "value": q.value, "unit": q.unit, "threshold": q.threshold}
                for q in product.quality
            ],
            "updated_at": _iso(product.updated_at),
        }

    def _update(self, update: ModelUpdate) -> None:
        view = self._tasks[update.task_id]
        if update.update_id not in view.updates:
            view.updates[update.update_id] = (
                update.domain,
                update.round,
                update.num_examples,
                dict(update.metrics),
            )

    def _decision(self, decision: GovernanceDecision) -> None:
        row = {
            "task_id": decision.task_id,
            "update_id": decision.update_id,
            "domain": decision.domain,
            "round": decision.round,
            "outcome": decision.outcome.value,
            "policy": decision.policy,
            "reason": decision.reason,
            "at": _iso(decision.created_at),
        }
        view = self._tasks[decision.task_id]
        if decision.outcome == DecisionOutcome.REJECTED:
            self._rejections.append(row)
            view.rejected += 1
        else:
            self._acceptances.append(row)
            view.accepted += 1

    def _version(self, version: ModelVersion) -> None:
        view = self._tasks[version.task_id]
        if version.version in view.versions:
            return
        row: dict[str, Any] = {
            "version": version.version,
            "round": version.round,
            "parent": version.parent_version,
            "domains": list(version.contributing_domains),
            "updates": list(version.contributing_updates),
            "sha256": version.sha256,
            "epsilon": version.privacy.epsilon if version.privacy else None,
            "created_at": _iso(version.created_at),
        }
        if view.task.privacy is None:
            row.update(self._mean_metrics(view, version.contributing_updates))
        view.versions[version.version] = row

    @staticmethod
    def _mean_metrics(view: _TaskView, update_ids: list[str]) -> dict[str, float | None]:
        means: dict[str, float | None] = {}
        for name, metric in PLOTTED_METRICS.items():
            total, weight = 0.0, 0
            for update_id in update_ids:
                known = view.updates.get(update_id)
                if known is not None and metric in known[3]:
                    total += known[3][metric] * known[2]
                    weight += known[2]
            means[name] = total / weight if weight else None
        return means

    # --- reading -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page renders, JSON-ready; rejections come before acceptances."""
        return {
            "events_seen": self.events_seen,
            "domains": sorted(self._domains.values(), key=lambda d: d["domain"]),
            "catalog": sorted(self._catalog.values(), key=lambda p: (p["domain"], p["id"])),
            "tasks": [self._task_row(view) for _, view in sorted(self._tasks.items())],
            "decisions": [*reversed(self._rejections), *reversed(self._acceptances)],
        }

    def _task_row(self, view: _TaskView) -> dict[str, Any]:
        task = view.task
        latest = view.latest()
        current_round = (latest["round"] + 1) if latest else 1
        in_round = sorted({d for d, r, _, _ in view.updates.values() if r == current_round})
        expected = sorted(
            name for name, d in self._domains.items() if task.id in d["tasks"] or not d["tasks"]
        )
        privacy = task.privacy
        versions = []
        for number in sorted(view.versions):
            row = dict(view.versions[number])
            row["replay"] = view.replay.get(number)
            versions.append(row)
        return {
            "id": task.id,
            "description": task.description,
            "strategy": task.strategy.name,
            "mode": task.mode.value,
            "rounds": task.rounds,
            "latest_version": latest["version"] if latest else None,
            "latest_round": latest["round"] if latest else 0,
            "complete": bool(latest and latest["round"] >= task.rounds),
            "domains_in": in_round,
            "stragglers": [d for d in expected if d not in in_round]
            if latest and latest["round"] < task.rounds
            else [],
            "accepted": view.accepted,
            "rejected": view.rejected,
            "privacy": None
            if privacy is None
            else {
                "epsilon": latest["epsilon"] if latest else 0.0,
                "max_epsilon": privacy.max_epsilon,
                "delta": privacy.target_delta,
            },
            "versions": versions,
        }


__all__ = ["PLOTTED_METRICS", "ConsoleView"]
