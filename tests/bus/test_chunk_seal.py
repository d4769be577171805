"""Chunk seals (no Kafka): which budget a set spends, which chunks it takes, and what never passes.

Every way to obtain a signer's budget, or to put a chunk into a signer's set, without being that signer,
now, on this partition, for this very chunk, must fail: no header, garbage, a key the registry does not
trust for the name, the seal of another chunk or declaration, an old opener appended again, a copy on
another partition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import blake3
import pytest

from meshfl.bus._chunk_seal import (
    CLAIMED,
    MAX_SEAL_HEADER,
    SIGNED,
    SealCheck,
    parse_seal,
    seal_header,
    signer_of,
)
from meshfl.bus._reassembly import ChunkSetError, Reassembler
from meshfl.events import Chunk
from meshfl.identity import Signer, generate_private_key

WINDOW_S = 900.0  # the window of the check fixture (conftest)
CLAIM = "meshfl-agent-domain-a"


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


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _budget(
    check: SealCheck, chunk: Chunk, header: bytes | None, *, partition: int = 0, log_ms: int | None = None
) -> str:
    return check.budget(
        chunk, header, claim=CLAIM, topic="updates", partition=partition, log_ms=log_ms or _now_ms()
    )


def test_a_sealed_set_spends_its_signers_budget_and_takes_its_signers_chunks(
    check: SealCheck, signer: Signer
) -> None:
    chunks = _chunks()
    headers = [seal_header(signer, chunk) for chunk in chunks]
    assert all(parse_seal(header) is not None for header in headers)
    now = _now_ms()
    assert _budget(check, chunks[1], headers[1], log_ms=now) == SIGNED + "domain-a"  # opened by a later chunk
    assert _budget(check, chunks[0], headers[0], log_ms=now) == SIGNED + "domain-a"  # re-read from its start
    assert signer_of(SIGNED + "domain-a") == "domain-a" and signer_of(CLAIMED + CLAIM) is None
    assert all(check.sealed_by(c, h, "domain-a") for c, h in zip(chunks, headers, strict=True))


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"not json",
        b"[]",
        b'{"value": 3}',
        b"{" + b" " * MAX_SEAL_HEADER + b"}",
        b"[" * (MAX_SEAL_HEADER - 1),  # json.loads raised RecursionError through the consumer
        b'{"value": "00", "timestamp": 1, "signer": ' + b"[" * 1900 + b"}",
    ],
)
def test_no_or_malformed_seal_spends_the_claim(check: SealCheck, header: bytes | None) -> None:
    assert _budget(check, _chunks()[0], header) == CLAIMED + CLAIM
    assert not check.sealed_by(_chunks()[0], header, "domain-a")


def test_a_key_the_registry_does_not_trust_for_the_name_seals_nothing(check: SealCheck) -> None:
    impostor = Signer("domain-a", generate_private_key())  # claims the name, holds another key
    chunk = _chunks()[0]
    assert _budget(check, chunk, seal_header(impostor, chunk)) == CLAIMED + CLAIM
    assert not check.sealed_by(chunk, seal_header(impostor, chunk), "domain-a")


def test_the_seal_of_another_chunk_or_declaration_seals_nothing(check: SealCheck, signer: Signer) -> None:
    first, second, _ = _chunks(size=300)
    header = seal_header(signer, first)
    others = [
        first.model_copy(update={"total_size": 4 * 1024**3}),
        first.model_copy(update={"message_id": "m2"}),
        first.model_copy(update={"data": b"y" * 100}),  # a copy with other data
        second,  # another index
    ]
    for other in others:
        assert _budget(check, other, header) == CLAIMED + CLAIM
        assert not check.sealed_by(other, header, "domain-a")


def test_a_seal_of_one_signer_does_not_pass_for_another(check: SealCheck, signer: Signer) -> None:
    chunk = _chunks()[0]
    assert not check.sealed_by(chunk, seal_header(signer, chunk), "domain-b")


def test_an_old_opener_appended_again_spends_the_claim(check: SealCheck, signer: Signer) -> None:
    chunk = _chunks()[0]
    later = _now_ms() + int(WINDOW_S * 1000) + 60_000
    assert _budget(check, chunk, seal_header(signer, chunk), log_ms=later) == CLAIMED + CLAIM


def test_an_opener_copied_to_another_partition_spends_the_claim(check: SealCheck, signer: Signer) -> None:
    chunk = _chunks()[0]
    header = seal_header(signer, chunk)
    now = _now_ms()
    assert _budget(check, chunk, header, partition=0, log_ms=now) == SIGNED + "domain-a"
    assert _budget(check, chunk, header, partition=1, log_ms=now + 1) == CLAIMED + CLAIM
    assert _budget(check, chunk, header, partition=0, log_ms=now) == SIGNED + "domain-a"  # a rewind of 0


def test_an_opener_appended_again_on_its_partition_spends_the_claim(check: SealCheck, signer: Signer) -> None:
    """Once its set has left the reassembler's finished-set memory (4,096 ids, which a flood of tiny
    sets evicts), a copy of a sealed opener appended again on its own partition, still within the
    signature window, opened a set that never completes and held the signer's budget until the chunk
    timeout. A re-read (a rewind) meets the same record, at the same log time; a copy comes later."""
    chunk = _chunks()[0]
    header = seal_header(signer, chunk)
    now = _now_ms()
    assert _budget(check, chunk, header, log_ms=now) == SIGNED + "domain-a"
    assert _budget(check, chunk, header, log_ms=now + 1_000) == CLAIMED + CLAIM
    assert _budget(check, chunk, header, log_ms=now) == SIGNED + "domain-a"  # the original, read again


def test_an_original_read_after_its_copy_keeps_the_signers_budget(check: SealCheck, signer: Signer) -> None:
    """A reader catching up meets partitions in any order: the copy (appended later, on another
    partition) was met first and took the signer's budget, and the original was left the claim's, which
    a forger fills. The log's clock tells the original: it was appended first."""
    chunk = _chunks()[0]
    header = seal_header(signer, chunk)
    now = _now_ms()
    assert _budget(check, chunk, header, partition=1, log_ms=now + 5_000) == SIGNED + "domain-a"  # the copy
    assert _budget(check, chunk, header, partition=0, log_ms=now) == SIGNED + "domain-a"  # the original
    assert _budget(check, chunk, header, partition=2, log_ms=now + 9_000) == CLAIMED + CLAIM
    assert _budget(check, chunk, header, partition=1, log_ms=now + 5_000) == CLAIMED + CLAIM


