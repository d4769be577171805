"""The secured node's config and security material, checked without starting Java."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509

from meshfl.broker import SecurityMode
from meshfl.broker._config import ClusterLayout, server_properties
from meshfl.broker._process import run_tool
from meshfl.broker._security import AUTHORIZER, load_or_create
from meshfl.errors import BrokerError


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _layout(mode: SecurityMode) -> ClusterLayout:
    return ClusterLayout.new(kafka_version="4.1.1", host="127.0.0.1", port=20000, brokers=1, security=mode)


def test_scram_node_authenticates_every_listener_and_authorizes(tmp_path: Path) -> None:
    layout = _layout(SecurityMode.SCRAM)
    security = load_or_create(tmp_path, SecurityMode.SCRAM, "127.0.0.1")
    assert security is not None
    props = _props(server_properties(layout, layout.nodes[0], tmp_path / "data", security))
    assert props["listeners"] == "CLIENT://127.0.0.1:20000,CONTROLLER://127.0.0.1:20001"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT"
    assert "PLAINTEXT://" not in props["listeners"]  # no unauthenticated way in
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["authorizer.class.name"] == AUTHORIZER
    assert props["super.users"] == "User:admin"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    admin = tmp_path / "security" / "admin.json"
    assert stat.S_IMODE(admin.stat().st_mode) == 0o600
    assert json.loads(admin.read_text())["sasl.password"] == security.admin_password.get_secret_value()
    again = load_or_create(tmp_path, SecurityMode.SCRAM, "127.0.0.1")
    assert again is not None and again.admin_password == security.admin_password  # stable across starts
    assert security.format_arguments()[0] == "--add-scram"
    assert security.admin_password.get_secret_value() not in repr(security)


def test_scram_tls_node_uses_pem_stores_of_a_generated_ca(tmp_path: Path) -> None:
    layout = _layout(SecurityMode.SCRAM_TLS)
    security = load_or_create(tmp_path, SecurityMode.SCRAM_TLS, "127.0.0.1")
    assert security is not None and security.ca_file is not None and security.keystore_file is not None
    props = _props(server_properties(layout, layout.nodes[0], tmp_path / "data", security))
    assert props["listener.security.protocol.map"] == "CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_SSL"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert security.client_config()["ssl.ca.location"] == str(security.ca_file)
    assert stat.S_IMODE(security.keystore_file.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(security.ca_file.read_bytes())
    chain = x509.load_pem_x509_certificates(security.keystore_file.read_bytes())
    server = chain[0]
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert b"PRIVATE KEY" in security.keystore_file.read_bytes()
    assert b"PRIVATE KEY" not in security.ca_file.read_bytes()


def test_plain_layout_is_unchanged_and_old_layouts_read_as_plain() -> None:
    layout = _layout(SecurityMode.NONE)
    props = _props(server_properties(layout, layout.nodes[0], Path("/d")))
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert "authorizer.class.name" not in props
    old = layout.model_dump(exclude={"security"})
    assert ClusterLayout.model_validate(old).security == SecurityMode.NONE


def test_a_failing_tool_never_shows_the_password() -> None:
    from pydantic import SecretStr

    secret = SecretStr("hunter2-very-secret")
    command = [sys.executable, "-c", "import sys; print(sys.argv[1]); sys.exit(3)", "hunter2-very-secret"]
    with pytest.raises(BrokerError) as caught:
        run_tool(command, secret=secret)
    assert "hunter2" not in str(caught.value)
    assert "exit 3" in str(caught.value)
