"""Events on the wire: Avro schemas, single-object and Schema Registry framing, schema resolution.

    codec = make_codec(settings)
    payload = codec.encode(update)                  # bytes for a Kafka message value
    update = codec.decode_as(payload, ModelUpdate)  # CodecError if it is anything else

Writers always use the current schema of an event; readers accept any released or current writer schema
and resolve it to the current one (schemas/released/<version>/ keeps what was released).
"""

from __future__ import annotations

from meshfl.codec._factory import EventCodec, default_store, make_codec
from meshfl.codec._registry import RegistryCodec
from meshfl.codec._schemas import SchemaStore, StoredSchema, schemas_dir
from meshfl.codec._single_object import SingleObjectCodec

__all__ = [
    "EventCodec",
    "RegistryCodec",
    "SchemaStore",
    "SingleObjectCodec",
    "StoredSchema",
    "default_store",
    "make_codec",
    "schemas_dir",
]
