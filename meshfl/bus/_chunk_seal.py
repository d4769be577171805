"""Sealed chunks: who sent a chunk set, and each of its chunks, proved rather than claimed.

Two things about a chunk set rested on what any writer to the topic could say:

* whose reassembly budget it spends (``_reassembly``): the ``meshfl-sender`` header. A 100-byte first
  chunk declaring 4 GiB under another domain's name filled that domain's budget, and its real sets were
  refused until the forgery expired, every time the forger sent one again;
* which chunks belong to it: its message id. A chunk copied from an open set with other data made the
  set "corrupt", and the update in it was dead-lettered.

So a producer with a signer seals every chunk, with one signature a set: the chunks are chained back to
front, link ``L(i) = BLAKE3(prefix, i, BLAKE3(data of i), L(i+1))`` (the last one's next is empty), and the
opener's seal signs the set's declaration (message id, count, total size, digests of the whole) with the
head ``L(0)``; each chunk's ``meshfl-chunk-seal`` header carries the next link, the opener's the
signature too. A reader verifies one Ed25519 signature a set and a hash a chunk: chunk ``i`` is the
signer's when its data and next link hash to the link the chunk before it named (a second preimage of
BLAKE3 otherwise) and it repeats the signed declaration, so the chunks must come in order, as one
producer on one partition sends them. Seals of the first form (session 6: every chunk signed on its
own, ``io.meshfl.v1.ChunkSeal``, no next link) are still read, so the logs written then keep their
budgets.

A reader with a trust registry checks the seal of the chunk that opens a set, before anything is
reserved: sealed, fresh (signed within the signature window of the chunk's log time) and not seen on
another partition (a copy replayed elsewhere), the set spends its signer's own budget, and then takes
only chunks sealed by that signer: others are dropped, never its ruin. Anything else spends the budget
of its claim, which no sealed set shares, and is reassembled as before. The seal is over the canonical
form every event is signed in (``meshfl.identity.canonical``) as the record ``io.meshfl.v1.ChunkChain``
(``ChunkSeal`` in the first form), which is signed only, never sent, so no other event's signature can
stand in for one. The payload is still signed inside, and checked after reassembly.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

import blake3
from pydantic import ValidationError

from meshfl.errors import SignatureError
from meshfl.events import Chunk, Event, Signature
from meshfl.logs import get_logger

if TYPE_CHECKING:
    from meshfl.identity import Signer, TrustRegistry

log = get_logger("meshfl.bus.chunk_seal")

SEAL_HEADER = "meshfl-chunk-seal"
"""A chunk's seal: its signature (JSON, ``value`` as hex)."""
MAX_SEAL_HEADER = 2048
"""Bytes of that header read at most: a seal is under 400 bytes with a 256-character signer."""
_REMEMBERED_PER_SIGNER = 1024
"""Sealed message ids remembered per signer, to spot a copy of a set's opener on another partition."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CLAIM_SPILL_FILES = 8
"""Spill files (of ``meshfl.spill.MAX_OPEN_FILES``, a process's) that sets of a merely claimed sender may
fill at once in one reader, whether it checks seals or not (there every set is claimed): the rest stay
free for sealed sets, also when a process runs several readers."""
CLAIM_PENDING_SETS = 2048
"""Open sets (of the reassembler's 4096) that sets of a merely claimed sender may hold at once in a reader
that checks seals: the rest stay free for sealed sets."""
REASON_FOREIGN = "chunk-foreign"
"""Dead-letter reason of a chunk that names a sealed set without its signer's seal."""
SIGNED = "signed:"
CLAIMED = "claimed:"
_LINK_PREFIX = b"meshfl-chunk-link\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_OPEN_CHAINS = 4096
"""Chained sets whose next link a reader remembers, per signer (the reassembler's own bound on open
sets): a signer's openers, whatever becomes of their sets, push out only that signer's chains."""


class ChunkSeal(Event):
    """What a chunk's seal signs: its set's declaration, its index and the BLAKE3 of its data."""

    AVRO_NAME: ClassVar[str] = "io.meshfl.v1.ChunkSeal"

    message_id: str
    index: int
    count: int
    total_size: int
    sha256: str | None = None
    blake3: str | None = None
    data_blake3: str
    signature: Signature | None = None

    @classmethod
    def of(cls, chunk: Chunk, signature: Signature | None = None) -> ChunkSeal:
        return cls(
            message_id=chunk.message_id,
            index=chunk.index,
            count=chunk.count,
            total_size=chunk.total_size,
            sha256=chunk.sha256,
            blake3=chunk.blake3,
            data_blake3=blake3.blake3(chunk.data).hexdigest(),
            signature=signature,
        )


class ChunkChain(Event):
    """What a chained set's opener signs: its set's declaration and the head of its chunks' chain."""

    AVRO_NAME: ClassVar[str] = "io.meshfl.v1.ChunkChain"

    message_id: str
    count: int
    total_size: int
    sha256: str | None = None
    blake3: str | None = None
    head: str
    signature: Signature | None = None

    @classmethod
    def of(cls, chunk: Chunk, head: bytes, signature: Signature | None = None) -> ChunkChain:
        return cls(
            message_id=chunk.message_id,
            count=chunk.count,
            total_size=chunk.total_size,
            sha256=chunk.sha256,
            blake3=chunk.blake3,
            head=head.hex(),
            signature=signature,
        )


def link(index: int, data: bytes | memoryview, following: bytes) -> bytes:
    """Chunk ``index``'s link: its data's BLAKE3 bound to its place and to the link after it."""
    own = blake3.blake3(data).digest()
    return blake3.blake3(_LINK_PREFIX + index.to_bytes(8, "big", signed=True) + own + following).digest()


def chain_headers(signer: Signer, chunks: Sequence[Chunk]) -> list[bytes]:
    """The ``meshfl-chunk-seal`` header values of a set's ``chunks`` (in order): one signature, on the
    opener's, over the declaration and the head; every header names the link after its chunk."""
    links = [b""] * (len(chunks) + 1)
    for position in range(len(chunks) - 1, -1, -1):
        links[position] = link(chunks[position].index, chunks[position].data, links[position + 1])
    signature = signer.sign(ChunkChain.of(chunks[0], links[0])).signature
    assert signature is not None
    opener = _signature_fields(signature)
    opener["next"] = links[1].hex()
    return [_json(opener), *(_json({"next": links[i + 1].hex()}) for i in range(1, len(chunks)))]


def seal_header(signer: Signer, chunk: Chunk) -> bytes:
    """A seal of the first form (the chunk signed on its own): producers write chains now
    (``chain_headers``); this one stays to write what readers must still take, in tests."""
    signature = signer.sign(ChunkSeal.of(chunk)).signature
    assert signature is not None
    return _json(_signature_fields(signature))


@dataclass(frozen=True, slots=True)
class SealHeader:
    """What a seal header says: a signature (an opener, or a seal of the first form) and/or the next
    link (a chained set's chunk; empty after its last)."""

    signature: Signature | None
    following: bytes | None


def parse_header(raw: bytes | None) -> SealHeader | None:
    """The header's parts, or None when it is absent, oversized or malformed (nested JSON too: 2 KiB of
    ``[`` make ``json.loads`` raise ``RecursionError``, the header's fault)."""
    if not raw or len(raw) > MAX_SEAL_HEADER:
        return None
    try:
        fields = json.loads(raw)
        if not isinstance(fields, dict):
            return None
        following = None
        if "next" in fields:
            named = fields.pop("next")
            if not isinstance(named, str) or not (named == "" or _HEX64.fullmatch(named)):
                return None
            following = bytes.fromhex(named)
        signature = _signature(fields) if fields else None
        if signature is None and (fields or following is None):
            return None
        return SealHeader(signature, following)
    except (ValueError, TypeError, OverflowError, RecursionError, ValidationError):
        return None


def parse_seal(raw: bytes | None) -> Signature | None:
    """The signature a header carries, or None (absent, malformed, or a chained chunk's link only)."""
    parsed = parse_header(raw)
    return None if parsed is None else parsed.signature


def _signature(fields: dict) -> Signature | None:  # type: ignore[type-arg]
    if not isinstance(fields.get("value"), str):
        return None
    stamp = fields.get("timestamp")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return None
    fields["value"] = bytes.fromhex(fields["value"])
    fields["timestamp"] = _EPOCH + timedelta(milliseconds=stamp)
    return Signature.model_validate(fields)


def _signature_fields(signature: Signature) -> dict[str, object]:
    fields = signature.model_dump(mode="json", exclude={"value", "timestamp"})
    fields["value"] = signature.value.hex()
    fields["timestamp"] = _millis(signature.timestamp)
    return fields


def _json(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def signer_of(budget: str | None) -> str | None:
    """The signer whose budget ``budget`` is (what ``SealCheck.budget`` named), else None."""
    return budget[len(SIGNED) :] if budget is not None and budget.startswith(SIGNED) else None


class SealCheck:
    """Checks seals against ``registry`` (read at every check: keys registered since start count)."""

    def __init__(self, registry: TrustRegistry, *, window_seconds: float) -> None:
        self._registry = registry
        self._window_ms = window_seconds * 1000
        self._seen: dict[str, OrderedDict[str, tuple[str, int, int]]] = {}
        self._links: dict[str, OrderedDict[tuple[str, int, str], tuple[bytes, tuple[object, ...]]]] = {}
        """Per signer, per open chained set (topic, partition, message id): the link its next chunk must
        hash to, and the declaration its opener signed, which every chunk of it must repeat."""

    def budget(
        self, chunk: Chunk, header: bytes | None, *, claim: str, topic: str, partition: int, log_ms: int
    ) -> str:
        """The budget a set opening with ``chunk`` spends: its signer's when sealed, fresh and on the
        partition it was first seen on; else its claim's."""
        parsed = parse_header(header)
        signature = self._opener(chunk, parsed)
        if signature is None or abs(log_ms - _millis(signature.timestamp)) > self._window_ms:
            return CLAIMED + claim  # unsealed, forged, or an old opener appended again
        seen = self._seen.setdefault(signature.signer, OrderedDict())
        where = seen.get(chunk.message_id)
        if where is not None and (
            log_ms > where[2] or (log_ms == where[2] and where[:2] != (topic, partition))
        ):
            # A copy: appended after the opener met first, on another partition or on this one (once the
            # set left the reassembler's finished-set memory, which a flood of small sets evicts).
            return CLAIMED + claim
        # First met, or the same record read again (a rewind: the same log time), or met before on the
        # log's clock than where it was met first: a reader catching up meets partitions in any order, and
        # a copy is appended after its original, so the original keeps its signer's budget.
        seen[chunk.message_id] = (topic, partition, log_ms)
        seen.move_to_end(chunk.message_id)
        while len(seen) > _REMEMBERED_PER_SIGNER:
            seen.popitem(last=False)
        key = (topic, partition, chunk.message_id)
        for chains in self._links.values():
            chains.pop(key, None)
        if parsed is not None and parsed.following:  # a chain with more chunks: the next one's link
            chains = self._links.setdefault(signature.signer, OrderedDict())
            chains[key] = (parsed.following, _declaration(chunk))
            while len(chains) > _OPEN_CHAINS:
                chains.popitem(last=False)
        return SIGNED + signature.signer

    def sealed_by(
        self, chunk: Chunk, header: bytes | None, signer: str, *, topic: str = "", partition: int = -1
    ) -> bool:
        """Whether ``signer`` sealed ``chunk``, a later chunk of a set it opened on ``topic`` and
        ``partition``: the next link of its chain (which then moves on), or a seal of the first form."""
        key = (topic, partition, chunk.message_id)
        chains = self._links.get(signer) or OrderedDict()
        chain = chains.get(key)
        parsed = parse_header(header)
        if chain is not None:  # a chained set takes its chain's next chunk, nothing else
            expected, declared = chain
            if parsed is None or parsed.signature is not None or parsed.following is None:
                return False
            if _declaration(chunk) != declared:  # the link binds the data; the opener, the declaration
                return False
            try:
                if link(chunk.index, chunk.data, parsed.following) != expected:
                    return False
            except OverflowError:
                return False
            if parsed.following:
                chains[key] = (parsed.following, declared)
                chains.move_to_end(key)
            else:
                del chains[key]  # its last chunk
            return True
        if parsed is None or parsed.signature is None or parsed.following is not None:
            return False
        signature = self._verified(ChunkSeal.of(chunk, parsed.signature), parsed.signature, chunk)
        return signature is not None and signature.signer == signer

    def _opener(self, chunk: Chunk, parsed: SealHeader | None) -> Signature | None:
        """The verified signature of a set's first chunk: a chain's (index 0, over its declaration and
        the head this chunk's data and next link give), or a seal of the first form."""
        if parsed is None or parsed.signature is None:
            return None
        if parsed.following is None:
            return self._verified(ChunkSeal.of(chunk, parsed.signature), parsed.signature, chunk)
        if chunk.index != 0:
            return None
        try:
            head = link(0, chunk.data, parsed.following)
        except OverflowError:
            return None
        return self._verified(ChunkChain.of(chunk, head, parsed.signature), parsed.signature, chunk)

    def _verified(self, record: Event, signature: Signature, chunk: Chunk) -> Signature | None:
        try:
            return self._registry.verify(record, sender=signature.signer)
        except SignatureError as exc:
            log.warning(
                "chunk seal does not verify",
                message_id=chunk.message_id[:80],
                index=chunk.index,
                signer=signature.signer[:80],
                reason=exc.policy,
            )
            return None


def _declaration(chunk: Chunk) -> tuple[object, ...]:
    return (chunk.count, chunk.total_size, chunk.sha256, chunk.blake3)


def _millis(moment: datetime) -> int:
    """``meshfl.identity.canonical.millis``, which this module cannot import when ``meshfl.bus`` loads
    (``meshfl.identity`` imports ``meshfl.bus``)."""
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)
