"""A restarted agent adopts an update on the log as its own only when its own key signed it.

Anyone who can write the updates topic can put a record there with this domain's name and the
(deterministic) id of its next update. Adopted on its ids, it would make the agent skip the round, and
governance refuses the forgery: the domain's update of that round is lost. So ``own_update`` checks
the signature first; the genuine copy behind the forgeries (here a chunked one) is the one found.
"""

from __future__ import annotations

import pytest
import torch
from confluent_kafka import Producer

from meshfl.bus import EventProducer, ensure_topics
from meshfl.bus._envelope import CHUNK_HEADER, SENDER_HEADER
from meshfl.codec import make_codec
from meshfl.domain.published import own_update, signed_by
from meshfl.events import Chunk, ModelUpdate
from meshfl.identity import Signer, TrustRegistry
from meshfl.identity.binding import update_id_for
from meshfl.identity.keys import generate_private_key
from meshfl.settings import MeshflSettings
from meshfl.tensors import to_wire
from meshfl.topics import Topic, topic_name

pytestmark = pytest.mark.kafka

DOMAIN, TASK = "hospital-a", "task-1"


def _update(num_examples: int, *, domain: str = DOMAIN, size: int = 3) -> ModelUpdate:
    return ModelUpdate(
        update_id=update_id_for(TASK, 1, DOMAIN),
        task_id=TASK,
        round=1,
        base_version=0,
        domain=domain,
        num_examples=num_examples,
        tensors=to_wire({"w": torch.ones(size)}),
    )


def test_only_an_update_signed_with_the_domains_key_is_its_own(settings: MeshflSettings) -> None:
    settings = settings.model_copy(update={"max_message_bytes": 16_384})  # the genuine one is chunked
    ensure_topics(settings)
    mine = Signer(DOMAIN, generate_private_key())
    registry = TrustRegistry(generate_private_key().public_key())
    registry.pin(DOMAIN, mine.public_key)
    trusted = signed_by(registry, DOMAIN)

    def found() -> ModelUpdate | None:
        return own_update(
            settings, task_id=TASK, update_id=update_id_for(TASK, 1, DOMAIN), since_ms=0, trusted=trusted
        )

    forgeries = [
        Signer(DOMAIN, generate_private_key()).sign(_update(1)),  # its name, another key
        Signer("mallory", generate_private_key()).sign(_update(2)),  # signed as someone else
        mine.sign(_update(3)).model_copy(update={"num_examples": 4}),  # altered after signing
        mine.sign(_update(5, domain="hospital-b")),  # another domain's name on it
        _update(6),  # not signed at all
    ]
    with EventProducer(settings) as producer:
        for forged in forgeries:
            producer.produce(Topic.UPDATES, forged, key=TASK)
        producer.flush()
        assert found() is None  # no copy of its own yet: none of these may stand in for it
        producer.produce(Topic.UPDATES, mine.sign(_update(7, size=20_000)), key=TASK)
        producer.flush()
    genuine = found()
    assert genuine is not None and genuine.num_examples == 7


def test_a_forger_naming_the_agents_sender_cannot_hide_its_update(settings: MeshflSettings) -> None:
    """The read-back passes over records other producers' headers name, but anyone can name the agent's:
    one chunk declaring the whole reassembly budget under it filled the claim's budget, the agent's own
    (chunked) update was refused as oversized, so not found, and the round was trained and published
    again. Read with the agent's registry, its sealed set spends its signer's budget instead."""
    settings = settings.model_copy(update={"max_message_bytes": 16_384, "max_payload_bytes": 1 << 22})
    ensure_topics(settings)
    mine = Signer(DOMAIN, generate_private_key())
    registry = TrustRegistry(generate_private_key().public_key())
    registry.pin(DOMAIN, mine.public_key)
    sender = f"{settings.topic_prefix}agent-{DOMAIN}-updates"
    forged = Chunk(
        message_id="forged",
        index=0,
        count=2,
        total_size=settings.max_payload_bytes,
        blake3="0" * 64,
        data=b"x" * 10,
    )
    raw = Producer(settings.client_config())  # a plain client: what a forger's looks like
    headers = [(CHUNK_HEADER, b"1"), (SENDER_HEADER, sender.encode())]
    raw.produce(
        topic_name(settings, Topic.UPDATES), make_codec(settings).encode(forged), TASK, headers=headers
    )
    assert raw.flush(30) == 0
    with EventProducer(settings, client_id=sender, signer=mine) as updates:
        assert updates.sender == sender
        updates.produce(Topic.UPDATES, mine.sign(_update(7, size=20_000)), key=TASK)
        updates.flush()

    def found(signers: TrustRegistry | None) -> ModelUpdate | None:
        return own_update(
            settings,
            task_id=TASK,
            update_id=update_id_for(TASK, 1, DOMAIN),
            since_ms=0,
            trusted=signed_by(registry, DOMAIN),
            sender=sender,
            chunk_signers=signers,
        )

    assert found(None) is None  # the forgery holds the claim's budget: what the agent read before
    genuine = found(registry)
    assert genuine is not None and genuine.num_examples == 7
