"""The model registry on the real broker: list, get, pull as safetensors, subscribe, and the CLIs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from governance.registry import ModelRegistry, VersionNotFoundError
from meshfl.bus import EventProducer
from meshfl.cli.catalog import app as catalog_app
from meshfl.cli.models import app as models_app
from meshfl.events import ModelVersion
from meshfl.identity.local import identity_env
from meshfl.settings import MeshflSettings
from meshfl.subscribe import subscribe, watch_versions
from meshfl.tensors import from_wire
from meshfl.topics import Topic
from tests.audit.audit_builders import DOMAINS
from tests.audit.test_audit_bus import bus_signers, publish_federation

pytestmark = pytest.mark.kafka


def _plain(version: ModelVersion) -> ModelVersion:
    """A version as the federation builder made it, before it was signed for the bus."""
    return version.model_copy(update={"signature": None})


def _args(settings: MeshflSettings) -> list[str]:
    return ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]


def test_registry_reads_and_pulls(settings: MeshflSettings, tmp_path: Path) -> None:
    fed = publish_federation(settings)
    registry = ModelRegistry(settings)
    task_id = fed.task.id
    assert registry.tasks() == [task_id]
    listed = registry.versions(task_id)
    assert [(v.version, v.sha256) for v in listed] == [(v.version, v.sha256) for v in fed.versions]
    assert all(v.tensors == [] for v in listed)
    assert _plain(registry.get(task_id, 2)) == fed.versions[2]
    latest = registry.latest(task_id)
    assert latest is not None and _plain(latest) == fed.versions[-1]
    with pytest.raises(VersionNotFoundError):
        registry.get(task_id, 99)

    out = tmp_path / "v2.safetensors"
    registry.pull(task_id, 2, out)
    expected = from_wire(fed.versions[2].tensors)
    with safe_open(str(out), framework="pt") as handle:
        meta = handle.metadata()
        assert set(handle.keys()) == set(expected)
        assert all(torch.equal(handle.get_tensor(k), expected[k]) for k in expected)
    assert meta["task"] == task_id and meta["version"] == "2" and meta["parent"] == "1"
    assert meta["sha256"] == fed.versions[2].sha256

    runner = CliRunner(env=identity_env(settings, with_private_key=False))
    listing = runner.invoke(models_app, ["list", "--task", task_id, "--json", *_args(settings)])
    assert listing.exit_code == 0, listing.output
    assert [v["version"] for v in json.loads(listing.output)] == [0, 1, 2, 3]
    pulled = runner.invoke(
        models_app, ["pull", "--task", task_id, "--out", str(tmp_path / "l.safetensors"), *_args(settings)]
    )
    assert pulled.exit_code == 0 and "version 3" in pulled.output
    missing = runner.invoke(
        models_app,
        ["pull", "--task", task_id, "--version", "42", "--out", str(tmp_path / "x"), *_args(settings)],
    )
    assert missing.exit_code == 1

    catalog = runner.invoke(catalog_app, ["list", "--json", *_args(settings)])
    assert catalog.exit_code == 0, catalog.output
    assert sorted(p["domain"] for p in json.loads(catalog.output)) == DOMAINS


def test_subscribe_yields_past_then_new_versions(settings: MeshflSettings) -> None:
    fed = publish_federation(settings)
    task_id = fed.task.id
    got = [(n, state) for n, state in subscribe(task_id, settings=settings, from_version=1, timeout=2.0)]
    assert [n for n, _ in got] == [1, 2, 3]
    assert all(torch.equal(got[0][1][k], v) for k, v in from_wire(fed.versions[1].tensors).items())

    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        for version in watch_versions(settings, task_id, from_version=3, stop=stop):
            seen.append(version.version)
            if version.version == 4:
                stop.set()

    thread = threading.Thread(target=follow)
    thread.start()
    newer = fed.versions[3].model_copy(update={"version": 4, "parent_version": 3, "round": 4})
    with EventProducer(settings) as producer:
        producer.produce(Topic.MODEL_VERSIONS, bus_signers(settings).sign(newer), key=task_id)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert seen == [3, 4]
