"""Key files: private keys 0600 and refused when readable by others; public keys as one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshfl.errors import ConfigError
from meshfl.identity import (
    encode_public_key,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    write_key_pair,
)


def test_write_and_load(tmp_path: Path) -> None:
    key = generate_private_key()
    public_path = write_key_pair(tmp_path / "keys" / "signing.key", key)
    private = tmp_path / "keys" / "signing.key"
    assert private.stat().st_mode & 0o777 == 0o600
    assert key_id(load_private_key(private)) == key_id(key)
    text = public_path.read_text().strip()
    assert text == encode_public_key(key) and text.startswith("ed25519:")
    assert key_id(load_public_key(public_path)) == key_id(load_public_key(text)) == key_id(key)
    assert len(key_id(key)) == 32


def test_no_silent_overwrite_and_open_modes_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    write_key_pair(path, generate_private_key())
    with pytest.raises(ConfigError, match="exists"):
        write_key_pair(path, generate_private_key())
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_private_key(path)
    write_key_pair(path, generate_private_key(), overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text", ["rsa:AAAA", "ed25519:not-base64!", "ed25519:AAAA"])
def test_bad_public_keys(text: str) -> None:
    with pytest.raises(ConfigError):
        load_public_key(text)
