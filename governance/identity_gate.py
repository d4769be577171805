"""Who sent it: the first check on every update and descriptor, before any of its fields is trusted.

An update must be signed by the domain it names, with a key the trust registry holds for that domain
and not revoked, fresh (signing time within the window of its record time, sequence not seen) and
with the update id bound to its domain (``meshfl.identity.binding``). A failure becomes a
rejection decision naming the check (``IDENTITY_POLICIES``); such a decision does not settle the
update id, so a forger who writes first under someone else's id cannot shut its owner out.
Descriptors not signed by their domain are ignored (logged and counted): they never enter the catalog.
"""

from __future__ import annotations

from governance.policies import Verdict
from meshfl.bus import Envelope
from meshfl.events import ModelUpdate
from meshfl.identity import TrustRegistry
from meshfl.identity.binding import is_bound, update_id_for
from meshfl.identity.trust import EnvelopeVerifier, KeyFeed, governance_public_key
from meshfl.settings import MeshflSettings

UPDATE_ID_POLICY = "update_id"
IDENTITY_POLICIES = frozenset(
    {"unsigned", "bad_signature", "unknown_key", "revoked_key", "impersonation", "replay", UPDATE_ID_POLICY}
)
"""Rejections that say the update is not what it claims to be: they never settle its update id."""


class IdentityGate:
    """The registry (kept current from the keys topic) and the replay memory of the update stream."""

    def __init__(self, registry: TrustRegistry, *, window_seconds: float) -> None:
        self.registry = registry
        self._feed: KeyFeed | None = None
        window = window_seconds
        self.updates = EnvelopeVerifier(
            self.registry, window_seconds=window, reader="governance", refresh=self.drain
        )
        self.catalog = EnvelopeVerifier(
            self.registry, window_seconds=window, reader="governance-catalog", refresh=self.drain
        )

    @classmethod
    def from_settings(cls, settings: MeshflSettings) -> IdentityGate:
        """Governance's gate: its own pinned key, domain keys from the ``keys`` topic (``attach``)."""
        registry = TrustRegistry(governance_public_key(settings))
        return cls(registry, window_seconds=settings.signature_window_seconds)

    def attach(self, feed: KeyFeed) -> None:
        self._feed = feed

    def take(self) -> None:
        if self._feed is not None:
            self._feed.take()

    def drain(self) -> None:
        if self._feed is not None:
            self._feed.drain()

    def reset(self) -> None:
        """After re-reading the log from the committed offsets, what was seen will be seen again."""
        self.updates.reset()
        self.catalog.reset()

    def check_update(self, env: Envelope, update: ModelUpdate) -> Verdict | None:
        """None when the update is from whom it says, else the rejection (counted in ``updates.refused``)."""
        problem = self.updates.check(env)
        if problem is not None:
            self.updates.refused[problem.policy] += 1
            return Verdict(False, problem.policy, problem.reason)
        if not is_bound(update.update_id, update.task_id, update.round, update.domain):
            bound = update_id_for(update.task_id, update.round, update.domain)
            self.updates.refused[UPDATE_ID_POLICY] += 1
            return Verdict(
                False,
                UPDATE_ID_POLICY,
                f"update id {update.update_id!r} is not bound to {update.domain!r} for task "
                f"{update.task_id!r} round {update.round} (expected {bound})",
            )
        return None
