"""The trust registry: governance-signed key events only; a key speaks for its own domain only."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from meshfl.errors import SignatureError
from meshfl.events import DataProductDescriptor, GovernanceDecision, KeyAction, TrainingTask, utcnow
from meshfl.identity import GOVERNANCE, Signer, TrustRegistry, sender_of
from tests.identity.identity_builders import WHEN, fixed_key, key_event, update


def _policy(registry: TrustRegistry, event: object, **kwargs: object) -> str:
    with pytest.raises(SignatureError) as info:
        registry.verify(event, **kwargs)  # type: ignore[arg-type]
    return info.value.policy


def test_a_registered_domain_verifies(registry: TrustRegistry, retail: Signer) -> None:
    assert registry.verify(retail.sign(update())).signer == "retail"
    assert [r.domain for r in registry] == ["bank", "retail"]


def test_impersonation_unknown_and_unsigned(registry: TrustRegistry, retail: Signer, bank: Signer) -> None:
    assert _policy(registry, bank.sign(update(domain="retail"))) == "impersonation"  # bank speaks as retail
    # bank claims to be retail in the signature too, with its own key: the key is not retail's
    forged = Signer("retail", fixed_key(3)).sign(update(domain="retail"))
    assert _policy(registry, forged) == "impersonation"
    stranger = Signer("retail", fixed_key(7)).sign(update(domain="retail"))
    assert _policy(registry, stranger) == "unknown_key"
    assert _policy(registry, update()) == "unsigned"


def test_governance_events_need_the_pinned_key(
    registry: TrustRegistry, governance: Signer, retail: Signer
) -> None:
    decision = GovernanceDecision(
        decision_id="d", task_id="t", update_id="u", domain="retail", round=1, outcome="accepted",
        policy="all", reason="ok", created_at=WHEN,
    )  # fmt: skip
    assert sender_of(decision) == GOVERNANCE
    assert registry.verify(governance.sign(decision)).signer == GOVERNANCE
    assert _policy(registry, retail.sign(decision)) == "impersonation"  # a domain signing a decision
    assert _policy(registry, Signer(GOVERNANCE, fixed_key(8)).sign(decision)) == "unknown_key"


def test_key_events_must_be_signed_by_governance(governance: Signer, bank: Signer) -> None:
    registry = TrustRegistry(governance.public_key)
    with pytest.raises(SignatureError, match="unsigned"):
        registry.apply(key_event("evil", fixed_key(5)))
    with pytest.raises(SignatureError) as info:
        registry.apply(bank.sign(key_event("evil", fixed_key(5))))
    assert info.value.policy == "impersonation"
    with pytest.raises(SignatureError, match="not that of its public key"):
        registry.apply(
            governance.sign(key_event("evil", fixed_key(5)).model_copy(update={"key_id": "00" * 16}))
        )
    assert list(registry) == []


def test_a_key_belongs_to_one_domain(registry: TrustRegistry, governance: Signer) -> None:
    with pytest.raises(SignatureError, match="already belongs to 'retail'"):
        registry.apply(governance.sign(key_event("bank", fixed_key(2))))


def test_revocation_refuses_later_signatures_only(registry: TrustRegistry, governance: Signer) -> None:
    retail = Signer("retail", fixed_key(2))
    before = retail.sign(update())
    assert before.signature is not None
    cut = before.signature.timestamp + timedelta(milliseconds=1)
    registry.apply(governance.sign(key_event("retail", fixed_key(2), KeyAction.REVOKED, effective_at=cut)))
    assert registry.verify(before).signer == "retail"  # signed before the revocation: still valid
    after = before.model_copy(update={"signature": None})
    while utcnow() <= cut:  # the re-signing must fall after the cut, not in the same millisecond
        time.sleep(0.001)
    resigned = retail.sign(after)
    assert _policy(registry, resigned) == "revoked_key"
    # registering the revoked key again does not bring it back
    registry.apply(governance.sign(key_event("retail", fixed_key(2))))
    assert _policy(registry, retail.sign(after)) == "revoked_key"


def test_rotation_new_key_works_old_revoked(registry: TrustRegistry, governance: Signer) -> None:
    new = Signer("retail", fixed_key(12))
    registry.apply(governance.sign(key_event("retail", fixed_key(12))))
    registry.apply(governance.sign(key_event("retail", fixed_key(2), KeyAction.REVOKED, effective_at=WHEN)))
    assert registry.verify(new.sign(update())).key_id == new.key_id
    assert _policy(registry, Signer("retail", fixed_key(2)).sign(update())) == "revoked_key"
    assert [r.key_id for r in registry.keys_of("retail") if r.revoked_at is None] == [new.key_id]


def test_sender_rules() -> None:
    descriptor = DataProductDescriptor(id="p", domain="bank", owner="o", version="1")
    assert sender_of(descriptor) == "bank"
    assert sender_of(update(domain="x")) == "x"
    task = TrainingTask.model_validate(
        {"id": "t", "model": {"input_dim": 2, "output_dim": 2}, "features": ["a"], "label": "y",
         "num_classes": 2, "rounds": 1}
    )  # fmt: skip
    assert sender_of(task) == GOVERNANCE
