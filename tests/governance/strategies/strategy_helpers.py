"""Builders shared by the strategy tests: small random updates and bit-level comparisons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from governance.strategies import ClientUpdate

SHAPES: dict[str, tuple[int, ...]] = {"fc.weight": (4, 3), "fc.bias": (4,), "scale": ()}


def tensors(
    values: Mapping[str, Sequence[float] | float], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(v, dtype=dtype) for name, v in values.items()}


def update(
    domain: str, weights: Mapping[str, torch.Tensor], num_examples: int = 1, staleness: int = 0
) -> ClientUpdate:
    return ClientUpdate(
        update_id=f"{domain}-u",
        domain=domain,
        weights=weights,
        num_examples=num_examples,
        staleness=staleness,
    )


def random_weights(
    generator: torch.Generator,
    shapes: Mapping[str, tuple[int, ...]] = SHAPES,
    *,
    dtype: torch.dtype = torch.float32,
    center: Mapping[str, torch.Tensor] | None = None,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    out = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
        base = center[name].to(torch.float64) if center is not None else 0.0
        out[name] = (base + noise).to(dtype)
    return out


def random_updates(
    seed: int,
    count: int,
    shapes: Mapping[str, tuple[int, ...]] = SHAPES,
    *,
    dtype: torch.dtype = torch.float32,
    center: Mapping[str, torch.Tensor] | None = None,
    scale: float = 1.0,
    max_staleness: int = 0,
) -> list[ClientUpdate]:
    generator = torch.Generator().manual_seed(seed)
    updates = []
    for i in range(count):
        examples = int(torch.randint(1, 1000, (1,), generator=generator))
        staleness = int(torch.randint(0, max_staleness + 1, (1,), generator=generator))
        weights = random_weights(generator, shapes, dtype=dtype, center=center, scale=scale)
        updates.append(update(f"domain-{i:02d}", weights, examples, staleness))
    return updates


def clone_weights(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in weights.items()}


def same_bits(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Equal names, dtypes, shapes and bytes (NaN-safe, distinguishes -0.0 from +0.0)."""
    if a.keys() != b.keys():
        return False
    for name in a:
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not torch.equal(
            x.reshape(-1).contiguous().view(torch.uint8), y.reshape(-1).contiguous().view(torch.uint8)
        ):
            return False
    return True


def flatten(weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([weights[name].reshape(-1).to(torch.float64) for name in sorted(weights)])
