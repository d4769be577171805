"""Large ``bytes`` values (tensor and chunk data) cross the codec by reference, not through fastavro.

fastavro copies every ``bytes`` value it writes or reads (twice on the way out: into its buffer, then
into the message), which made the codec several times slower than a memory copy on 40 MB updates.
Here the Avro bytes are the same; only the way they are produced changes:

* **encode**: every large ``bytes`` leaf of the datum is replaced by a 16-byte sentinel (8 random bytes
  drawn per call, then the leaf's index), fastavro writes that small skeleton, and the message is joined
  from the skeleton's pieces and the original buffers: each payload byte is copied once, by
  ``bytes.join``. A sentinel appears where fastavro writes the field, so the result is exactly what
  fastavro writes for the original datum (tested).
* **decode**: a walk over the writer schema locates every large ``bytes`` value of the body (each
  length checked against what is left before anything else happens; nothing is allocated), fastavro
  decodes a skeleton in which sentinels stand for them, and each sentinel becomes a read-only
  ``memoryview`` of the message. Tensors built on those views share the message's memory.

Decoding takes this path only for messages of at least ``MESSAGE_MIN`` bytes (below, fastavro's copy
is cheaper than the walk), and only when the writer schema is the reader schema (a resolved old writer
goes through fastavro whole). A sentinel is unpredictable to a sender (fresh randomness per call), and
every one must be found exactly once, else the plain path runs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from meshfl.errors import CodecError

BULK_MIN = 4096
"""``bytes`` values at least this long travel by reference."""
MESSAGE_MIN = 1 << 20
"""Messages smaller than this are decoded by fastavro whole: below it, fastavro's copy of the bytes
costs less than the schema walk that avoids it (a 0.4 MB update: 181 us whole, 401 us by reference;
1.2 MB: 331 / 399 us; 4 MB: 646 / 390 us; the walk's cost does not grow with the bytes). Was 64 KiB,
which made every 100k-parameter update take the slower path (``bench/scale.py``)."""

_SENTINEL_SIZE = 16
_SENTINEL_PREFIX = 0x20  # the zigzag varint of 16, fastavro's length prefix of a sentinel
_MAX_VARINT = 10
_PRIMITIVE_WIDTH = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_BUFFERS = (bytes, bytearray, memoryview)

Writer = Callable[[io.RawIOBase | Any, dict[str, Any], Any], Any]


def encode_long(value: int) -> bytes:
    """Avro's zigzag varint of a long."""
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _sentinel(nonce: bytes, index: int) -> bytes:
    return nonce + index.to_bytes(8, "little")


def extract_bulk(node: Any, nonce: bytes, found: list[Any]) -> Any:
    """``node`` with each large buffer leaf replaced by a sentinel (appended to ``found``); small
    ``memoryview`` leaves become ``bytes`` so that fastavro accepts them. Containers are rebuilt, never
    mutated."""
    if isinstance(node, dict):
        return {key: extract_bulk(value, nonce, found) for key, value in node.items()}
    if isinstance(node, list):
        return [extract_bulk(value, nonce, found) for value in node]
    if isinstance(node, _BUFFERS):
        size = node.nbytes if isinstance(node, memoryview) else len(node)
        if size >= BULK_MIN:
            found.append(node)
            return _sentinel(nonce, len(found) - 1)
        if not isinstance(node, bytes):
            return bytes(node)
    return node


def splice(skeleton: bytes, nonce: bytes, buffers: list[Any]) -> list[Any] | None:
    """The pieces of the real body: ``skeleton`` with each sentinel replaced by its buffer.

    ``None`` if the sentinels are not each found exactly once, as written by fastavro (then the caller
    encodes the plain way).
    """
    view = memoryview(skeleton)
    positions: list[tuple[int, int]] = []
    seen: set[int] = set()
    start = 0
    while True:
        at = skeleton.find(nonce, start)
        if at < 0:
            break
        index = int.from_bytes(skeleton[at + 8 : at + _SENTINEL_SIZE], "little")
        if at == 0 or skeleton[at - 1] != _SENTINEL_PREFIX or index >= len(buffers) or index in seen:
            return None
        seen.add(index)
        positions.append((at, index))
        start = at + _SENTINEL_SIZE
    if len(seen) != len(buffers):
        return None
    pieces: list[Any] = []
    previous = 0
    for at, index in positions:
        buffer = buffers[index]
        size = buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)
        pieces += [view[previous : at - 1], encode_long(size), buffer]
        previous = at + _SENTINEL_SIZE
    pieces.append(view[previous:])
    return pieces


def new_nonce() -> bytes:
    return os.urandom(8)


