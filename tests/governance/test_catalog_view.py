"""The catalog view's cached answers (serving domains, the policies' snapshot) follow every change."""

from __future__ import annotations

from governance.catalog_view import CatalogView
from governance.identity_gate import IdentityGate
from meshfl.bus import Envelope
from meshfl.events import DataProductDescriptor, DataProductStatus
from meshfl.identity import TrustRegistry
from tests.audit.audit_builders import GOVERNANCE_KEY, SIGNERS, make_task, product


def _view() -> CatalogView:
    registry = TrustRegistry(GOVERNANCE_KEY)
    for registration in SIGNERS.key_events():
        registry.apply(registration)
    return CatalogView(IdentityGate(registry, window_seconds=900).catalog)


def _record(view: CatalogView, descriptor: DataProductDescriptor, offset: int) -> None:
    view.record(Envelope("catalog", 0, offset, offset, descriptor.id, SIGNERS.sign(descriptor)))


def test_cached_serving_domains_and_snapshot_follow_records_and_tombstones() -> None:
    task = make_task()
    view = _view()
    _record(view, product("alpha"), 0)
    assert view.serving_domains(task) == ["alpha"]
    assert view.serving_domains(task) == ["alpha"]  # the cached answer
    assert set(view.snapshot()) == {"alpha"}
    _record(view, product("beta"), 1)
    assert view.serving_domains(task) == ["alpha", "beta"]
    assert set(view.snapshot()) == {"alpha", "beta"}
    retired = product("beta").model_copy(update={"status": DataProductStatus.RETIRED})
    _record(view, retired, 2)
    assert view.serving_domains(task) == ["alpha"]
    assert view.snapshot()["beta"][0].status == "retired"
    view.forget("catalog", product("alpha").id)
    assert view.serving_domains(task) == []
    suspended = task.model_copy(
        update={"admission": task.admission.model_copy(update={"suspended_domains": ["alpha"]})}
    )
    _record(view, product("alpha"), 3)
    assert view.serving_domains(task) == ["alpha"]
    assert view.serving_domains(suspended) == []  # same id, another definition: not the first one's answer
