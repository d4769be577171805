"""Apply ``meshfl.access.grants`` to a secured Kafka cluster through the Admin API.

For each principal: a SCRAM-SHA-512 credential (``alter_user_scram_credentials``; the password is
kept from an earlier run so running clients stay valid), exactly its ACLs (``create_acls``, and
``delete_acls`` for any other ALLOW ACL it holds, so a re-run after a role change is exact), and a
credentials file of librdkafka settings, mode 0600, ready for ``MESHFL_KAFKA``. Topics are created
first with the admin's rights: principals describe them but may not create any.

Passwords never reach a log line; what is reported names principals and files only.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import BaseModel

from meshfl.access.grants import Grant, Principal, Role
from meshfl.broker._security import write_private
from meshfl.bus import ensure_topics
from meshfl.errors import BusError, ConfigError
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings

log = get_logger("meshfl.access")

SCRAM_ITERATIONS = 8192
_USER_KEYS = ("sasl.username", "sasl.password")
_RESOURCES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}
_PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_OPERATIONS = {"READ": AclOperation.READ, "WRITE": AclOperation.WRITE, "DESCRIBE": AclOperation.DESCRIBE}


class Provisioned(BaseModel):
    """What ``provision`` did for one principal (no secret in it)."""

    principal: str
    role: Role
    acls: int
    removed_acls: int
    credentials_file: Path


def acl_binding(principal: Principal, grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCES[grant.resource],
        grant.name,
        _PATTERNS[grant.pattern],
        principal.kafka_principal,
        "*",
        _OPERATIONS[grant.operation],
        AclPermissionType.ALLOW,
    )


def client_settings(admin: MeshflSettings, username: str, password: str) -> dict[str, Any]:
    """A principal's librdkafka settings: the admin's connection settings with its own user."""
    kafka = {key: value for key, value in admin.kafka.items() if key not in _USER_KEYS}
    return {**kafka, "sasl.username": username, "sasl.password": password}


def connected(settings: MeshflSettings, config: dict[str, Any]) -> MeshflSettings:
    """``settings`` on the cluster that librdkafka ``config`` describes (bootstrap plus credentials)."""
    kafka = dict(config)
    bootstrap = kafka.pop("bootstrap.servers", settings.bootstrap_servers)
    return settings.model_copy(update={"bootstrap_servers": bootstrap, "kafka": {**settings.kafka, **kafka}})


def principal_settings(admin: MeshflSettings, credentials_file: Path) -> MeshflSettings:
    """The admin's settings with a provisioned principal's credentials instead of the admin's."""
    kafka = json.loads(credentials_file.read_text())
    return admin.model_copy(update={"kafka": kafka})


def provision(
    admin: MeshflSettings, principals: list[Principal], out_dir: Path, *, timeout: float = 30.0
) -> list[Provisioned]:
    """Create the topics, then each principal's credential, ACLs and ``<out_dir>/<name>.json``."""
    if "sasl.username" not in admin.kafka:
        raise ConfigError(
            "provisioning needs the cluster admin's SASL settings in `kafka` (MESHFL_KAFKA), e.g. the "
            "admin.json that `meshfl broker start --security scram` writes"
        )
    ensure_topics(admin, timeout=timeout)
    client = AdminClient(admin.client_config())
    passwords = {p.name: _password(out_dir / f"{p.name}.json") for p in principals}
    _upsert_credentials(client, passwords, timeout)
    done = []
    for principal in principals:
        created, removed = _apply_acls(client, principal, timeout)
        path = out_dir / f"{principal.name}.json"
        settings = client_settings(admin, principal.name, passwords[principal.name])
        write_private(path, json.dumps(settings, indent=2) + "\n")
        done.append(
            Provisioned(
                principal=principal.name,
                role=principal.role,
                acls=created,
                removed_acls=removed,
                credentials_file=path,
            )
        )
        log.info("principal provisioned", principal=principal.name, role=principal.role.value, acls=created)
    existing = set(client.list_topics(timeout=timeout).topics)
    for principal in principals:
        visible = {g.name for g in principal.grants if g.resource == "topic" and g.operation == "DESCRIBE"}
        wait_effective(admin, principal.name, passwords[principal.name], visible & existing, timeout=timeout)
    return done


def wait_effective(
    admin: MeshflSettings, username: str, password: str, topics: set[str], *, timeout: float
) -> None:
    """Block until the cluster accepts ``username`` and its ACLs apply (it sees ``topics``).

    A new credential and new ACLs reach the brokers' authorizers a moment after the Admin API
    answers; a client started in that moment would be refused, which is fatal for it.
    """
    config = {**admin.client_config(), **client_settings(admin, username, password)}
    config["logger"] = _quiet_logger()
    deadline = time.monotonic() + timeout
    probe = AdminClient(config)
    seen: set[str] = set()
    while True:
        try:
            seen = set(probe.list_topics(timeout=min(5.0, max(0.5, deadline - time.monotonic()))).topics)
            if topics <= seen:
                return
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise BusError(f"principal {username} cannot authenticate after provisioning: {exc}") from exc
        if time.monotonic() > deadline:
            raise BusError(f"the ACLs of {username} did not apply in {timeout} s: {sorted(topics - seen)}")
        time.sleep(0.2)


def _password(path: Path) -> str:
    """The password of an earlier run's credentials file, else a new random one."""
    if path.is_file():
        try:
            return str(json.loads(path.read_text())["sasl.password"])
        except (ValueError, KeyError):
            log.warning("credentials file unreadable; issuing a new password", path=str(path))
    return secrets.token_urlsafe(24)


def _upsert_credentials(client: AdminClient, passwords: dict[str, str], timeout: float) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [
        UserScramCredentialUpsertion(name, info, password.encode()) for name, password in passwords.items()
    ]
    futures = client.alter_user_scram_credentials(upserts, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise BusError(f"creating the SCRAM credential of {name} failed: {exc.args[0]}") from exc


def _apply_acls(client: AdminClient, principal: Principal, timeout: float) -> tuple[int, int]:
    """Make the principal's ALLOW ACLs exactly its grants; return (wanted, removed)."""
    wanted = {acl_binding(principal, grant) for grant in principal.grants}
    every = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        principal.kafka_principal,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    try:
        existing = set(client.describe_acls(every, request_timeout=timeout).result())
        stale = [acl for acl in existing if acl not in wanted]
        if stale:
            filters = [
                AclBindingFilter(
                    acl.restype,
                    acl.name,
                    acl.resource_pattern_type,
                    acl.principal,
                    acl.host,
                    acl.operation,
                    acl.permission_type,
                )
                for acl in stale
            ]
            for future in client.delete_acls(filters, request_timeout=timeout).values():
                future.result()
        missing = [acl for acl in wanted if acl not in existing]
        if missing:
            for future in client.create_acls(missing, request_timeout=timeout).values():
                future.result()
    except KafkaException as exc:
        raise BusError(f"setting the ACLs of {principal.name} failed: {exc.args[0]}") from exc
    return len(wanted), len(stale)


def _quiet_logger() -> Any:
    import logging

    quiet = logging.getLogger("meshfl.access.probe")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return quiet
