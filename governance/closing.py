"""Closing rounds: when a task's round (or async buffer) is ready, aggregate it into the next version.

Aggregation itself is the pure ``aggregate_version`` (shared with the audit replay); this module decides
when to call it, which pending updates go in (FedBuff: the K oldest in log order, so a restart picks
the same), and records in the audit trail who was left out (stragglers, stale buffered updates).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from governance.catalog_view import CatalogView
from governance.deciding import round_decision
from governance.log_state import WITHDRAWN
from governance.policies import buffer_ready, buffer_size, check_secret, round_ready
from governance.rounds import TaskState, aggregate_version
from governance.service_state import ServiceState
from meshfl.bus import EventProducer
from meshfl.errors import ConfigError
from meshfl.events import TrainingTask, utcnow
from meshfl.logs import get_logger
from meshfl.metrics import METRICS
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

log = get_logger("meshfl.governance")


def dp_secret(settings: MeshflSettings, task: TrainingTask) -> bytes:
    """The DP noise secret a task needs (empty without DP); a DP task without one is a config error."""
    if task.privacy is None:
        return b""
    secret = settings.dp_key()
    if not secret:
        raise ConfigError(f"task {task.id} uses differential privacy: set MESHFL_DP_SECRET")
    try:
        check_secret(secret)
    except ValueError as exc:
        raise ConfigError(f"task {task.id}: MESHFL_DP_SECRET is too short: {exc}") from exc
    return secret


class RoundCloser:
    """Publishes the versions of ready rounds inside the current transaction."""

    def __init__(self, settings: MeshflSettings, state: ServiceState, catalog: CatalogView) -> None:
        self._settings = settings
        self._state = state
        self._catalog = catalog

    def ready(self, state: TaskState, now: datetime, *, closing: bool) -> bool:
        if state.complete or not state.pending or len(state.pending) == state.failed_with:
            return False
        policy = state.task.round_policy
        if state.is_async:
            return buffer_ready(policy, len(state.pending)).ready
        accepted = state.accepted_domains()
        serving = self._catalog.serving_domains(state.task)
        readiness = round_ready(
            policy,
            accepted=len(accepted),
            opened_at=state.opened_at,
            now=now,
            expected_domains=len(serving) or None,
            pending_domains=[d for d in serving if d not in accepted],
        )
        if closing and readiness.ready:
            log.info("round ready", task=state.task.id, round=state.open_round, reason=readiness.reason)
        return readiness.ready

    def any_ready(self, now: datetime) -> bool:
        return any(self.ready(s, now, closing=False) for s in self._state.tasks.values())

    def close_ready(self, producer: EventProducer) -> None:
        """Publish a version for every task whose round (or async buffer) is ready, as often as it is."""
        for state in self._state.tasks.values():
            while self.ready(state, datetime.now(UTC), closing=True):
                self._close_round(producer, state)

    def _drop_too_stale(self, producer: EventProducer, state: TaskState) -> None:
        """Buffered updates that aged past max_staleness while waiting are withdrawn, with a decision."""
        limit = state.task.round_policy.max_staleness
        held = {state.latest.version, *state.recent}
        for item in [
            p
            for p in state.pending
            if state.latest.version - p.base_version > limit or p.base_version not in held
        ]:
            state.pending.remove(item)
            staleness = state.latest.version - item.base_version
            reason = (
                f"withdrawn from the buffer: staleness {staleness} > max_staleness {limit} "
                f"by version {state.latest.version + 1}"
                if staleness > limit
                else f"withdrawn from the buffer: its base version {item.base_version} is not readable"
            )
            round_decision(
                producer,
                state,
                update_id=item.update_id,
                domain=item.domain,
                policy=WITHDRAWN,
                reason=reason,
                marker=f"withdrawn/{item.update_id}",
            )
            self._state.log.aggregated.add(item.update_id)  # settled: never restored into a buffer

    def _close_round(self, producer: EventProducer, state: TaskState) -> None:
        chosen = state.pending
        if state.is_async:
            self._drop_too_stale(producer, state)
            # FedBuff: the K oldest accepted updates in log order (the same after a restart).
            chosen = sorted(state.pending, key=lambda p: (p.partition, p.first_offset))[
                : buffer_size(state.task.round_policy)
            ]
        try:
            updates = state.client_updates(chosen)
            with METRICS.aggregate_seconds.labels(state.task.id).time():
                version = aggregate_version(
                    state.task,
                    state.latest,
                    state.latest_weights,
                    state.server_state,
                    updates,
                    created_at=utcnow(),
                    dp_secret=dp_secret(self._settings, state.task),
                )
        except ValueError as exc:
            # e.g. Bulyan with fewer than 4f+3 updates: wait for more rather than publish a weak version.
            state.failed_with = len(state.pending)
            log.error(
                "strategy cannot aggregate these updates; waiting for more",
                task=state.task.id,
                round=state.open_round,
                updates=len(updates),
                error=str(exc),
            )
            return
        self._report_stragglers(producer, state, version.contributing_domains)
        # the version's sha256 is the hash its signature names: the state is hashed once
        producer.produce(
            Topic.MODEL_VERSIONS, version, key=state.task.id, digests={"tensors": version.sha256}
        )
        self._state.log.aggregated.update(version.contributing_updates)
        state.advance(version)
        log.info(
            "model version published",
            task=version.task_id,
            version=version.version,
            domains=version.contributing_domains,
            sha256=version.sha256,
        )

    def _report_stragglers(
        self, producer: EventProducer, state: TaskState, contributing: Iterable[str]
    ) -> None:
        """A round closed without some serving domains: say so in the audit trail."""
        if state.is_async:
            return
        missing = [d for d in self._catalog.serving_domains(state.task) if d not in set(contributing)]
        for domain in missing:
            round_decision(
                producer,
                state,
                update_id=f"missing/{state.task.id}/{state.open_round}/{domain}",
                domain=domain,
                policy="round_deadline",
                reason=f"straggler: no update from {domain} when round {state.open_round} closed",
            )
