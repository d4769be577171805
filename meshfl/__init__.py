"""meshfl: federated learning inside a data mesh, over Apache Kafka.

The public surface for library users (data scientists, auditors, tooling); daemons are run with the
``meshfl`` command. Heavy modules load on first use, so ``import meshfl`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from meshfl.errors import (
    BrokerError,
    BusError,
    ChunkError,
    CodecError,
    ConfigError,
    DataContractError,
    MeshflError,
    ReplayError,
    TensorCodecError,
    UnknownSchemaError,
)

if TYPE_CHECKING:
    from meshfl.settings import MeshflSettings, load_settings
    from meshfl.subscribe import subscribe

_LAZY = {
    "subscribe": "meshfl.subscribe",
    "MeshflSettings": "meshfl.settings",
    "load_settings": "meshfl.settings",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":  # importlib.metadata is slow to load; only asked for now and then
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("meshfl")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0+unknown"
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'meshfl' has no attribute {name!r}")


__all__ = [
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
