"""Streaming weighted sum of updates: the FedAvg family folds each update in as it arrives.

Memory is O(model size), not O(updates): one float64 buffer per tensor plus a small float64 scratch; the
caller can drop each update as soon as it is folded in. This is what keeps the governance service's memory
flat as the number of domains grows.

Determinism, precisely. Each update tensor (float32, float16 or bfloat16) is converted exactly to float64 and
multiplied by its weight; for FedAvg the weight is ``num_examples``, an integer, and the product of a 24-bit
significand by an integer below 2**29 fits in float64's 53 bits, so it is exact. The only rounding is that of
the float64 running sum, one rounding per update and element. Hence:

- :meth:`FedAvg.aggregate` folds the updates in the canonical ``(domain, update_id)`` order, so its result is
  bit-identical whatever the order of the list it is given;
- a streaming accumulator folds in arrival order, and float64 addition is not associative: its sum can differ
  from the canonical one only by the float64 rounding of at most ``count - 1`` additions, a relative error
  below ``(count - 1) * 2**-53`` of the sum of magnitudes, far below the float32 rounding (2**-24) applied by
  :meth:`result`. The final cast to float32 then usually gives identical bits, and where a coordinate sits
  on a float32 rounding boundary it differs by one float32 ulp. Fed in canonical order, streaming and
  ``aggregate`` are bit-identical (same kernel, same order).

An exact order-independent sum (a fixed-point superaccumulator over float32's full exponent range needs
~300 bits an element) would cost several times the memory traffic of this float64 fold; the service gets
order independence by feeding the canonical order when it matters (replay), not by paying for it per update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from governance.strategies.aggregate import FOLD_CHUNK, TILE, fold_scaled_, fold_tiled_
from governance.strategies.base import ClientUpdate, Weights, check_weights
from governance.strategies.sums import Float64Sums
from meshfl.spill import spans


def examples_weight(update: ClientUpdate) -> float:
    """FedAvg's weight of an update: its number of training examples."""
    return float(update.num_examples)


class WeightedSumAccumulator:
    """Running ``sum_i w_i * x_i`` over updates, in float64, with ``w_i = weight_of(update_i)``.

    :meth:`result` and :meth:`mean_float64` are terminal. :meth:`result` rounds each float64 sum into its
    own memory (``governance.strategies.sums``), so the peak is the float64 sums (2x the float32 model),
    never sums and result together; :meth:`mean_float64` hands the float64 tensors over. Any call after
    them raises ``RuntimeError``.
    """

    def __init__(
        self, global_weights: Weights, *, weight_of: Callable[[ClientUpdate], float] = examples_weight
    ) -> None:
        if not global_weights:
            raise ValueError("global weights are empty")
        # shape and dtype only: meta tensors hold no data and keep no reference to the global weights
        self._reference = {
            name: torch.empty(t.shape, dtype=t.dtype, device="meta") for name, t in global_weights.items()
        }
        self._storage = Float64Sums({name: t.shape for name, t in global_weights.items()})
        self._sums: dict[str, torch.Tensor] | None = self._storage.tensors
        largest = max(t.numel() for t in global_weights.values())
        self._scratch = torch.empty(min(max(largest, 1), FOLD_CHUNK), dtype=torch.float64)
        self._weight_of = weight_of
        self._weights: list[float] = []
        self._keys: set[tuple[str, str]] = set()
        self._total_examples = 0

    @property
    def spec(self) -> Weights:
        """Names, shapes and dtypes of the global weights, as data-free meta tensors."""
        return self._reference

    @property
    def count(self) -> int:
        """Number of updates folded in."""
        return len(self._weights)

    @property
    def total_examples(self) -> int:
        """Sum of ``num_examples`` over the updates folded in."""
        return self._total_examples

    @property
    def total_weight(self) -> float:
        """Sum of the weights, correctly rounded (``math.fsum``), so independent of arrival order."""
        return math.fsum(self._weights)

    def held_bytes(self) -> int:
        """Bytes of float64 sums and scratch this accumulator holds (0 once consumed)."""
        if self._sums is None:
            return 0
        return 8 * (sum(t.numel() for t in self._sums.values()) + self._scratch.numel())

    def add(self, update: ClientUpdate) -> None:
        """Fold ``update`` into the running sum; the update is only read and can be dropped afterwards."""
        sums = self._open()
        if update.key in self._keys:
            raise ValueError(f"duplicate update {update.key}")
        check_weights(update.weights, self._reference, what=f"update {update.update_id}")
        weight = float(self._weight_of(update))
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(
                f"update {update.update_id} has weight {weight}; weights must be positive and finite"
            )
        for name, acc in sums.items():
            x = update.weights[name].reshape(-1)
            flat = acc.view(-1)
            for start, stop in spans(x):  # element-wise: the same bits window by window
                if start == 0 and stop == flat.numel():  # in memory: one span, no slicing
                    fold_scaled_(flat, x, weight, self._scratch)
                else:
                    fold_scaled_(flat[start:stop], x[start:stop], weight, self._scratch)
        self._keys.add(update.key)
        self._weights.append(weight)
        self._total_examples += update.num_examples

    def add_all(self, updates: Sequence[ClientUpdate]) -> None:
        """``add`` each update in the given order, tiled: bit-identical to the loop, faster when every
        update is in memory.

        Every update is checked first (all or nothing). Then, per tensor, the accumulator is walked in
        tiles of ``TILE`` elements, and each tile receives every update in turn while it stays in cache:
        per element the additions happen in the same order as the loop, so the sums are the same bits,
        but the float64 sums cross memory once instead of once per update.
        """
        if type(self).add is not WeightedSumAccumulator.add:  # a subclass keeps more per update
            for update in updates:
                self.add(update)
            return
        sums = self._open()
        keys = set(self._keys)
        weights: list[float] = []
        for update in updates:
            if update.key in keys:
                raise ValueError(f"duplicate update {update.key}")
            keys.add(update.key)
            check_weights(update.weights, self._reference, what=f"update {update.update_id}")
            weight = float(self._weight_of(update))
            if not (weight > 0 and math.isfinite(weight)):
                raise ValueError(
                    f"update {update.update_id} has weight {weight}; weights must be positive and finite"
                )
            weights.append(weight)
        scratch = self._scratch[:TILE]
        for name, acc in sums.items():
            fold_tiled_(acc, [update.weights[name] for update in updates], weights, scratch)
        self._keys = keys
        self._weights.extend(weights)
        self._total_examples += sum(update.num_examples for update in updates)

    def mean_float64(self) -> dict[str, torch.Tensor]:
        """The weighted mean in float64 (terminal): what server optimizers start from."""
        sums = self._close()
        total = self.total_weight
        return {name: sums.pop(name).div_(total) for name in list(sums)}

    def result(self) -> dict[str, torch.Tensor]:
        """The weighted mean cast back to the global dtypes (terminal)."""
        sums = self._close()
        total = self.total_weight
        out: dict[str, torch.Tensor] = {}
        for name in list(sums):
            sums[name].div_(total)
            out[name] = self._storage.pop_rounded(name, self._reference[name].dtype)
        return out

    def _open(self) -> dict[str, torch.Tensor]:
        if self._sums is None:
            raise RuntimeError("the accumulator was already consumed by result() or mean_float64()")
        return self._sums

    def _close(self) -> dict[str, torch.Tensor]:
        sums = self._open()
        if not self._weights:
            raise ValueError("cannot aggregate an empty list of updates")
        self._sums = None
        return sums
