"""The public surface is what we say it is (the httpx habit: a test pins the export list)."""

from __future__ import annotations

import meshfl


def test_export_list() -> None:
    assert sorted(meshfl.__all__) == sorted(
        [
            "BrokerError",
            "BusError",
            "ChunkError",
            "CodecError",
            "ConfigError",
            "DataContractError",
            "MeshflError",
            "MeshflSettings",
            "ReplayError",
            "TensorCodecError",
            "UnknownSchemaError",
            "__version__",
            "load_settings",
            "subscribe",
        ]
    )
    for name in meshfl.__all__:
        assert getattr(meshfl, name) is not None


def test_errors_share_one_base() -> None:
    for name in meshfl.__all__:
        value = getattr(meshfl, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, meshfl.MeshflError)
