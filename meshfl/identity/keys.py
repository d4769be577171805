"""Ed25519 key files: generated with the ``cryptography`` library, private keys never leave their file.

Formats (so another tool can read them):

* private key: PKCS#8 PEM, unencrypted, file mode 0600 (refused when group or others can read it);
* public key: one line ``ed25519:<base64 of the raw 32-byte key>`` (the same text pins governance's
  key in a participant's settings);
* key id: the first 16 bytes of SHA-256 of the raw public key, as 32 lowercase hex digits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshfl.errors import ConfigError

__all__ = [
    "PUBLIC_PREFIX",
    "decode_public_key",
    "encode_public_key",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_bytes",
    "write_key_pair",
]

PUBLIC_PREFIX = "ed25519:"
PUBLIC_KEY_BYTES = 32


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key (RFC 8032 encoding)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    raw = key if isinstance(key, bytes) else public_bytes(key)
    return hashlib.sha256(raw).digest()[:16].hex()


def encode_public_key(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    raw = key if isinstance(key, bytes) else public_bytes(key)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")


def raw_public_key(raw: bytes) -> Ed25519PublicKey:
    """A public key from its 32 raw bytes; ``ConfigError`` when they are not one."""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ConfigError(f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"not an Ed25519 public key: {exc}") from exc


def decode_public_key(text: str) -> Ed25519PublicKey:
    """Parse ``ed25519:<base64>``."""
    value = text.strip()
    if not value.startswith(PUBLIC_PREFIX):
        raise ConfigError(f"a public key is written {PUBLIC_PREFIX}<base64>, not {value[:24]!r}")
    try:
        raw = base64.b64decode(value[len(PUBLIC_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"public key is not valid base64: {exc}") from exc
    return raw_public_key(raw)


def load_public_key(value: str | Path) -> Ed25519PublicKey:
    """A public key given inline (``ed25519:...``) or as the path of a ``.pub`` file."""
    text = str(value).strip()
    if text.startswith(PUBLIC_PREFIX):
        return decode_public_key(text)
    path = Path(text).expanduser()
    try:
        return decode_public_key(path.read_text(encoding="ascii"))
    except OSError as exc:
        raise ConfigError(f"cannot read public key file {path}: {exc}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a private key file, refusing one that group or others may read (as ssh does)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {exc}") from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"private key {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PKCS#8 PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def write_key_pair(private_path: Path, key: Ed25519PrivateKey, *, overwrite: bool = False) -> Path:
    """Write ``private_path`` (mode 0600, created so) and ``<stem>.pub`` beside it; returns the .pub path."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        descriptor = os.open(private_path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{private_path} exists; pass overwrite to replace it") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    os.chmod(private_path, 0o600)  # O_CREAT's mode is masked by the umask, and O_TRUNC keeps the old one
    public_path = private_path.with_suffix(".pub")
    public_path.write_text(encode_public_key(key) + "\n", encoding="ascii")
    return public_path
