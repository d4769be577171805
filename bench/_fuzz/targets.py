"""Fuzz targets over everything that turns bytes off the bus into objects: framing, body decoding,
chunk reassembly and ``from_wire``.

The first input byte picks the target; the rest is the target's input. A target may accept or refuse
its input, but refusing must be a ``MeshflError`` (what a daemon turns into a dead letter or a
decision); any other exception is a crash. Every target bounds its own work, so nothing it does can
allocate more than the limits say.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

import atheris
import torch

from meshfl.bus import Reassembler, split_payload
from meshfl.codec import RegistryCodec, SingleObjectCodec, default_store
from meshfl.errors import MeshflError
from meshfl.events import (
    Chunk,
    DataProductDescriptor,
    DecisionOutcome,
    Event,
    GovernanceDecision,
    ModelSpec,
    ModelUpdate,
    ModelVersion,
    Tensor,
    TrainingTask,
)
from meshfl.tensors import from_wire, tensors_sha256, to_wire

EXPECTED: tuple[type[BaseException], ...] = (MeshflError,)
"""What a target may raise: meshfl's own errors. Anything else is a crash."""

STORE = default_store()
SINGLE = SingleObjectCodec(STORE)
REGISTRY = RegistryCodec("mock://meshfl-fuzz", STORE)
NAMES = STORE.names()
EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -(2**63)]
DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]


def _tensors_of(event: Event) -> None:
    if isinstance(event, ModelUpdate | ModelVersion):
        from_wire(event.tensors)
        if isinstance(event, ModelVersion):
            from_wire(event.server_state)


def framing(data: bytes) -> None:
    """Whole messages, as a consumer gets them: either framing, then the tensors if any."""
    codec = REGISTRY if data[:1] == b"\x00" else SINGLE
    _tensors_of(codec.decode(data))


def body(data: bytes) -> None:
    """Avro bodies behind a valid header of a chosen event type (gets past framing at once)."""
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    schema = STORE.current(name)
    header = b"\xc3\x01" + schema.fingerprint
    _tensors_of(SINGLE.decode(header + data[1:]))


def reassembly(data: bytes) -> None:
    """Sequences of hostile chunks from three senders; a completed payload is decoded as a message."""
    fdp = atheris.FuzzedDataProvider(data)
    reassembler = Reassembler(max_buffered_bytes=1 << 16, max_sender_bytes=1 << 15, max_payload_bytes=1 << 14)
    for offset in range(fdp.ConsumeIntInRange(1, 12)):
        part = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
        chunk = Chunk.model_construct(
            message_id=["a", "b", "c"][fdp.ConsumeIntInRange(0, 2)],
            index=_int(fdp, 8),
            count=_int(fdp, 8),
            total_size=_int(fdp, 1 << 15),
            sha256=[hashlib.sha256(part).hexdigest(), "0" * 64, fdp.ConsumeUnicode(4)][
                fdp.ConsumeIntInRange(0, 2)
            ],
            data=part,
        )
        try:
            done = reassembler.add(
                chunk,
                topic="t",
                partition=0,
                offset=offset,
                timestamp_ms=fdp.ConsumeIntInRange(0, 10**6),
                sender=["alice", "bob", "mallory"][fdp.ConsumeIntInRange(0, 2)],
            )
        except MeshflError:
            continue
        if done is not None:
            with contextlib.suppress(MeshflError):
                _tensors_of(SINGLE.decode(done.payload))
    reassembler.expire(10**7)
    if reassembler.held_bytes or reassembler.reserved_bytes:
        raise AssertionError("reassembly budget leaked")


def tensors(data: bytes) -> None:
    """Wire tensor records with any name, dtype string, shape and data: ``from_wire`` and the hash."""
    fdp = atheris.FuzzedDataProvider(data)
    records = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        ndim = fdp.ConsumeIntInRange(0, 40)
        shape = [_int(fdp, 16) for _ in range(ndim)]
        dtype = (
            DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)] if fdp.ConsumeBool() else fdp.ConsumeUnicode(6)
        )
        name = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 2000))
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
        records.append(Tensor.model_construct(name=name, dtype=dtype, shape=shape, data=payload))
    for run in (lambda: from_wire(records), lambda: tensors_sha256(records)):
        with contextlib.suppress(MeshflError):
            run()


def _int(fdp: atheris.FuzzedDataProvider, small: int) -> int:
    """A small integer most of the time, an int64 edge value otherwise."""
    if fdp.ConsumeBool():
        return fdp.ConsumeIntInRange(-1, small)
    return EDGE_INTS[fdp.ConsumeIntInRange(0, len(EDGE_INTS) - 1)]


TARGETS: tuple[Callable[[bytes], None], ...] = (framing, body, reassembly, tensors)


def one_input(data: bytes) -> None:
    """The libFuzzer entry point: the first byte picks the target."""
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    with contextlib.suppress(EXPECTED):
        target(data[1:])


def seeds() -> list[bytes]:
    """Valid inputs of every target: encoded events (both framings), a chunked update, real tensors."""
    state = {"layers.0.weight": torch.randn(4, 3), "layers.0.bias": torch.randn(4)}
    update = ModelUpdate(
        update_id="u",
        task_id="t",
        round=1,
        base_version=0,
        domain="d",
        num_examples=3,
        tensors=to_wire(state),
    )
    events: list[Event] = [
        update,
        ModelVersion(
            task_id="t",
            version=1,
            parent_version=0,
            round=1,
            strategy={"name": "fedavg"},
            tensors=to_wire(state),
            sha256="0" * 64,
        ),
        TrainingTask(
            id="t",
            model=ModelSpec(input_dim=3, hidden=[4], output_dim=2),
            features=["a", "b", "c"],
            label="y",
            num_classes=2,
            rounds=2,
        ),
        GovernanceDecision(
            decision_id="d",
            task_id="t",
            update_id="u",
            domain="d",
            round=1,
            outcome=DecisionOutcome.ACCEPTED,
            policy="p",
            reason="r",
        ),
        DataProductDescriptor(id="p", domain="d", owner="o", version="1"),
        Chunk(message_id="m", index=0, count=1, total_size=3, sha256="0" * 64, data=b"abc"),
    ]
    out = []
    for event in events:
        out.append(b"\x00" + SINGLE.encode(event))
        out.append(b"\x00" + REGISTRY.encode(event))
        body_bytes = SINGLE.encode(event)[10:]
        out.append(b"\x01" + bytes([NAMES.index(event.AVRO_NAME)]) + body_bytes)
    payload = SINGLE.encode(update)
    for chunk in split_payload(payload, chunk_size=64, message_id="a")[:3]:
        out.append(b"\x02" + SINGLE.encode(chunk))
    out.append(b"\x03" + bytes(range(64)))
    return out
