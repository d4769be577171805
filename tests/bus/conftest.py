"""Fixtures of the bus tests: the codec and settings whose topics exist."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from meshfl.bus import ensure_topics
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
