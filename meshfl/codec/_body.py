"""The Avro binary body of a message: event -> bytes after a frame header, and back with schema resolution.

Both framings (single-object and Schema Registry) share this: they differ only in the header that names
the writer schema. Every fastavro or pydantic failure is translated into a ``CodecError`` here. Large
``bytes`` values (tensor data) bypass fastavro (``meshfl.codec._bulk``): copied once on encode, viewed
in the message on decode.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from pydantic import ValidationError

from meshfl.codec._bulk import (
    MESSAGE_MIN,
    BodyWalker,
    extract_bulk,
    new_nonce,
    restore_bulk,
    skeleton_of,
    splice,
    to_plain,
)
from meshfl.codec._schemas import StoredSchema
from meshfl.errors import CodecError
from meshfl.events import EVENTS_BY_AVRO_NAME, Event
from meshfl.limits import check_datum

# What fastavro raises on bad data: short reads (EOFError), bad enum index (IndexError), bad UTF-8
# (UnicodeDecodeError is a ValueError), unresolvable schemas, and type mismatches when writing.
_AVRO_ERRORS = (
    EOFError,
    IndexError,
    KeyError,
    OverflowError,
    TypeError,
    ValueError,
    AttributeError,
    SchemaResolutionError,
)


def encode_body(header: bytes, schema: StoredSchema, event: Event) -> bytes:
    """``header`` then the event's Avro binary body; every byte is copied once, into the returned bytes."""
    return b"".join(encode_body_parts(header, schema, event))


def encode_body_parts(header: bytes, schema: StoredSchema, event: Event) -> list[Any]:
    """The pieces whose concatenation is :func:`encode_body`'s result, nothing joined: the large
    ``bytes`` values are the event's own buffers (read-only use), so a caller cutting the message into
    chunks copies each byte once, into a chunk, and never holds the whole message."""
    if schema.full_name != event.AVRO_NAME:
        raise CodecError(f"a {type(event).__name__} cannot be written with schema {schema.full_name}")
    datum = event.to_avro()
    nonce, buffers = new_nonce(), []
    skeleton = extract_bulk(datum, nonce, buffers)
    if buffers:
        pieces = splice(_write(schema, event, skeleton), nonce, buffers)
        if pieces is not None:
            return [header, *pieces]
        skeleton = to_plain(datum)  # a sentinel was not where fastavro writes it: the plain way
    return [header, _write(schema, event, skeleton)]


def _write(schema: StoredSchema, event: Event, datum: Any) -> bytes:
    sink = _Sink()
    try:
        schemaless_writer(sink, schema.parsed, datum)
    except _AVRO_ERRORS as exc:
        raise CodecError(f"cannot encode {type(event).__name__} with {schema.full_name}: {exc}") from exc
    return b"".join(sink.parts)


class _Sink:
    """Keeps what fastavro writes (one bytearray of the whole body) without copying it into a BytesIO."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes | bytearray] = []

    def write(self, data: bytes | bytearray) -> int:
        self.parts.append(data)
        return len(data)


def decode_body(data: bytes | memoryview, offset: int, writer: StoredSchema, reader: StoredSchema) -> Event:
    """Read the body at ``offset`` written by ``writer``, resolved to ``reader``; all input must be used.

    Large ``bytes`` values of a large message come back as read-only views of ``data`` (which they keep
    alive) when no schema resolution is needed; everything else as fastavro reads it.
    """
    source = data if isinstance(data, bytes) else memoryview(data).toreadonly()
    if len(source) >= MESSAGE_MIN and reader.fingerprint == writer.fingerprint:
        datum = _read_by_reference(source, offset, writer)
        if datum is not None:
            return to_event(reader.full_name, datum)
    if not isinstance(source, bytes):
        source = bytes(source)
    return to_event(reader.full_name, _read(source, offset, writer, reader))


def _read(source: bytes, offset: int, writer: StoredSchema, reader: StoredSchema | None) -> Any:
    buffer = io.BytesIO(source)  # shares the bytes object: no copy until a write, and we only read
    buffer.seek(offset)
    resolve_to = None if reader is None or reader.fingerprint == writer.fingerprint else reader.parsed
    try:
        datum: Any = schemaless_reader(buffer, writer.parsed, resolve_to)
    except _AVRO_ERRORS as exc:
        raise _corrupt(writer, f"{type(exc).__name__}: {exc}") from exc
    trailing = len(source) - buffer.tell()
    if trailing:
        raise CodecError(f"{trailing} trailing bytes after a {writer.full_name} body")
    return datum


def _read_by_reference(source: bytes | memoryview, offset: int, writer: StoredSchema) -> Any | None:
    """The datum with its large ``bytes`` values as views of ``source``; ``None`` if there are none."""
    walker = BodyWalker(source, offset, writer.parsed.get("__named_schemas", {}))
    try:
        walker.walk(writer.parsed)
    except RecursionError as exc:
        raise _corrupt(writer, "nested too deeply") from exc
    except CodecError as exc:
        raise _corrupt(writer, str(exc)) from exc
    trailing = len(source) - walker.pos
    if trailing:
        raise CodecError(f"{trailing} trailing bytes after a {writer.full_name} body")
    if not walker.spans:
        return None
    nonce = new_nonce()
    datum = _read(skeleton_of(source, offset, walker.spans, nonce), 0, writer, None)
    whole = memoryview(source)
    views = [whole[start:end] for _, start, end in walker.spans]
    used: list[int] = []
    datum = restore_bulk(datum, nonce, views, used)
    if sorted(used) != list(range(len(views))):
        return None  # cannot happen without resolution; the plain path decides
    return datum


def _corrupt(writer: StoredSchema, detail: str) -> CodecError:
    where = f"writer {writer.fingerprint_hex}, version {writer.version}"
    return CodecError(f"corrupt {writer.full_name} body ({where}): {detail}")


def to_event(full_name: str, datum: Any) -> Event:
    """Build the pydantic event for a decoded Avro datum, after ``meshfl.limits.check_datum``."""
    event_type = EVENTS_BY_AVRO_NAME.get(full_name)
    if event_type is None:
        raise CodecError(f"{full_name} is not a meshfl event type")
    if not isinstance(datum, dict):
        raise CodecError(f"{full_name} decoded to a {type(datum).__name__}, not a record")
    check_datum(datum, what=full_name.rpartition(".")[2])  # bounds before pydantic builds anything
    try:
        return event_type.from_avro(datum)
    except ValidationError as exc:
        raise CodecError(f"decoded {full_name} violates the event model: {exc}") from exc
