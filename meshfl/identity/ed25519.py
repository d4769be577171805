"""The two hot Ed25519 operations, sign and verify (RFC 8032), through libsodium (PyNaCl).

Keys stay ``cryptography`` objects everywhere else (generation, PEM files, the registry); only these
two calls go to libsodium, on the raw 32-byte keys, because they run on every event and every chunk
seal: on this project's 2-core machine libsodium signs in 47 us against OpenSSL's 120 us and verifies
in 125 us against 198 us (session 7). Both implement the same scheme, so signatures made by either
verify with the other; libsodium's verification is the stricter one (it also refuses small-order
keys and points, which no honest signer produces), so nothing that failed before passes now.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_BYTES = 64


class SigningKey:
    """A private key in libsodium's form (seed and public key), made once per signer."""

    __slots__ = ("_secret",)

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        seed = private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        _public, self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message`` (deterministic, as RFC 8032 defines it)."""
        return nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_BYTES]


def verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s (32 raw bytes) over ``message``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True
