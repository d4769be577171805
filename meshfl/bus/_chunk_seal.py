"""Sealed chunks: who sent a chunk set, and each of its chunks, proved rather than claimed.

Two things about a chunk set rested on what any writer to the topic could say:

* whose reassembly budget it spends (``_reassembly``): the ``meshfl-sender`` header. A 100-byte first
  chunk declaring 4 GiB under another domain's name filled that domain's budget, and its real sets were
  refused until the forgery expired, every time the forger sent one again;
* which chunks belong to it: its message id. A chunk copied from an open set with other data made the
  set "corrupt", and the update in it was dead-lettered.

So a producer with a signer seals every chunk: it signs the set's declaration (message id, count, total
size, digests of the whole) together with the chunk's index and the BLAKE3 of its data, and sends the
signature in the chunk's ``meshfl-chunk-seal`` header. A reader with a trust registry checks the seal of
the chunk that opens a set, before anything is reserved: sealed, fresh (signed within the signature window
of the chunk's log time) and not seen on another partition (a copy replayed elsewhere), the set spends its
signer's own budget, and then takes only chunks sealed by that signer: others are dropped, never its
ruin. Anything else spends the budget of its claim, which no sealed set shares, and is reassembled as
before. The seal is over the canonical form every event is signed in (``meshfl.identity.canonical``) as
the record ``io.meshfl.v1.ChunkSeal``, which is signed only, never sent, so no other event's signature can
stand in for one. The payload is still signed inside, and checked after reassembly.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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
REASON_FOREIGN = "chunk-foreign"
"""Dead-letter reason of a chunk that names a sealed set without its signer's seal."""
SIGNED = "signed:"
CLAIMED = "claimed:"


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


def seal_header(signer: Signer, chunk: Chunk) -> bytes:
    """The ``meshfl-chunk-seal`` header value of ``chunk``."""
    signature = signer.sign(ChunkSeal.of(chunk)).signature
    assert signature is not None
    fields = signature.model_dump(mode="json", exclude={"value", "timestamp"})
    fields["value"] = signature.value.hex()
    fields["timestamp"] = _millis(signature.timestamp)
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def parse_seal(raw: bytes | None) -> Signature | None:
    """The signature a header carries, or None when it is absent, oversized or malformed (nested JSON
    too: 2 KiB of ``[`` make ``json.loads`` raise ``RecursionError``, the header's fault)."""
    if not raw or len(raw) > MAX_SEAL_HEADER:
        return None
    try:
        fields = json.loads(raw)
        if not isinstance(fields, dict) or not isinstance(fields.get("value"), str):
            return None
        stamp = fields.get("timestamp")
        if not isinstance(stamp, int) or isinstance(stamp, bool):
            return None
        fields["value"] = bytes.fromhex(fields["value"])
        fields["timestamp"] = _EPOCH + timedelta(milliseconds=stamp)
        return Signature.model_validate(fields)
    except (ValueError, TypeError, OverflowError, RecursionError, ValidationError):
        return None


def signer_of(budget: str | None) -> str | None:
    """The signer whose budget ``budget`` is (what ``SealCheck.budget`` named), else None."""
    return budget[len(SIGNED) :] if budget is not None and budget.startswith(SIGNED) else None


class SealCheck:
    """Checks seals against ``registry`` (read at every check: keys registered since start count)."""

    def __init__(self, registry: TrustRegistry, *, window_seconds: float) -> None:
        self._registry = registry
        self._window_ms = window_seconds * 1000
        self._seen: dict[str, OrderedDict[str, tuple[str, int, int]]] = {}

    def budget(
        self, chunk: Chunk, header: bytes | None, *, claim: str, topic: str, partition: int, log_ms: int
    ) -> str:
        """The budget a set opening with ``chunk`` spends: its signer's when sealed, fresh and on the
        partition it was first seen on; else its claim's."""
        signature = self._verified(chunk, header)
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
        return SIGNED + signature.signer

    def sealed_by(self, chunk: Chunk, header: bytes | None, signer: str) -> bool:
        """Whether ``signer`` sealed ``chunk`` (a later chunk of a set it opened)."""
        signature = self._verified(chunk, header)
        return signature is not None and signature.signer == signer

    def _verified(self, chunk: Chunk, header: bytes | None) -> Signature | None:
        signature = parse_seal(header)
        if signature is None:
            return None
        try:
            return self._registry.verify(ChunkSeal.of(chunk, signature), sender=signature.signer)
        except SignatureError as exc:
            log.warning(
                "chunk seal does not verify",
                message_id=chunk.message_id[:80],
                index=chunk.index,
                signer=signature.signer[:80],
                reason=exc.policy,
            )
            return None


def _millis(moment: datetime) -> int:
    """``meshfl.identity.canonical.millis``, which this module cannot import when ``meshfl.bus`` loads
    (``meshfl.identity`` imports ``meshfl.bus``)."""
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)
