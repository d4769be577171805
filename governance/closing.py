"""Closing rounds: when a task's round (or async buffer) is ready, aggregate it into the next version.

Aggregation itself is the pure ``aggregate_version`` (shared with the audit replay); this module decides
when to call it, which pending updates go in, and records in the audit trail who was left out
(stragglers, stale buffered updates). A FedAvg-family round (and central DP) is folded as it is decided
(``governance.round_fold``): right after each decision, the accepted update is formed against the
parent, checked for everything that could withdraw it later, folded in and its tensors released; an
async buffer folds its K first accepted updates in log order and the round closes on them. Rules that
need every update keep the accepted updates and form them when the round closes (FedBuff's K oldest
in log order for them, so a restart picks the same).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

from governance.catalog_view import CatalogView
from governance.deciding import round_decision
from governance.log_state import FORM_REFUSED, ROUND_FAILED, WITHDRAWN
from governance.policies import RoundReadiness, buffer_ready, buffer_size, check_secret, round_ready
from governance.policies.transforms import reapply_transforms
from governance.round_fold import RoundFold
from governance.rounds import PendingUpdate, TaskState, aggregate_version, unfolded_start
from governance.service_state import ServiceState
from governance.state_record import log_positions
from governance.strategies import ClientUpdate, TooFewUpdates, Weights
from meshfl import faults
from meshfl.bus import EventProducer
from meshfl.errors import ConfigError
from meshfl.events import ModelVersion, TrainingTask, utcnow
from meshfl.logs import get_logger
from meshfl.metrics import METRICS
from meshfl.settings import MeshflSettings
from meshfl.spill import spill_tensors
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
        if (
            state.error is not None
            or state.complete
            or not state.pending
            or len(state.pending) == state.failed_with
        ):
            return False
        policy = state.task.round_policy
        if state.is_async:
            buffered = state.fold.count if state.fold is not None else len(state.pending)
            return buffer_ready(policy, buffered).ready
        accepted = state.accepted_domains()
        expected = self._catalog.serving_count(state.task) or None

        def readiness_with(pending_domains: list[str]) -> RoundReadiness:
            return round_ready(
                policy,
                accepted=len(accepted),
                opened_at=state.opened_at,
                now=now,
                expected_domains=expected,
                pending_domains=pending_domains,
            )

        readiness = readiness_with([])
        if closing and readiness.ready:
            # The stragglers only name the domains in the reason: listed once, when the round closes,
            # not after every decision (O(domains) each time: quadratic per round).
            serving = self._catalog.serving_domains(state.task)
            readiness = readiness_with([d for d in serving if d not in accepted])
            log.info("round ready", task=state.task.id, round=state.open_round, reason=readiness.reason)
        return readiness.ready

    def any_ready(self, tasks: Iterable[TaskState], now: datetime) -> bool:
        return any(self.ready(s, now, closing=False) for s in tasks)

    def close_ready(self, producer: EventProducer, tasks: Iterable[TaskState]) -> None:
        """Publish a version for every task whose round (or async buffer) is ready, as often as it is."""
        for state in tasks:
            self.fold_pending(producer, state)
            while self.ready(state, datetime.now(UTC), closing=True):
                self._close_round(producer, state)
                self.fold_pending(producer, state)

    def fold_pending(self, producer: EventProducer, state: TaskState) -> None:
        """Fold the accepted updates not yet folded into the open round, in decision order, and release
        their tensors (FedAvg family and central DP; a no-op for the rules that need every update).

        What could withdraw an update at close is judged here, against the same parent: in async mode
        its staleness and base, for every mode the transforming policies. An async buffer folds at most
        K; later updates wait, tensors held, for the next buffer (rare: the buffer closes at the K-th).
        """
        if state.error is not None or not state.streams:
            self._count_held(state)
            return
        limit = buffer_size(state.task.round_policy) if state.is_async else None
        start = unfolded_start(state.pending)
        for item in state.pending[start:]:
            if limit is not None and state.fold is not None and state.fold.count >= limit:
                break
            if state.is_async and self._withdraw_if_stale(producer, state, item):
                continue
            weights = self._form_or_withdraw(producer, state, item)
            if weights is None:
                continue
            self._count_held(state)
            try:
                if state.fold is None:
                    state.fold = RoundFold(state.task, state.latest_weights)
                state.fold.add(state.client_update(item, weights))
            except (ValueError, RuntimeError, ArithmeticError) as exc:
                self._fail_round(producer, state, exc)
                return
            state.pending[state.pending.index(item, start)] = replace(item, weights=None)
        self._count_held(state)

    @staticmethod
    def _count_held(state: TaskState) -> None:
        """The round's held bytes on ``/metrics``: update tensors not folded, and the running sums."""
        held = sum(
            t.numel() * t.element_size()
            for item in state.pending[unfolded_start(state.pending) :]
            if item.weights is not None
            for t in item.weights.values()
        )
        task = state.task.id
        METRICS.round_held_bytes.labels(task, "updates").set(held)
        METRICS.round_held_bytes.labels(task, "sums").set(state.fold.held_bytes() if state.fold else 0)
        peak = METRICS.round_held_bytes_max.labels(task)
        if held > peak._value.get():  # a high-water mark: prometheus_client has no max-gauge
            peak.set(held)

    def _withdraw(
        self, producer: EventProducer, state: TaskState, item: PendingUpdate, *, policy: str, reason: str
    ) -> None:
        """Take an accepted update out of its round for good, with a decision that settles it."""
        state.pending.remove(item)
        marker = "withdrawn" if policy == WITHDRAWN else "refused"
        round_decision(
            producer,
            state,
            update_id=item.update_id,
            domain=item.domain,
            policy=policy,
            reason=reason,
            marker=f"{marker}/{item.update_id}",
        )
        self._state.log.aggregated.add(item.update_id)  # settled: never restored into a round
        log.warning("accepted update withdrawn", task=state.task.id, update=item.update_id, reason=reason)

    def _drop_too_stale(self, producer: EventProducer, state: TaskState) -> None:
        """Buffered updates that aged past max_staleness while waiting are withdrawn, with a decision."""
        for item in list(state.pending):
            self._withdraw_if_stale(producer, state, item)

    def _withdraw_if_stale(self, producer: EventProducer, state: TaskState, item: PendingUpdate) -> bool:
        """Withdraw ``item`` if it is too stale for the next version or its base is not held."""
        limit = state.task.round_policy.max_staleness
        staleness = state.latest.version - item.base_version
        if staleness <= limit and (
            item.base_version == state.latest.version or item.base_version in state.recent
        ):
            return False
        reason = (
            f"withdrawn from the buffer: staleness {staleness} > max_staleness {limit} "
            f"by version {state.latest.version + 1}"
            if staleness > limit
            else f"withdrawn from the buffer: its base version {item.base_version} is not readable"
        )
        self._withdraw(producer, state, item, policy=WITHDRAWN, reason=reason)
        return True

    def _formed(
        self, producer: EventProducer, state: TaskState, chosen: list[PendingUpdate]
    ) -> list[ClientUpdate]:
        """The chosen updates in the form the policies pass (norm clip, DP clip) against the parent, or
        in async mode against each update's own base version (as it was decided).

        Never the raw tensors: an update the transforming policies now refuse is withdrawn instead.
        """
        formed = []
        for item in chosen:
            weights = self._form_or_withdraw(producer, state, item)
            if weights is not None:
                formed.append(replace(item, weights=weights))
        return state.client_updates(formed)

    def _form_or_withdraw(
        self, producer: EventProducer, state: TaskState, item: PendingUpdate
    ) -> Weights | None:
        """The update as the transforming policies pass it (against the parent, or in async mode its own
        base), or None once it is withdrawn because they now refuse it (or its restored tensors raise)."""
        assert item.weights is not None
        try:
            reference = state.reference_weights(item.base_version)
            weights, refused = reapply_transforms(state.task, item.weights, reference)
        except (ValueError, RuntimeError, ArithmeticError) as exc:  # restored, never re-checked
            weights, refused = {}, f"{type(exc).__name__}: {exc}"
        if refused is None:
            return weights
        against = item.base_version if state.is_async else state.latest.version
        self._withdraw(
            producer,
            state,
            item,
            policy=FORM_REFUSED,
            reason=f"withdrawn: the policies refuse it against version {against}: {refused}",
        )
        return None

    def _close_round(self, producer: EventProducer, state: TaskState) -> None:
        if state.streams:
            if state.fold is None:
                return
            self._aggregate(producer, state, state.fold)
            return
        chosen = state.pending
        if state.is_async:
            self._drop_too_stale(producer, state)
            if not buffer_ready(state.task.round_policy, len(state.pending)).ready:
                return  # fewer than K left after the stale ones went: wait for more
            # FedBuff: the K oldest accepted updates in log order (the same after a restart).
            chosen = sorted(state.pending, key=lambda p: (p.partition, p.first_offset))[
                : buffer_size(state.task.round_policy)
            ]
        updates = self._formed(producer, state, list(chosen))
        if len(updates) < len(chosen):
            return  # some were withdrawn: readiness is checked again without them
        self._aggregate(producer, state, updates)

    def _aggregate(
        self, producer: EventProducer, state: TaskState, updates: list[ClientUpdate] | RoundFold
    ) -> None:
        """Aggregate and publish the next version (or record why the round cannot close)."""
        try:
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
        except TooFewUpdates as exc:
            # The strategy's declared minimum (e.g. Bulyan's 4f+3): wait for more, never a weak version.
            state.failed_with = len(state.pending)
            log.warning(
                "strategy needs more updates; waiting for more",
                task=state.task.id,
                round=state.open_round,
                updates=len(updates) if isinstance(updates, list) else updates.count,
                error=str(exc),
            )
            return
        except (ValueError, RuntimeError, ArithmeticError) as exc:
            self._fail_round(producer, state, exc)
            return
        faults.kill_point("governance.mid-aggregation")
        self._report_stragglers(producer, state, version.contributing_domains)
        # Where a restart finds this version: at or after what the producer has written so far.
        where = log_positions(self._settings, self._state.log.log_ends, producer.written_ends())
        self._state.log.version_from[(version.task_id, version.version)] = {
            key: offset for key, offset in where.items() if key[0] == Topic.MODEL_VERSIONS.value
        }
        # the signature names the state by BLAKE3 (scheme 2), not by the version's sha256: the signer
        # hashes it (a quarter of a SHA-256 pass); passing version.sha256 would be refused
        producer.produce(Topic.MODEL_VERSIONS, version, key=state.task.id)
        self._state.log.aggregated.update(version.contributing_updates)
        version = self._held(version)
        self._state.log.latest[version.task_id] = version  # the log's latest: never the old one's bytes
        state.advance(version)
        log.info(
            "model version published",
            task=version.task_id,
            version=version.version,
            domains=version.contributing_domains,
            sha256=version.sha256,
        )

    def _held(self, version: ModelVersion) -> ModelVersion:
        """The version as the next round's parent, which a FedAvg round never reads: in a spill file
        when large, in memory when no file can be made or written (a missing ``spill_dir``, a full
        disk), as a chunk set does: the round is published already, never undone for that."""
        size = sum(memoryview(t.data).nbytes for t in version.tensors)
        if not 0 < self._settings.spill_bytes <= size:
            return version
        try:
            spilled = spill_tensors(version.tensors, self._settings.spill_dir)
        except OSError as exc:
            log.warning("cannot spill the version; the parent is held in memory", error=str(exc))
            return version
        return version.model_copy(update={"tensors": spilled})

    def _fail_round(self, producer: EventProducer, state: TaskState, exc: Exception) -> None:
        """Any other strategy error: a decision that says the round failed, and the task stops there
        (``TaskState.error``, shown by ``meshfl governance status``) instead of waiting forever."""
        reason = f"round {state.open_round} failed: {type(exc).__name__}: {exc}"
        state.error = reason
        round_decision(
            producer,
            state,
            update_id=f"round-error/{state.task.id}/{state.open_round}",
            domain="*",
            policy=ROUND_FAILED,
            reason=reason,
        )
        log.error(
            "round failed: no version until the task is fixed",
            task=state.task.id,
            round=state.open_round,
            updates=len(state.pending),
            error=str(exc),
        )

    def _report_stragglers(
        self, producer: EventProducer, state: TaskState, contributing: Iterable[str]
    ) -> None:
        """A round closed without some serving domains: say so in the audit trail."""
        if state.is_async:
            return
        contributed = set(contributing)  # once, not once per serving domain
        missing = [d for d in self._catalog.serving_domains(state.task) if d not in contributed]
        for domain in missing:
            round_decision(
                producer,
                state,
                update_id=f"missing/{state.task.id}/{state.open_round}/{domain}",
                domain=domain,
                policy="round_deadline",
                reason=f"straggler: no update from {domain} when round {state.open_round} closed",
            )
