"""Signed chunk-set declarations: whose reassembly budget a set may spend, proved rather than claimed.

A chunk set reserves its declared size against a budget before its bytes arrive (``_reassembly``). The
``meshfl-sender`` header names that budget, but any writer to the topic can set any header: a 100-byte
first chunk declaring 4 GiB under another domain's name would fill that domain's budget, and its real
sets would be refused until the forged one expired, every time the forger sent one again.

So a producer with a signer signs each set's *declaration* (message id, count, total size, digests;
the ``Chunk`` fields without its index and data) and sends the signature in the ``meshfl-chunk-signature``
header of every chunk. A reader with a trust registry checks it when the set opens, before anything is
reserved: a set whose declaration verifies, is fresh (signed within the signature window of the chunk's
log time) and was not seen on another partition (a copy replayed elsewhere) spends its signer's own
budget; anything else spends the budget of its claim, which no signed set shares. Forged claims thus
only ever compete with one another. The signature is over the same canonical form as every event's
(``meshfl.identity.canonical``, schema name ``io.meshfl.v1.Chunk``), so no other event's signature can
stand in for one; the payload itself is still signed inside, and checked after reassembly.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from pydantic import ValidationError

from meshfl.errors import SignatureError
from meshfl.events import Chunk, Signature
from meshfl.logs import get_logger

if TYPE_CHECKING:
    from meshfl.identity import Signer, TrustRegistry

log = get_logger("meshfl.bus.declaration")

DECLARATION_HEADER = "meshfl-chunk-signature"
"""The signature of a chunk set's declaration (JSON; ``value`` as hex), on every chunk of the set."""
MAX_DECLARATION_HEADER = 2048
"""Bytes of that header read at most: a signature is under 400 bytes with a 256-character signer."""
_REMEMBERED_PER_SIGNER = 1024
"""Verified message ids remembered per signer, to spot a copy of one replayed on another partition."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SIGNED = "signed:"
CLAIMED = "claimed:"


class ChunkDeclaration(Chunk):
    """A chunk set's declaration as signed: its ``Chunk`` fields with index 0 and no data.

    Never put on the bus: it only gives the declaration a ``signature`` field, so that signing and
    verifying go through ``Signer.sign`` and ``TrustRegistry.verify`` like every other event. The
    canonical form leaves the top-level signature out, so the bytes signed are the ``Chunk``'s own.
    """

    AVRO_NAME: ClassVar[str] = Chunk.AVRO_NAME

    signature: Signature | None = None

    @classmethod
    def of(cls, chunk: Chunk, signature: Signature | None = None) -> ChunkDeclaration:
        return cls(
            message_id=chunk.message_id,
            index=0,
            count=chunk.count,
            total_size=chunk.total_size,
            sha256=chunk.sha256,
            blake3=chunk.blake3,
            data=b"",
            signature=signature,
        )


def declaration_header(signer: Signer, chunk: Chunk) -> bytes:
    """The ``meshfl-chunk-signature`` header value for ``chunk``'s set."""
    signature = signer.sign(ChunkDeclaration.of(chunk)).signature
    assert signature is not None
    fields = signature.model_dump(mode="json", exclude={"value", "timestamp"})
    fields["value"] = signature.value.hex()
    fields["timestamp"] = _millis(signature.timestamp)
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def parse_declaration_header(raw: bytes | None) -> Signature | None:
    """The signature a header carries, or None when it is absent, oversized or malformed."""
    if not raw or len(raw) > MAX_DECLARATION_HEADER:
        return None
    try:
        fields = json.loads(raw)
        if not isinstance(fields, dict) or not isinstance(fields.get("value"), str):
            return None
        fields["value"] = bytes.fromhex(fields["value"])
        stamp = fields.get("timestamp")
        if not isinstance(stamp, int) or isinstance(stamp, bool):
            return None
        fields["timestamp"] = _EPOCH + timedelta(milliseconds=stamp)
        return Signature.model_validate(fields)
    except (ValueError, TypeError, OverflowError, OSError, ValidationError):
        return None


class DeclarationCheck:
    """Names the budget a chunk set opens against: its verified signer's, else its claim's.

    ``registry`` is read at every check, so keys registered since the reader started count.
    """

    def __init__(self, registry: TrustRegistry, *, window_seconds: float) -> None:
        self._registry = registry
        self._window_ms = window_seconds * 1000
        self._seen: dict[str, OrderedDict[str, tuple[str, int]]] = {}

    def budget(
        self, chunk: Chunk, header: bytes | None, *, claim: str, topic: str, partition: int, log_ms: int
    ) -> str:
        signature = parse_declaration_header(header)
        if signature is None:
            return CLAIMED + claim
        try:
            self._registry.verify(ChunkDeclaration.of(chunk, signature), sender=signature.signer)
        except SignatureError as exc:
            log.warning(
                "chunk set declaration does not verify; counted against its claim",
                topic=topic,
                partition=partition,
                message_id=chunk.message_id[:80],
                claim=claim[:80],
                reason=exc.policy,
            )
            return CLAIMED + claim
        if abs(log_ms - _millis(signature.timestamp)) > self._window_ms:
            return CLAIMED + claim  # an old declaration appended again
        seen = self._seen.setdefault(signature.signer, OrderedDict())
        where = seen.get(chunk.message_id)
        if where is not None and where != (topic, partition):
            return CLAIMED + claim  # a fresh one copied onto another partition
        seen[chunk.message_id] = (topic, partition)
        seen.move_to_end(chunk.message_id)
        while len(seen) > _REMEMBERED_PER_SIGNER:
            seen.popitem(last=False)
        return SIGNED + signature.signer


def _millis(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)
