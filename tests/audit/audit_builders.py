"""Builders for the audit tests: a synthetic federation made with the service's own aggregation.

Updates are random perturbations of version 0 (no training: the audit does not care how weights were
found); decisions and versions are made exactly as the governance service makes them, through
``governance.rounds.aggregate_version`` with the accepted updates' policy transforms re-applied.
Coordinates come from a callback, so the same builder serves in-memory logs and the real broker.
Every event is signed as in a real federation: governance signs tasks, versions, decisions and the key
events that register each domain's key; each domain signs its updates and descriptors (``Signers``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.audit import LoggedEvent, reapply_transforms
from governance.rounds import aggregate_version, initial_version
from governance.strategies import ClientUpdate
from meshfl.events import (
    Column,
    DataProductDescriptor,
    DataProductRef,
    DecisionOutcome,
    Event,
    GovernanceDecision,
    KeyAction,
    KeyEvent,
    ModelSpec,
    ModelUpdate,
    ModelVersion,
    RoundPolicy,
    StrategySpec,
    TrainingTask,
)
from meshfl.identity import GOVERNANCE, Signer, key_id, public_bytes, sender_of
from meshfl.identity.binding import update_id_for
from meshfl.identity.canonical import millis
from meshfl.tensors import from_wire, to_wire
from meshfl.topics import Topic

DOMAINS = ["alpha", "beta", "gamma"]
SECRET = b"governance-and-auditors-only-secret-0123456789"
"""A DP secret of the required length (32 bytes or more)."""
OUTSIDER = "mallory"  # registered (it has a key) but not admitted: its update is rejected


def derived_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"audit-test/{name}".encode()).digest())


@dataclass
class Signers:
    """Governance's signer and one per domain (keys derived from the name, so runs are reproducible)."""

    governance: Signer = field(default_factory=lambda: Signer(GOVERNANCE, derived_key(GOVERNANCE)))
    domains: dict[str, Signer] = field(default_factory=dict)

    def domain(self, name: str) -> Signer:
        if name not in self.domains:
            self.domains[name] = Signer(name, derived_key(name))
        return self.domains[name]

    def sign(self, event: Event) -> Event:
        """``event`` signed by whoever must sign it (re-signed if it already carries a signature)."""
        sender = sender_of(event)
        signer = self.governance if sender == GOVERNANCE else self.domain(sender)
        return signer.sign(event)

    def key_events(self, names: Sequence[str] = (*DOMAINS, OUTSIDER)) -> list[KeyEvent]:
        """Governance-signed registrations of the domains' keys."""
        return [
            self.governance.sign(
                KeyEvent(
                    domain=name,
                    key_id=self.domain(name).key_id,
                    public_key=public_bytes(self.domain(name).public_key),
                    action=KeyAction.REGISTERED,
                )
            )
            for name in names
        ]


SIGNERS = Signers()
GOVERNANCE_KEY = SIGNERS.governance.public_key
"""The pinned key of every in-memory log's governance."""
assert key_id(GOVERNANCE_KEY) == SIGNERS.governance.key_id
FEATURES = [f"x{i}" for i in range(6)]


def make_task(**overrides: Any) -> TrainingTask:
    fields: dict[str, Any] = {
        "id": "audit-task",
        "model": ModelSpec(input_dim=len(FEATURES), hidden=[8], output_dim=3),
        "features": FEATURES,
        "label": "y",
        "num_classes": 3,
        "rounds": 3,
        "seed": 11,
        "strategy": StrategySpec(name="fedavg"),
        "round_policy": RoundPolicy(min_domains=len(DOMAINS)),
    }
    fields.update(overrides)
    return TrainingTask(**fields)


def product(domain: str) -> DataProductDescriptor:
    columns = [Column(name=name, logical_type="number") for name in FEATURES]
    return DataProductDescriptor(
        id=f"{domain}.table",
        domain=domain,
        owner=f"{domain}-team",
        version="2.1.0",
        columns=[*columns, Column(name="y", logical_type="integer")],
        num_rows=100,
        tags=["test"],
    )


def perturbed(weights: dict[str, torch.Tensor], seed: int, scale: float = 0.1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in weights.items()
    }


def make_update(task: TrainingTask, domain: str, round_: int, parent: ModelVersion, seed: int) -> ModelUpdate:
    return ModelUpdate(
        update_id=update_id_for(task.id, round_, domain),
        task_id=task.id,
        round=round_,
        base_version=parent.version,
        domain=domain,
        data_products=[DataProductRef(id=f"{domain}.table", version="2.1.0")],
        num_examples=50 + 10 * DOMAINS.index(domain) if domain in DOMAINS else 40,
        metrics={"train_loss": 1.0 / round_ + 0.01 * seed % 7},
        tensors=to_wire(perturbed(from_wire(parent.tensors), seed)),
    )


