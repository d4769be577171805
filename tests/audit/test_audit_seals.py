"""The audit reassembles chunk sets as the live readers do (real broker).

Any writer of the updates topic can put a chunk with other data into a domain's open, sealed set:
governance passes it over (chunk-foreign) and takes the update. An audit that judged the set by its
digest alone found it corrupt, so the update governance decided on was missing from the replay and an
honest governance looked wrong.
"""

from __future__ import annotations

import pytest
import torch
from confluent_kafka import Producer

from governance.audit import events_from_bus
from meshfl.bus import ensure_topics
from meshfl.bus._chunk_seal import SEAL_HEADER, seal_header
from meshfl.bus._chunking import split_payload
from meshfl.bus._envelope import CHUNK_HEADER, SENDER_HEADER
from meshfl.codec import make_codec
from meshfl.events import ModelUpdate
from meshfl.identity import Signer
from meshfl.identity.keys import generate_private_key
from meshfl.identity.trust import governance_signer, publish_key_event
from meshfl.settings import MeshflSettings
from meshfl.tensors import to_wire
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka

DOMAIN, TASK = "hospital-a", "task-1"


def test_a_chunk_put_into_a_sealed_set_does_not_hide_the_update_from_the_audit(
    settings: MeshflSettings,
) -> None:
    ensure_topics(settings)
    mine = Signer(DOMAIN, generate_private_key())
    publish_key_event(settings, governance_signer(settings), DOMAIN, mine.public_key)
    update = mine.sign(
        ModelUpdate(
            update_id="u1",
            task_id=TASK,
            round=1,
            base_version=0,
            domain=DOMAIN,
            num_examples=7,
            tensors=to_wire({"w": torch.ones(6_000)}),
        )
    )
    codec = make_codec(settings)
    chunks = split_payload(codec.encode(update), chunk_size=8_000, message_id="m1")
    assert len(chunks) >= 3
    sender = (SENDER_HEADER, f"{settings.topic_prefix}agent-{DOMAIN}-updates".encode())
    sealed = [
        (codec.encode(c), [(CHUNK_HEADER, b"1"), sender, (SEAL_HEADER, seal_header(mine, c))]) for c in chunks
    ]
    foreign = chunks[1].model_copy(update={"data": bytes(len(chunks[1].data))})  # another writer's
    records = [sealed[0], (codec.encode(foreign), [(CHUNK_HEADER, b"1"), sender]), *sealed[1:]]
    raw = Producer(settings.client_config(**{"enable.idempotence": True}))
    for value, headers in records:
        raw.produce(topic_name(settings, Topic.UPDATES), value, TASK, headers=headers)
    assert raw.flush(30) == 0
    found = [e.event for e in events_from_bus(settings, TASK) if isinstance(e.event, ModelUpdate)]
    assert found == [update]
