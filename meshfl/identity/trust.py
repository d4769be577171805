"""Identity at the edges: keys from settings and domain folders, the registry from the ``keys`` topic.

* governance's public key is pinned in settings (``governance_public_key``); without it a participant
  cannot tell a forged task from a real one, so building a verifier without it is a ``ConfigError``;
* a domain's private key lives in its folder, ``<domain dir>/keys/signing.key`` (``meshfl keys init``);
* ``EnvelopeVerifier`` checks consumed events (registry + replay guard) and counts what it refuses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshfl.bus import Envelope, EventConsumer, EventProducer, read_all
from meshfl.errors import ConfigError, SignatureError
from meshfl.events import KeyAction, KeyEvent, utcnow
from meshfl.identity.keys import key_id, load_private_key, load_public_key, public_bytes
from meshfl.identity.registry import TrustRegistry
from meshfl.identity.replay import ReplayGuard
from meshfl.identity.signing import GOVERNANCE, Signer
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

__all__ = [
    "DOMAIN_KEY_FILE",
    "EnvelopeVerifier",
    "KeyFeed",
    "domain_key_path",
    "domain_signer",
    "governance_public_key",
    "governance_signer",
    "publish_key_event",
    "read_registry",
    "register_domain_dir",
    "rotate_domain_key",
]

log = get_logger("meshfl.identity")

DOMAIN_KEY_FILE = Path("keys") / "signing.key"


def domain_key_path(domain_dir: Path) -> Path:
    return domain_dir / DOMAIN_KEY_FILE


def governance_public_key(settings: MeshflSettings) -> Ed25519PublicKey:
    if not settings.governance_public_key:
        raise ConfigError(
            "no governance public key pinned: set MESHFL_GOVERNANCE_PUBLIC_KEY (ed25519:... or the path of "
            "governance.pub, from `meshfl keys init --governance`); meshfl does not run unsigned"
        )
    return load_public_key(settings.governance_public_key)


def governance_signer(settings: MeshflSettings) -> Signer:
    """Governance's signer from ``governance_private_key``, checked against the pinned public key."""
    if settings.governance_private_key is None:
        raise ConfigError("governance signs its events: set MESHFL_GOVERNANCE_PRIVATE_KEY to its key file")
    key = load_private_key(settings.governance_private_key)
    if key_id(key) != key_id(governance_public_key(settings)):
        raise ConfigError(
            f"{settings.governance_private_key} is not the private half of the pinned governance public key"
        )
    return Signer(GOVERNANCE, key)


def domain_signer(domain_dir: Path, domain: str) -> Signer:
    path = domain_key_path(domain_dir)
    if not path.exists():
        raise ConfigError(
            f"domain {domain!r} has no signing key at {path}: run `meshfl keys init --domain-dir`"
        )
    return Signer(domain, load_private_key(path))


def _apply(registry: TrustRegistry, env: Envelope) -> None:
    if isinstance(env.event, KeyEvent):
        try:
            registry.apply(env.event)
        except SignatureError as exc:
            log.warning("key event refused", offset=env.offset, policy=exc.policy, reason=exc.reason)


def read_registry(settings: MeshflSettings, *, timeout: float = 10.0) -> TrustRegistry:
    """The trust registry as the ``keys`` topic says now; key events governance did not sign are skipped."""
    registry = TrustRegistry(governance_public_key(settings))
    for env in read_all(settings, Topic.KEYS, timeout=timeout):
        _apply(registry, env)
    return registry


def register_domain_dir(settings: MeshflSettings, signer: Signer, domain_dir: Path) -> KeyEvent:
    """Register the key in a domain's folder for the domain its ``domain.toml`` names."""
    from meshfl.domain.config import load_domain

    domain = load_domain(domain_dir).name
    public = load_private_key(domain_key_path(domain_dir)).public_key()
    return publish_key_event(settings, signer, domain, public, reason=f"registered from {domain_dir.name}")


def rotate_domain_key(
    settings: MeshflSettings, signer: Signer, domain_dir: Path
) -> tuple[KeyEvent, KeyEvent]:
    """A new key pair in the domain's folder, registered; then the old key revoked (in that order,
    so the domain is never without a valid key). The old private key is kept as ``signing.key.old``."""
    from meshfl.domain.config import load_domain
    from meshfl.identity.keys import generate_private_key, write_key_pair

    domain = load_domain(domain_dir).name
    path = domain_key_path(domain_dir)
    old = load_private_key(path)
    path.replace(path.with_name(path.name + ".old"))
    new = generate_private_key()
    write_key_pair(path, new)
    registered = publish_key_event(settings, signer, domain, new.public_key(), reason="rotation")
    revoked = publish_key_event(
        settings, signer, domain, old.public_key(), KeyAction.REVOKED, reason=f"rotated to {key_id(new)}"
    )
    return registered, revoked


