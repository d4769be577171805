"""Who may do what on the broker: meshfl's principals and the exact Kafka ACLs each one gets.

Pure data, no I/O (``meshfl.access.provision`` applies it through the Admin API). Three roles:

- a **domain** writes the updates, its data-product descriptors (catalog), heartbeats and progress,
  and reads tasks, versions, decisions, keys, the catalog and progress; its transactional id is
  ``<prefix>agent-<domain>`` and nothing else;
- **governance** writes tasks, versions, decisions and keys and reads every meshfl topic; only it
  may use the ``<prefix>governance-*`` transactional ids and consumer groups, so nobody else can fence
  its producer (``init_transactions`` with its id) or join its group and take its partitions;
- an **auditor** reads every meshfl topic and writes nothing.

Everyone may describe every meshfl topic (so ``ensure_topics`` sees them and creates nothing) and use
the throw-away ``meshfl-reader-*`` groups of ``assign()``-only readers; everyone who consumes may
dead-letter what it cannot decode. Kafka ACLs are per topic: all domains write the same updates
topic, so that one domain does not write *as* another is proven by signatures, not by the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from meshfl.settings import MeshflSettings
from meshfl.topics import GOVERNANCE_ID, READER_GROUP_PREFIX, Topic, agent_transactional_id, client_name

Resource = Literal["topic", "group", "transactional_id"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["READ", "WRITE", "DESCRIBE"]


class Role(StrEnum):
    DOMAIN = "domain"
    GOVERNANCE = "governance"
    AUDITOR = "auditor"


_D, _G, _A = Role.DOMAIN, Role.GOVERNANCE, Role.AUDITOR
_EVERYONE = frozenset(Role)

TOPIC_ACCESS: dict[str, tuple[frozenset[Role], frozenset[Role]]] = {
    # logical topic: (writers, readers)
    Topic.CATALOG.value: (frozenset({_D}), _EVERYONE),
    Topic.TASKS.value: (frozenset({_G}), _EVERYONE),
    Topic.UPDATES.value: (frozenset({_D}), frozenset({_G, _A})),
    Topic.MODEL_VERSIONS.value: (frozenset({_G}), _EVERYONE),
    Topic.DECISIONS.value: (frozenset({_G}), _EVERYONE),
    Topic.HEARTBEATS.value: (frozenset({_D}), frozenset({_G, _A})),
    Topic.AGENT_PROGRESS.value: (frozenset({_D}), _EVERYONE),
    Topic.DEAD_LETTERS.value: (frozenset({_D, _G}), frozenset({_G, _A})),
    Topic.KEYS.value: (frozenset({_G}), _EVERYONE),  # the trust registry (governance-signed key events)
    # Vertical (split) tasks: parties and governance exchange PSI messages, control records,
    # activations and gradients both ways (a label-owning domain computes the top model's gradients).
    Topic.SPLIT_ALIGNMENT.value: (frozenset({_D, _G}), _EVERYONE),
    Topic.SPLIT_CONTROL.value: (frozenset({_D, _G}), _EVERYONE),
    Topic.SPLIT_ACTIVATIONS.value: (frozenset({_D, _G}), _EVERYONE),
    Topic.SPLIT_GRADIENTS.value: (frozenset({_D, _G}), _EVERYONE),
    Topic.SPLIT_VERSIONS.value: (frozenset({_G}), _EVERYONE),
    Topic.GOVERNANCE_STATE.value: (frozenset({_G}), frozenset({_G, _A})),  # governance's restart summary
}
"""Every topic meshfl knows, by logical name; a new ``Topic`` without an entry fails a test."""


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``operation`` on the resource ``name`` (matched literally or as a prefix)."""

    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


@dataclass(frozen=True)
class Principal:
    """A SCRAM user and what its role lets it do."""

    name: str
    role: Role
    grants: tuple[Grant, ...]

    @property
    def kafka_principal(self) -> str:
        return f"User:{self.name}"


def domain_principal_name(domain: str) -> str:
    return f"domain-{domain}"


def _topic_grants(settings: MeshflSettings, role: Role) -> list[Grant]:
    grants = []
    for logical, (writers, readers) in TOPIC_ACCESS.items():
        name = f"{settings.topic_prefix}{logical}"
        grants.append(Grant("topic", name, "literal", "DESCRIBE"))
        if role in writers:
            grants.append(Grant("topic", name, "literal", "WRITE"))
        if role in readers:
            grants.append(Grant("topic", name, "literal", "READ"))
    return grants


def _reader_groups() -> list[Grant]:
    return [Grant("group", READER_GROUP_PREFIX, "prefixed", "READ")]


def domain(settings: MeshflSettings, name: str) -> Principal:
    """A domain's principal: its own transactional id, literally (``a`` is not a prefix of ``ab``'s)."""
    if not name or name.startswith("-"):
        raise ValueError(f"bad domain name {name!r}")
    txn = agent_transactional_id(settings, name)
    grants = [
        *_topic_grants(settings, Role.DOMAIN),
        *_reader_groups(),
        Grant("transactional_id", txn, "literal", "WRITE"),
        Grant("transactional_id", txn, "literal", "DESCRIBE"),
    ]
    return Principal(domain_principal_name(name), Role.DOMAIN, tuple(sorted(set(grants))))


def governance(settings: MeshflSettings, name: str = "governance") -> Principal:
    """Governance: every ``<prefix>governance-*`` group and transactional id (any service id)."""
    ids = client_name(settings, GOVERNANCE_ID)
    grants = [
        *_topic_grants(settings, Role.GOVERNANCE),
        *_reader_groups(),
        Grant("group", ids, "prefixed", "READ"),
        Grant("group", ids, "prefixed", "DESCRIBE"),
        Grant("transactional_id", ids, "prefixed", "WRITE"),
        Grant("transactional_id", ids, "prefixed", "DESCRIBE"),
    ]
    return Principal(name, Role.GOVERNANCE, tuple(sorted(set(grants))))


def auditor(settings: MeshflSettings, name: str = "auditor") -> Principal:
    grants = [*_topic_grants(settings, Role.AUDITOR), *_reader_groups()]
    return Principal(name, Role.AUDITOR, tuple(sorted(set(grants))))


def federation(
    settings: MeshflSettings, domains: list[str], *, with_governance: bool = True, with_auditor: bool = True
) -> list[Principal]:
    """The principals of one federation: its domains, governance and a read-only auditor."""
    if len(set(domains)) != len(domains):
        raise ValueError(f"domain names repeat: {sorted(domains)}")
    principals = [domain(settings, name) for name in domains]
    if with_governance:
        principals.append(governance(settings))
    if with_auditor:
        principals.append(auditor(settings))
    return principals
