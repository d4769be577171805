"""Signing and verifying events: Ed25519 (RFC 8032) over the canonical form of ``canonical``.

``Signer.sign`` returns a copy of the event carrying a ``Signature`` (signer, key id, timestamp,
per-sender sequence, scheme, value), always in ``CURRENT_SCHEME`` (2: BLAKE3 state digests);
``verify_event`` checks one against a public key in the scheme the signature names (1 or 2, so the
signatures already on the logs keep verifying) and raises ``SignatureError`` saying what is wrong.
Which key may sign for whom is the trust registry's business (``meshfl.identity.registry``), not this
module's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshfl.errors import SignatureError, TensorCodecError
from meshfl.events import Event, Signature
from meshfl.identity.canonical import CURRENT_SCHEME, StateDigest, signed_bytes
from meshfl.identity.ed25519 import SIGNATURE_BYTES, SigningKey, verifies
from meshfl.identity.keys import key_id, public_bytes

__all__ = ["GOVERNANCE", "Signer", "verify_event"]

GOVERNANCE = "governance"
"""The signer name of governance's events (tasks, versions, decisions, key events)."""

E = TypeVar("E", bound=Event)


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Signer:
    """Signs events as ``identity`` with one private key; thread-safe (agents sign from two threads).

    The sequence is microseconds since the epoch, bumped past the previous value, so it increases
    strictly within a process and across restarts of a sender whose clock does not go back.
    """

    def __init__(self, identity: str, private_key: Ed25519PrivateKey) -> None:
        self._identity = identity
        self._key = private_key
        self._sodium = SigningKey(private_key)  # the signing itself runs in libsodium (``ed25519``)
        self._key_id = key_id(private_key)
        self._lock = threading.Lock()
        self._last_sequence = 0

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def _next_sequence(self) -> int:
        with self._lock:
            self._last_sequence = max(self._last_sequence + 1, time.time_ns() // 1000)
            return self._last_sequence

    def sign(self, event: E, *, digests: Mapping[str, StateDigest] | None = None) -> E:
        """A copy of ``event`` with a fresh signature (any previous one is replaced).

        ``digests`` (``state_digests``) must be of the current scheme's algorithm: anything else is a
        caller's bug (say a version's SHA-256 handed over as its signature digest) and raises
        ``ValueError`` rather than being silently re-hashed.
        """
        for name, digest in (digests or {}).items():
            if not isinstance(digest, StateDigest) or digest.algorithm != CURRENT_SCHEME.algorithm:
                raise ValueError(
                    f"digest of {name!r} is {digest!r}; scheme {CURRENT_SCHEME.field} signs "
                    f"{CURRENT_SCHEME.algorithm} state digests (meshfl.identity.state_digests)"
                )
        unsigned = Signature(
            signer=self._identity,
            key_id=self._key_id,
            timestamp=_now_ms(),
            sequence=self._next_sequence(),
            value=b"",
            scheme=CURRENT_SCHEME.field,
        )
        value = self._sodium.sign(signed_bytes(event, unsigned, digests))
        return event.model_copy(update={"signature": unsigned.model_copy(update={"value": value})})


def verify_event(
    event: Event, public_key: Ed25519PublicKey, *, digests: Mapping[str, StateDigest] | None = None
) -> Signature:
    """Check ``event``'s signature with ``public_key``; returns the signature, raises ``SignatureError``.

    The scheme is the one the signature names (an unknown one fails); ``digests`` of another
    algorithm than that scheme's are not used (the state is hashed here instead).

    Only the cryptography is checked here: that the key belongs to ``signature.signer`` and that the
    signer may send this event is for the caller (``TrustRegistry.verify``).
    """
    signature = getattr(event, "signature", None)
    if signature is None:
        raise SignatureError("unsigned", f"{type(event).__name__} carries no signature")
    if len(signature.value) != SIGNATURE_BYTES:
        raise SignatureError(
            "bad_signature", f"signature has {len(signature.value)} bytes, not {SIGNATURE_BYTES}"
        )
    raw = public_bytes(public_key)
    if signature.key_id != key_id(raw):
        raise SignatureError("bad_signature", f"signed with key {signature.key_id}, checked with another")
    try:
        message = signed_bytes(event, signature, digests)
    except TensorCodecError as exc:
        raise SignatureError("bad_signature", f"tensors cannot be hashed: {exc}") from exc
    if not verifies(raw, signature.value, message):
        raise SignatureError(
            "bad_signature",
            f"Ed25519 signature by {signature.signer!r} (key {signature.key_id}) does not match the event",
        )
    return signature
