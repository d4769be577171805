"""Tensor codec throughput: a ModelUpdate of ~10M float32 parameters through the full meshfl path.

    .venv/bin/python bench/codec.py [--params 10000000] [--reps 15]

encode = state dict -> ``to_wire`` -> ``ModelUpdate`` -> framed Avro bytes (single-object encoding);
decode = framed bytes -> ``ModelUpdate`` -> ``from_wire`` -> state dict of writable tensors.
Both are compared, in the same run, with a plain memory copy of the same number of bytes and with
``safetensors.torch.save`` / ``load`` of the same state dict (note: safetensors' ``load`` returns tensors
that alias an immutable ``bytes`` object, so it copies once; meshfl's decode copies twice, into the
event and then into writable tensors). Figures are medians of ``--reps`` runs after one warm-up.

With 40 MB messages glibc's malloc trims and re-maps its heap on every message (page faults dominate:
~12k minor faults per decode). Long-running consumers can keep the heap instead; compare with

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

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from meshfl.codec import SingleObjectCodec, default_store
from meshfl.events import ModelUpdate
from meshfl.tensors import from_wire, to_wire


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


def median_seconds(action: Callable[[], object], reps: int) -> float:
    action()  # warm-up: first-touch page faults and caches
    timings = []
    for _ in range(reps):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
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

    def make_update() -> ModelUpdate:
        return ModelUpdate(
            update_id="bench", task_id="bench", round=1, base_version=0, domain="bench",
            num_examples=1000, metrics={"loss": 0.5}, tensors=to_wire(state),
        )  # fmt: skip

    def encode() -> bytes:
        return codec.encode(make_update())

    payload = encode()

    def decode() -> dict[str, torch.Tensor]:
        return from_wire(codec.decode_as(payload, ModelUpdate).tensors)

    restored = decode()
    assert restored.keys() == state.keys() and all(torch.equal(restored[k], state[k]) for k in state)
    saved = safetensors_save(state)
    flat = np.frombuffer(payload, dtype=np.uint8)
    scratch = bytearray(payload)
    update = make_update()

    with warnings.catch_warnings():  # safetensors.load warns that its tensors alias read-only bytes
        warnings.simplefilter("ignore", UserWarning)
        rows = {
            "memcpy (numpy.copy)": median_seconds(flat.copy, args.reps),
            "memcpy (bytes(bytearray))": median_seconds(lambda: bytes(scratch), args.reps),
            "meshfl encode (state -> bytes)": median_seconds(encode, args.reps),
            "  to_wire only": median_seconds(lambda: to_wire(state), args.reps),
            "  codec.encode only": median_seconds(lambda: codec.encode(update), args.reps),
            "safetensors save": median_seconds(lambda: safetensors_save(state), args.reps),
            "meshfl decode (bytes -> state)": median_seconds(decode, args.reps),
            "  codec.decode only": median_seconds(lambda: codec.decode(payload), args.reps),
            "  from_wire only": median_seconds(lambda: from_wire(update.tensors), args.reps),
            "safetensors load": median_seconds(lambda: safetensors_load(saved), args.reps),
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
        print(f"{name:34s} {seconds * 1e3:8.2f} {nbytes / seconds / 1e9:7.2f} {memcpy / seconds:9.2f}")
    encode_ratio = rows["meshfl encode (state -> bytes)"] / rows["safetensors save"]
    decode_ratio = rows["meshfl decode (bytes -> state)"] / rows["safetensors load"]
    print(f"\nencode time / safetensors save: {encode_ratio:.2f} (aim <= 2.0)")
    print(f"decode time / safetensors load: {decode_ratio:.2f} (aim <= 1.0)")


if __name__ == "__main__":
    main()