class BodyWalker:
    """Walks an Avro body by its writer schema and records where the large ``bytes`` values lie.

    ``spans`` holds ``(prefix_start, data_start, data_end)`` of each, in body order. Every length is
    checked against the bytes left before it is used; a corrupt body raises ``CodecError``.
    """

    __slots__ = ("_data", "_end", "_named", "pos", "spans")

    def __init__(self, data: bytes | memoryview, offset: int, named: dict[str, Any]) -> None:
        self._data = data
        self._end = len(data)
        self._named = named
        self.pos = offset
        self.spans: list[tuple[int, int, int]] = []

    def _long(self) -> int:
        data, pos, result, shift = self._data, self.pos, 0, 0
        for _ in range(_MAX_VARINT):
            if pos >= self._end:
                raise CodecError("corrupt body: a varint runs past the end of the message")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.pos = pos
                return (result >> 1) ^ -(result & 1)
            shift += 7
        raise CodecError("corrupt body: a varint longer than 10 bytes")

    def _advance(self, size: int, what: str) -> None:
        if size < 0 or size > self._end - self.pos:
            raise CodecError(f"corrupt body: {what} of {size} bytes with {self._end - self.pos} left")
        self.pos += size

    def _blocks(self, each: Callable[[], None], zero_width: bool) -> None:
        while True:
            count = self._long()
            if count == 0:
                return
            if count < 0:
                count = -count
                self._long()  # the block's size in bytes, which the walk does not need
            if zero_width and count > self._end - self.pos + 1:
                raise CodecError(f"corrupt body: a block of {count} empty items")
            for _ in range(count):
                each()

    def walk(self, schema: Any) -> None:
        if isinstance(schema, str):
            width = _PRIMITIVE_WIDTH.get(schema)
            if width is not None:
                self._advance(width, schema)
            elif schema in ("int", "long"):
                self._long()
            elif schema == "string":
                self._advance(self._long(), "a string")
            elif schema == "bytes":
                prefix = self.pos
                size = self._long()
                start = self.pos
                self._advance(size, "a bytes value")
                if size >= BULK_MIN:
                    self.spans.append((prefix, start, self.pos))
            elif schema in self._named:
                self.walk(self._named[schema])
            else:
                raise CodecError(f"cannot walk unknown Avro type {schema!r}")
            return
        if isinstance(schema, list):
            branch = self._long()
            if not 0 <= branch < len(schema):
                raise CodecError(f"corrupt body: union branch {branch} of {len(schema)}")
            self.walk(schema[branch])
            return
        kind = schema["type"]
        if kind in ("record", "error"):
            for child in schema["fields"]:
                self.walk(child["type"])
        elif kind == "enum":
            self._long()
        elif kind == "fixed":
            self._advance(int(schema["size"]), "a fixed")
        elif kind == "array":
            items = schema["items"]
            self._blocks(lambda: self.walk(items), _zero_width(items, self._named))
        elif kind == "map":
            values = schema["values"]

            def entry() -> None:
                self._advance(self._long(), "a map key")
                self.walk(values)

            self._blocks(entry, False)
        else:
            self.walk(kind)  # a primitive with attributes, e.g. a logical type


def _zero_width(schema: Any, named: dict[str, Any]) -> bool:
    """Whether a value of ``schema`` may take no bytes (null, an empty record or fixed)."""
    if isinstance(schema, str):
        if schema in named:
            return _zero_width(named[schema], named)
        return schema == "null"
    if isinstance(schema, list):
        return False  # the branch index takes a byte
    kind = schema["type"]
    if kind in ("record", "error"):
        return all(_zero_width(child["type"], named) for child in schema["fields"])
    if kind == "fixed":
        return int(schema["size"]) == 0
    if kind in ("array", "map", "enum"):
        return False
    return _zero_width(kind, named)


def skeleton_of(
    data: bytes | memoryview, offset: int, spans: list[tuple[int, int, int]], nonce: bytes
) -> bytes:
    """The body from ``offset`` with each span's value replaced by a sentinel."""
    view = memoryview(data)
    pieces: list[Any] = []
    previous = offset
    for index, (prefix, _, end) in enumerate(spans):
        pieces += [view[previous:prefix], bytes((_SENTINEL_PREFIX,)), _sentinel(nonce, index)]
        previous = end
    pieces.append(view[previous:])
    return b"".join(pieces)


def restore_bulk(node: Any, nonce: bytes, views: list[memoryview], used: list[int]) -> Any:
    """``node`` with each sentinel replaced by its view (in place: the datum is fresh from fastavro)."""
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = restore_bulk(value, nonce, views, used)
        return node
    if isinstance(node, list):
        for position, value in enumerate(node):
            node[position] = restore_bulk(value, nonce, views, used)
        return node
    if isinstance(node, bytes) and len(node) == _SENTINEL_SIZE and node.startswith(nonce):
        index = int.from_bytes(node[8:], "little")
        if index < len(views):
            used.append(index)
            return views[index]
    return node


def to_plain(node: Any) -> Any:
    """``node`` with every buffer leaf as ``bytes`` (the plain fastavro path)."""
    if isinstance(node, dict):
        return {key: to_plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [to_plain(value) for value in node]
    if isinstance(node, bytearray | memoryview):
        return bytes(node)
    return node
