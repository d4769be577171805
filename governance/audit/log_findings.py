"""Findings the replay reads off the log and the task, apart from recomputing any version.

Two versions under one number, a re-published copy of an accepted update with another payload,
accepted updates no version used, and a DP version past its budget are facts of the log itself: they
are read off the ``TaskLog`` index and the task, before, beside and after the recomputation.
"""

from __future__ import annotations

from governance.audit.log import TaskLog
from governance.audit.result import Finding
from governance.policies import privacy_spent
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelVersion, TrainingTask


def log_findings(index: TaskLog) -> list[Finding]:
    """Duplicate versions with different content and forged copies of accepted updates."""
    findings: list[Finding] = []
    for number, copies in index.versions.items():
        first = copies[0].event
        for other in copies[1:]:
            if other.event != first:
                findings.append(
                    Finding(
                        severity="error",
                        kind="conflicting_version",
                        message=f"version {number} is published twice with different content "
                        f"(offsets {copies[0].offset} and {other.offset})",
                        version=number,
                        partition=other.partition,
                        offset=other.offset,
                    )
                )
    for update_id, copies in index.updates_by_id.items():
        if len(copies) < 2:
            continue
        accepted, _ = index.accepted_update(update_id)
        if accepted is None:
            continue
        for copy in copies:
            if copy.coordinates == accepted.coordinates or _unsigned(copy.event) == _unsigned(accepted.event):
                continue
            findings.append(
                Finding(
                    severity="error",
                    kind="forged_update_copy",
                    message=f"update {update_id} of {copy.event.domain} is re-published at partition "  # type: ignore[attr-defined]
                    f"{copy.partition} offset {copy.offset} with a payload that differs from the "
                    f"accepted one at offset {accepted.offset}; ignored (no decision accepted it)",
                    update_id=update_id,
                    partition=copy.partition,
                    offset=copy.offset,
                )
            )
    return findings


def leftover_findings(index: TaskLog) -> list[Finding]:
    """Accepted updates that no version used (an open round at the log's end): a warning each."""
    used = {
        u
        for copies in index.versions.values()
        for c in copies
        for u in c.event.contributing_updates  # type: ignore[attr-defined]
    }
    findings: list[Finding] = []
    for decision in index.decisions:
        event = decision.event
        if not isinstance(event, GovernanceDecision) or event.outcome != DecisionOutcome.ACCEPTED:
            continue
        if event.update_id not in used:
            used.add(event.update_id)
            findings.append(
                Finding(
                    severity="warning",
                    kind="pending_update",
                    message=f"update {event.update_id} of {event.domain} was accepted but is in no "
                    "published version",
                    update_id=event.update_id,
                )
            )
    return findings


def budget_findings(task: TrainingTask, published: ModelVersion) -> list[Finding]:
    """Under central DP: the version states its epsilon, and the accountant's epsilon is within the
    task's ``max_epsilon``."""
    privacy = task.privacy
    if privacy is None:
        return []
    number = published.version
    findings: list[Finding] = []
    if published.privacy is None:
        findings.append(
            Finding(
                severity="error",
                kind="privacy",
                message=f"version {number} states no epsilon under DP",
                version=number,
            )
        )
    spent = privacy_spent(privacy.noise_multiplier, 1.0, number, privacy.target_delta)
    if privacy.max_epsilon is not None and spent.epsilon > privacy.max_epsilon:
        findings.append(
            Finding(
                severity="error",
                kind="budget_exceeded",
                message=f"version {number} brings epsilon to {spent.epsilon:.4g} at delta "
                f"{privacy.target_delta:g}, above the task's max_epsilon {privacy.max_epsilon:g}",
                version=number,
            )
        )
    return findings


def _unsigned(event: object) -> object:
    """The event without its signature: the same payload signed twice is one update, not a forgery."""
    return event.model_copy(update={"signature": None})  # type: ignore[attr-defined]
