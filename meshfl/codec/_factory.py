"""The codec interface daemons code against, and the factory that picks a framing from the settings."""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol, TypeVar

from meshfl.codec._registry import RegistryCodec
from meshfl.codec._schemas import SchemaStore
from meshfl.codec._single_object import SingleObjectCodec
from meshfl.events import Event
from meshfl.settings import MeshflSettings

E = TypeVar("E", bound=Event)


class EventCodec(Protocol):
    """Turns events into framed Avro messages and back; raises ``CodecError`` for anything undecodable."""

    def encode(self, event: Event) -> bytes: ...

    def encode_parts(self, event: Event) -> list[Any]:
        """``encode``'s bytes as pieces to concatenate (buffers of the event itself: read them only)."""
        ...

    def decode(self, data: bytes | memoryview) -> Event: ...

    def decode_as(self, data: bytes | memoryview, event_type: type[E]) -> E: ...


@cache
def default_store() -> SchemaStore:
    """The schemas shipped with meshfl, loaded once per process."""
    return SchemaStore()


def make_codec(settings: MeshflSettings, store: SchemaStore | None = None) -> EventCodec:
    """Schema Registry framing when ``settings.schema_registry_url`` is set, else single-object encoding.

    Either codec reads single-object messages; only the registry codec reads registry-framed ones.
    """
    schemas = store if store is not None else default_store()
    if settings.schema_registry_url:
        return RegistryCodec(settings.schema_registry_url, schemas)
    return SingleObjectCodec(schemas)
