"""The single broker stopped mid-round and started again: every daemon reconnects and the federation ends.

A private broker (never the shared one): governance and two of three hospitals have their round-1
updates in and decided, the broker goes down for a while, comes back on the same ports and data, the
third hospital joins, and every round completes with nothing lost or doubled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshfl.broker import LocalBroker
from meshfl.bus import ensure_topics
from meshfl.identity.local import with_governance_keys
from meshfl.settings import MeshflSettings
from tests.brokers import start_private_broker
from tests.federation.conftest import Processes, hospital_task, wait_for
from tests.federation.faults_helpers import accepted, assert_exactly_once, task_args, versions

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
]  # two broker starts


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[tuple[LocalBroker, str]]:
    broker, bootstrap = start_private_broker(
        tmp_path / "kafka", lambda home, port: LocalBroker(data_dir=home, port=port)
    )
    try:
        yield broker, bootstrap
    finally:
        broker.stop(kill=True)


def test_federation_survives_a_broker_restart_mid_round(
    private_broker: tuple[LocalBroker, str], mesh_root: Path, tmp_path: Path, governance_key_dir: Path
) -> None:
    broker, bootstrap = private_broker
    plain = MeshflSettings(bootstrap_servers=bootstrap, topic_prefix="restart.", data_dir=tmp_path / "data")
    settings = with_governance_keys(plain, governance_key_dir)  # every process runs signed
    ensure_topics(settings)
    task = hospital_task(mesh_root, rounds=2, local_epochs=1)
    procs = Processes(settings=settings, log_dir=tmp_path)
    try:
        procs.start("governance", "governance", "run", *task_args([task], tmp_path))
        wait_for(lambda: versions(settings, task.id), timeout=300, what="version 0")
        for name in ("hospital-central", "hospital-north"):
            procs.start(name, "domain", "run", "--domain", str(mesh_root / name))
        wait_for(lambda: len(accepted(settings, task.id)) >= 2, timeout=300, what="two accepted updates")

        broker.stop()
        time.sleep(5.0)  # everyone is disconnected for a while (not a wait for a condition)
        assert broker.start(timeout=180) == bootstrap

        procs.start("hospital-south", "domain", "run", "--domain", str(mesh_root / "hospital-south"))
        wait_for(
            lambda: len(versions(settings, task.id)) >= task.rounds + 1, timeout=300, what="all versions"
        )
        for name in ("governance", "hospital-central", "hospital-north"):
            assert procs.procs[name].poll() is None, (
                f"{name} died during the outage:\n{procs.log(name)[-2000:]}"
            )
    finally:
        procs.stop_all()
    assert_exactly_once(settings, [task])
    for version in versions(settings, task.id)[1:]:
        assert len(version.contributing_updates) == 3
