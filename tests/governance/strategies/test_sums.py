"""Rounding the float64 sums into their own memory gives ``.to(dtype)``'s bits and hands pages back."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import torch

from governance.strategies import FedAvg, WeightedSumAccumulator
from governance.strategies.base import ClientUpdate
from governance.strategies.sums import MAPPED_MIN, ROUND_BLOCK, Float64Sums, round_in_place


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_in_place_is_the_cast_bit_for_bit(dtype: torch.dtype) -> None:
    count = 2 * ROUND_BLOCK + 12_345  # several blocks, a ragged last one
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(count, generator=generator, dtype=torch.float64) * 1e3
    values[:5] = torch.tensor([0.0, -0.0, float("inf"), 1e300, 2.0**-1070], dtype=torch.float64)
    expected = values.to(dtype)
    region = mmap.mmap(-1, 8 * count, flags=mmap.MAP_PRIVATE)
    mapped = torch.frombuffer(region, dtype=torch.float64)
    mapped.copy_(values)
    rounded = round_in_place(mapped, region, dtype)
    del mapped
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    assert rounded.dtype == dtype
    assert torch.equal(rounded.view(bits), expected.view(bits))


def test_the_result_reuses_the_sums_memory() -> None:
    """A 64 MiB float64 sum rounds to float32 without growing RSS, and RSS drops by the freed half."""
    count = 8 << 20
    sums = Float64Sums({"w": torch.Size([count // 4, 4]), "bias": torch.Size([3])})
    sums.tensors["w"].fill_(1.0 / 3.0)  # every page touched: 64 MiB resident
    sums.tensors["bias"].fill_(2.5)
    before = _rss()
    rounded = sums.pop_rounded("w", torch.float32)
    after = _rss()
    assert rounded.shape == (count // 4, 4) and rounded.dtype == torch.float32
    assert torch.all(rounded == torch.tensor(1.0 / 3.0, dtype=torch.float64).to(torch.float32))
    assert before - after > 0.8 * 4 * count  # the float64 back half went back to the kernel
    assert sums.pop_rounded("bias", torch.float32).tolist() == [2.5] * 3  # small: a plain cast
    assert MAPPED_MIN > 8 * 3  # so "bias" took the plain cast


def test_fedavg_result_is_the_mean_cast_from_float64() -> None:
    """The in-place rounding path gives the bits the float64 mean cast once gives (old behaviour)."""
    generator = torch.Generator().manual_seed(5)
    global_weights = {
        "big": torch.zeros(300_000, dtype=torch.float32),
        "half": torch.zeros(200_000, dtype=torch.bfloat16),
        "steps": torch.zeros((), dtype=torch.int64),
    }
    updates = [
        ClientUpdate(
            update_id=f"u{i}",
            domain=f"d{i}",
            weights={
                "big": torch.randn(300_000, generator=generator),
                "half": torch.randn(200_000, generator=generator).to(torch.bfloat16),
                "steps": torch.tensor(3 * i),
            },
            num_examples=11 + 7 * i,
        )
        for i in range(4)
    ]
    result = FedAvg().aggregate(updates, global_weights).weights
    reference = WeightedSumAccumulator(global_weights)
    for update in updates:
        reference.add(update)
    means = reference.mean_float64()
    for name, tensor in result.items():
        expected = means[name].to(tensor.dtype) if tensor.is_floating_point() else means[name].round().long()
        assert torch.equal(tensor, expected), name