def test_a_claim_filled_by_a_forgery_leaves_the_signers_set_whole(check: SealCheck, signer: Signer) -> None:
    reassembler = Reassembler(max_buffered_bytes=10_000, max_sender_bytes=1_000)
    forged = Chunk(message_id="evil", index=0, count=2, total_size=1_000, blake3="0" * 64, data=b"x" * 10)
    claim = _budget(check, forged, None)
    assert (
        reassembler.add(forged, topic="updates", partition=0, offset=0, timestamp_ms=0, sender=claim) is None
    )
    genuine = _chunks()
    unsealed = genuine[0].model_copy(update={"message_id": "plain"})
    with pytest.raises(ChunkSetError):  # an unsealed set shares the claim the forgery filled
        reassembler.add(unsealed, topic="updates", partition=0, offset=1, timestamp_ms=0, sender=claim)
    done = None
    for offset, chunk in enumerate(genuine, start=2):
        header = seal_header(signer, chunk)
        done = reassembler.add(
            chunk,
            topic="updates",
            partition=0,
            offset=offset,
            timestamp_ms=0,
            sender=lambda chunk=chunk, header=header: _budget(check, chunk, header),
        )
        if done is None:
            assert reassembler.budget_of("updates", 0, "m1") == SIGNED + "domain-a"
    assert done is not None and bytes(done.payload) == b"".join(bytes(c.data) for c in genuine)
    assert reassembler.sender_reserved(claim) == 1_000
    assert reassembler.budget_of("updates", 0, "m1") is None  # complete: forgotten


