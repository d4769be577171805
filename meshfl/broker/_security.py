"""Kafka's own security for the local cluster: SASL SCRAM-SHA-512, optional TLS, StandardAuthorizer.

Nothing here is a security mechanism of meshfl's own: the launcher only *configures* Kafka.

- ``scram``: clients authenticate with SCRAM-SHA-512 over ``SASL_PLAINTEXT``; ``scram-tls`` adds TLS
  (``SASL_SSL``) with a CA this module generates (``cryptography``) and PEM key stores, which Kafka
  reads natively (KIP-651) and librdkafka takes as ``ssl.ca.location``.
- The first SCRAM user, the launcher's ``admin`` (also the brokers' own inter-broker identity), is
  written into the metadata when the storage is formatted (``--add-scram``, KIP-900); every other
  principal is created later through the Admin API (``meshfl broker provision``).
- The controller listener uses SASL/PLAIN with that same admin: SCRAM credentials live in the
  metadata log, which controllers must reach before they can read it.
- Authorization: ``StandardAuthorizer`` with ``super.users=User:admin`` and no access without an ACL.

The secrets stay in the data dir (mode 0600): ``security/admin.json`` holds the admin's librdkafka
settings, ready for ``MESHFL_KAFKA``; ``security/ca.pem`` is the CA clients trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from meshfl.errors import BrokerError

ADMIN_USER = "admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_CERT_DAYS = 825


class SecurityMode(StrEnum):
    NONE = "none"
    SCRAM = "scram"
    SCRAM_TLS = "scram-tls"


class BrokerSecurity(BaseModel):
    """The secured cluster's admin credential and TLS files (what clients and brokers need)."""

    mode: SecurityMode
    admin_password: SecretStr
    ca_file: Path | None = None
    keystore_file: Path | None = None

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.mode == SecurityMode.SCRAM_TLS else "SASL_PLAINTEXT"

    def client_config(self, username: str = ADMIN_USER, password: str | None = None) -> dict[str, Any]:
        """librdkafka settings of a client of this cluster (the admin unless told otherwise)."""
        config: dict[str, Any] = {
            "security.protocol": self.protocol,
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": username,
            "sasl.password": password if password is not None else self.admin_password.get_secret_value(),
        }
        if self.ca_file is not None:
            config["ssl.ca.location"] = str(self.ca_file)
        return config

    def server_settings(self) -> dict[str, str | int]:
        """The ``server.properties`` entries of a secured node (listeners are set by the caller)."""
        password = self.admin_password.get_secret_value()
        scram_jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{password}";'
        )
        plain_jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{ADMIN_USER}" password="{password}" user_{ADMIN_USER}="{password}";'
        )
        settings: dict[str, str | int] = {
            "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.client.scram-sha-512.sasl.jaas.config": scram_jaas,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain_jaas,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }
        if self.mode == SecurityMode.SCRAM_TLS:
            if self.ca_file is None or self.keystore_file is None:
                raise BrokerError("scram-tls needs a CA and a key store; the security dir is incomplete")
            settings.update(
                {
                    "ssl.keystore.type": "PEM",
                    "ssl.keystore.location": self.keystore_file.as_posix(),
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.location": self.ca_file.as_posix(),
                    "ssl.client.auth": "none",
                    "ssl.endpoint.identification.algorithm": "https",
                }
            )
        return settings

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that write the admin's SCRAM credential (KIP-900)."""
        password = self.admin_password.get_secret_value()
        return ["--add-scram", f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={password}]"]


def security_dir(data_dir: Path) -> Path:
    return data_dir / "security"


def load_or_create(data_dir: Path, mode: SecurityMode, host: str) -> BrokerSecurity | None:
    """The cluster's security material, created on first use (admin password, CA, key store)."""
    if mode == SecurityMode.NONE:
        return None
    folder = security_dir(data_dir)
    admin_file = folder / "admin.json"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    if admin_file.is_file():
        try:
            stored = json.loads(admin_file.read_text())
            password = str(stored["sasl.password"])
        except (ValueError, KeyError) as exc:
            raise BrokerError(f"{admin_file} is corrupt ({exc}); purge the cluster and start again") from exc
    else:
        password = secrets.token_urlsafe(24)
    security = BrokerSecurity(mode=mode, admin_password=SecretStr(password))
    if mode == SecurityMode.SCRAM_TLS:
        ca_file, keystore = folder / "ca.pem", folder / "broker.pem"
        if not (ca_file.is_file() and keystore.is_file()):
            _write_tls(folder, host)
        security = security.model_copy(update={"ca_file": ca_file, "keystore_file": keystore})
    write_private(admin_file, json.dumps(security.client_config(), indent=2) + "\n")
    return security


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600, never briefly world-readable), in a
    folder only its owner can list when this creates it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as sink:
        sink.write(text)
    path.chmod(0o600)


def _write_tls(folder: Path, host: str) -> None:
    """A CA and one server certificate (SAN: the host, 127.0.0.1, localhost) shared by every node."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshfl local broker CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    loopback = ipaddress.ip_address("127.0.0.1")
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(loopback)]
    try:
        address = ipaddress.ip_address(host)
        if address != loopback:
            names.append(x509.IPAddress(address))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    write_private(folder / "ca.key", ca_key.private_bytes(pem, pkcs8, plain).decode())
    chain = key.private_bytes(pem, pkcs8, plain) + cert.public_bytes(pem) + ca_cert.public_bytes(pem)
    write_private(folder / "broker.pem", chain.decode())
