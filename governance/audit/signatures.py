"""Who wrote what: every event of an audited log checked against the keys governance registered.

The auditor pins governance's public key (settings) and trusts nothing else: domain keys come from
the governance-signed ``KeyEvent`` s in the log itself, read first in log order. Every other event must
be signed by its sender (governance for tasks, versions and decisions; the named domain for updates
and descriptors) with a key trusted at its signing time, and be fresh (signing time within the window
of its record time; each (signer, sequence) once). What fails is a finding (``forged_event``,
``forged_key_event``, or the warning ``replayed_event`` for a second copy) and is left out of the
replay: a forged ACCEPTED decision, version or task cannot make the audit verify what governance
never did.

Signatures do not protect against governance itself, which signs whatever it likes: for that the
replay recomputes every version from the accepted updates, which the domains signed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.audit.log import LoggedEvent
from governance.audit.result import Finding
from meshfl.errors import SignatureError
from meshfl.events import KeyEvent, ModelUpdate
from meshfl.identity import ReplayGuard, TrustRegistry
from meshfl.topics import Topic

__all__ = ["SignatureCheck", "check_signatures"]


@dataclass
class SignatureCheck:
    trusted: list[LoggedEvent] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    registry: TrustRegistry | None = None


def _finding(item: LoggedEvent, kind: str, exc: SignatureError) -> Finding:
    event = item.event
    # A replayed copy is byte for byte an event its sender did sign: worth a look, nothing forged.
    replayed = exc.policy == "replay"
    return Finding(
        severity="warning" if replayed else "error",
        kind=kind,
        message=f"{type(event).__name__} at {item.topic.value} partition {item.partition} offset "
        f"{item.offset} is refused and ignored: {exc.policy}: {exc.reason}",
        update_id=event.update_id if isinstance(event, ModelUpdate) else None,
        version=getattr(event, "version", None) if item.topic == Topic.MODEL_VERSIONS else None,
        partition=item.partition,
        offset=item.offset,
    )


def check_signatures(
    events: Iterable[LoggedEvent], governance_key: Ed25519PublicKey, *, window_seconds: float
) -> SignatureCheck:
    """Split ``events`` into the trusted ones and findings about the rest (pure)."""
    ordered = sorted(events, key=lambda e: (e.topic.value, e.partition, e.offset))
    registry = TrustRegistry(governance_key)
    result = SignatureCheck(registry=registry)
    for item in ordered:
        if isinstance(item.event, KeyEvent):
            try:
                registry.apply(item.event)
            except SignatureError as exc:
                result.findings.append(_finding(item, "forged_key_event", exc))
    guard = ReplayGuard(timedelta(seconds=window_seconds))
    for item in ordered:
        if isinstance(item.event, KeyEvent):
            continue
        try:
            signature = registry.verify(item.event)
            record_time = (
                datetime.fromtimestamp(item.timestamp_ms / 1000, UTC) if item.timestamp_ms > 0 else None
            )
            guard.check(signature, record_time)
        except SignatureError as exc:
            result.findings.append(
                _finding(item, "replayed_event" if exc.policy == "replay" else "forged_event", exc)
            )
            continue
        result.trusted.append(item)
    return result
