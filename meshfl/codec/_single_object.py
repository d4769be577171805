"""Avro single-object encoding: ``C3 01``, the writer schema's 8-byte little-endian CRC-64-AVRO fingerprint,
then the Avro binary body (Avro 1.12 specification, "Single-object encoding").

The reader finds the writer schema by fingerprint among the current and released schemas and resolves it
to the current schema of the same full name, so data written by an older release still decodes.
"""

from __future__ import annotations

from typing import Any, TypeVar

from meshfl.codec._body import decode_body, encode_body, encode_body_parts
from meshfl.codec._schemas import SchemaStore
from meshfl.errors import CodecError, UnknownSchemaError
from meshfl.events import Event

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8
REGISTRY_MAGIC = 0x00

E = TypeVar("E", bound=Event)


def check_type(event: Event, event_type: type[E]) -> E:
    if not isinstance(event, event_type):
        raise CodecError(f"expected a {event_type.__name__}, got a {type(event).__name__}")
    return event


class SingleObjectCodec:
    """Frames events as Avro single objects; needs no service, only the schemas shipped with meshfl."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store

    def header(self, event: Event) -> bytes:
        return MARKER + self.store.current(event.AVRO_NAME).fingerprint

    def encode(self, event: Event) -> bytes:
        schema = self.store.current(event.AVRO_NAME)
        return encode_body(MARKER + schema.fingerprint, schema, event)

    def encode_parts(self, event: Event) -> list[Any]:
        """``encode``'s bytes as unjoined pieces (see ``meshfl.codec._body.encode_body_parts``)."""
        schema = self.store.current(event.AVRO_NAME)
        return encode_body_parts(MARKER + schema.fingerprint, schema, event)

    def decode(self, data: bytes | memoryview) -> Event:
        if bytes(data[:2]) != MARKER:
            if len(data) and data[0] == REGISTRY_MAGIC:
                raise UnknownSchemaError(
                    "message is in Schema Registry framing (magic byte 0); set schema_registry_url to read it"
                )
            raise CodecError(
                f"not an Avro single object: expected marker c301, got {bytes(data[:2]).hex()!r}"
            )
        if len(data) < HEADER_SIZE:
            raise CodecError(f"truncated single-object header: {len(data)} bytes, need {HEADER_SIZE}")
        writer = self.store.by_fingerprint(bytes(data[2:HEADER_SIZE]))
        reader = self.store.current(writer.full_name)
        return decode_body(data, HEADER_SIZE, writer, reader)

    def decode_as(self, data: bytes | memoryview, event_type: type[E]) -> E:
        return check_type(self.decode(data), event_type)
