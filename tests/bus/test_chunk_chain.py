"""Chained chunk seals (no Kafka): one signature a set, a hash a chunk, and nothing foreign passes.

A producer seals a set with ``chain_headers``: the opener's seal signs the declaration and the head of a
hash chain through the chunks, every header names the next link. A reader takes chunk ``i`` only when it
repeats the declaration and its data and next link hash to the link chunk ``i - 1`` named: a copy with
other data, another index, another declaration or out of order is foreign, and leaves the chain where it
was, so the genuine chunk still passes after it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import blake3
import pytest

from meshfl.bus._chunk_seal import (
    CLAIMED,
    SIGNED,
    SealCheck,
    chain_headers,
    parse_header,
    seal_header,
)
from meshfl.events import Chunk
from meshfl.identity import Signer, generate_private_key

CLAIM = "meshfl-agent-domain-a"
TOPIC = "updates"


def _chunks(message_id: str = "m1", count: int = 4) -> list[Chunk]:
    data = b"".join(blake3.blake3(bytes([i])).digest(length=256) for i in range(count))  # all different
    digest = blake3.blake3(data).hexdigest()
    return [
        Chunk(
            message_id=message_id,
            index=i,
            count=count,
            total_size=len(data),
            blake3=digest,
            data=data[i * 256 : (i + 1) * 256],
        )
        for i in range(count)
    ]


def _open(
    check: SealCheck, chunk: Chunk, header: bytes | None, partition: int = 0, log_ms: int | None = None
) -> str:
    now = int(datetime.now(UTC).timestamp() * 1000) if log_ms is None else log_ms
    return check.budget(chunk, header, claim=CLAIM, topic=TOPIC, partition=partition, log_ms=now)


def _takes(check: SealCheck, chunk: Chunk, header: bytes | None, partition: int = 0) -> bool:
    return check.sealed_by(chunk, header, "domain-a", topic=TOPIC, partition=partition)


def test_one_signature_opens_the_set_and_each_link_takes_the_next_chunk(
    check: SealCheck, signer: Signer
) -> None:
    chunks = _chunks()
    headers = chain_headers(signer, chunks)
    assert parse_header(headers[0]).signature is not None  # type: ignore[union-attr]
    assert all(parse_header(h).signature is None for h in headers[1:])  # type: ignore[union-attr]
    assert json.loads(headers[-1]) == {"next": ""}
    assert _open(check, chunks[0], headers[0]) == SIGNED + "domain-a"
    assert all(_takes(check, c, h) for c, h in zip(chunks[1:], headers[1:], strict=True))
    assert not _takes(check, chunks[3], headers[3])  # the chain ended: a repeat of the last is foreign


def test_a_single_chunk_set_is_sealed_by_its_opener_alone(check: SealCheck, signer: Signer) -> None:
    (only,) = _chunks(count=1)
    (header,) = chain_headers(signer, [only])
    assert json.loads(header)["next"] == ""
    assert _open(check, only, header) == SIGNED + "domain-a"


def test_copies_with_other_data_index_or_declaration_are_foreign_and_move_nothing(
    check: SealCheck, signer: Signer
) -> None:
    chunks = _chunks()
    headers = chain_headers(signer, chunks)
    assert _open(check, chunks[0], headers[0]) == SIGNED + "domain-a"
    second = chunks[1]
    forgeries = [
        second.model_copy(update={"data": b"\0" * len(second.data)}),  # other data, the genuine link
        second.model_copy(update={"index": 2}),  # another place
        second.model_copy(update={"count": 5}),  # another declaration: would make the set corrupt
        second.model_copy(update={"total_size": second.total_size + 1}),
        second.model_copy(update={"blake3": "0" * 64}),
    ]
    for forged in forgeries:
        assert not _takes(check, forged, headers[1])
    assert not _takes(check, chunks[2], headers[2])  # out of order: chunk 1 has not come yet
    assert not _takes(check, second, seal_header(signer, second))  # a seal of the first form is no link
    assert not _takes(check, second, headers[1], partition=1)  # the set is open on partition 0 only
    assert _takes(check, second, headers[1])  # the genuine chunk still passes after all of them
    assert _takes(check, chunks[2], headers[2]) and _takes(check, chunks[3], headers[3])


def test_openers_that_do_not_verify_spend_the_claim(check: SealCheck, signer: Signer) -> None:
    chunks = _chunks()
    headers = chain_headers(signer, chunks)
    fields = json.loads(headers[0])
    fields["next"] = "0" * 64  # the head no longer matches what was signed
    assert _open(check, chunks[0], json.dumps(fields).encode()) == CLAIMED + CLAIM
    assert _open(check, chunks[1], headers[1]) == CLAIMED + CLAIM  # a link opens nothing
    other = chunks[0].model_copy(update={"data": b"x" * 256})
    assert _open(check, other, headers[0]) == CLAIMED + CLAIM  # the opener's seal on other data
    later = chunks[1].model_copy(update={"index": 0})
    assert _open(check, later, headers[0]) == CLAIMED + CLAIM
    impostor = Signer("domain-a", generate_private_key())
    assert _open(check, chunks[0], chain_headers(impostor, chunks)[0]) == CLAIMED + CLAIM
    assert not _takes(check, chunks[1], headers[1])  # no chain was opened by any of them


@pytest.mark.parametrize(
    "header",
    [b'{"next": 3}', b'{"next": "zz"}', b'{"next": "' + b"0" * 63 + b'"}', b'{"next": "0", "value": "00"}'],
)
def test_malformed_links_are_no_header(header: bytes) -> None:
    assert parse_header(header) is None


def test_a_rewind_reopens_the_chain_from_its_opener(check: SealCheck, signer: Signer) -> None:
    chunks = _chunks()
    headers = chain_headers(signer, chunks)
    logged = int(datetime.now(UTC).timestamp() * 1000)
    assert _open(check, chunks[0], headers[0], log_ms=logged) == SIGNED + "domain-a"
    assert _takes(check, chunks[1], headers[1])
    assert _open(check, chunks[0], headers[0], log_ms=logged) == SIGNED + "domain-a"  # read again
    assert all(_takes(check, c, h) for c, h in zip(chunks[1:], headers[1:], strict=True))


def test_another_signers_openers_cannot_push_a_chain_out_of_memory(
    check: SealCheck, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A domain with its own key (or any signer's sets the reassembler then refuses: oversized, over
    budget) opens more chains than a reader remembers; the open chain of another signer stays, else the
    rest of its genuine set is foreign and the set dies incomplete."""
    monkeypatch.setattr("meshfl.bus._chunk_seal._OPEN_CHAINS", 8)
    evil = Signer("domain-b", generate_private_key())
    check._registry.pin("domain-b", evil.public_key)
    genuine = _chunks("genuine")
    headers = chain_headers(signer, genuine)
    assert _open(check, genuine[0], headers[0]) == SIGNED + "domain-a"
    for n in range(9):
        theirs = _chunks(f"evil-{n}", count=2)
        assert _open(check, theirs[0], chain_headers(evil, theirs)[0]) == SIGNED + "domain-b"
    assert all(_takes(check, c, h) for c, h in zip(genuine[1:], headers[1:], strict=True))
