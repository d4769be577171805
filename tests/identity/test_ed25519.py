"""libsodium's Ed25519 (meshfl.identity.ed25519) against OpenSSL's (cryptography): the same signatures."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshfl.identity.ed25519 import SigningKey, verifies
from meshfl.identity.keys import public_bytes

# RFC 8032, section 7.1, TEST 1 (empty message)
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_the_rfc_vector_signs_and_verifies() -> None:
    key = Ed25519PrivateKey.from_private_bytes(RFC_SEED)
    assert public_bytes(key) == RFC_PUBLIC
    assert SigningKey(key).sign(b"") == RFC_SIGNATURE
    assert verifies(RFC_PUBLIC, RFC_SIGNATURE, b"")


def test_signatures_equal_openssl_and_verify_either_way() -> None:
    for size in (0, 1, 300, 70_000):
        key = Ed25519PrivateKey.generate()
        message = os.urandom(size)
        ours = SigningKey(key).sign(message)
        assert ours == key.sign(message)  # deterministic: the same 64 bytes
        key.public_key().verify(ours, message)  # OpenSSL accepts libsodium's
        assert verifies(public_bytes(key), key.sign(message), message)


def test_anything_but_the_signers_own_signature_fails() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    public, signature = public_bytes(key), SigningKey(key).sign(b"event")
    assert not verifies(public, signature, b"event!")
    assert not verifies(public_bytes(other), signature, b"event")
    assert not verifies(public, signature[:63], b"event")
    assert not verifies(public, bytes(64), b"event")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verifies(public, flipped, b"event")
    assert not verifies(public[:31], signature, b"event")  # a malformed key fails, never raises
    assert not verifies(bytes(32), signature, b"event")  # a small-order key: libsodium refuses it
