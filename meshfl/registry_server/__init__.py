"""A real Confluent-compatible Schema Registry for development and tests, built from Maven Central.

    >>> from meshfl.registry_server import LocalSchemaRegistry
    >>> url = LocalSchemaRegistry(port=8081, cache_dir=cache, log_path=log).start()
    >>> # "http://127.0.0.1:8081/apis/ccompat/v6": set it as ``schema_registry_url``

The registry is Apicurio Registry (``pom.xml`` beside this module), built once with Maven and
Quarkus into ``<cache_dir>/schema-registry`` and run with in-memory storage.
"""

from __future__ import annotations

from meshfl.registry_server._build import RegistryServerError, build_registry, registry_version
from meshfl.registry_server._server import CCOMPAT_PATH, LocalSchemaRegistry

__all__ = ["CCOMPAT_PATH", "LocalSchemaRegistry", "RegistryServerError", "build_registry", "registry_version"]
