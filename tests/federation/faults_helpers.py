"""Helpers of the fault-matrix tests: what the log says after a federation, and what must hold."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from meshfl.domain.tasks import load_task_file
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelVersion, RoundPolicy, TrainingTask
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import Processes, events, wait_for


def small_tasks(mesh_root: Path, *, rounds: int = 2) -> list[TrainingTask]:
    """The digits and breast-cancer tasks, two domains a round each, a few rounds: fast but real."""
    policy = RoundPolicy(min_domains=2)
    return [
        load_task_file(mesh_root / "tasks" / name).model_copy(
            update={"rounds": rounds, "round_policy": policy, "local_epochs": 1}
        )
        for name in ("digits.toml", "breast-cancer.toml")
    ]


def task_args(tasks: list[TrainingTask], log_dir: Path) -> list[str]:
    """``--tasks`` options for ``meshfl governance run``, one JSON task file each."""
    args: list[str] = []
    for task in tasks:
        out = log_dir / f"task-{task.id}.json"
        out.write_text(task.model_dump_json())
        args += ["--tasks", str(out)]
    return args


def versions(settings: MeshflSettings, task_id: str) -> list[ModelVersion]:
    found = [
        e
        for e in events(settings, Topic.MODEL_VERSIONS)
        if isinstance(e, ModelVersion) and e.task_id == task_id
    ]
    return sorted(found, key=lambda v: v.version)


def decisions(settings: MeshflSettings) -> list[GovernanceDecision]:
    return [e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)]


def accepted(settings: MeshflSettings, task_id: str) -> list[GovernanceDecision]:
    return [d for d in decisions(settings) if d.task_id == task_id and d.outcome == DecisionOutcome.ACCEPTED]


def assert_exactly_once(settings: MeshflSettings, tasks: list[TrainingTask]) -> None:
    """Nothing published twice, nothing decided twice, nothing lost (every accepted update aggregated)."""
    for task in tasks:
        found = versions(settings, task.id)
        assert [v.version for v in found] == list(range(task.rounds + 1)), f"{task.id}: versions {found}"
        consumed = [u for v in found for u in v.contributing_updates]
        assert len(consumed) == len(set(consumed)), f"{task.id}: an update aggregated twice"
        accepted_ids = {d.update_id for d in accepted(settings, task.id)}
        assert accepted_ids == set(consumed), f"{task.id}: accepted but never aggregated (or the reverse)"
    per_source = Counter(
        (d.source_partition, d.source_offset) for d in decisions(settings) if d.source_offset is not None
    )
    assert all(count == 1 for count in per_source.values()), f"decided twice: {per_source.most_common(3)}"
    per_id = Counter(d.decision_id for d in decisions(settings))
    assert all(count == 1 for count in per_id.values()), (
        f"a decision published twice: {per_id.most_common(3)}"
    )


def log_events(procs: Processes, name: str) -> list[dict]:
    """The JSON log lines of one daemon."""
    out = []
    for line in procs.log(name).splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def wait_for_log(procs: Processes, name: str, event: str, *, timeout: float, **fields: object) -> float:
    """Wait until the daemon logs ``event`` (with ``fields``); return the monotonic time it was seen."""

    def _seen() -> bool:
        return any(
            line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
            for line in log_events(procs, name)
        )

    wait_for(_seen, timeout=timeout, what=f"{name} to log {event!r} {fields or ''}")
    return time.monotonic()
