"""On a real SCRAM + TLS broker with meshfl's ACLs: the broker refuses what a principal may not do.

One secured broker for the module (started once), one federation provisioned on it.
"""

from __future__ import annotations

import json
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from meshfl.access import domain, federation, provision
from meshfl.broker import LocalBroker, SecurityMode
from meshfl.bus import EventConsumer, EventProducer
from meshfl.demo import DemoPlan, plan_demo, run_demo, secure_plan
from meshfl.errors import BusError
from meshfl.events import AgentStatus, DecisionOutcome, DomainHeartbeat, GovernanceDecision
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, agent_transactional_id, governance_id, topic_name
from tests.brokers import start_private_broker

pytestmark = pytest.mark.kafka

DOMAINS = ["alpha", "beta"]
REPO = Path(__file__).resolve().parents[2]


class Secured:
    def __init__(self, broker: LocalBroker, admin: MeshflSettings, creds: Path) -> None:
        self.broker = broker
        self.admin = admin
        self.creds = creds

    def kafka(self, principal: str) -> dict[str, str | int | float | bool]:
        return json.loads((self.creds / f"{principal}.json").read_text())

    def as_(self, principal: str, **kafka: str) -> MeshflSettings:
        return self.admin.model_copy(update={"kafka": {**self.kafka(principal), **kafka}})


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    broker, _ = start_private_broker(
        root / "broker",
        lambda home, port: LocalBroker(
            data_dir=home, port=port, heap="384m", security=SecurityMode.SCRAM_TLS
        ),
    )
    try:
        config = broker.client_config()
        bootstrap = config.pop("bootstrap.servers")
        admin = MeshflSettings(
            bootstrap_servers=bootstrap, kafka=config, topic_prefix="sec.", data_dir=root / "data"
        )
        provision(admin, federation(admin, DOMAINS), root / "creds")
        yield Secured(broker, admin, root / "creds")
    finally:
        broker.stop(kill=True)


