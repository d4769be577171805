"""Audit replay of a split task: every version's top recomputed from the log, bit for bit.

The top is the one part of a split model governance trains, and everything it trained on is in the log:
each attempt starts from its parent version's top (or the seeded initial one) with a fresh optimizer and
steps once per training batch, in batch order, on the first copy of each domain's activations of that
batch, with the labels shared at alignment or the label owner's logged gradient (``governance.vertical.
top``, the same code the service runs). The replay also checks the chain of parents, that each part's
hash is what its domain reported when it finished the attempt, and lists the failed attempts with their
decisions. The bottoms never leave their domains: an auditor checks them against the domains' reports.

Before any of that every event's signature is checked like the horizontal replay does
(``governance.audit.signatures``: governance's pinned key, the domain keys it registered in the log):
a forged or replayed event is a finding and is left out, so a forged activation in a domain's name
cannot be what the top is recomputed from, nor a forged ``done`` report what a part's hash is
checked against.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.audit.log import LoggedEvent
from governance.audit.result import Finding, ReplayResult, VersionCheck
from governance.audit.signatures import check_signatures
from governance.vertical.top import TopModel
from meshfl.bus import read_all
from meshfl.errors import SignatureError
from meshfl.events import DecisionOutcome, Event, GovernanceDecision, KeyEvent
from meshfl.identity import TrustRegistry
from meshfl.identity.trust import governance_public_key
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire, tensors_sha256, to_wire
from meshfl.topics import Topic
from meshfl.vertical.alignment import split_rows, train_batches
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitGradients,
    SplitLabelsAt,
    SplitModelVersion,
    SplitPhase,
    SplitReport,
    SplitReportKind,
    SplitTask,
)

_TOPICS = (
    Topic.SPLIT_CONTROL,
    Topic.SPLIT_VERSIONS,
    Topic.SPLIT_ACTIVATIONS,
    Topic.SPLIT_GRADIENTS,
    Topic.DECISIONS,
)


def find_split_task(settings: MeshflSettings, task_id: str) -> SplitTask | None:
    """The split task of that id on the tasks topic: the first copy signed by governance's pinned key
    (what every domain joined); unsigned or forged copies are skipped."""
    registry = TrustRegistry(governance_public_key(settings))
    for env in read_all(settings, Topic.TASKS):
        if isinstance(env.event, SplitTask) and env.event.id == task_id:
            try:
                registry.verify(env.event)
            except SignatureError:
                continue
            return env.event
    return None


def split_events(settings: MeshflSettings, task_id: str) -> list[LoggedEvent]:
    """Every event of the task on the split topics, its decisions, and the key events (who may have
    signed what), with their coordinates, topic by topic in log order."""
    out: list[LoggedEvent] = []
    for topic in (*_TOPICS, Topic.KEYS):
        out += [
            LoggedEvent(topic, env.partition, env.offset, env.timestamp_ms, env.event)
            for env in read_all(settings, topic)
            if isinstance(env.event, KeyEvent) or getattr(env.event, "task_id", None) == task_id
        ]
    return out


def replay_split(
    task: SplitTask,
    logged: Iterable[LoggedEvent],
    *,
    governance_key: Ed25519PublicKey,
    window_seconds: float,
) -> ReplayResult:
    """Replay a split task's log (``split_events``): signatures first, then every version's top."""
    started = time.monotonic()
    signatures = check_signatures(logged, governance_key, window_seconds=window_seconds)
    events: list[Event] = [item.event for item in signatures.trusted]
    versions = sorted(
        (e for e in events if isinstance(e, SplitModelVersion)), key=lambda v: (v.version, v.created_at)
    )
    wanted = {(v.epoch, v.attempt) for v in versions}
    owner = task.labels.domain if task.labels.at == SplitLabelsAt.DOMAIN else None
    activations: dict[tuple[int, int], dict[tuple[int, str], torch.Tensor]] = defaultdict(dict)
    owner_grads: dict[tuple[int, int], dict[int, torch.Tensor]] = defaultdict(dict)
    done: dict[tuple[int, int], dict[str, SplitReport]] = defaultdict(dict)
    aligned: dict[str, dict[str, SplitReport]] = defaultdict(dict)
    findings: list[Finding] = list(signatures.findings)
    for event in events:
        if (
            isinstance(event, SplitActivations)
            and event.recipient == GOVERNANCE
            and event.phase == SplitPhase.TRAIN
        ):
            slot = (event.epoch, event.attempt)
            if slot in wanted:
                activations[slot].setdefault(
                    (event.batch, event.sender), from_wire([event.tensor])[event.tensor.name]
                )
        elif isinstance(event, SplitGradients) and owner is not None and event.sender == owner:
            slot = (event.epoch, event.attempt)
            if slot in wanted and event.recipient == GOVERNANCE:
                owner_grads[slot].setdefault(event.batch, from_wire([event.tensor])[event.tensor.name])
        elif isinstance(event, SplitReport):
            if event.kind == SplitReportKind.DONE:
                done[(event.epoch, event.attempt)].setdefault(event.party, event)
            elif event.kind == SplitReportKind.ALIGNED:
                aligned[event.session].setdefault(event.party, event)
        elif isinstance(event, GovernanceDecision) and event.outcome == DecisionOutcome.REJECTED:
            findings.append(
                Finding(severity="warning", kind="failed_attempt", message=event.reason, version=event.round)
            )
    checks: list[VersionCheck] = []
    published: dict[int, SplitModelVersion] = {}
    domains = [d.domain for d in task.domains]
    for version in versions:
        problems: list[str] = []
        parent = published.get(version.parent_version) if version.parent_version is not None else None
        if version.parent_version is not None and parent is None:
            problems.append(f"parent version {version.parent_version} is not in the log")
        if version.epoch != (0 if parent is None else parent.epoch) + 1:
            problems.append(f"epoch {version.epoch} does not follow its parent")
        recomputed = None
        try:
            recomputed = _recompute(task, version, parent, activations, owner_grads, aligned, domains, owner)
        except ValueError as exc:
            problems.append(str(exc))
        reports = done.get((version.epoch, version.attempt), {})
        for part in version.parts:
            report = reports.get(part.party)
            if report is None or report.sha256 != part.sha256:
                problems.append(f"part of {part.party} is not the hash its domain reported")
        self_ok = tensors_sha256(version.top) == version.top_sha256
        checks.append(
            VersionCheck(
                version=version.version,
                round=version.epoch,
                parent_version=version.parent_version,
                strategy=f"split (attempt {version.attempt})",
                contributing_domains=[p.party for p in version.parts],
                contributing_updates=[p.sha256 for p in version.parts],
                published_sha256=version.top_sha256,
                recomputed_sha256=recomputed,
                self_hash_ok=self_ok,
                reproduced=recomputed == version.top_sha256 and not problems,
                parent_basis="task" if parent is None else "recomputed",
                problems=problems,
            )
        )
        published[version.version] = version
    return ReplayResult(
        task_id=task.id,
        versions=checks,
        findings=findings,
        events_read=len(events),
        seconds=time.monotonic() - started,
    )


def _recompute(
    task: SplitTask,
    version: SplitModelVersion,
    parent: SplitModelVersion | None,
    activations: dict[tuple[int, int], dict[tuple[int, str], torch.Tensor]],
    owner_grads: dict[tuple[int, int], dict[int, torch.Tensor]],
    aligned: dict[str, dict[str, SplitReport]],
    domains: list[str],
    owner: str | None,
) -> str:
    reports = aligned.get(version.session, {})
    if set(reports) != set(domains):
        raise ValueError(f"alignment session {version.session} is not complete in the log")
    rows = next(iter(reports.values())).rows
    train_rows, _ = split_rows(rows, task.test_fraction)
    if train_rows != version.train_rows:
        raise ValueError(f"{version.train_rows} training rows published, the alignment gives {train_rows}")
    top = TopModel(task, None if parent is None else from_wire(parent.top))
    batches = train_batches(train_rows, task.batch_size, seed=task.seed, epoch=version.epoch)
    slot = (version.epoch, version.attempt)
    received = activations.get(slot, {})
    labels = None
    if owner is None:
        labels = from_wire(reports[task.labels.domain].labels)["labels"]
    for batch, positions in enumerate(batches):
        try:
            inputs = [received[(batch, domain)] for domain in domains]
        except KeyError:
            raise ValueError(f"activations of batch {batch} are missing from the log") from None
        if labels is not None:
            top.train_on_labels(inputs, labels[torch.from_numpy(positions)])
        else:
            grad = owner_grads.get(slot, {}).get(batch)
            if grad is None:
                raise ValueError(f"the label owner's gradient of batch {batch} is missing from the log")
            top.forward_for_owner(batch, inputs)
            top.backward_from_owner(batch, grad)
    return tensors_sha256(to_wire(top.state()))
