"""The canonical form: stable bytes (golden vectors another language can check), tensors by digest."""

from __future__ import annotations

import hashlib
import json
import struct

import blake3
import pytest
import torch

from meshfl.errors import SignatureError
from meshfl.events import ModelVersion, Signature, StrategySpec
from meshfl.identity import (
    DOMAIN_TAG,
    SCHEME_1,
    SCHEME_2,
    Signer,
    StateDigest,
    key_id,
    signed_bytes,
    state_digests,
    verify_event,
)
from meshfl.tensors import layout_blake3, layout_sha256, tensors_sha256, to_wire
from tests.identity.identity_builders import WHEN, fixed_key, update

SIGNATURE = Signature(signer="retail", key_id="ab" * 16, timestamp=WHEN, sequence=7, value=b"")
"""Scheme 1 (``scheme`` null): what every signature on the logs before scheme 2 is."""
SIGNATURE_2 = SIGNATURE.model_copy(update={"scheme": 2})


@pytest.mark.parametrize(
    ("signature", "tag", "digest"),
    [
        (SIGNATURE, b"meshfl-signature-v1\n", tensors_sha256),
        (SIGNATURE_2, b"meshfl-signature-v2\n", lambda tensors: blake3.blake3(_layout(tensors)).hexdigest()),
    ],
    ids=["scheme-1", "scheme-2"],
)
def test_layout_is_the_documented_json(signature: Signature, tag: bytes, digest: object) -> None:
    event = update()
    raw = signed_bytes(event, signature)
    assert raw.startswith(tag)
    document = json.loads(raw[len(tag) :])
    assert raw[len(tag) :] == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["schema"] == "io.meshfl.v1.ModelUpdate"
    assert (document["signer"], document["key_id"], document["sequence"]) == ("retail", "ab" * 16, 7)
    assert document["timestamp"] == 1_773_480_413_589
    assert document.get("scheme") == signature.scheme  # scheme 1 documents carry no such key
    body = document["event"]
    assert "signature" not in body
    assert body["tensors"] == digest(event.tensors)  # type: ignore[operator]  # the state by digest
    assert body["metrics"] == {"accuracy": "3fed1eb851eb851f", "loss": "3fd4000000000000"}  # binary64 bits
    assert body["created_at"] == 1_773_480_413_589
    assert body["data_products"] == [{"id": "retail.tx", "version": "1.0.0"}]


def _layout(tensors: list) -> bytes:  # type: ignore[type-arg]
    """The byte sequence of ``meshfl.tensors``' docstring, built from the text, not the library."""
    out = b""
    for tensor in sorted(tensors, key=lambda t: t.name):
        name, symbol = tensor.name.encode(), str(tensor.dtype.value).encode()
        out += struct.pack("<Q", len(name)) + name + struct.pack("<Q", len(symbol)) + symbol
        out += struct.pack("<Q", len(tensor.shape)) + b"".join(struct.pack("<Q", d) for d in tensor.shape)
        out += struct.pack("<Q", len(tensor.data)) + bytes(tensor.data)
    return out


@pytest.mark.parametrize(
    ("signature", "golden_sha256", "golden_signature"),
    [
        (  # scheme 1: unchanged since it was introduced, so old signatures keep verifying
            SIGNATURE,
            "a607aa98f399a84b05a6257b04a02303172f15219a11d37edec91e55d7ba7b5b",
            "6958cc47aaf62fc2588fbd2938c27cea2384bab8c552a6806b984417ffda2544"
            "cff3e825ea6a02a4ea5e34b4d76ff0224788446e58779252a1d057bee27e760b",
        ),
        (
            SIGNATURE_2,
            "a7a5837b5709d8d802befbfdaeb215752df29c036bfe025fd52337322fcff8ef",
            "28addef31c106d3692c3f711c274ae222dcb9ee6b1a76c1e9f39164f7270125a"
            "939ea062419f135be46534740b49fe18fb0b04cb224ef9073eac70c0952b600c",
        ),
    ],
    ids=["scheme-1", "scheme-2"],
)
def test_golden_vector(signature: Signature, golden_sha256: str, golden_signature: str) -> None:
    """Ed25519 is deterministic: a fixed key and event give these exact bytes in any implementation."""
    raw = signed_bytes(update(), signature)
    assert hashlib.sha256(raw).hexdigest() == golden_sha256
    assert fixed_key(2).sign(raw).hex() == golden_signature


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
    base_2 = signed_bytes(event, SIGNATURE_2)
    for name, value in {**changes, "tensors": to_wire({"w": torch.zeros(4, 3), "b": torch.zeros(4)})}.items():
        assert signed_bytes(event.model_copy(update={name: value}), SIGNATURE_2) != base_2, name
    assert base_2 != base  # the scheme field is signed: scheme 2's bytes are never scheme 1's


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
    assert digests == {"tensors": StateDigest("blake3", layout_blake3(event.tensors))}
    assert state_digests(event, SCHEME_1) == {"tensors": StateDigest("sha256", tensors_sha256(event.tensors))}
    signed = signer.sign(event, digests=digests)
    assert signed.signature is not None and signed.signature.scheme == 2
    verify_event(signed, signer.public_key)  # the verifier hashes by itself
    verify_event(signed, signer.public_key, digests=digests)
    lying = signer.sign(event, digests={"tensors": StateDigest("blake3", "0" * 64)})
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(lying, signer.public_key)
    with pytest.raises(SignatureError, match="does not match"):  # a wrong digest given to the verifier
        verify_event(signed, signer.public_key, digests={"tensors": StateDigest("blake3", "0" * 64)})


def test_a_digest_of_the_wrong_algorithm_is_never_signed() -> None:
    """The old way (a version's SHA-256 handed to the signer) is refused, not silently mis-signed."""
    signer = Signer("retail", fixed_key(2))
    event = update()
    for wrong in (tensors_sha256(event.tensors), StateDigest("sha256", tensors_sha256(event.tensors))):
        with pytest.raises(ValueError, match="blake3"):
            signer.sign(event, digests={"tensors": wrong})  # type: ignore[dict-item]


def test_a_verifier_digest_of_the_other_scheme_is_not_used() -> None:
    """A verifier holding SHA-256 digests meets a scheme-2 event (or BLAKE3 ones a scheme-1 event):
    the state is hashed in the signature's own scheme, so the outcome never depends on the hint."""
    key = fixed_key(2)
    event = update()
    signed_2 = Signer("retail", key).sign(event)
    verify_event(signed_2, key.public_key(), digests=state_digests(event, SCHEME_1))
    unsigned_1 = SIGNATURE.model_copy(update={"key_id": key_id(key)})  # built by scheme 1's rules
    value = key.sign(signed_bytes(event, unsigned_1))
    signed_1 = event.model_copy(update={"signature": unsigned_1.model_copy(update={"value": value})})
    verify_event(signed_1, key.public_key(), digests=state_digests(event, SCHEME_2))


def test_layout_digest_is_the_state_hash_for_a_valid_state() -> None:
    event = update()
    assert layout_sha256(event.tensors) == tensors_sha256(event.tensors)
    assert layout_sha256(list(reversed(event.tensors))) == tensors_sha256(event.tensors)
    assert tensors_sha256(event.tensors) == hashlib.sha256(_layout(event.tensors)).hexdigest()
    assert layout_blake3(list(reversed(event.tensors))) == blake3.blake3(_layout(event.tensors)).hexdigest()
    assert SCHEME_1.tag == DOMAIN_TAG and SCHEME_2.tag == b"meshfl-signature-v2\n"