def decision(update: ModelUpdate, at: tuple[int, int], *, accepted: bool = True) -> GovernanceDecision:
    return GovernanceDecision(
        decision_id=str(uuid.uuid4()),
        task_id=update.task_id,
        update_id=update.update_id,
        domain=update.domain,
        round=update.round,
        outcome=DecisionOutcome.ACCEPTED if accepted else DecisionOutcome.REJECTED,
        policy="update_checks" if accepted else "norm_bound",
        reason="passed" if accepted else "L2 norm of the delta 9 exceeds bound 1",
        source_partition=at[0],
        source_offset=at[1],
    )


Place = Callable[[ModelUpdate], tuple[int, int]]
"""Publishes an update somewhere and returns its (partition, offset)."""


@dataclass
class Federation:
    task: TrainingTask
    versions: list[ModelVersion] = field(default_factory=list)
    updates: list[tuple[ModelUpdate, tuple[int, int]]] = field(default_factory=list)
    decisions: list[GovernanceDecision] = field(default_factory=list)


def run_federation(
    task: TrainingTask,
    place: Place,
    *,
    domains: Sequence[str] = DOMAINS,
    rejected_round: int | None = 2,
    dp_secret: bytes = b"",
) -> Federation:
    """Versions 0..task.rounds; in ``rejected_round`` an outsider's update is rejected."""
    fed = Federation(task=task, versions=[initial_version(task)])
    for round_ in range(1, task.rounds + 1):
        parent = fed.versions[-1]
        parent_weights = from_wire(parent.tensors)
        client_updates = []
        for i, domain in enumerate(domains):
            update = make_update(task, domain, round_, parent, seed=100 * round_ + i)
            at = place(update)
            fed.updates.append((update, at))
            fed.decisions.append(decision(update, at))
            weights, refused = reapply_transforms(task, from_wire(update.tensors), parent_weights)
            assert refused is None
            client_updates.append(
                ClientUpdate(
                    update.update_id,
                    domain,
                    weights,
                    update.num_examples,
                    parent.version - update.base_version,
                )
            )
        if round_ == rejected_round:
            outsider = make_update(task, OUTSIDER, round_, parent, seed=999)
            at = place(outsider)
            fed.updates.append((outsider, at))
            fed.decisions.append(decision(outsider, at, accepted=False))
        fed.versions.append(
            aggregate_version(
                task,
                parent,
                parent_weights,
                from_wire(parent.server_state),
                client_updates,
                created_at=parent.created_at,
                dp_secret=dp_secret,
            )
        )
    return fed


class MemoryLog:
    """An in-memory log: events appended per topic on partition 0 with consecutive offsets, each
    signed by its sender as it is appended (the record time is the signing time)."""

    def __init__(self, signers: Signers = SIGNERS) -> None:
        self.events: list[LoggedEvent] = []
        self._next: dict[Topic, int] = {}
        self.signers = signers
        for key_event in signers.key_events():
            self.append(Topic.KEYS, key_event, sign=False)

    def append(self, topic: Topic, event: Event, *, sign: bool = True) -> tuple[int, int]:
        offset = self._next.get(topic, 0)
        self._next[topic] = offset + 1
        signed = self.signers.sign(event) if sign else event
        signature = getattr(signed, "signature", None)
        stamp = millis(signature.timestamp) if signature is not None else 1_700_000_000_000
        self.events.append(LoggedEvent(topic, 0, offset, stamp + len(self.events), signed))
        return (0, offset)

    def place(self, update: ModelUpdate) -> tuple[int, int]:
        return self.append(Topic.UPDATES, update)

    def replace(self, topic: Topic, offset: int, event: Event, *, sign: bool = True) -> None:
        """Rewrite the event at ``offset`` in place: what an attacker with file access could do, with
        the sender's key (``sign``: a compromised key, or governance lying) or without it."""
        signed = self.signers.sign(event) if sign else event
        self.events = [
            LoggedEvent(e.topic, e.partition, e.offset, e.timestamp_ms, signed)
            if e.topic == topic and e.offset == offset
            else e
            for e in self.events
        ]


def memory_federation(task: TrainingTask | None = None, **kwargs: Any) -> tuple[MemoryLog, Federation]:
    """A whole federation on a ``MemoryLog``: task, catalog, updates, decisions, versions."""
    task = task or make_task()
    memory = MemoryLog()
    memory.append(Topic.TASKS, task)
    for domain in DOMAINS:
        memory.append(Topic.CATALOG, product(domain))
    fed = run_federation(task, memory.place, **kwargs)
    for item in fed.decisions:
        memory.append(Topic.DECISIONS, item)
    for version in fed.versions:
        memory.append(Topic.MODEL_VERSIONS, version)
    return memory, fed


def forged(update: ModelUpdate, scale: float = 5.0) -> ModelUpdate:
    """The same update id and metadata with different weights."""
    weights = perturbed(from_wire(update.tensors), seed=4242, scale=scale)
    return update.model_copy(update={"tensors": to_wire(weights)})
