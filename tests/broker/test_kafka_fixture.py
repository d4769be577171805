"""The shared ``kafka_bootstrap``/``settings`` fixtures give a real broker and isolated topic names."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from meshfl.settings import MeshflSettings


@pytest.mark.kafka
def test_settings_point_at_a_live_broker_with_a_prefix_of_their_own(
    settings: MeshflSettings, kafka_bootstrap: str
) -> None:
    assert settings.bootstrap_servers == kafka_bootstrap
    assert settings.topic_prefix.startswith("t") and settings.topic_prefix.endswith(".")
    admin = AdminClient(settings.client_config())
    topic = f"{settings.topic_prefix}probe"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    metadata = admin.list_topics(timeout=10)
    assert topic in metadata.topics
    assert len(metadata.brokers) >= 1


@pytest.mark.kafka
def test_each_test_gets_a_fresh_prefix(settings: MeshflSettings) -> None:
    admin = AdminClient(settings.client_config())
    names = admin.list_topics(timeout=10).topics
    assert not [name for name in names if name.startswith(settings.topic_prefix)]
