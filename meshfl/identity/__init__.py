"""Identities: Ed25519 keys, signed events, the trust registry and replay protection.

Pure parts (no I/O): ``canonical`` (the documented byte layout a signature covers), ``signing``
(``Signer``, ``verify_event``), ``registry`` (``TrustRegistry``: who may sign for whom) and
``replay`` (``ReplayGuard``). ``keys`` reads and writes key files; ``trust`` connects all of it to
settings, domain folders and the ``keys`` topic.
"""

from __future__ import annotations

from meshfl.identity.canonical import (
    CURRENT_SCHEME,
    DOMAIN_TAG,
    SCHEME_1,
    SCHEME_2,
    Scheme,
    StateDigest,
    canonical_json,
    scheme_of,
    signed_bytes,
    state_digests,
)
from meshfl.identity.keys import (
    decode_public_key,
    encode_public_key,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    public_bytes,
    write_key_pair,
)
from meshfl.identity.registry import GOVERNANCE_EVENTS, KeyRecord, TrustRegistry, sender_of
from meshfl.identity.replay import ReplayGuard
from meshfl.identity.signing import GOVERNANCE, Signer, verify_event

__all__ = [
    "CURRENT_SCHEME",
    "DOMAIN_TAG",
    "GOVERNANCE",
    "GOVERNANCE_EVENTS",
    "SCHEME_1",
    "SCHEME_2",
    "KeyRecord",
    "ReplayGuard",
    "Scheme",
    "Signer",
    "StateDigest",
    "TrustRegistry",
    "canonical_json",
    "decode_public_key",
    "encode_public_key",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_bytes",
    "scheme_of",
    "sender_of",
    "signed_bytes",
    "state_digests",
    "verify_event",
    "write_key_pair",
]
