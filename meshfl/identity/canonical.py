"""The canonical form an event is signed over: deterministic bytes any language can rebuild.

A signature covers ``DOMAIN_TAG + canonical_json(document)`` where ``DOMAIN_TAG`` is the ASCII line
``meshfl-signature-v1\\n`` and ``document`` is the JSON object::

    {"event": <the event>, "key_id": ..., "schema": <Avro full name, e.g. io.meshfl.v1.ModelUpdate>,
     "sequence": <integer>, "signer": ..., "timestamp": <integer milliseconds since the epoch, UTC>}

``<the event>`` is the event's Avro datum mapped value by value, by the Avro type of each field:

* record: a JSON object of its fields, without the top-level ``signature`` field and without any field
  whose value is null (so a nullable field added by a later schema version with default null leaves
  the signatures of older events valid);
* ``array<Tensor>`` (a model state): the string of 64 lowercase hex digits of its SHA-256 as defined in
  ``meshfl.tensors`` (``tensors_sha256``'s byte sequence, hashed without judging the layout:
  ``layout_sha256``, so a sender is identified before its tensors are checked): the tensor bytes are
  hashed once, never signed raw;
  a single ``Tensor``: the same hash of the one-tensor list;
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
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from meshfl.events import Event, Signature, Tensor
from meshfl.tensors import layout_sha256

__all__ = ["DOMAIN_TAG", "canonical_json", "signed_bytes", "state_digests"]

DOMAIN_TAG = b"meshfl-signature-v1\n"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def state_digests(event: Event) -> dict[str, str]:
    """The SHA-256 of every model-state field of ``event`` (field name -> hex), each hashed once."""
    out: dict[str, str] = {}
    for name, info in type(event).model_fields.items():
        value = getattr(event, name)
        if _is_tensor_list(info.annotation):
            out[name] = layout_sha256(value)
        elif isinstance(value, Tensor):
            out[name] = layout_sha256([value])
    return out


def _value(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return struct.pack(">d", value).hex()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return millis(value)
    if isinstance(value, Tensor):
        return layout_sha256([value])
    if isinstance(value, BaseModel):
        return _record(value, {})
    if isinstance(value, Mapping):
        return {str(key): _value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    raise TypeError(f"no canonical form for a {type(value).__name__}")


@functools.cache
def _fields(model_type: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """Each field's name and whether it is a model state, once a class (every update and decision
    is signed or verified through here: the annotations were inspected again for each)."""
    return tuple((name, _is_tensor_list(info.annotation)) for name, info in model_type.model_fields.items())


def _record(model: BaseModel, digests: Mapping[str, str], *, top: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, is_state in _fields(type(model)):
        if top and name == "signature":
            continue
        value = getattr(model, name)
        if value is None:
            continue
        if is_state:
            out[name] = digests[name] if name in digests else layout_sha256(value)
        else:
            out[name] = _value(value)
    return out


def signed_bytes(event: Event, signature: Signature, digests: Mapping[str, str] | None = None) -> bytes:
    """The exact bytes an Ed25519 signature covers (``signature.value`` itself is not part of them).

    ``digests`` may carry model-state hashes already computed (``state_digests``) so that a large
    state is hashed once; a wrong digest simply makes the signature fail to verify.
    """
    document = {
        "event": _record(event, digests or {}, top=True),
        "key_id": signature.key_id,
        "schema": event.AVRO_NAME,
        "sequence": signature.sequence,
        "signer": signature.signer,
        "timestamp": millis(signature.timestamp),
    }
    return DOMAIN_TAG + canonical_json(document)
