"""RecordIntake without Kafka (records built as confluent_kafka Messages): what a record's headers can and
cannot buy at a reader, before any signature inside the payload is checked."""

from __future__ import annotations

from pathlib import Path

import blake3
import pytest
from bus_helpers import heartbeat
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Message

from meshfl.bus._chunk_seal import CLAIM_SPILL_FILES
from meshfl.bus._chunking import split_payload
from meshfl.bus._dead_letter import DeadLetterWriter
from meshfl.bus._envelope import CHUNK_HEADER, SENDER_HEADER
from meshfl.bus._intake import RecordIntake
from meshfl.bus._reassembly import REASON_CORRUPT
from meshfl.codec import SingleObjectCodec, default_store
from meshfl.events import Chunk
from meshfl.settings import MeshflSettings

TOPIC = "t.updates"


@pytest.fixture
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(default_store())


def _intake(codec: SingleObjectCodec) -> tuple[RecordIntake, DeadLetterWriter]:
    settings = MeshflSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="t.")
    letters = DeadLetterWriter(settings, transactional=True)  # kept, never sent: no broker needed
    return RecordIntake(settings, codec, letters, chunk_timeout=600.0, compacted=set()), letters


def _record(value: bytes, offset: int, sender: bytes) -> Message:
    return Message(
        topic=TOPIC,
        partition=0,
        offset=offset,
        key=b"task",
        value=value,
        headers=[(CHUNK_HEADER, b"1"), (SENDER_HEADER, sender)],
        timestamp=(TIMESTAMP_LOG_APPEND_TIME, 1_000 + offset),
    )


def test_a_claim_named_like_a_signer_does_not_skip_the_whole_set_digest(codec: SingleObjectCodec) -> None:
    """Where seals are not checked (read_all, replay, the agent's read-back), a ``meshfl-sender`` header
    ``signed:x`` was taken for the budget of a sealed set, and the set's digest was not checked: a set
    that governance dead-letters as corrupt was decoded there (a live decision and its replay disagreed)."""
    payload = codec.encode(heartbeat())
    chunks = [
        chunk.model_copy(update={"blake3": blake3.blake3(b"another payload").hexdigest()})
        for chunk in split_payload(payload, chunk_size=len(payload) // 2 + 1, message_id="m")
    ]
    assert len(chunks) == 2
    intake, letters = _intake(codec)
    taken = [
        intake.take(_record(codec.encode(chunk), n, b"signed:governance"), TOPIC, 0, n, 1_000 + n, 1_000 + n)
        for n, chunk in enumerate(chunks)
    ]
    assert taken == [None, None]
    assert [letter.reason for letter in letters.take()] == [REASON_CORRUPT]


def test_a_reader_without_seals_leaves_the_spill_files_to_sealed_sets(
    codec: SingleObjectCodec, tmp_path: Path
) -> None:
    """The spill files are the process's (``meshfl.spill.MAX_OPEN_FILES``). Governance's catalog consumer
    checks no seals, so forged openers of large sets there took all of them, and the updates consumer's
    sealed large sets went to resident memory: what ``CLAIM_SPILL_FILES`` was to prevent."""
    settings = MeshflSettings(
        bootstrap_servers="127.0.0.1:1", topic_prefix="t.", spill_bytes=1 << 20, spill_dir=tmp_path
    )
    intake = RecordIntake(
        settings, codec, DeadLetterWriter(settings, transactional=True), chunk_timeout=600.0, compacted=set()
    )
    opened = CLAIM_SPILL_FILES + 2
    for n in range(opened):
        opener = Chunk(message_id=f"m{n}", index=0, count=2, total_size=1 << 20, blake3="0" * 64, data=b"x")
        assert (
            intake.take(_record(codec.encode(opener), n, f"forger-{n}".encode()), TOPIC, 0, n, 1, 1) is None
        )
    spilled = [intake.reassembler.spilling(TOPIC, 0, f"m{n}") for n in range(opened)]
    assert spilled == [True] * CLAIM_SPILL_FILES + [False] * 2
    intake.reassembler.drop()
