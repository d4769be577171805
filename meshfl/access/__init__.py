"""Broker-side access control for a federation: principals, their Kafka ACLs, and provisioning.

    >>> from meshfl.access import federation, provision
    >>> provision(admin_settings, federation(settings, ["retail", "finance"]), Path("secrets"))

``grants`` says who may do what (pure data); ``provision`` applies it to a secured cluster with the
Admin API (SCRAM credentials and ACLs) and writes one credentials file a principal.
"""

from __future__ import annotations

from meshfl.access.grants import (
    TOPIC_ACCESS,
    Grant,
    Principal,
    Role,
    auditor,
    domain,
    domain_principal_name,
    federation,
    governance,
)
from meshfl.access.provision import (
    Provisioned,
    client_settings,
    connected,
    principal_settings,
    provision,
)

__all__ = [
    "TOPIC_ACCESS",
    "Grant",
    "Principal",
    "Provisioned",
    "Role",
    "auditor",
    "client_settings",
    "connected",
    "domain",
    "domain_principal_name",
    "federation",
    "governance",
    "principal_settings",
    "provision",
]
