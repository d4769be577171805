"""Fixed keys and events for the identity tests (pure: no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshfl.events import DataProductRef, KeyAction, KeyEvent, ModelUpdate
from meshfl.identity import key_id, public_bytes
from meshfl.tensors import to_wire

WHEN = datetime(2026, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)


def fixed_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def update(domain: str = "retail", **changes: object) -> ModelUpdate:
    base = ModelUpdate(
        update_id="u-1",
        task_id="fraud-mlp",
        round=3,
        base_version=2,
        domain=domain,
        data_products=[DataProductRef(id="retail.tx", version="1.0.0")],
        num_examples=4096,
        metrics={"loss": 0.3125, "accuracy": 0.91},
        tensors=to_wire({"w": torch.arange(12, dtype=torch.float32).reshape(4, 3) / 8, "b": torch.zeros(4)}),
        created_at=WHEN,
    )
    return base.model_copy(update=changes)


def key_event(
    domain: str, key: Ed25519PrivateKey, action: KeyAction = KeyAction.REGISTERED, **extra: object
) -> KeyEvent:
    return KeyEvent(
        domain=domain,
        key_id=key_id(key),
        public_key=public_bytes(key),
        action=action,
        effective_at=extra.pop("effective_at", WHEN),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )
