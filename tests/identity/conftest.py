"""Signers and a trust registry with two registered domains (fixed keys, so runs are reproducible)."""

from __future__ import annotations

import pytest

from meshfl.identity import GOVERNANCE, Signer, TrustRegistry
from tests.identity.identity_builders import fixed_key, key_event


@pytest.fixture
def governance() -> Signer:
    return Signer(GOVERNANCE, fixed_key(1))


@pytest.fixture
def retail() -> Signer:
    return Signer("retail", fixed_key(2))


@pytest.fixture
def bank() -> Signer:
    return Signer("bank", fixed_key(3))


@pytest.fixture
def registry(governance: Signer, retail: Signer, bank: Signer) -> TrustRegistry:
    trust = TrustRegistry(governance.public_key)
    for signer, seed in ((retail, 2), (bank, 3)):
        trust.apply(governance.sign(key_event(signer.identity, fixed_key(seed))))
    return trust
