"""Signatures: a signed event verifies; any change, another key or a bad value does not."""

from __future__ import annotations

import threading

import pytest

from meshfl.codec import SingleObjectCodec, default_store
from meshfl.errors import SignatureError
from meshfl.events import ModelUpdate
from meshfl.identity import Signer, verify_event
from tests.identity.identity_builders import fixed_key, update


def test_signed_event_survives_the_codec_and_verifies(retail: Signer) -> None:
    signed = retail.sign(update())
    assert signed.signature is not None and len(signed.signature.value) == 64
    decoded = SingleObjectCodec(default_store()).decode_as(
        SingleObjectCodec(default_store()).encode(signed), ModelUpdate
    )
    assert verify_event(decoded, retail.public_key) == signed.signature


@pytest.mark.parametrize(
    "change",
    [
        {"num_examples": 1},
        {"domain": "bank"},
        {"update_id": "squat"},
        {"metrics": {"loss": 0.0}},
        {"round": 99},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_changed_field_fails(retail: Signer, change: dict[str, object]) -> None:
    tampered = retail.sign(update()).model_copy(update=change)
    with pytest.raises(SignatureError, match="does not match") as info:
        verify_event(tampered, retail.public_key)
    assert info.value.policy == "bad_signature"


def test_changed_tensor_bytes_fail(retail: Signer) -> None:
    signed = retail.sign(update())
    first = signed.tensors[0]
    flipped = first.model_copy(update={"data": bytes([first.data[0] ^ 1]) + first.data[1:]})
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(signed.model_copy(update={"tensors": [flipped, *signed.tensors[1:]]}), retail.public_key)


def test_unsigned_wrong_key_and_truncated_value(retail: Signer, bank: Signer) -> None:
    with pytest.raises(SignatureError) as unsigned:
        verify_event(update(), retail.public_key)
    assert unsigned.value.policy == "unsigned"
    signed = retail.sign(update())
    with pytest.raises(SignatureError, match="checked with another"):
        verify_event(signed, bank.public_key)
    # the attacker relabels the key id: the signature still does not match the other key
    relabelled = signed.model_copy(
        update={"signature": signed.signature.model_copy(update={"key_id": bank.key_id})}
    )
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(relabelled, bank.public_key)
    short = signed.model_copy(update={"signature": signed.signature.model_copy(update={"value": b"x" * 10})})
    with pytest.raises(SignatureError, match="10 bytes"):
        verify_event(short, retail.public_key)


def test_a_layout_violation_is_a_signature_error_not_a_crash(retail: Signer) -> None:
    signed = retail.sign(update())
    overflow = signed.tensors[0].model_copy(update={"shape": [2**62, 2**62, 0], "data": b""})
    with pytest.raises(SignatureError, match="does not match"):  # hashed as sent, then it differs
        verify_event(
            signed.model_copy(update={"tensors": [overflow, *signed.tensors[1:]]}), retail.public_key
        )
    negative = signed.tensors[0].model_copy(update={"shape": [-1]})
    with pytest.raises(SignatureError, match="cannot be hashed"):
        verify_event(
            signed.model_copy(update={"tensors": [negative, *signed.tensors[1:]]}), retail.public_key
        )


def test_a_hostile_layout_can_be_signed_so_the_policies_judge_it(retail: Signer) -> None:
    """Who sent it is settled first; a registered domain's absurd shapes are the policies' to refuse."""
    base = update()
    overflow = base.tensors[0].model_copy(update={"shape": [2**62, 2**62, 0], "data": b""})
    hostile = retail.sign(base.model_copy(update={"tensors": [overflow, *base.tensors[1:]]}))
    assert verify_event(hostile, retail.public_key).signer == "retail"


def test_sequences_strictly_increase_across_threads() -> None:
    signer = Signer("retail", fixed_key(9))
    seen: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            sequence = signer.sign(update()).signature.sequence  # type: ignore[union-attr]
            with lock:
                seen.append(sequence)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 800
    # a restarted signer (same key, new process) still goes past the old sequences: they are clock-based
    assert Signer("retail", fixed_key(9)).sign(update()).signature.sequence > min(seen)  # type: ignore[union-attr]
