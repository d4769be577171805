"""Signature schemes 1 and 2: old signatures keep verifying, neither can pass for the other.

``data/scheme1_update.avro`` is a signed ``ModelUpdate`` exactly as main wrote it before scheme 2
(commit 7c169ae: ``tests/identity/identity_builders.update()`` signed by ``Signer("retail",
fixed_key(2))`` and framed with the single-object codec), so it carries the writer schema of that
time (now ``schemas/released/2``) and a scheme-1 signature: what an audit replay of an old log meets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meshfl.codec import SingleObjectCodec, default_store
from meshfl.errors import SignatureError
from meshfl.events import ModelUpdate, Signature
from meshfl.identity import SCHEME_1, SCHEME_2, Signer, TrustRegistry, signed_bytes, verify_event
from tests.identity.identity_builders import fixed_key, update

RECORDED = Path(__file__).parent / "data" / "scheme1_update.avro"


def _codec() -> SingleObjectCodec:
    return SingleObjectCodec(default_store())


def _sign_by(signature: Signature, event: ModelUpdate, *, bytes_of: Signature | None = None) -> ModelUpdate:
    """``event`` carrying ``signature`` whose value is retail's Ed25519 over ``bytes_of``'s canonical
    bytes (default: its own): a forger's tool to pair one scheme's bytes with the other's label."""
    value = fixed_key(2).sign(signed_bytes(event, bytes_of or signature))
    return event.model_copy(update={"signature": signature.model_copy(update={"value": value})})


@pytest.fixture
def scheme_1_signature(retail: Signer) -> Signature:
    signed = retail.sign(update())
    assert signed.signature is not None
    return signed.signature.model_copy(update={"scheme": None, "value": b""})


def test_the_recorded_scheme_1_update_decodes_and_verifies(registry: TrustRegistry, retail: Signer) -> None:
    decoded = _codec().decode_as(RECORDED.read_bytes(), ModelUpdate)
    assert decoded.signature is not None and decoded.signature.scheme is None
    assert decoded.model_copy(update={"signature": None}) == update()
    assert registry.verify(decoded) == decoded.signature
    assert verify_event(decoded, retail.public_key) == decoded.signature
    flipped = decoded.tensors[0].model_copy(update={"data": b"\x01" + bytes(decoded.tensors[0].data)[1:]})
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(
            decoded.model_copy(update={"tensors": [flipped, *decoded.tensors[1:]]}), retail.public_key
        )


def test_scheme_2_round_trip_through_the_codec(registry: TrustRegistry, retail: Signer) -> None:
    signed = retail.sign(update())
    assert signed.signature is not None and signed.signature.scheme == SCHEME_2.field == 2
    decoded = _codec().decode_as(_codec().encode(signed), ModelUpdate)
    assert decoded.signature == signed.signature
    assert registry.verify(decoded) == signed.signature


def test_a_signature_built_by_scheme_1_rules_verifies(retail: Signer, scheme_1_signature: Signature) -> None:
    signed = _sign_by(scheme_1_signature, update())
    assert signed_bytes(update(), scheme_1_signature).startswith(SCHEME_1.tag)
    verify_event(signed, retail.public_key)


def test_a_flipped_tensor_byte_fails_in_either_scheme(retail: Signer, scheme_1_signature: Signature) -> None:
    for signed in (retail.sign(update()), _sign_by(scheme_1_signature, update())):
        last = signed.tensors[-1]
        data = bytes(last.data)
        flipped = last.model_copy(update={"data": data[:-1] + bytes([data[-1] ^ 0x80])})
        with pytest.raises(SignatureError, match="does not match"):
            verify_event(
                signed.model_copy(update={"tensors": [*signed.tensors[:-1], flipped]}), retail.public_key
            )


def test_relabelling_the_scheme_fails(retail: Signer, scheme_1_signature: Signature) -> None:
    """Downgrade and upgrade: a scheme-2 signature relabelled scheme 1 and back."""
    signed_2 = retail.sign(update())
    assert signed_2.signature is not None
    down = signed_2.model_copy(update={"signature": signed_2.signature.model_copy(update={"scheme": None})})
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(down, retail.public_key)
    signed_1 = _sign_by(scheme_1_signature, update())
    assert signed_1.signature is not None
    up = signed_1.model_copy(update={"signature": signed_1.signature.model_copy(update={"scheme": 2})})
    with pytest.raises(SignatureError, match="does not match"):
        verify_event(up, retail.public_key)


def test_one_schemes_bytes_under_the_others_label_fail(retail: Signer, scheme_1_signature: Signature) -> None:
    """The signer's own key over scheme-1 bytes, labelled scheme 2 (and the reverse): the tags differ,
    so neither verifies; the label is never enough to pick a weaker reading."""
    scheme_2_signature = scheme_1_signature.model_copy(update={"scheme": 2})
    for label, bytes_of in (
        (scheme_2_signature, scheme_1_signature),
        (scheme_1_signature, scheme_2_signature),
    ):
        forged = _sign_by(label, update(), bytes_of=bytes_of)
        with pytest.raises(SignatureError, match="does not match"):
            verify_event(forged, retail.public_key)


@pytest.mark.parametrize("scheme", [0, 1, 3, -1, 2**63 - 1])
def test_an_unknown_scheme_never_verifies(retail: Signer, scheme_1_signature: Signature, scheme: int) -> None:
    """Scheme 1 is only ever ``null``: ``1`` is not a second spelling of it (one encoding per scheme)."""
    label = scheme_1_signature.model_copy(update={"scheme": scheme})
    event = update().model_copy(update={"signature": label.model_copy(update={"value": b"\0" * 64})})
    with pytest.raises(SignatureError, match="unknown signature scheme") as info:
        verify_event(event, retail.public_key)
    assert info.value.policy == "bad_signature"
    with pytest.raises(SignatureError, match="unknown signature scheme"):
        signed_bytes(update(), label)
