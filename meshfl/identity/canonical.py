"""The canonical form an event is signed over: deterministic bytes any language can rebuild.

A signature covers ``TAG + canonical_json(document)``. Two schemes exist, told apart by the signature's
``scheme`` field (``schemas/types/Signature.avsc``), never guessed:

* scheme 1 (``scheme`` null: every signature written before the field existed): ``TAG`` is the ASCII
  line ``meshfl-signature-v1\\n`` and model states are named by their SHA-256;
* scheme 2 (``scheme`` = 2, what ``Signer`` writes): ``TAG`` is ``meshfl-signature-v2\\n``, model states
  are named by their BLAKE3-256 (same bytes, about four times faster), and the document also carries
  ``"scheme": 2``.

Any other ``scheme`` value has no canonical form and never verifies. The tag differs, so the bytes of one
scheme are never the bytes of the other: a scheme-2 signature cannot be read as scheme 1 or back, and
rewriting the field of a signed event only makes it fail. ``document`` is the JSON object::

    {"event": <the event>, "key_id": ..., "schema": <Avro full name, e.g. io.meshfl.v1.ModelUpdate>,
     "scheme": 2 (scheme 2 only), "sequence": <integer>, "signer": ...,
     "timestamp": <integer milliseconds since the epoch, UTC>}

``<the event>`` is the event's Avro datum mapped value by value, by the Avro type of each field:

* record: a JSON object of its fields, without the top-level ``signature`` field and without any field
  whose value is null (so a nullable field added by a later schema version with default null leaves
  the signatures of older events valid);
* ``array<Tensor>`` (a model state): the string of 64 lowercase hex digits of the digest of the byte
  sequence defined in ``meshfl.tensors`` (``tensors_sha256``'s bytes, hashed without judging the layout,
  so a sender is identified before its tensors are checked): SHA-256 in scheme 1 (``layout_sha256``),
  BLAKE3 with its default 32-byte output in scheme 2 (``layout_blake3``). The tensor bytes are hashed
  once, never signed raw; a single ``Tensor``: the same digest of the one-tensor list;
* other arrays: JSON arrays; maps: JSON objects (keys sorted like every object);
* string and enum: JSON strings (the enum's symbol); long and int: JSON integers; boolean: true/false;
* double and float: a string of the 16 lowercase hex digits of the IEEE 754 binary64 bits, big-endian
  (``struct.pack(">d", x).hex()``), so no decimal printing is involved and NaN, -0.0 and inf are exact;
* bytes: a string of lowercase hex digits; ``timestamp-millis``: a JSON integer of milliseconds.

``canonical_json`` is ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``:
object keys sorted by Unicode code point, no whitespace, every non-ASCII character escaped ``\\uXXXX``
(UTF-16 surrogate pairs above U+FFFF), control characters escaped, so the output is pure ASCII.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NamedTuple, get_args, get_origin

from pydantic import BaseModel

from meshfl.errors import SignatureError
from meshfl.events import Event, Signature, Tensor
from meshfl.tensors import layout_blake3, layout_sha256

__all__ = [
    "CURRENT_SCHEME",
    "DOMAIN_TAG",
    "SCHEME_1",
    "SCHEME_2",
    "Scheme",
    "StateDigest",
    "canonical_json",
    "scheme_of",
    "signed_bytes",
    "state_digests",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Scheme:
    """One signature scheme: its ``Signature.scheme`` value, domain tag and model-state digest."""

    field: int | None
    tag: bytes
    algorithm: str
    digest: Callable[[Sequence[Tensor]], str]


SCHEME_1 = Scheme(None, b"meshfl-signature-v1\n", "sha256", layout_sha256)
SCHEME_2 = Scheme(2, b"meshfl-signature-v2\n", "blake3", layout_blake3)
CURRENT_SCHEME = SCHEME_2
"""What ``Signer`` writes; scheme 1 is verified only (signatures already on the logs)."""
DOMAIN_TAG = SCHEME_1.tag
"""Scheme 1's tag (the name predates scheme 2)."""
_SCHEMES = {SCHEME_1.field: SCHEME_1, SCHEME_2.field: SCHEME_2}


