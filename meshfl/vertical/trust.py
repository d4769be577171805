"""Who may say what in split learning: every split receiver checks an event's signature before it reads
a field that it acts on.

Who signs what (``expected_signer`` of each split event, used by ``meshfl.identity.sender_of``):
governance signs tasks, commands, versions, its gradients and top outputs (its key is pinned in every
participant's settings); a domain signs its reports, activations, gradients and alignment messages
(its key reaches everyone as a governance-signed ``KeyEvent``); a prediction requester
``<principal>~<tag>`` signs its request and its alignment messages with the principal's key. The
``party``/``sender`` an event names must be its signer, so a copy in another party's name is refused
(``impersonation``) and never counts as that party's first copy.

``SplitTrust`` is the live side of it for a daemon: the trust registry kept current from the ``keys``
topic and one ``EnvelopeVerifier`` (signature, key, freshness, replay), which counts and logs each
refusal with its reason; a refusal never raises.
"""

from __future__ import annotations

from collections import Counter

from meshfl.bus import Envelope
from meshfl.identity import Signer, TrustRegistry
from meshfl.identity.trust import EnvelopeVerifier, KeyFeed, governance_public_key
from meshfl.settings import MeshflSettings

__all__ = ["SplitTrust"]


class SplitTrust:
    """The registry, the feed keeping it current (none in pure tests) and the verifier of one daemon."""

    def __init__(
        self,
        registry: TrustRegistry,
        *,
        window_seconds: float,
        reader: str,
        feed: KeyFeed | None = None,
    ) -> None:
        self.registry = registry
        self._feed = feed
        self.verifier = EnvelopeVerifier(
            registry,
            window_seconds=window_seconds,
            reader=reader,
            refresh=None if feed is None else feed.drain,
        )

    @classmethod
    def from_settings(cls, settings: MeshflSettings, *, reader: str, own: Signer | None = None) -> SplitTrust:
        """Governance's pinned key, domain keys from the ``keys`` topic; ``own``: the daemon's own
        signer, trusted at once for its own events (read back at start-up) before governance's
        registration of it is read. ``ConfigError`` when governance's key is not pinned: split
        learning never runs unsigned."""
        registry = TrustRegistry(governance_public_key(settings))
        if own is not None:
            registry.pin(own.identity, own.public_key)
        feed = KeyFeed(settings, registry, client_id=f"{reader}-keys")
        return cls(registry, window_seconds=settings.signature_window_seconds, reader=reader, feed=feed)

    @property
    def refused(self) -> Counter[str]:
        """Refusals by policy (``unsigned``, ``bad_signature``, ``unknown_key``, ``impersonation``...)."""
        return self.verifier.refused

    def start(self) -> None:
        """Read the keys topic to its end (at start-up)."""
        if self._feed is not None:
            self._feed.drain()

    def take(self) -> None:
        """Apply the key events already fetched (once a loop: a revocation takes effect within one)."""
        if self._feed is not None:
            self._feed.take()

    def accept(self, env: Envelope) -> bool:
        """True when ``env`` is signed by whoever must sign it, with a trusted key, and fresh."""
        return self.verifier.accept(env)

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
