"""Restore never bypasses DP clipping (issue 10, item 4; the restore path itself is the resilience work).

An update accepted before a restart is restored into its round by re-running its checks. When it now
fails them (here: its domain's product left the catalog), it must be withdrawn or re-clipped, never
aggregated raw: under DP a raw delta of norm 30 with ``clip_norm`` 0.5 is sensitivity 60 times what the
noise is calibrated for. Whatever the restore path does, the version must be the one its clipped self
gives, or not contain it.
"""

from __future__ import annotations

import torch

from governance.catalog_view import CatalogView
from governance.deciding import Decider
from governance.identity_gate import IdentityGate
from governance.log_state import LogState
from governance.policies import delta_l2_norm
from governance.policies.deltas import scale_delta
from governance.rounds import TaskState, aggregate_version, initial_version
from governance.service_state import ServiceState
from governance.strategies import ClientUpdate
from meshfl.bus import Envelope
from meshfl.events import DecisionOutcome, ModelUpdate, PrivacyPolicy
from meshfl.identity import TrustRegistry
from meshfl.tensors import from_wire, to_wire
from tests.audit.audit_builders import (
    GOVERNANCE_KEY,
    SECRET,
    SIGNERS,
    make_task,
    make_update,
    perturbed,
    product,
)

CLIP = 0.5


def _gate() -> IdentityGate:
    """The builders' governance key pinned, their domain keys registered."""
    registry = TrustRegistry(GOVERNANCE_KEY)
    for registration in SIGNERS.key_events():
        registry.apply(registration)
    return IdentityGate(registry, window_seconds=900)


def _envelope(update: ModelUpdate, offset: int) -> Envelope:
    return Envelope(topic="updates", partition=0, offset=offset, first_offset=offset, key=None, event=update)


def test_an_update_failing_its_checks_on_restore_is_never_aggregated_raw() -> None:
    task = make_task(privacy=PrivacyPolicy(clip_norm=CLIP, noise_multiplier=1.0))
    parent = initial_version(task)
    base = from_wire(parent.tensors)
    raw = make_update(task, "alpha", 1, parent, seed=1).model_copy(
        update={"tensors": to_wire(perturbed(base, seed=1, scale=3.0))}
    )
    assert delta_l2_norm(from_wire(raw.tensors), base) > 20.0
    others = [make_update(task, d, 1, parent, seed=2 + i) for i, d in enumerate(["beta", "gamma"])]

    log_state = LogState(tasks={task.id: task}, latest={task.id: parent})
    log_state.decided_at[(0, 0)] = DecisionOutcome.ACCEPTED  # accepted before the restart ...
    log_state.decided_ids[raw.update_id] = (task.id, 1)
    state = ServiceState(
        log=log_state,
        tasks={task.id: TaskState(task=task, latest=parent, latest_weights=base, server_state={})},
    )
    gate = _gate()
    catalog = CatalogView(gate.catalog)
    for domain in ("beta", "gamma"):  # ... and alpha's product has left the catalog since
        catalog.record(Envelope("catalog", 0, 0, 0, domain, SIGNERS.sign(product(domain))))
    decider = Decider(state, catalog, gate)
    decider.handle(None, _envelope(raw, 0))  # type: ignore[arg-type]  # a restore publishes nothing
    for offset, update in enumerate(others, start=1):
        log_state.decided_at[(0, offset)] = DecisionOutcome.ACCEPTED
        decider.handle(None, _envelope(update, offset))  # type: ignore[arg-type]

    pending = state.tasks[task.id].pending
    assert {p.domain for p in pending} >= {"beta", "gamma"}

    def version_of(items: list[tuple[str, str, dict[str, torch.Tensor]]]):
        updates = [ClientUpdate(uid, domain, weights, 10) for uid, domain, weights in items]
        return aggregate_version(
            task, parent, base, {}, updates, created_at=parent.created_at, dp_secret=SECRET
        )

    released = version_of([(p.update_id, p.domain, dict(p.weights)) for p in pending])
    if raw.update_id in released.contributing_updates:
        raw_weights = from_wire(raw.tensors)
        clipped = scale_delta(raw_weights, base, CLIP / delta_l2_norm(raw_weights, base))
        expected = version_of(
            [(raw.update_id, "alpha", clipped)]
            + [(u.update_id, u.domain, from_wire(u.tensors)) for u in others]
        )
        got, want = from_wire(released.tensors), from_wire(expected.tensors)
        assert all(torch.allclose(got[k], want[k], rtol=0, atol=1e-6) for k in base)
        unclipped_mean = {k: sum(from_wire(u.tensors)[k] - base[k] for u in [raw, *others]) / 3 for k in base}
        assert all(float((got[k] - base[k] - unclipped_mean[k]).abs().max()) > 0.1 for k in base)
