"""Tensor codec throughput: a ModelUpdate of ~10M float32 parameters through the full meshfl path.

    .venv/bin/python bench/codec.py [--params 10000000] [--reps 15]

encode = state dict -> ``to_wire(copy=False)`` -> ``ModelUpdate`` -> framed Avro bytes (single-object
encoding), what an agent does with a trained state; decode = framed bytes -> ``ModelUpdate`` ->
``from_wire(copy=False)`` -> state dict of tensors viewing the message, what governance and an agent do
with a message. Every repetition gets a fresh buffer (a new copy of the message, made outside the
timing), the way a daemon meets messages, never warm parts. Both are compared, in the same run, with a
plain memory copy of the same number of bytes and with ``safetensors.torch.save`` / ``load`` of the
same state dict (``load`` also returns tensors that alias its input), each on fresh buffers too. The
copying variants (``to_wire()`` / ``from_wire()``, which own their memory) are shown below them.
Figures are medians of ``--reps`` runs after one warm-up; the machine is shared, so run it three times.
sign / verify = the update's Ed25519 signature over its canonical form (``meshfl.identity``), which
names the state by its BLAKE3 (signature scheme 2; SHA-256 in scheme 1, still verified): the state is
hashed once a side (the signer while signing, the verifier while verifying), then the signature covers a
few hundred bytes. The rows give the hash alone (BLAKE3, and SHA-256 beside it) and sign / verify with
the hash already known, so both costs show.

With 40 MB messages glibc's malloc trims and re-maps its heap on every message (page faults dominate).
Long-running consumers can keep the heap instead; compare with

    MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=1073741824 .venv/bin/python bench/codec.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from typing import TypeVar

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from meshfl.codec import SingleObjectCodec, default_store
from meshfl.events import ModelUpdate, utcnow
from meshfl.identity import Signer, generate_private_key, state_digests, verify_event
from meshfl.tensors import from_wire, layout_blake3, tensors_sha256, to_wire

T = TypeVar("T")


def model_state(params: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """An MLP-like state of about ``params`` float32 parameters: weights and biases of four layers."""
    generator = torch.Generator().manual_seed(seed)
    width = 1024
    sizes = [(max(1, int(params * 0.6) // 2048), 2048), (width, 2048), (width, width)]
    used = sum(rows * cols + rows for rows, cols in sizes)
    last = max(1, (params - used) // (width + 1))
    sizes.append((last, width))
    state = {}
    for index, (rows, cols) in enumerate(sizes):
        state[f"layers.{index}.weight"] = torch.randn(rows, cols, generator=generator)
        state[f"layers.{index}.bias"] = torch.randn(rows, generator=generator)
    return state


def median_seconds(action: Callable[[T], object], reps: int, fresh: Callable[[], T] = lambda: None) -> float:
    """Median time of ``action(fresh())``, ``fresh`` (a new input buffer) outside the timing."""
    action(fresh())  # warm-up: imports, first-touch page faults
    timings = []
    for _ in range(reps):
        given = fresh()
        start = time.perf_counter()
        action(given)
        timings.append(time.perf_counter() - start)
        del given
    return statistics.median(timings)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("torch", "numpy", "fastavro", "safetensors", "pydantic")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}\n{packages}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()

    state = model_state(args.params)
    count = sum(tensor.numel() for tensor in state.values())
    nbytes = count * 4
    codec = SingleObjectCodec(default_store())

    created = utcnow()

    def make_update(copy: bool) -> ModelUpdate:
        return ModelUpdate(
            update_id="bench", task_id="bench", round=1, base_version=0, domain="bench",
            num_examples=1000, metrics={"loss": 0.5}, tensors=to_wire(state, copy=copy), created_at=created,
        )  # fmt: skip

    payload = codec.encode(make_update(False))
    assert payload == codec.encode(make_update(True))

    def fresh_payload() -> bytes:
        return bytes(bytearray(payload))

    def decode(data: bytes, copy: bool = False) -> dict[str, torch.Tensor]:
        return from_wire(codec.decode_as(data, ModelUpdate).tensors, copy=copy)

    restored = decode(fresh_payload())
    assert restored.keys() == state.keys() and all(torch.equal(restored[k], state[k]) for k in state)
    saved = safetensors_save(state)
    flat = np.frombuffer(payload, dtype=np.uint8)
    update = make_update(True)
    signer = Signer("bench", generate_private_key())
    digests = state_digests(update)
    signed = signer.sign(update, digests=digests)
    verify_event(signed, signer.public_key)  # the verifier's own hash agrees

    with warnings.catch_warnings():  # safetensors.load warns that its tensors alias read-only bytes
        warnings.simplefilter("ignore", UserWarning)
        rows = {
            "memcpy (numpy.copy)": median_seconds(lambda _: flat.copy(), args.reps),
            "meshfl encode (state -> bytes)": median_seconds(
                lambda _: codec.encode(make_update(False)), args.reps
            ),
            "safetensors save": median_seconds(lambda _: safetensors_save(state), args.reps),
            "meshfl decode (bytes -> state)": median_seconds(decode, args.reps, fresh_payload),
            "safetensors load": median_seconds(safetensors_load, args.reps, lambda: bytes(bytearray(saved))),
            "copying variants:": float("nan"),
            "  encode with to_wire() (owns)": median_seconds(
                lambda _: codec.encode(make_update(True)), args.reps
            ),
            "  decode with from_wire() (owns)": median_seconds(
                lambda data: decode(data, copy=True), args.reps, fresh_payload
            ),
            "  codec.encode only (owned tensors)": median_seconds(lambda _: codec.encode(update), args.reps),
            "  codec.decode only": median_seconds(codec.decode, args.reps, fresh_payload),
            "signatures:": float("nan"),
            "  tensors BLAKE3 (once a side)": median_seconds(
                lambda _: layout_blake3(update.tensors), args.reps
            ),
            "  tensors SHA-256 (scheme 1)": median_seconds(
                lambda _: tensors_sha256(update.tensors), args.reps
            ),
            "  sign, state hash known": median_seconds(
                lambda _: signer.sign(update, digests=digests), args.reps
            ),
            "  verify, state hash known": median_seconds(
                lambda _: verify_event(signed, signer.public_key, digests=digests), args.reps
            ),
            "  sign incl. hashing": median_seconds(lambda _: signer.sign(update), args.reps),
            "  verify incl. hashing": median_seconds(
                lambda _: verify_event(signed, signer.public_key), args.reps
            ),
        }

    memcpy = rows["memcpy (numpy.copy)"]
    print(f"machine: {machine()}")
    print(
        f"state: {len(state)} tensors, {count:,} float32 parameters, {nbytes / 1e6:.1f} MB; "
        f"message {len(payload):,} B"
    )
    tunables = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(f"median of {args.reps} reps after a warm-up; glibc malloc tunables: {tunables or 'defaults'}\n")
    print(f"{'path':34s} {'ms':>8s} {'GB/s':>7s} {'x memcpy':>9s}")
    for name, seconds in rows.items():
        if seconds != seconds:  # a heading
            print(name)
            continue
        print(f"{name:34s} {seconds * 1e3:8.2f} {nbytes / seconds / 1e9:7.2f} {memcpy / seconds:9.2f}")
    encode_ratio = rows["meshfl encode (state -> bytes)"] / rows["safetensors save"]
    decode_ratio = rows["meshfl decode (bytes -> state)"] / rows["safetensors load"]
    for what, ratio in (
        ("encode time / safetensors save", encode_ratio),
        ("decode time / safetensors load", decode_ratio),
    ):
        print(f"\n{what}: {ratio:.2f} (aim <= 1.0: {'met' if ratio <= 1.0 else 'NOT met'})", end="")
    print()
    encode_time = rows["meshfl encode (state -> bytes)"]
    signatures = rows["  sign, state hash known"] + rows["  verify, state hash known"]
    hashing = 2 * rows["  tensors BLAKE3 (once a side)"]
    verdict = "met" if signatures / encode_time < 0.05 else "NOT met"
    print(f"sign + verify / encode time: {signatures / encode_time:.2%} (aim < 5%: {verdict})")
    both = (signatures + hashing) / encode_time
    print(f"with the state's BLAKE3 on both sides (integrity, not signing): {both:.0%}")
    ratio = rows["  tensors BLAKE3 (once a side)"] / rows["  tensors SHA-256 (scheme 1)"]
    print(f"BLAKE3 / SHA-256 of the state: {ratio:.2f}")


if __name__ == "__main__":
    main()
