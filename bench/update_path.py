"""CPU of one update's trip through meshfl, per side, beside the hashing it cannot avoid (one run).

    .venv/bin/python bench/update_path.py [--params 1000000] [--reps 10] [--threads 1 2]

Agent side: sign (the state's BLAKE3, signature scheme 2), encode into pieces, cut them into chunks
(``EventProducer.produce``'s path). Governance side: decode the chunks, reassemble (the set's BLAKE3),
decode the update, verify its signature (the state's BLAKE3 again), then the tensor policies (spec,
finite values, norm bound...). No broker: this is what each daemon spends per update on top of the bus.
Baselines in the same run: two BLAKE3 passes over the update's bytes, the hashing floor of either side
(the bus checks a chunk set's digest, the signature names the state's), and two SHA-256 passes, the
floor before BLAKE3 (ratios are given to it, so runs before and after the change compare). Governance's
torch threads are a parameter: with 2 threads on a busy 2-core machine the policies' reductions spin
against other processes (``meshfl governance run --threads``, default 1).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import time
import uuid

import blake3
import torch

from governance.log_checks import decode_version
from governance.policies import Candidate, PolicyContext, evaluate_update
from governance.policies.checks import UPDATE_POLICIES
from governance.rounds import initial_version
from meshfl.bus._chunking import chunk_overhead, chunk_size_for, iter_chunks
from meshfl.bus._reassembly import Reassembler
from meshfl.codec import make_codec
from meshfl.events import DataProductRef, ModelSpec, ModelUpdate, TrainingTask, utcnow
from meshfl.identity.binding import update_id_for
from meshfl.identity.keys import generate_private_key
from meshfl.identity.registry import TrustRegistry
from meshfl.identity.signing import Signer
from meshfl.limits import spec_elements
from meshfl.logs import configure_logging
from meshfl.settings import load_settings
from meshfl.tensors import from_wire, to_wire

_CATALOG_POLICIES = {"known_domain", "admission", "data_contract"}  # need a catalog, not tensors


def _task(params: int) -> TrainingTask:
    hidden = max(16, int((params / 2) ** 0.5))
    second = max(16, (params - 64 * hidden - hidden) // (hidden + 11))
    return TrainingTask(
        id="bench-update-path", description="bench/update_path.py", owner="bench@example.org",
        model=ModelSpec(architecture="mlp", input_dim=64, hidden=[hidden, second], output_dim=10),
        features=[f"f{i}" for i in range(64)], label="y", num_classes=10, rounds=2, local_epochs=1,
        batch_size=32, learning_rate=0.05, optimizer="sgd", seed=7,
    )  # fmt: skip


def _median_ms(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    settings = load_settings()
    codec = make_codec(settings)
    task = _task(args.params)
    weights, _server = decode_version(initial_version(task), task)
    state = {name: tensor.clone() for name, tensor in weights.items()}
    expected = {name: (tuple(t.shape), t.dtype) for name, t in weights.items()}
    key = generate_private_key()
    signer = Signer("d1", key)
    registry = TrustRegistry(generate_private_key().public_key())
    registry.pin("d1", key.public_key())
    chunk_size = chunk_size_for(settings.max_message_bytes, chunk_overhead(codec, str(uuid.uuid4())))
    policies = [p for p in UPDATE_POLICIES if p.name not in _CATALOG_POLICIES]

    def agent() -> list[bytes]:
        update = ModelUpdate(
            update_id=update_id_for(task.id, 1, "d1"), task_id=task.id, round=1, base_version=0,
            domain="d1", data_products=[DataProductRef(id="d1.rows", version="1.0.0")], num_examples=64,
            metrics={"train_seconds": 0.1}, tensors=to_wire(state, copy=False), created_at=utcnow(),
        )  # fmt: skip
        # as EventProducer.produce: the message's pieces are cut into chunks, never joined first (a
        # joined 4 MB message cost ~7 ms more here, mostly page faults of the allocator's churn)
        parts = codec.encode_parts(signer.sign(update))
        message_id = str(uuid.uuid4())
        return [codec.encode(c) for c in iter_chunks(parts, chunk_size=chunk_size, message_id=message_id)]

    chunks = agent()

    def governance() -> bool:
        reassembler = Reassembler(max_buffered_bytes=settings.max_payload_bytes)
        done = None
        for offset, message in enumerate(chunks):
            chunk = codec.decode(message)
            done = reassembler.add(chunk, topic="u", partition=0, offset=offset, timestamp_ms=1) or done
        assert done is not None
        update = codec.decode(done.payload)
        registry.verify(update)
        tensors = from_wire(update.tensors, max_elements=spec_elements(expected), copy=False)
        context = PolicyContext(
            task=task, open_round=1, latest_version=0, global_weights=weights, expected=expected,
            catalog={}, decided_update_ids=set(), accepted_domains_this_round=frozenset(),
        )  # fmt: skip
        verdict, _ = evaluate_update(Candidate(update=update, weights=tensors), context, policies)
        return verdict.accepted

    assert governance(), "the bench update must pass the policies"
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    blob = os.urandom(nbytes)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("meshfl bench/update_path.py: CPU of one update per side, no broker (one run)")
    print(f"  {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average {load}")
    print(f"  update of {nbytes // 4:,} float32 parameters ({nbytes / 1e6:.1f} MB), {len(chunks)} chunks\n")
    floor = _median_ms(lambda: (hashlib.sha256(blob).digest(), hashlib.sha256(blob).digest()), args.reps)
    print(f"  baseline: two SHA-256 passes over {nbytes / 1e6:.1f} MB      {floor:8.2f} ms")
    fast = _median_ms(lambda: (blake3.blake3(blob).digest(), blake3.blake3(blob).digest()), args.reps)
    label = f"baseline: two BLAKE3 passes over {nbytes / 1e6:.1f} MB"
    print(f"  {label:<43}{fast:8.2f} ms   {fast / floor:5.2f}x")
    torch.set_num_threads(1)
    agent_ms = _median_ms(agent, args.reps)
    print(f"  agent: sign + encode + chunk               {agent_ms:8.2f} ms   {agent_ms / floor:5.2f}x")
    for threads in args.threads:
        torch.set_num_threads(threads)
        ms = _median_ms(governance, args.reps)
        label = f"governance, torch threads {threads}:"
        print(f"  {label:<43}{ms:8.2f} ms   {ms / floor:5.2f}x  (decode + verify + policies)")
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
