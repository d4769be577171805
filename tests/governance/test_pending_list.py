"""A round's accepted domains are known without scanning the round: readiness after each decision is O(1).

At 1,000 domains, building the accepted set from every pending update and listing the stragglers from
every serving domain after each decision made a round quadratic (``bench/scale.py``). These tests count
the scans, so a regression shows whatever the machine's speed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from governance.catalog_view import CatalogView
from governance.closing import RoundCloser
from governance.identity_gate import IdentityGate
from governance.pending_list import PendingList
from governance.rounds import PendingUpdate, TaskState, initial_version
from governance.service_state import ServiceState
from meshfl.bus import Envelope
from meshfl.events import TrainingTask
from meshfl.identity import TrustRegistry
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
from tests.audit.audit_builders import DOMAINS, GOVERNANCE_KEY, SIGNERS, make_task, product


def _item(domain: str, offset: int) -> PendingUpdate:
    return PendingUpdate(f"u-{domain}-{offset}", domain, 10, 0, None, 0, offset)


class _CountingPending(PendingList[PendingUpdate]):
    scans = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _CountingPending.scans += 1
        return super().__iter__()


class _CountingCatalog(CatalogView):
    listed = 0

    def serving_domains(self, task: TrainingTask) -> list[str]:
        _CountingCatalog.listed += 1
        return super().serving_domains(task)


def test_the_domains_follow_every_change_of_the_list() -> None:
    task = make_task()
    latest = initial_version(task)
    state = TaskState(task=task, latest=latest, latest_weights=from_wire(latest.tensors), server_state={})
    state.pending.append(_item("alpha", 1))
    state.pending.extend([_item("beta", 2), _item("alpha", 3)])
    assert set(state.accepted_domains()) == {"alpha", "beta"}
    state.pending.remove(state.pending[0])
    state.pending[0] = _item("gamma", 4)  # beta replaced
    assert set(state.accepted_domains()) == {"alpha", "gamma"}
    del state.pending[1:]
    assert set(state.accepted_domains()) == {"gamma"}
    state.pending = [_item("delta", 5)]  # any assignment is kept as a PendingList
    assert isinstance(state.pending, PendingList)
    assert set(state.accepted_domains()) == {"delta"}
    assert state.pending.pop().domain == "delta"
    assert len(state.accepted_domains()) == 0


def test_readiness_after_a_decision_neither_scans_the_round_nor_lists_the_catalog() -> None:
    registry = TrustRegistry(GOVERNANCE_KEY)
    for registration in SIGNERS.key_events():
        registry.apply(registration)
    catalog = _CountingCatalog(IdentityGate(registry, window_seconds=900).catalog)
    for offset, domain in enumerate(DOMAINS):
        catalog.record(
            Envelope("catalog", 0, offset, offset, f"{domain}.table", SIGNERS.sign(product(domain)))
        )
    task = make_task()
    latest = initial_version(task)
    state = TaskState(task=task, latest=latest, latest_weights=from_wire(latest.tensors), server_state={})
    state.pending = _CountingPending([_item(DOMAINS[0], 1), _item(DOMAINS[1], 2)])
    closer = RoundCloser(MeshflSettings(), ServiceState(), catalog)
    _CountingPending.scans = _CountingCatalog.listed = 0
    now = datetime.now(UTC)
    for _ in range(50):  # a round of many decisions, readiness asked after each
        assert not closer.ready(state, now, closing=True)
        assert state.accepted_domains() >= {DOMAINS[0]}  # what the duplicate check reads
    assert (_CountingPending.scans, _CountingCatalog.listed) == (0, 0)
    state.pending.append(_item(DOMAINS[2], 3))
    assert closer.ready(state, now, closing=True)  # the closing one names the stragglers: one listing
    assert (_CountingPending.scans, _CountingCatalog.listed) == (0, 1)
