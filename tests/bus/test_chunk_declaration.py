"""Signed chunk-set declarations (no Kafka): which budget a set spends, and what never earns a signer's.

Every way to obtain a signer's budget without being that signer, now, on this partition, for this
declaration, must fall back to the claim: no header, garbage, a key the registry does not trust for
the name, a signature of another declaration, an old one appended again, a copy on another partition.
"""

from __future__ import annotations

from datetime import UTC, datetime

import blake3
import pytest

from meshfl.bus._declaration import (
    CLAIMED,
    MAX_DECLARATION_HEADER,
    SIGNED,
    DeclarationCheck,
    declaration_header,
    parse_declaration_header,
)
from meshfl.bus._reassembly import ChunkSetError, Reassembler
from meshfl.events import Chunk
from meshfl.identity import Signer, TrustRegistry, generate_private_key

WINDOW_S = 900.0


def _chunks(message_id: str = "m1", size: int = 300) -> list[Chunk]:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    digest = blake3.blake3(data).hexdigest()
    return [
        Chunk(
            message_id=message_id,
            index=i,
            count=3,
            total_size=size,
            blake3=digest,
            data=data[i * 100 : (i + 1) * 100],
        )
        for i in range(3)
    ]


@pytest.fixture
def signer() -> Signer:
    return Signer("domain-a", generate_private_key())


@pytest.fixture
def check(signer: Signer) -> DeclarationCheck:
    registry = TrustRegistry(generate_private_key().public_key())
    registry.pin("domain-a", signer.public_key)
    return DeclarationCheck(registry, window_seconds=WINDOW_S)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _budget(
    check: DeclarationCheck,
    chunk: Chunk,
    header: bytes | None,
    *,
    partition: int = 0,
    log_ms: int | None = None,
) -> str:
    return check.budget(
        chunk,
        header,
        claim="meshfl-agent-domain-a",
        topic="updates",
        partition=partition,
        log_ms=log_ms or _now_ms(),
    )


def test_a_signed_declaration_spends_its_signers_budget_from_any_chunk_of_the_set(
    check: DeclarationCheck, signer: Signer
) -> None:
    chunks = _chunks()
    header = declaration_header(signer, chunks[0])
    assert parse_declaration_header(header) is not None
    assert _budget(check, chunks[1], header) == SIGNED + "domain-a"  # a set may open on a later chunk
    assert _budget(check, chunks[0], header) == SIGNED + "domain-a"  # the same set re-read, same place


@pytest.mark.parametrize(
    "header", [None, b"", b"not json", b"[]", b'{"value": 3}', b"{" + b" " * MAX_DECLARATION_HEADER + b"}"]
)
def test_no_or_malformed_header_spends_the_claim(check: DeclarationCheck, header: bytes | None) -> None:
    assert _budget(check, _chunks()[0], header) == CLAIMED + "meshfl-agent-domain-a"


def test_a_key_the_registry_does_not_trust_for_the_name_spends_the_claim(check: DeclarationCheck) -> None:
    impostor = Signer("domain-a", generate_private_key())  # claims the name, holds another key
    assert _budget(check, _chunks()[0], declaration_header(impostor, _chunks()[0])).startswith(CLAIMED)


def test_a_signature_of_another_declaration_spends_the_claim(check: DeclarationCheck, signer: Signer) -> None:
    small = _chunks(size=300)[0]
    header = declaration_header(signer, small)
    bigger = small.model_copy(update={"total_size": 4 * 1024**3})
    other_id = small.model_copy(update={"message_id": "m2"})
    assert _budget(check, bigger, header).startswith(CLAIMED)
    assert _budget(check, other_id, header).startswith(CLAIMED)


def test_an_old_declaration_appended_again_spends_the_claim(check: DeclarationCheck, signer: Signer) -> None:
    chunk = _chunks()[0]
    header = declaration_header(signer, chunk)
    later = _now_ms() + int(WINDOW_S * 1000) + 60_000
    assert _budget(check, chunk, header, log_ms=later).startswith(CLAIMED)


def test_a_copy_on_another_partition_spends_the_claim(check: DeclarationCheck, signer: Signer) -> None:
    chunk = _chunks()[0]
    header = declaration_header(signer, chunk)
    assert _budget(check, chunk, header, partition=0) == SIGNED + "domain-a"
    assert _budget(check, chunk, header, partition=1).startswith(CLAIMED)
    assert _budget(check, chunk, header, partition=0) == SIGNED + "domain-a"  # a rewind of partition 0


def test_a_claim_filled_by_a_forgery_leaves_the_signers_set_whole(
    check: DeclarationCheck, signer: Signer
) -> None:
    reassembler = Reassembler(max_buffered_bytes=10_000, max_sender_bytes=1_000)
    forged = Chunk(message_id="evil", index=0, count=2, total_size=1_000, blake3="0" * 64, data=b"x" * 10)
    claim = _budget(check, forged, None)
    assert (
        reassembler.add(forged, topic="updates", partition=0, offset=0, timestamp_ms=0, sender=claim) is None
    )
    genuine = _chunks()
    header = declaration_header(signer, genuine[0])
    with pytest.raises(ChunkSetError):  # under the claim, as before: the forgery holds the whole budget
        reassembler.add(
            genuine[0].model_copy(update={"message_id": "plain"}),
            topic="updates",
            partition=0,
            offset=1,
            timestamp_ms=0,
            sender=claim,
        )
    done = None
    for offset, chunk in enumerate(genuine, start=2):
        done = reassembler.add(
            chunk,
            topic="updates",
            partition=0,
            offset=offset,
            timestamp_ms=0,
            sender=lambda chunk=chunk: _budget(check, chunk, header),
        )
    assert done is not None and bytes(done.payload) == b"".join(bytes(c.data) for c in genuine)
    assert reassembler.sender_reserved(claim) == 1_000
