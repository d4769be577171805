"""``ensure_topics`` creates every topic with the configs of ``topic_specs``, and is idempotent."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from meshfl.bus import ensure_topics
from meshfl.settings import MeshflSettings
from meshfl.topics import topic_specs

pytestmark = pytest.mark.kafka


def _describe(settings: MeshflSettings, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AdminClient(settings.client_config())
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in names])
    return {
        resource.name: {key: entry.value for key, entry in future.result().items()}
        for resource, future in futures.items()
    }


def test_ensure_topics_creates_with_configs_and_is_idempotent(settings: MeshflSettings) -> None:
    wide = settings.model_copy(update={"partitions": 2})
    ensure_topics(wide)
    ensure_topics(wide)  # existing topics are fine
    specs = topic_specs(wide)
    metadata = AdminClient(wide.client_config()).list_topics(timeout=10).topics
    for spec in specs:
        assert spec.name in metadata
        assert len(metadata[spec.name].partitions) == spec.partitions == 2
    described = _describe(wide, [spec.name for spec in specs])
    for spec in specs:
        for key, value in spec.config.items():
            assert described[spec.name][key] == value, (spec.name, key)
    by_suffix = {spec.name.removeprefix(wide.topic_prefix): described[spec.name] for spec in specs}
    assert by_suffix["catalog"]["cleanup.policy"] == "compact"
    assert by_suffix["model-updates"]["retention.ms"] == "-1"
    assert by_suffix["model-updates"]["cleanup.policy"] == "delete"
    assert by_suffix["heartbeats"]["retention.ms"] == str(7 * 24 * 3600 * 1000)
