"""The events governance's split coordinator sends, built from plain values (no state, no I/O).

The coordinator (``governance.vertical.coordinator``) decides *when* to send; these say *what*: the
control commands of an epoch attempt, the rejection naming who stalled it, the gradients each bottom
model gets back, the top's output for a label owner, and the epoch's ``SplitModelVersion``. A
decision's id is a UUID5 of its subject and reason, so the one a restarted governance writes again is
recognisably the same (Li and Toor, arXiv 2403.17878, for the split protocol itself).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import torch

from meshfl.events import DecisionOutcome, Event, GovernanceDecision
from meshfl.tensors import tensors_sha256, to_wire
from meshfl.topics import Topic
from meshfl.vertical.events import (
    GOVERNANCE,
    SplitActivations,
    SplitCommand,
    SplitEpoch,
    SplitGradients,
    SplitModelVersion,
    SplitPart,
    SplitPhase,
    SplitReport,
)

_DECISION_NS = uuid.UUID("0d0f8a5e-7a53-4c8b-a1f2-6b1d7e0c9a42")
Outgoing = tuple[Topic, Event]


def epoch_command(
    task_id: str,
    base: SplitModelVersion | None,
    session: str | None,
    command: SplitCommand,
    epoch: int,
    attempt: int,
    **fields: object,
) -> Outgoing:
    """A control command; it names the base version and each party's part of it, so a party checks
    it trains from the same bottom it published."""
    event = SplitEpoch(
        task_id=task_id,
        command=command,
        session=session or "",
        epoch=epoch,
        attempt=attempt,
        base_version=None if base is None else base.version,
        base_parts={} if base is None else {p.party: p.sha256 for p in base.parts},
        **fields,  # type: ignore[arg-type]
    )
    return Topic.SPLIT_CONTROL, event


def attempt_rejection(
    task_id: str, epoch: int, attempt: int, missing: Sequence[str], reason: str
) -> Outgoing:
    """The rejection decision of a failed attempt (or alignment: epoch and attempt 0)."""
    subject = f"{task_id}/epoch-{epoch}/attempt-{attempt}"
    decision = GovernanceDecision(
        decision_id=str(uuid.uuid5(_DECISION_NS, f"{subject}/{reason}")),
        task_id=task_id,
        update_id=subject,
        domain=",".join(missing),
        round=epoch,
        outcome=DecisionOutcome.REJECTED,
        policy="split_epoch",
        reason=reason,
    )
    return Topic.DECISIONS, decision


def gradient_messages(
    task_id: str, epoch: int, attempt: int, batch: int, domains: Sequence[str], slices: Sequence[torch.Tensor]
) -> list[Outgoing]:
    """Each domain's slice of the gradient at the cut layer, addressed to it."""
    return [
        (
            Topic.SPLIT_GRADIENTS,
            SplitGradients(
                task_id=task_id,
                epoch=epoch,
                attempt=attempt,
                batch=batch,
                sender=GOVERNANCE,
                recipient=domain,
                tensor=to_wire({"gradient": grad})[0],
            ),
        )
        for domain, grad in zip(domains, slices, strict=True)
    ]


def owner_activation(
    task_id: str, epoch: int, attempt: int, phase: SplitPhase, batch: int, owner: str, output: torch.Tensor
) -> Outgoing:
    """The top's output for the label owner, who holds the head and the labels."""
    event = SplitActivations(
        task_id=task_id,
        epoch=epoch,
        attempt=attempt,
        batch=batch,
        phase=phase,
        sender=GOVERNANCE,
        recipient=owner,
        tensor=to_wire({"top_output": output})[0],
    )
    return Topic.SPLIT_ACTIVATIONS, event


def split_version(
    task_id: str,
    parent: SplitModelVersion | None,
    session: str | None,
    epoch: int,
    attempt: int,
    *,
    train_rows: int,
    top_state: Mapping[str, torch.Tensor],
    done: Mapping[str, SplitReport],
    parties: Sequence[str],
    owner: str | None,
    metrics: dict[str, float],
) -> SplitModelVersion:
    """The epoch's version: the top's weights and, per party, the digest and signature of the bottom
    it reported done (what an auditor checks each part against)."""
    tensors = to_wire(top_state)
    return SplitModelVersion(
        task_id=task_id,
        version=epoch,
        parent_version=None if parent is None else parent.version,
        epoch=epoch,
        attempt=attempt,
        session=session or "",
        train_rows=train_rows,
        top=tensors,
        top_sha256=tensors_sha256(tensors),
        parts=[
            SplitPart(
                party=party,
                role="bottom+head" if party == owner else "bottom",
                sha256=str(done[party].sha256),
                data_products=done[party].data_products,
                signature=done[party].signature,
            )
            for party in parties
        ],
        metrics=metrics,
    )
