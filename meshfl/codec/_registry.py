"""Confluent Schema Registry framing: magic byte ``00``, the 4-byte big-endian schema id, the Avro body.

Schemas are registered under the subject ``<record full name>`` (RecordNameStrategy: several event types
share a topic) in their self-contained expanded form, so the registry needs no schema references. Ids are
cached both ways; a reader fetches an unknown id once, then resolves it to the current reader schema.
A registry codec also reads single-object messages whose fingerprint is known locally.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from meshfl.codec._body import decode_body, encode_body, encode_body_parts
from meshfl.codec._schemas import SchemaStore, StoredSchema, compile_schema
from meshfl.codec._single_object import MARKER, SingleObjectCodec, check_type
from meshfl.errors import CodecError, ConfigError, MeshflError, RegistryUnavailableError, UnknownSchemaError
from meshfl.events import Event
from meshfl.logs import get_logger

log = get_logger(__name__)

MAGIC = b"\x00"
_ID = struct.Struct(">I")
HEADER_SIZE = 1 + _ID.size

E = TypeVar("E", bound=Event)

_TRANSIENT_STATUS = frozenset({408, 425, 429})


def _transient(exc: SchemaRegistryError) -> bool:
    """A registry answer worth retrying: server errors, throttling, timeouts (not 4xx refusals)."""
    status = exc.http_status_code
    return status is None or status < 0 or status >= 500 or status in _TRANSIENT_STATUS


@cache
def _shared_client(url: str) -> SchemaRegistryClient:
    """One client per URL and process: its HTTP pool and caches are shared; ``mock://`` ones share state."""
    return SchemaRegistryClient.new_client({"url": url})


class RegistryCodec:
    """Frames events in the Confluent wire format against a Schema Registry (``mock://`` works in tests)."""

    def __init__(
        self,
        url: str,
        store: SchemaStore,
        *,
        client: SchemaRegistryClient | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if not url:
            raise ConfigError("a Schema Registry URL is required")
        self.url = url
        self.store = store
        if client is not None:
            self._client = client
        elif config:
            self._client = SchemaRegistryClient.new_client({"url": url, **config})
        else:
            self._client = _shared_client(url)
        self._single_object = SingleObjectCodec(store)
        self._ids: dict[str, bytes] = {}  # full name -> header of the current schema
        self._writers: dict[int, tuple[StoredSchema, StoredSchema]] = {}  # id -> (writer, reader)
        self._lock = threading.Lock()

    def _header(self, schema: StoredSchema) -> bytes:
        header = self._ids.get(schema.full_name)
        if header is not None:
            return header
        with self._lock:
            avro = Schema(schema.schema_str, "AVRO")
            try:
                try:
                    schema_id = self._client.register_schema(schema.full_name, avro)
                except SchemaRegistryError as exc:
                    if exc.http_status_code != 409:
                        raise
                    # another client registered the same schema a moment ago (Apicurio answers 409)
                    schema_id = self._client.lookup_schema(schema.full_name, avro).schema_id
            except SchemaRegistryError as exc:
                kind = RegistryUnavailableError if _transient(exc) else CodecError
                raise kind(f"cannot register {schema.full_name} at {self.url}: {exc}") from exc
            except Exception as exc:  # transport (httpx, authlib): the registry may come back
                raise RegistryUnavailableError(
                    f"cannot register {schema.full_name} at {self.url}: {exc}"
                ) from exc
            log.info("schema registered", subject=schema.full_name, schema_id=schema_id, url=self.url)
            header = MAGIC + _ID.pack(schema_id)
            self._ids[schema.full_name] = header
        return header

    def schema_id(self, event_type: type[Event]) -> int:
        """The registry id of an event type's current schema (registering it if needed)."""
        header = self._header(self.store.current(event_type.AVRO_NAME))
        return int(_ID.unpack_from(header, 1)[0])

    def encode(self, event: Event) -> bytes:
        schema = self.store.current(event.AVRO_NAME)
        return encode_body(self._header(schema), schema, event)

    def encode_parts(self, event: Event) -> list[Any]:
        """``encode``'s bytes as unjoined pieces (see ``meshfl.codec._body.encode_body_parts``)."""
        schema = self.store.current(event.AVRO_NAME)
        return encode_body_parts(self._header(schema), schema, event)

    def _resolve(self, schema_id: int) -> tuple[StoredSchema, StoredSchema]:
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not in the registry at {self.url}"
                ) from exc
            kind = RegistryUnavailableError if _transient(exc) else CodecError
            raise kind(f"cannot fetch schema id {schema_id} from {self.url}: {exc}") from exc
        except Exception as exc:  # transport errors (httpx) are not SchemaRegistryError: retry later
            raise RegistryUnavailableError(
                f"cannot fetch schema id {schema_id} from {self.url}: {exc}"
            ) from exc
        if registered.schema_type not in (None, "AVRO"):
            raise CodecError(f"schema id {schema_id} is a {registered.schema_type} schema, not Avro")
        try:
            document = json.loads(registered.schema_str or "")
            fetched = compile_schema(document, version=f"registry:{schema_id}")
        except (json.JSONDecodeError, MeshflError) as exc:
            raise CodecError(
                f"schema id {schema_id} from {self.url} is not a usable Avro schema: {exc}"
            ) from exc
        writer = self.store.find(fetched.fingerprint) or fetched
        reader = self.store.current(writer.full_name)
        self._writers[schema_id] = (writer, reader)
        return writer, reader

    def decode(self, data: bytes | memoryview) -> Event:
        if bytes(data[:2]) == MARKER:
            return self._single_object.decode(data)
        if not len(data) or data[0] != MAGIC[0]:
            raise CodecError(
                f"not a Schema Registry message: first byte {bytes(data[:1]).hex()!r}, expected 00"
            )
        if len(data) < HEADER_SIZE:
            raise CodecError(f"truncated Schema Registry header: {len(data)} bytes, need {HEADER_SIZE}")
        (schema_id,) = _ID.unpack_from(data, 1)
        writer, reader = self._resolve(schema_id)
        return decode_body(data, HEADER_SIZE, writer, reader)

    def decode_as(self, data: bytes | memoryview, event_type: type[E]) -> E:
        return check_type(self.decode(data), event_type)