def _delivery_codes(settings: MeshflSettings, topics: list[Topic]) -> list[int]:
    """The error code of delivering one raw record to each topic (in the order given), as the broker
    answered; reports of different topics arrive in any order."""
    producer = Producer(settings.client_config(**{"message.timeout.ms": 20_000}))
    codes: dict[str, int] = {}

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        codes[msg.topic()] = err.code() if err is not None else KafkaError.NO_ERROR

    for topic in topics:
        producer.produce(topic_name(settings, topic), b"forged", key=b"k", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return [codes[topic_name(settings, topic)] for topic in topics]


def _beat(domain: str) -> DomainHeartbeat:
    return DomainHeartbeat(domain=domain, agent_id=f"agent-{domain}", status=AgentStatus.IDLE)


def _decision() -> GovernanceDecision:
    return GovernanceDecision(
        decision_id="d1",
        task_id="t",
        update_id="u1",
        domain="alpha",
        round=1,
        outcome=DecisionOutcome.ACCEPTED,
        policy="test",
        reason="written by the test",
    )


def test_credentials_files_are_private_and_hold_tls_and_scram(secured: Secured) -> None:
    path = secured.creds / "domain-alpha.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secured.creds.stat().st_mode) == 0o700
    kafka = secured.kafka("domain-alpha")
    assert kafka["security.protocol"] == "SASL_SSL"
    assert kafka["sasl.mechanism"] == "SCRAM-SHA-512"
    assert kafka["sasl.username"] == "domain-alpha"
    assert kafka["sasl.password"] != secured.admin.kafka["sasl.password"]
    assert Path(str(kafka["ssl.ca.location"])).is_file()


def test_wrong_scram_password_is_refused_by_the_broker(secured: Secured) -> None:
    wrong = secured.as_("domain-alpha", **{"sasl.password": "not-the-password"})
    producer = EventProducer(wrong)
    producer.produce(Topic.HEARTBEATS, _beat("alpha"), key="alpha")
    with pytest.raises(BusError, match="_AUTHENTICATION"):
        producer.flush(30)
    with pytest.raises(BusError, match="_AUTHENTICATION"):
        producer.close()  # promptly: what cannot be delivered is purged
    with pytest.raises(BusError, match="_AUTHENTICATION"):
        EventConsumer(wrong, [Topic.TASKS], dead_letters=False)


def test_a_domain_writes_its_topics_but_gets_topic_authorization_failed_on_versions(
    secured: Secured,
) -> None:
    alpha = secured.as_("domain-alpha")
    with EventProducer(alpha) as producer:  # its own heartbeats: allowed
        producer.produce(Topic.HEARTBEATS, _beat("alpha"), key="alpha")
        producer.flush(30)
    forbidden = [Topic.MODEL_VERSIONS, Topic.DECISIONS, Topic.TASKS]
    assert _delivery_codes(alpha, forbidden) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
    assert (
        _delivery_codes(alpha, [Topic.UPDATES, Topic.AGENT_PROGRESS, Topic.CATALOG])
        == [KafkaError.NO_ERROR] * 3
    )
    with (
        EventProducer(alpha) as producer,
        pytest.raises(BusError, match=r"(?i)authoriz"),
    ):
        producer.produce(Topic.DECISIONS, _decision(), key="t")
        producer.flush(30)


def test_only_governance_may_use_its_transactional_id(secured: Secured) -> None:
    """The fencing attack: init_transactions with governance's id would fence the live governance."""
    gov_id = governance_id(secured.admin, "governance")
    for principal in ("domain-alpha", "auditor"):
        attacker = Producer(secured.as_(principal).client_config(**{"transactional.id": gov_id}))
        with pytest.raises(KafkaException) as caught:
            attacker.init_transactions(30)
        assert caught.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # Nor another domain's agent id.
    other = Producer(
        secured.as_("domain-beta").client_config(
            **{"transactional.id": agent_transactional_id(secured.admin, "alpha")}
        )
    )
    with pytest.raises(KafkaException) as caught:
        other.init_transactions(30)
    assert caught.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # Governance itself: a transaction with its id commits a decision.
    with EventProducer(secured.as_("governance"), transactional_id=gov_id) as producer:
        producer.begin_transaction()
        producer.produce(Topic.DECISIONS, _decision(), key="t")
        producer.commit_transaction()
    # And a domain's own agent id works.
    with EventProducer(
        secured.as_("domain-alpha"), transactional_id=agent_transactional_id(secured.admin, "alpha")
    ) as own:
        own.begin_transaction()
        own.produce(Topic.HEARTBEATS, _beat("alpha"), key="alpha")
        own.commit_transaction()


def test_nobody_else_joins_governance_consumer_group(secured: Secured) -> None:
    group = governance_id(secured.admin, "governance")
    for principal in ("domain-alpha", "auditor"):
        # Tasks: a topic both may read, so only the group can be what is refused.
        consumer = EventConsumer(secured.as_(principal), [Topic.TASKS], group_id=group, dead_letters=False)
        try:
            with pytest.raises(BusError, match="GROUP_AUTHORIZATION_FAILED"):
                for _ in range(60):
                    consumer.poll(0.5)
        finally:
            consumer.close()


def test_auditor_reads_everything_and_writes_nothing(secured: Secured) -> None:
    auditor = secured.as_("auditor")
    assert _delivery_codes(auditor, list(Topic)) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * len(Topic)
    decisions = [
        env.event for env in _read(auditor, Topic.DECISIONS) if isinstance(env.event, GovernanceDecision)
    ]
    assert decisions, "the auditor reads the decisions governance committed"


def _read(settings: MeshflSettings, topic: Topic) -> list:
    from meshfl.bus import read_all

    return list(read_all(settings, topic, timeout=30))


def test_reprovisioning_keeps_passwords_and_removes_foreign_acls(secured: Secured, tmp_path: Path) -> None:
    before = secured.kafka("domain-beta")["sasl.password"]
    admin = AdminClient(secured.admin.client_config())
    extra = AclBinding(
        ResourceType.TOPIC,
        topic_name(secured.admin, Topic.MODEL_VERSIONS),
        ResourcePatternType.LITERAL,
        "User:domain-beta",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    for future in admin.create_acls([extra]).values():
        future.result()
    report = provision(secured.admin, federation(secured.admin, DOMAINS), secured.creds)
    beta = next(item for item in report if item.principal == "domain-beta")
    assert beta.removed_acls == 1
    assert secured.kafka("domain-beta")["sasl.password"] == before
    beta_settings = secured.as_("domain-beta")
    assert _delivery_codes(beta_settings, [Topic.MODEL_VERSIONS]) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_provision_command_adds_a_domain_principal(secured: Secured, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from meshfl.cli.broker import app

    data_dir = str(secured.broker.data_dir)
    args = ["provision", "--domain", "gamma", "--no-governance", "--no-auditor", "--data-dir", data_dir]
    result = CliRunner().invoke(app, [*args, "--topic-prefix", "sec.", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    wanted = len(domain(secured.admin, "gamma").grants)
    assert f"domain-gamma: {wanted} ACLs" in result.output
    gamma = json.loads((tmp_path / "domain-gamma.json").read_text())
    assert gamma["sasl.password"] not in result.output
    settings = secured.admin.model_copy(update={"kafka": gamma})
    assert _delivery_codes(settings, [Topic.UPDATES, Topic.MODEL_VERSIONS]) == [
        KafkaError.NO_ERROR,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    ]


def _plan(root: Path, out: Path) -> DemoPlan:
    task_file = root / "tasks" / "breast-cancer.toml"
    return plan_demo(domains_root=root, task_file=task_file, out_dir=out, rounds=1, timeout=600)


def test_secure_demo_matches_the_plain_one(secured: Secured, kafka_bootstrap: str, tmp_path: Path) -> None:
    """Every process on its own principal (governance, three hospitals, the reader): same model."""
    root = tmp_path / "domains"
    for entry in (REPO / "domains").iterdir():
        if entry.is_dir():
            shutil.copytree(entry, root / entry.name, ignore=shutil.ignore_patterns("data"))
    plain_settings = MeshflSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"plain{uuid.uuid4().hex[:6]}."
    )
    admin = secured.admin.model_copy(update={"topic_prefix": f"demo{uuid.uuid4().hex[:6]}."})
    plain_plan = _plan(root, tmp_path / "plain")
    secure_plan_ = _plan(root, tmp_path / "secure")  # the data is written once, before either runs
    watcher = secure_plan(admin, secure_plan_)
    plain = run_demo(plain_settings, plain_plan)
    safe = run_demo(watcher, secure_plan_)
    assert [r.round for r in safe.rounds] == [r.round for r in plain.rounds] == [0, 1]
    # The same federation, byte for byte: security changes who may write, not what is computed.
    assert [r.sha256 for r in safe.rounds] == [r.sha256 for r in plain.rounds]
    assert safe.federated_accuracy == plain.federated_accuracy
    governance_log = (tmp_path / "secure" / "logs" / "governance.log").read_text()
    assert "AUTHORIZATION_FAILED" not in governance_log
    creds = json.loads((tmp_path / "secure" / "credentials" / "domain-hospital-north.json").read_text())
    assert creds["sasl.password"] not in governance_log
    for name in ("governance", "agent-hospital-north"):
        assert creds["sasl.password"] not in (tmp_path / "secure" / "logs" / f"{name}.log").read_text()