class StateDigest(NamedTuple):
    """A model state's digest and the algorithm it was made with, so no digest is used for the wrong
    scheme (a bare hex string says nothing about which hash produced it)."""

    algorithm: str
    hex: str


def scheme_of(signature: Signature) -> Scheme:
    """The scheme a signature names; ``SignatureError`` for any value without a canonical form."""
    scheme = _SCHEMES.get(signature.scheme)
    if scheme is None:
        raise SignatureError("bad_signature", f"unknown signature scheme {signature.scheme!r}")
    return scheme


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def millis(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly as Avro ``timestamp-millis`` stores them."""
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _is_tensor_list(annotation: Any) -> bool:
    return get_origin(annotation) is list and get_args(annotation) == (Tensor,)


def state_digests(event: Event, scheme: Scheme = CURRENT_SCHEME) -> dict[str, StateDigest]:
    """The digest (of ``scheme``) of every model-state field of ``event``, each hashed once."""
    out: dict[str, StateDigest] = {}
    for name, info in type(event).model_fields.items():
        value = getattr(event, name)
        if _is_tensor_list(info.annotation):
            out[name] = StateDigest(scheme.algorithm, scheme.digest(value))
        elif isinstance(value, Tensor):
            out[name] = StateDigest(scheme.algorithm, scheme.digest([value]))
    return out


# tuples, not ``bool | str``: isinstance with a union is several times slower, and every field of every
# signed or verified event comes through ``_value``
_SCALARS = (bool, str)
_BUFFERS = (bytes, bytearray, memoryview)
_SEQUENCES = (list, tuple)


def _value(value: Any, scheme: Scheme) -> Any:
    if value is None or isinstance(value, _SCALARS):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return struct.pack(">d", value).hex()
    if isinstance(value, _BUFFERS):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return millis(value)
    if isinstance(value, Tensor):
        return scheme.digest([value])
    if isinstance(value, BaseModel):
        return _record(value, {}, scheme)
    if isinstance(value, Mapping):
        return {str(key): _value(item, scheme) for key, item in value.items()}
    if isinstance(value, _SEQUENCES):
        return [_value(item, scheme) for item in value]
    raise TypeError(f"no canonical form for a {type(value).__name__}")


@functools.cache
def _fields(model_type: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """Each field's name and whether it is a model state, once a class (every update and decision
    is signed or verified through here: the annotations were inspected again for each)."""
    return tuple((name, _is_tensor_list(info.annotation)) for name, info in model_type.model_fields.items())


def _record(
    model: BaseModel, digests: Mapping[str, StateDigest], scheme: Scheme, *, top: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, is_state in _fields(type(model)):
        if top and name == "signature":
            continue
        value = getattr(model, name)
        if value is None:
            continue
        if is_state:
            known = digests.get(name)
            # a digest of another algorithm (say a SHA-256 computed for a scheme-1 sender) is not
            # this scheme's name of the state: hash it here rather than sign or check the wrong one
            usable = isinstance(known, StateDigest) and known.algorithm == scheme.algorithm
            out[name] = known.hex if usable else scheme.digest(value)  # type: ignore[union-attr]
        else:
            out[name] = _value(value, scheme)
    return out


def signed_bytes(
    event: Event, signature: Signature, digests: Mapping[str, StateDigest] | None = None
) -> bytes:
    """The exact bytes an Ed25519 signature covers (``signature.value`` itself is not part of them),
    in the scheme ``signature.scheme`` names (``SignatureError`` for an unknown one).

    ``digests`` may carry model-state digests already computed (``state_digests``) so that a large
    state is hashed once; one of another algorithm than the scheme's is ignored (the state is hashed
    here), and a wrong one simply makes the signature fail to verify.
    """
    scheme = scheme_of(signature)
    document: dict[str, Any] = {
        "event": _record(event, digests or {}, scheme, top=True),
        "key_id": signature.key_id,
        "schema": event.AVRO_NAME,
        "sequence": signature.sequence,
        "signer": signature.signer,
        "timestamp": millis(signature.timestamp),
    }
    if scheme.field is not None:
        document["scheme"] = scheme.field
    return scheme.tag + canonical_json(document)
