"""Deciding one update: run the policies, record the decision, keep an accepted update for its round.

A decision's id is derived from the update message's coordinate (partition, offset), so a decision
redone after an aborted transaction has the same id. A re-read update that already has a decision is
not decided again: if it was accepted and no published version consumed it, it goes back into its round.

Nothing one update carries can stop the daemon: ``judge`` is the one place that evaluates an update,
and whatever the decoding or a policy raises (meshfl's own errors, or torch, numpy and pydantic errors
from deep inside a policy) becomes a rejection with the policy ``evaluation_error`` and the error as
its reason. Only the I/O around it (producing the decision, reading the catalog) may raise, and those
are broker failures, which stop the transaction, not the message.
Before any policy, ``IdentityGate`` checks who sent the update (``screen``, guarded the same way);
the policies only see verified updates.
"""

from __future__ import annotations

import uuid

from governance.catalog_view import CatalogView
from governance.identity_gate import IdentityGate
from governance.log_state import FORM_REFUSED
from governance.policies import Candidate, PolicyContext, Verdict, evaluate_update
from governance.rounds import PendingUpdate, TaskState
from governance.service_state import ServiceState
from meshfl.bus import Envelope, EventProducer
from meshfl.errors import TensorCodecError
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelUpdate, utcnow
from meshfl.limits import spec_elements
from meshfl.logs import get_logger
from meshfl.metrics import METRICS
from meshfl.tensors import from_wire
from meshfl.topics import Topic

log = get_logger("meshfl.governance")

DECISION_NS = uuid.UUID("6f1c1d4e-3b51-4d38-9a59-2f0c3c1f8e11")
"""Namespace of the uuid5 decision ids (stable across restarts and replays)."""

_CATALOG_POLICIES = frozenset({"known_domain", "data_contract", "admission"})
EVALUATION_ERROR = "evaluation_error"
"""Policy of the rejection of an update whose evaluation raised: the reason names the error."""
_MAX_REASON = 2000