class KeyFeed:
    """Keeps a long-running reader's registry current: a consumer of the ``keys`` topic from its start.

    ``take`` applies what is already fetched (no broker round trip: once a loop, so a revocation takes
    effect within a loop); ``drain`` reads to the end (at start-up, and when a key is unknown: a domain
    may have been registered a moment ago).
    """

    def __init__(self, settings: MeshflSettings, registry: TrustRegistry, *, client_id: str) -> None:
        self.registry = registry
        self._consumer = EventConsumer(settings, [Topic.KEYS], from_beginning=True, client_id=client_id)

    def take(self) -> None:
        env = self._consumer.poll(0.0)
        while env is not None:
            _apply(self.registry, env)
            env = self._consumer.poll(0.0)

    def drain(self) -> None:
        while True:
            env = self._consumer.poll(0.0 if self._consumer.at_end() else 0.5)
            if env is None:
                if self._consumer.at_end():
                    return
                continue
            _apply(self.registry, env)

    def close(self) -> None:
        self._consumer.close()


def publish_key_event(
    settings: MeshflSettings,
    signer: Signer,
    domain: str,
    public_key: Ed25519PublicKey,
    action: KeyAction = KeyAction.REGISTERED,
    *,
    reason: str = "",
    effective_at: datetime | None = None,
) -> KeyEvent:
    """Publish one governance-signed key event (``signer`` must be governance's) and wait for it."""
    if signer.identity != GOVERNANCE:
        raise ConfigError("only governance registers or revokes domain keys")
    event = KeyEvent(
        domain=domain,
        key_id=key_id(public_key),
        public_key=public_bytes(public_key),
        action=action,
        effective_at=effective_at or utcnow(),
        reason=reason,
    )
    with EventProducer(settings, signer=signer, client_id="meshfl-keys") as producer:
        producer.produce(Topic.KEYS, event, key=f"{domain}/{event.key_id}")
    log.info("key event published", domain=domain, key_id=event.key_id, action=action.value)
    return event


class EnvelopeVerifier:
    """Checks consumed events: signed by their sender with a trusted key, fresh, never seen before.

    ``refused`` counts refusals by policy; each is logged once with the record's coordinates.
    """

    def __init__(
        self,
        registry: TrustRegistry,
        *,
        window_seconds: float,
        reader: str,
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.refused: Counter[str] = Counter()
        self._replay = ReplayGuard(timedelta(seconds=window_seconds))
        self._reader = reader
        self._refresh = refresh

    @classmethod
    def for_governance_events(cls, settings: MeshflSettings, *, reader: str) -> EnvelopeVerifier:
        """A verifier that needs no ``keys`` topic: for readers of tasks, versions and decisions only."""
        return cls(
            TrustRegistry(governance_public_key(settings)),
            window_seconds=settings.signature_window_seconds,
            reader=reader,
        )

    def reset(self) -> None:
        self._replay.reset()

    def check(self, env: Envelope, *, sender: str | None = None) -> SignatureError | None:
        """None when ``env`` is trustworthy, else the error saying why (nothing is logged)."""
        try:
            try:
                signature = self.registry.verify(env.event, sender=sender)
            except SignatureError as exc:
                if exc.policy != "unknown_key" or self._refresh is None:
                    raise
                self._refresh()  # registered a moment ago? read the keys topic to its end, look again
                signature = self.registry.verify(env.event, sender=sender)
            record_time = (
                datetime.fromtimestamp(env.timestamp_ms / 1000, UTC) if env.timestamp_ms > 0 else None
            )
            self._replay.check(signature, record_time)
        except SignatureError as exc:
            return exc
        return None

    def accept(self, env: Envelope, *, sender: str | None = None) -> bool:
        """True when trustworthy; else log, count and return False (the event must not be used)."""
        problem = self.check(env, sender=sender)
        if problem is None:
            return True
        self.refused[problem.policy] += 1
        log.warning(
            "event refused",
            reader=self._reader,
            event_type=type(env.event).__name__,
            topic=env.topic,
            partition=env.partition,
            offset=env.offset,
            policy=problem.policy,
            reason=problem.reason,
        )
        return False
