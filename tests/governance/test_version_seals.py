"""Governance reads its own chunked versions back as the agents read them (real broker).

A chunk another writer put into an open, sealed version set is passed over by the agents (chunk-foreign),
which take the version. Governance's restart (``read_versions``, the whole-log read) and the model
registry judged the set by its digest alone: corrupt, so governance lost a version the agents hold and
would publish that number again with other weights.
"""

from __future__ import annotations

import pytest
import torch
from confluent_kafka import Producer

from governance.log_state import LogState, read_log_state
from governance.registry import ModelRegistry
from governance.state_topic import read_versions
from meshfl.bus import ensure_topics
from meshfl.bus._chunk_seal import SEAL_HEADER, seal_header
from meshfl.bus._chunking import split_payload
from meshfl.bus._envelope import CHUNK_HEADER, SENDER_HEADER
from meshfl.codec import make_codec
from meshfl.events import ModelVersion, StrategySpec
from meshfl.identity.trust import governance_signer
from meshfl.settings import MeshflSettings
from meshfl.tensors import tensors_sha256, to_wire
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka

TASK = "task-1"


def test_a_chunk_put_into_a_sealed_version_does_not_lose_it(settings: MeshflSettings) -> None:
    ensure_topics(settings)
    governance = governance_signer(settings)
    tensors = to_wire({"w": torch.ones(6_000)})
    version = governance.sign(
        ModelVersion(
            task_id=TASK,
            version=1,
            parent_version=None,
            round=1,
            strategy=StrategySpec(),
            tensors=tensors,
            sha256=tensors_sha256(tensors),
        )
    )
    codec = make_codec(settings)
    chunks = split_payload(codec.encode(version), chunk_size=8_000, message_id="v1")
    assert len(chunks) >= 3
    sender = (SENDER_HEADER, f"{settings.topic_prefix}governance".encode())
    sealed = [
        (codec.encode(c), [(CHUNK_HEADER, b"1"), sender, (SEAL_HEADER, seal_header(governance, c))])
        for c in chunks
    ]
    foreign = chunks[1].model_copy(update={"data": bytes(len(chunks[1].data))})
    raw = Producer(settings.client_config(**{"enable.idempotence": True}))
    for value, headers in [sealed[0], (codec.encode(foreign), [(CHUNK_HEADER, b"1"), sender]), *sealed[1:]]:
        raw.produce(topic_name(settings, Topic.MODEL_VERSIONS), value, TASK, headers=headers)
    assert raw.flush(30) == 0
    state = LogState(version_from={(TASK, 1): {(Topic.MODEL_VERSIONS.value, 0): 0}})
    found = read_versions(settings, state, {(TASK, 1)}, {})
    assert [env.event for env in found.values()] == [version]
    assert [v.version for v in ModelRegistry(settings).versions(TASK)] == [1]
    assert read_log_state(settings).latest.get(TASK) == version  # the whole-log read at a cold start