class Decider:
    """Decides the updates of the batch in the current transaction."""

    def __init__(self, state: ServiceState, catalog: CatalogView, gate: IdentityGate) -> None:
        self._state = state
        self._catalog = catalog
        self._gate = gate

    def handle(self, producer: EventProducer, env: Envelope) -> None:
        update = env.event
        if not isinstance(update, ModelUpdate):
            log.warning("not a model update on the updates topic; skipped", type=type(update).__name__)
            return
        log_state = self._state.log
        previous = log_state.decided_at.get((env.partition, env.offset))
        state = self._state.tasks.get(update.task_id)
        if previous is not None:
            if (
                previous == DecisionOutcome.ACCEPTED
                and state is not None
                and update.update_id not in log_state.aggregated
            ):
                self._restore(producer, update, env, state)
            return
        refusal = self.screen(env, update)
        if refusal is not None:
            self._decide(producer, update, env, refusal)
            return
        verdict, weights = self.judge(update, state)
        if (
            not verdict.accepted
            and verdict.policy in _CATALOG_POLICIES
            and self._catalog.consumer is not None
        ):
            # The domain may have registered a moment ago: read the catalog to its end and look again.
            self._catalog.drain()
            verdict, weights = self.judge(update, state)
        if verdict.accepted and state is not None:
            state.pending.append(pending_update(update, env, weights))
        self._decide(producer, update, env, verdict)

    def _restore(self, producer: EventProducer, update: ModelUpdate, env: Envelope, state: TaskState) -> None:
        """Put an update accepted before a restart back into its round. Its decision stands (it is in
        the log), so its checks are not run again (they depend on the moment: catalog, round); the form
        it is aggregated in is computed when the round closes, against the version it goes into, as
        for every accepted update (``closing``). Tensors that no longer decode withdraw it."""
        try:
            weights = from_wire(update.tensors, max_elements=spec_elements(state.expected()), copy=False)
        except TensorCodecError as exc:
            round_decision(
                producer,
                state,
                update_id=update.update_id,
                domain=update.domain,
                policy=FORM_REFUSED,
                reason=f"withdrawn on restore: the accepted tensors do not decode: {exc}",
                marker=f"refused/{update.update_id}",
            )
            self._state.log.aggregated.add(update.update_id)
            return
        state.pending.append(pending_update(update, env, weights))
        log.info("accepted update restored into its round", update=update.update_id)

    def screen(self, env: Envelope, update: ModelUpdate) -> Verdict | None:
        """Who sent it (``IdentityGate``), guarded like ``judge``: None when the sender checks out."""
        try:
            return self._gate.check_update(env, update)
        except Exception as exc:  # a message that makes the canonical form raise is that message's fault
            reason = f"{type(exc).__name__}: {exc}"[:_MAX_REASON]
            log.error("update signature check failed; rejected", update=update.update_id, error=reason)
            return Verdict(False, "bad_signature", reason)

    def judge(self, update: ModelUpdate, state: TaskState | None) -> tuple[Verdict, dict]:
        """Evaluate one update, guarded: a verdict always comes out, never an exception."""
        try:
            return self._evaluate(update, state)
        except Exception as exc:  # whatever one message makes a policy raise is that message's fault
            reason = f"{type(exc).__name__}: {exc}"[:_MAX_REASON]
            log.error("update evaluation failed; rejected", update=update.update_id, error=reason)
            return Verdict(False, EVALUATION_ERROR, reason), {}

    def _evaluate(self, update: ModelUpdate, state: TaskState | None) -> tuple[Verdict, dict]:
        """The verdict, and the decoded tensors (as sent: the policies' transforms apply at close)."""
        if state is None:
            return Verdict(False, "known_task", f"task {update.task_id!r} is not run by this service"), {}
        if state.complete:
            budget = state.budget()
            if not budget.accepted:
                return Verdict(False, budget.policy, budget.reason), {}
            return Verdict(False, "task_complete", f"task finished after round {state.latest.round}"), {}
        expected = state.expected()
        try:
            # Bounded by the model before anything is allocated: an update of a 10-parameter model
            # cannot make governance allocate gigabytes (or overflow torch) before its spec is checked.
            # Views of the message: policies and strategies only read an update's weights (a clip makes
            # new tensors), so the update costs its message and nothing more.
            weights = from_wire(update.tensors, max_elements=spec_elements(expected), copy=False)
        except TensorCodecError as exc:
            return Verdict(False, "tensor_layout", str(exc)), {}
        context = PolicyContext(
            task=state.task,
            open_round=state.open_round,
            latest_version=state.latest.version,
            global_weights=state.reference_weights(update.base_version),  # async: its own base
            expected=expected,
            catalog=self._catalog.snapshot(),
            decided_update_ids=self._state.log.decided_ids.keys(),
            accepted_domains_this_round=state.accepted_domains(),  # a live view, read here only
        )
        with METRICS.check_seconds.labels(state.task.id).time():
            verdict, _final = evaluate_update(Candidate(update=update, weights=weights), context)
        return verdict, weights

    def _decide(self, producer: EventProducer, update: ModelUpdate, env: Envelope, verdict: Verdict) -> None:
        outcome = DecisionOutcome.ACCEPTED if verdict.accepted else DecisionOutcome.REJECTED
        decision = GovernanceDecision(
            decision_id=str(uuid.uuid5(DECISION_NS, f"{env.partition}/{env.offset}")),
            task_id=update.task_id,
            update_id=update.update_id,
            domain=update.domain,
            round=update.round,
            outcome=outcome,
            policy=verdict.policy,
            reason=verdict.reason[:_MAX_REASON],
            source_partition=env.partition,
            source_offset=env.offset,
            created_at=utcnow(),
            base_version=update.base_version,
        )
        producer.produce(Topic.DECISIONS, decision, key=update.task_id)
        # A forger's attempt (IDENTITY_POLICIES) does not settle the owner's id; the id is kept while a
        # copy could still pass its round checks (governance.id_window).
        state = self._state.tasks.get(update.task_id)
        self._state.log.record_decision(decision, state.task if state else None, update.base_version)
        log.info(
            "decision",
            task=update.task_id,
            update=update.update_id,
            domain=update.domain,
            round=update.round,
            outcome=outcome.value,
            policy=verdict.policy,
            reason=verdict.reason,
        )


def pending_update(update: ModelUpdate, env: Envelope, weights: dict) -> PendingUpdate:
    """An accepted update as its round keeps it: its decoded tensors and its coordinate."""
    return PendingUpdate(
        update_id=update.update_id,
        domain=update.domain,
        num_examples=update.num_examples,
        base_version=update.base_version,
        weights=weights,
        partition=env.partition,
        first_offset=env.first_offset,
    )


def round_decision(
    producer: EventProducer,
    state: TaskState,
    *,
    update_id: str,
    domain: str,
    policy: str,
    reason: str,
    marker: str | None = None,
) -> None:
    """A rejection the round itself decides (no update message behind it): stragglers, withdrawals."""
    decision = GovernanceDecision(
        decision_id=str(uuid.uuid5(DECISION_NS, marker or update_id)),
        task_id=state.task.id,
        update_id=update_id,
        domain=domain,
        round=state.open_round,
        outcome=DecisionOutcome.REJECTED,
        policy=policy,
        reason=reason,
        created_at=utcnow(),
    )
    producer.produce(Topic.DECISIONS, decision, key=state.task.id)
