"""The trust registry: which key may sign for whom, learnt from governance-signed ``KeyEvent`` s.

Governance's own public key is pinned in every participant's settings and signs for ``governance``;
every other key reaches the registry as a ``KeyEvent`` signed by that pinned key. A key belongs to one
domain for good; a revocation is final and refuses every signature dated at or after it (earlier ones
stay valid, so an auditor can still check the history). Pure: no I/O; ``meshfl.identity.trust`` feeds
it from the ``keys`` topic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshfl.errors import ConfigError, SignatureError
from meshfl.events import (
    Event,
    GovernanceDecision,
    KeyAction,
    KeyEvent,
    ModelVersion,
    Signature,
    TrainingTask,
)
from meshfl.identity.canonical import StateDigest
from meshfl.identity.keys import key_id, raw_public_key
from meshfl.identity.signing import GOVERNANCE, verify_event
from meshfl.state_events import GovernanceState

__all__ = ["GOVERNANCE_EVENTS", "KeyRecord", "TrustRegistry", "sender_of"]

GOVERNANCE_EVENTS: tuple[type[Event], ...] = (
    TrainingTask,
    ModelVersion,
    GovernanceDecision,
    KeyEvent,
    GovernanceState,
)
"""Events only governance may sign; every other event is signed by the domain its ``domain`` names."""


def sender_of(event: Event) -> str:
    """Who must have signed ``event``: governance for its own events, the answer of the event's own
    ``expected_signer()`` when it has one (the split events, whose sender field is not ``domain``),
    else the event's domain."""
    if isinstance(event, GOVERNANCE_EVENTS):
        return GOVERNANCE
    expected = getattr(event, "expected_signer", None)
    if callable(expected):
        return str(expected())
    domain = getattr(event, "domain", None)
    if not isinstance(domain, str):
        raise SignatureError("impersonation", f"no rule says who signs a {type(event).__name__}")
    return domain


@dataclass(frozen=True)
class KeyRecord:
    domain: str
    key_id: str
    public_key: Ed25519PublicKey
    registered_at: datetime | None
    revoked_at: datetime | None = None

    def usable_at(self, moment: datetime) -> bool:
        return self.revoked_at is None or moment < self.revoked_at


class TrustRegistry:
    """Domain keys by key id, plus the pinned governance key; ``verify`` checks one event end to end."""

    def __init__(self, governance_key: Ed25519PublicKey) -> None:
        self._governance = governance_key
        self._governance_id = key_id(governance_key)
        self._keys: dict[str, KeyRecord] = {}

    @property
    def governance_key(self) -> Ed25519PublicKey:
        return self._governance

    @property
    def governance_key_id(self) -> str:
        return self._governance_id

    def __iter__(self) -> Iterator[KeyRecord]:
        return iter(sorted(self._keys.values(), key=lambda r: (r.domain, r.key_id)))

    def keys_of(self, domain: str) -> list[KeyRecord]:
        return [record for record in self if record.domain == domain]

    def pin(self, domain: str, public_key: Ed25519PublicKey) -> None:
        """Trust ``public_key`` for ``domain`` locally (a participant's own key, before governance
        registers it); a key the registry already holds, or holds for another domain, is left alone."""
        kid = key_id(public_key)
        if kid not in self._keys and domain != GOVERNANCE:
            self._keys[kid] = KeyRecord(domain, kid, public_key, registered_at=None)

    def apply(self, event: KeyEvent) -> KeyRecord:
        """Take in one key event after checking governance signed it; raises ``SignatureError``."""
        self.verify(event)
        try:
            public_key = raw_public_key(event.public_key)
        except ConfigError as exc:
            raise SignatureError("bad_key_event", str(exc)) from exc
        if key_id(event.public_key) != event.key_id:
            raise SignatureError("bad_key_event", f"key id {event.key_id} is not that of its public key")
        if event.domain == GOVERNANCE:
            raise SignatureError("bad_key_event", "the governance key is pinned in settings, not registered")
        known = self._keys.get(event.key_id)
        if known is not None and known.domain != event.domain:
            raise SignatureError(
                "impersonation",
                f"key {event.key_id} already belongs to {known.domain!r}, not {event.domain!r}",
            )
        if event.action == KeyAction.REVOKED:
            base = known or KeyRecord(event.domain, event.key_id, public_key, registered_at=None)
            revoked = (
                event.effective_at if base.revoked_at is None else min(base.revoked_at, event.effective_at)
            )
            record = replace(base, revoked_at=revoked)
        elif known is not None:
            return known  # a registration again (or after a final revocation) changes nothing
        else:
            record = KeyRecord(event.domain, event.key_id, public_key, registered_at=event.effective_at)
        self._keys[event.key_id] = record
        return record

    def _key_for(self, signature: Signature) -> Ed25519PublicKey:
        if signature.signer == GOVERNANCE:
            if signature.key_id != self._governance_id:
                raise SignatureError(
                    "unknown_key", f"governance signs with key {self._governance_id}, not {signature.key_id}"
                )
            return self._governance
        record = self._keys.get(signature.key_id)
        if record is None:
            raise SignatureError(
                "unknown_key", f"key {signature.key_id} of {signature.signer!r} is not in the trust registry"
            )
        if record.domain != signature.signer:
            raise SignatureError(
                "impersonation",
                f"key {signature.key_id} belongs to {record.domain!r}, not {signature.signer!r}",
            )
        if not record.usable_at(signature.timestamp):
            raise SignatureError(
                "revoked_key",
                f"key {signature.key_id} of {record.domain!r} was revoked at "
                f"{record.revoked_at:%Y-%m-%dT%H:%M:%S}Z",
            )
        return record.public_key

    def verify(
        self, event: Event, *, sender: str | None = None, digests: Mapping[str, StateDigest] | None = None
    ) -> Signature:
        """Check that ``event`` is signed, by ``sender`` (default ``sender_of(event)``), with a key the
        registry trusts for it at the signing time, and that the signature matches. Returns the
        signature; raises ``SignatureError`` whose ``policy`` says which check failed."""
        signature = event.signature  # type: ignore[attr-defined]
        if signature is None:
            raise SignatureError("unsigned", f"{type(event).__name__} carries no signature")
        expected = sender if sender is not None else sender_of(event)
        if signature.signer != expected:
            raise SignatureError(
                "impersonation",
                f"{type(event).__name__} for {expected!r} is signed by {signature.signer!r}",
            )
        return verify_event(event, self._key_for(signature), digests=digests)
