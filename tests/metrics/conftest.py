"""The federation fixtures (example domains, daemon processes), shared with ``tests/federation``."""

from __future__ import annotations

from tests.federation.conftest import mesh_root, processes

__all__ = ["mesh_root", "processes"]
