"""The canonical form: stable bytes (a golden vector another language can check), tensors by hash."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from meshfl.errors import SignatureError
from meshfl.events import ModelVersion, Signature, StrategySpec
from meshfl.identity import DOMAIN_TAG, Signer, signed_bytes, state_digests, verify_event
from meshfl.tensors import layout_sha256, tensors_sha256, to_wire
from tests.identity.identity_builders import WHEN, fixed_key, update

SIGNATURE = Signature(signer="retail", key_id="ab" * 16, timestamp=WHEN, sequence=7, value=b"")


def test_layout_is_the_documented_json() -> None:
    event = update()
    raw = signed_bytes(event, SIGNATURE)
    assert raw.startswith(DOMAIN_TAG)
    document = json.loads(raw[len(DOMAIN_TAG) :])
    assert raw[len(DOMAIN_TAG) :] == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["schema"] == "io.meshfl.v1.ModelUpdate"
    assert (document["signer"], document["key_id"], document["sequence"]) == ("retail", "ab" * 16, 7)
    assert document["timestamp"] == 1_773_480_413_589
    body = document["event"]
    assert "signature" not in body
    assert body["tensors"] == tensors_sha256(event.tensors)  # the state by its SHA-256, not its bytes
    assert body["metrics"] == {"accuracy": "3fed1eb851eb851f", "loss": "3fd4000000000000"}  # binary64 bits
    assert body["created_at"] == 1_773_480_413_589
    assert body["data_products"] == [{"id": "retail.tx", "version": "1.0.0"}]


def test_golden_vector() -> None:
    """Ed25519 is deterministic: a fixed key and event give these exact bytes in any implementation."""
    event = update()
    raw = signed_bytes(event, SIGNATURE)
    assert hashlib.sha256(raw).hexdigest() == GOLDEN_SHA256
    assert fixed_key(2).sign(raw).hex() == GOLDEN_SIGNATURE


GOLDEN_SHA256 = "a607aa98f399a84b05a6257b04a02303172f15219a11d37edec91e55d7ba7b5b"
GOLDEN_SIGNATURE = (
    "6958cc47aaf62fc2588fbd2938c27cea2384bab8c552a6806b984417ffda2544"
    "cff3e825ea6a02a4ea5e34b4d76ff0224788446e58779252a1d057bee27e760b"
)


def test_every_field_is_covered() -> None:
    event = update()
    base = signed_bytes(event, SIGNATURE)
    changes = {
        "update_id": "u-2",
        "task_id": "other",
        "round": 4,
        "base_version": 1,
        "domain": "bank",
        "num_examples": 4097,
        "metrics": {"loss": 0.3125000000000001, "accuracy": 0.91},
        "tensors": to_wire({"w": torch.zeros(4, 3), "b": torch.zeros(4)}),
        "data_products": [],
    }
    for name, value in changes.items():
        assert signed_bytes(event.model_copy(update={name: value}), SIGNATURE) != base, name
    for name, value in {"sequence": 8, "signer": "bank", "key_id": "cd" * 16}.items():
        assert signed_bytes(event, SIGNATURE.model_copy(update={name: value})) != base, name


def test_nulls_are_left_out_and_negative_zero_is_exact() -> None:
    version = ModelVersion(
        task_id="t", version=1, parent_version=None, round=1, strategy=StrategySpec(),
        tensors=to_wire({"w": torch.zeros(2)}), sha256="", metrics={"z": -0.0}, created_at=WHEN,
    )  # fmt: skip
    document = json.loads(signed_bytes(version, SIGNATURE)[len(DOMAIN_TAG) :])
    assert "parent_version" not in document["event"] and "privacy" not in document["event"]
    assert document["event"]["metrics"] == {"z": "8000000000000000"}
    assert document["event"]["server_state"] == tensors_sha256([])


def test_known_digests_are_used_and_a_wrong_one_fails_verification() -> None:
    signer = Signer("retail", fixed_key(2))
    event = update()
    digests = state_digests(event)
    assert digests == {"tensors": tensors_sha256(event.tensors)}
    signed = signer.sign(event, digests=digests)
    verify_event(signed, signer.public_key)  # the verifier hashes by itself
    verify_event(signed, signer.public_key, digests=digests)
    lying = signer.sign(event, digests={"tensors": "0" * 64})
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(lying, signer.public_key)


def test_layout_digest_is_the_state_hash_for_a_valid_state() -> None:
    event = update()
    assert layout_sha256(event.tensors) == tensors_sha256(event.tensors)
    assert layout_sha256(list(reversed(event.tensors))) == tensors_sha256(event.tensors)
