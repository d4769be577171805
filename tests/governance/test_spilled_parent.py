"""The version governance keeps as the next round's parent goes to a spill file when it is large, and
stays in memory when no file can be made or written: a round never fails (nor the daemon dies) because
of ``spill_dir``, as a chunk set never does (``meshfl.bus._reassembly`` falls back the same way)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path

import pytest

from governance.catalog_view import CatalogView
from governance.closing import RoundCloser
from governance.identity_gate import IdentityGate
from governance.rounds import PendingUpdate, TaskState, initial_version
from governance.service_state import ServiceState
from meshfl import spill
from meshfl.bus import Envelope, EventProducer, ensure_topics
from meshfl.identity import TrustRegistry
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
from tests.audit.audit_builders import DOMAINS, GOVERNANCE_KEY, SIGNERS, make_task, perturbed, product

pytestmark = pytest.mark.kafka


def _close_one_round(settings: MeshflSettings) -> TaskState:
    registry = TrustRegistry(GOVERNANCE_KEY)
    for registration in SIGNERS.key_events():
        registry.apply(registration)
    catalog = CatalogView(IdentityGate(registry, window_seconds=900).catalog)
    for offset, domain in enumerate(DOMAINS):
        catalog.record(
            Envelope("catalog", 0, offset, offset, f"{domain}.table", SIGNERS.sign(product(domain)))
        )
    task = make_task()
    parent = initial_version(task)
    weights = from_wire(parent.tensors)
    state = TaskState(task=task, latest=parent, latest_weights=weights, server_state={})
    state.pending = [
        PendingUpdate(f"u-{d}", d, 10 + i, 0, perturbed(weights, seed=i, scale=0.1), 0, i)
        for i, d in enumerate(DOMAINS)
    ]
    closer = RoundCloser(settings, ServiceState(), catalog)
    with EventProducer(settings) as producer:
        assert closer.ready(state, datetime.now(UTC), closing=True)
        closer.close_ready(producer, [state])
    return state


def test_a_parent_that_cannot_be_spilled_stays_in_memory(
    settings: MeshflSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_topics(settings)
    missing = settings.model_copy(update={"spill_bytes": 1, "spill_dir": tmp_path / "missing"})
    state = _close_one_round(missing)  # raised FileNotFoundError out of the transaction
    assert state.latest.version == 1
    assert not any(spill.is_spilled(memoryview(t.data)) for t in state.latest.tensors)

    def disk_full(self: spill.SpillBuffer, offset: int, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spill.SpillBuffer, "write", disk_full)
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    state = _close_one_round(missing.model_copy(update={"spill_dir": spill_dir}))
    assert state.latest.version == 1
    assert not any(spill.is_spilled(memoryview(t.data)) for t in state.latest.tensors)


def test_a_large_parent_is_held_in_a_spill_file(settings: MeshflSettings, tmp_path: Path) -> None:
    ensure_topics(settings)
    state = _close_one_round(settings.model_copy(update={"spill_bytes": 1, "spill_dir": tmp_path}))
    assert state.latest.version == 1
    assert all(spill.is_spilled(memoryview(t.data)) for t in state.latest.tensors if t.data)
