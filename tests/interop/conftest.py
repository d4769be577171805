"""The federation fixtures (example domains, daemon threads), shared with ``tests/federation``."""

from __future__ import annotations

from tests.federation.conftest import daemons, mesh_root

__all__ = ["daemons", "mesh_root"]
