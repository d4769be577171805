"""Tensor spec: exactly the model's tensors, with the model's shapes and dtypes.

Aggregation adds tensors name by name; a missing, extra, reshaped or retyped tensor would either crash
the strategy or silently broadcast. The reason lists the first few differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from governance.policies.base import Candidate, PolicyContext, Verdict, accept, reject, summarize


def _dtype(dtype: object) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class TensorSpec:
    name: ClassVar[str] = "tensor_spec"

    def evaluate(self, candidate: Candidate, ctx: PolicyContext) -> Verdict:
        weights = candidate.weights
        differences = [f"missing {name!r}" for name in ctx.expected if name not in weights]
        differences += [f"unexpected {name!r}" for name in weights if name not in ctx.expected]
        for name, (shape, dtype) in ctx.expected.items():
            tensor = weights.get(name)
            if tensor is None:
                continue
            if tuple(tensor.shape) != tuple(shape):
                differences.append(f"{name!r} shape {tuple(tensor.shape)} != {tuple(shape)}")
            if tensor.dtype != dtype:
                differences.append(f"{name!r} dtype {_dtype(tensor.dtype)} != {_dtype(dtype)}")
        if differences:
            return reject(self.name, f"{len(differences)} difference(s): {summarize(differences)}")
        return accept(self.name, f"{len(ctx.expected)} tensors match the model")
