"""Scrape a running federation (daemons as real processes with --metrics-port) and check the counters
against what the bus holds: decisions by outcome and policy, versions, updates published."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from governance.rounds import initial_version
from meshfl.bus import EventProducer, ensure_topics
from meshfl.events import GovernanceDecision, ModelUpdate, ModelVersion
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import (
    HOSPITALS,
    EventSigners,
    Processes,
    events,
    hospital_task,
    wait_for,
    write_task,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:  # not listening yet, or reset while starting
        return 0, str(exc)


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(_get(port, "/metrics")[1]):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _named(samples: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def test_counters_match_the_bus(
    processes: Processes, mesh_root: Path, settings: MeshflSettings, tmp_path: Path
) -> None:
    task = hospital_task(mesh_root, rounds=3)
    ensure_topics(settings)
    task_file = write_task(task, tmp_path / "task.json")
    gov_port = _free_port()
    processes.start(
        "governance", "governance", "run", "--tasks", str(task_file), "--metrics-port", str(gov_port)
    )
    wait_for(lambda: _get(gov_port, "/readyz")[0] == 200, timeout=120, what="governance ready")

    forged = ModelUpdate(
        update_id="stranger/1",
        task_id=task.id,
        round=1,
        base_version=0,
        domain="stranger",
        num_examples=5,
        tensors=initial_version(task).tensors,
    )
    with EventProducer(settings) as producer:  # a registered stranger with no data product
        producer.produce(Topic.UPDATES, EventSigners(settings, mesh_root).sign(forged), key=task.id)
        producer.flush()
    agent_ports = {name: _free_port() for name in HOSPITALS}
    for name, port in agent_ports.items():
        processes.start(name, "domain", "run", "--domain", str(mesh_root / name), "--metrics-port", str(port))

    def versions() -> list[ModelVersion]:
        return [e for e in events(settings, Topic.MODEL_VERSIONS) if isinstance(e, ModelVersion)]

    wait_for(lambda: len(versions()) >= task.rounds + 1, timeout=300, what="all versions")
    decisions = [e for e in events(settings, Topic.DECISIONS) if isinstance(e, GovernanceDecision)]
    on_bus = Counter((d.outcome.value, d.policy) for d in decisions)
    assert ("rejected", "known_domain") in on_bus or any(o == "rejected" for o, _ in on_bus)

    def scraped_decisions() -> Counter:
        found = _named(_samples(gov_port), "meshfl_decisions_total")
        return Counter({(dict(k)["outcome"], dict(k)["policy"]): v for k, v in found.items() if v})

    wait_for(lambda: scraped_decisions() == on_bus, timeout=30, what=f"decision counters == bus {on_bus}")
    gov = _samples(gov_port)
    assert _named(gov, "meshfl_versions_total") == {(("task", task.id),): float(len(versions()))}
    assert _named(gov, "meshfl_round") == {(("task", task.id),): float(task.rounds)}
    # every decided update was checked at least once (a catalog miss is checked again after a re-read)
    assert _named(gov, "meshfl_check_seconds_count")[(("task", task.id),)] >= len(decisions)
    assert _named(gov, "meshfl_aggregate_seconds_count")[(("task", task.id),)] == task.rounds

    def bytes_in() -> float:
        return sum(_named(_samples(gov_port), "meshfl_bytes_in_total").values())

    wait_for(lambda: bytes_in() > 0, timeout=30, what="librdkafka statistics in the metrics")

    updates = [e for e in events(settings, Topic.UPDATES) if isinstance(e, ModelUpdate)]
    for name, port in agent_ports.items():
        assert _get(port, "/readyz")[0] == 200
        published = _named(_samples(port), "meshfl_agent_updates_published_total")
        assert published == {
            (("domain", name), ("task", task.id)): float(sum(1 for u in updates if u.domain == name))
        }
    for name in ["governance", *HOSPITALS]:
        assert processes.procs[name].poll() is None, processes.log(name)
