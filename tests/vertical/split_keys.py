"""Keys for pure split tests: governance and every party sign as they would on the bus; the trust
registry, key events and envelopes an auditor or a daemon would see."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from governance.audit.log import LoggedEvent
from meshfl.bus import Envelope
from meshfl.events import Event, KeyEvent
from meshfl.identity import (
    GOVERNANCE,
    Signer,
    TrustRegistry,
    generate_private_key,
    key_id,
    public_bytes,
    sender_of,
)
from meshfl.identity.keys import encode_public_key
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.trust import SplitTrust

_REGISTERED_AT = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class SplitKeys:
    """A key for governance and for each named party (created on first use)."""

    signers: dict[str, Signer] = field(default_factory=dict)
    _offset: int = 0

    def __post_init__(self) -> None:
        self.signer(GOVERNANCE)

    def signer(self, name: str) -> Signer:
        if name not in self.signers:
            self.signers[name] = Signer(name, generate_private_key())
        return self.signers[name]

    def sign(self, event: Event) -> Event:
        """Signed by whoever must sign it (``sender_of``)."""
        return self.signer(sender_of(event)).sign(event)

    def settings(self) -> MeshflSettings:
        """Settings with governance's public key pinned."""
        return MeshflSettings(governance_public_key=encode_public_key(self.signers[GOVERNANCE].public_key))

    def key_events(self) -> list[KeyEvent]:
        """Governance's registration of every party key."""
        governance = self.signers[GOVERNANCE]
        events = []
        for name, signer in sorted(self.signers.items()):
            if name != GOVERNANCE:
                event = KeyEvent(
                    domain=name,
                    key_id=key_id(signer.public_key),
                    public_key=public_bytes(signer.public_key),
                    action="registered",
                    effective_at=_REGISTERED_AT,
                )
                events.append(governance.sign(event))
        return events

    def registry(self) -> TrustRegistry:
        registry = TrustRegistry(self.signers[GOVERNANCE].public_key)
        for event in self.key_events():
            registry.apply(event)
        return registry

    def trust(self, reader: str = "test") -> SplitTrust:
        return SplitTrust(self.registry(), window_seconds=900.0, reader=reader)

    def envelope(self, event: Event, topic: Topic = Topic.SPLIT_CONTROL) -> Envelope:
        self._offset += 1
        return Envelope(
            topic=topic.value,
            partition=0,
            offset=self._offset,
            first_offset=self._offset,
            key=None,
            event=event,
        )

    def logged(self, events: list[tuple[Topic, Event]]) -> list[LoggedEvent]:
        """The events as an auditor reads them, after the key events of the keys topic."""
        out = [LoggedEvent(Topic.KEYS, 0, i, 0, e) for i, e in enumerate(self.key_events())]
        return out + [LoggedEvent(topic, 0, i, 0, event) for i, (topic, event) in enumerate(events)]
