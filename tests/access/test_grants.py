"""Who may do what, checked as data: every topic is classified, each role gets exactly its rights."""

from __future__ import annotations

import pytest

from meshfl.access import TOPIC_ACCESS, Grant, Role, auditor, domain, federation, governance
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, agent_transactional_id, governance_id

SETTINGS = MeshflSettings(topic_prefix="p.")
SPLIT_EXCHANGE = {"p.split-alignment", "p.split-control", "p.split-activations", "p.split-gradients"}


def _ops(grants: tuple[Grant, ...], resource: str, operation: str) -> set[str]:
    return {g.name for g in grants if g.resource == resource and g.operation == operation}


def test_every_topic_meshfl_creates_has_writers_and_readers() -> None:
    missing = [topic.value for topic in Topic if topic.value not in TOPIC_ACCESS]
    assert not missing, f"classify these topics in meshfl.access.grants.TOPIC_ACCESS: {missing}"
    assert "keys" in TOPIC_ACCESS


def test_a_domain_writes_only_its_topics_and_reads_governance_output() -> None:
    alpha = domain(SETTINGS, "alpha")
    assert alpha.name == "domain-alpha" and alpha.role == Role.DOMAIN
    writes = _ops(alpha.grants, "topic", "WRITE")
    assert writes == {
        "p.model-updates", "p.catalog", "p.heartbeats", "p.agent-progress", "p.dead-letters", *SPLIT_EXCHANGE
    }  # fmt: skip
    reads = _ops(alpha.grants, "topic", "READ")
    assert {"p.tasks", "p.model-versions", "p.decisions", "p.keys"} <= reads
    assert "p.model-updates" not in reads  # a domain never sees another domain's update
    assert _ops(alpha.grants, "topic", "DESCRIBE") == {f"p.{name}" for name in TOPIC_ACCESS}
    txn = [g for g in alpha.grants if g.resource == "transactional_id"]
    assert {(g.name, g.pattern) for g in txn} == {(agent_transactional_id(SETTINGS, "alpha"), "literal")}
    groups = [g for g in alpha.grants if g.resource == "group"]
    assert [(g.name, g.pattern, g.operation) for g in groups] == [("meshfl-reader-", "prefixed", "READ")]


def test_governance_owns_its_ids_and_writes_what_it_decides() -> None:
    gov = governance(SETTINGS)
    assert _ops(gov.grants, "topic", "WRITE") == {
        "p.tasks", "p.model-versions", "p.decisions", "p.keys", "p.dead-letters", "p.split-versions",
        "p.governance-state", *SPLIT_EXCHANGE,
    }  # fmt: skip
    assert _ops(gov.grants, "topic", "READ") == {f"p.{name}" for name in TOPIC_ACCESS}
    prefixed = {
        (g.resource, g.operation) for g in gov.grants if g.pattern == "prefixed" and g.name == "p.governance-"
    }
    assert {("transactional_id", "WRITE"), ("group", "READ")} <= prefixed
    assert governance_id(SETTINGS, "governance").startswith("p.governance-")


def test_nobody_but_governance_touches_governance_ids_and_the_auditor_writes_nothing() -> None:
    principals = federation(SETTINGS, ["alpha", "beta"])
    for principal in principals:
        if principal.role == Role.GOVERNANCE:
            continue
        for grant in principal.grants:
            if grant.resource != "topic":  # no id or group grant reaches governance's names
                assert not governance_id(SETTINGS, "x").startswith(grant.name), (principal.name, grant)
                assert not grant.name.startswith("p.governance"), (principal.name, grant)
    audit = auditor(SETTINGS)
    assert {g.operation for g in audit.grants} == {"READ", "DESCRIBE"}
    assert not [g for g in audit.grants if g.resource == "transactional_id"]


def test_domain_ids_are_literal_so_one_domain_name_never_covers_another() -> None:
    ab = domain(SETTINGS, "ab")
    assert all(g.pattern == "literal" for g in ab.grants if g.resource == "transactional_id")
    with pytest.raises(ValueError, match="repeat"):
        federation(SETTINGS, ["a", "a"])
