"""Fixtures of the bus tests: the codec, settings whose topics exist, a signer and a seal check."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from meshfl.bus import ensure_topics
from meshfl.bus._chunk_seal import SealCheck
from meshfl.identity import Signer, TrustRegistry, generate_private_key
from meshfl.settings import MeshflSettings

if TYPE_CHECKING:
    from meshfl.codec import EventCodec


@pytest.fixture
def codec(settings: MeshflSettings) -> EventCodec:
    from meshfl.codec import make_codec  # imported here so the pure tests run without the codec

    return make_codec(settings)


@pytest.fixture
def bus_settings(settings: MeshflSettings) -> MeshflSettings:
    """The test's settings with its topics created."""
    ensure_topics(settings)
    return settings


SEAL_WINDOW_S = 900.0


@pytest.fixture
def signer() -> Signer:
    """domain-a's signer, the one ``check`` trusts."""
    return Signer("domain-a", generate_private_key())


@pytest.fixture
def check(signer: Signer) -> SealCheck:
    """Seal checks with a registry that trusts ``signer`` for domain-a (a window of 15 minutes)."""
    registry = TrustRegistry(generate_private_key().public_key())
    registry.pin("domain-a", signer.public_key)
    return SealCheck(registry, window_seconds=SEAL_WINDOW_S)