def test_forged_openers_fill_only_the_claims_spill_files(tmp_path: Path) -> None:
    """64 claimed openers of large sets took every spill file, so a signer's large set went to resident
    memory; where seals are checked, claims get ``claim_spill_files`` of them and sealed sets the rest."""
    size = 1 << 20
    reassembler = Reassembler(
        max_buffered_bytes=1 << 30, spill_bytes=size, spill_dir=tmp_path, claim_spill_files=2
    )

    def opener(message_id: str) -> Chunk:
        return Chunk(message_id=message_id, index=0, count=2, total_size=size, blake3="0" * 64, data=b"x")

    for n in range(4):
        reassembler.add(
            opener(f"forged-{n}"), topic="t", partition=0, offset=n, timestamp_ms=0, sender=CLAIMED + "x"
        )
    sealed = opener("sealed")
    reassembler.add(sealed, topic="t", partition=0, offset=9, timestamp_ms=0, sender=SIGNED + "domain-a")
    names = [f"forged-{n}" for n in range(4)] + ["sealed"]
    assert [reassembler.spilling("t", 0, name) for name in names] == [True, True, False, False, True]


def test_forged_openers_fill_only_the_claims_open_sets() -> None:
    """Anyone can open a set for nothing (one 1-byte chunk of a 2-chunk set under any claim, held until the
    chunk timeout): 4096 of them took every open-set slot, and every signer's set was refused as
    oversized. Where seals are checked, claims get ``claim_pending_sets`` of the slots."""
    reassembler = Reassembler(max_buffered_bytes=1 << 20, max_pending_sets=8, claim_pending_sets=4)
    digest = blake3.blake3(b"ab").hexdigest()

    def opener(message_id: str) -> Chunk:
        return Chunk(message_id=message_id, index=0, count=2, total_size=2, blake3=digest, data=b"a")

    for n in range(4):
        reassembler.add(
            opener(f"forged-{n}"), topic="t", partition=0, offset=n, timestamp_ms=0, sender=f"claimed:{n}"
        )
    with pytest.raises(ChunkSetError, match="claimed"):
        reassembler.add(
            opener("forged-4"), topic="t", partition=0, offset=4, timestamp_ms=0, sender="claimed:x"
        )
    for n in range(4):
        signed = opener(f"signed-{n}")
        reassembler.add(
            signed, topic="t", partition=0, offset=10 + n, timestamp_ms=0, sender="signed:domain-a"
        )
    assert reassembler.pending_sets == 8
    reassembler.expire(10**9)
    reassembler.add(
        opener("forged-5"), topic="t", partition=0, offset=20, timestamp_ms=10**9, sender="claimed:y"
    )


def test_a_claimed_set_cannot_fill_the_memory_sealed_sets_need() -> None:
    """One claimed set declaring the whole memory, sent but for its last chunk, held it all until the chunk
    timeout: every signer's chunk was refused as "reassembly memory full". Where seals are checked, claims
    hold at most ``claim_buffered_bytes``; the rest stays for sealed sets."""
    reassembler = Reassembler(max_buffered_bytes=100, claim_buffered_bytes=50)
    whole = bytes(100)
    digest = blake3.blake3(whole).hexdigest()

    def chunk(message_id: str, index: int) -> Chunk:
        return Chunk(
            message_id=message_id, index=index, count=4, total_size=100, blake3=digest,
            data=whole[index * 25 : (index + 1) * 25],
        )  # fmt: skip

    for index in range(2):
        reassembler.add(chunk("forged", index), topic="t", partition=0, offset=index, timestamp_ms=0,
                        sender="claimed:x")  # fmt: skip
    with pytest.raises(ChunkSetError, match="claimed sets' memory full"):
        reassembler.add(
            chunk("forged", 2), topic="t", partition=0, offset=2, timestamp_ms=0, sender="claimed:x"
        )
    assert reassembler.held_bytes == 0  # the refused set let go of what it held
    for index in range(4):
        done = reassembler.add(chunk("sealed", index), topic="t", partition=0, offset=10 + index,
                               timestamp_ms=0, sender="signed:domain-a")  # fmt: skip
    assert done is not None and bytes(done.payload) == whole  # a sealed set takes the whole memory
    for index in range(2):  # and the claims' share is free again for claims
        reassembler.add(chunk("claimed-again", index), topic="t", partition=0, offset=20 + index,
                        timestamp_ms=0, sender="claimed:y")  # fmt: skip
