"""Throughput of meshfl's aggregation strategies beside the memory-bandwidth limit and Flower's functions.

    .venv/bin/python bench/aggregate.py [--updates 50 --params 10000000]

Every figure is in updates/s (higher is better), best of ``--repeats`` runs, and is printed as a ratio to the
baseline measured in the same run: ``acc.add_(x, alpha=n)`` over the same float32 updates into a float32
running sum (the memory-bandwidth limit of a weighted sum). The O(n^2 d) rules (Krum, Bulyan) are compared
with Flower on a smaller set (``--small-updates`` x ``--small-params``) because Flower's recomputes every
distance in Python loops; the unit stays updates/s. The peak memory of streaming FedAvg is measured in a
child process (fresh allocator) as the peak-RSS rise (VmHWM, reset through /proc/self/clear_refs) while
folding updates that were already in memory, and again with updates created one at a time as a decoder
would hand them over.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from governance.strategies import STRATEGIES, ClientUpdate, FedAvg, Strategy

try:
    import flwr
    from flwr.server.strategy import aggregate as flwr_aggregate
except ImportError:  # the comparison is optional; meshfl does not need Flower
    flwr = None
    flwr_aggregate = None


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def layout(params: int, tensors: int) -> dict[str, int]:
    sizes = [params // tensors] * tensors
    sizes[-1] += params - sum(sizes)
    return {f"layer{i}.weight": size for i, size in enumerate(sizes)}


def make_updates(
    count: int, params: int, tensors: int, seed: int = 0
) -> tuple[dict[str, torch.Tensor], list[ClientUpdate]]:
    generator = torch.Generator().manual_seed(seed)
    shapes = layout(params, tensors)
    global_weights = {name: torch.randn(size, generator=generator) for name, size in shapes.items()}
    updates = []
    for i in range(count):
        weights = {
            name: g + 0.01 * torch.randn(g.shape, generator=generator) for name, g in global_weights.items()
        }
        updates.append(
            ClientUpdate(update_id=f"u{i}", domain=f"d{i:03d}", weights=weights, num_examples=100 + i)
        )
    return global_weights, updates


def best_rate(count: int, run: Callable[[], object], repeats: int, budget: float = 8.0) -> float:
    """Updates/s of the fastest of ``repeats`` runs (fewer when one run exceeds ``budget`` seconds)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        if elapsed > budget:
            break
    return count / best


def interleaved_rates(count: int, runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Updates/s of each run, best of ``repeats`` rounds that run them one after the other, so a load
    swing on a shared machine hits the baseline and the measured row alike."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            gc.collect()
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return [count / elapsed for elapsed in best]


def add_baseline(updates: list[ClientUpdate], dtype: torch.dtype) -> Callable[[], object]:
    def run() -> object:
        sums = {name: torch.zeros(t.shape, dtype=dtype) for name, t in updates[0].weights.items()}
        for u in updates:
            for name, acc in sums.items():
                acc.add_(u.weights[name], alpha=u.num_examples)
        return sums

    return run


def streaming_fedavg(
    updates: list[ClientUpdate], global_weights: dict[str, torch.Tensor]
) -> Callable[[], object]:
    def run() -> object:
        accumulator = FedAvg().accumulator(global_weights)
        for u in updates:
            accumulator.add(u)
        return accumulator.result()

    return run


def probe_memory(args: argparse.Namespace) -> None:
    """Child process: print the peak-RSS rise of one streaming FedAvg round as a JSON line.

    ``held``: the updates are in memory before the baseline, so the rise is the accumulator's own memory
    (float64 sums, scratch, result). ``arriving``: each update is created just before it is folded and
    dropped after, as a Kafka consumer would decode them, so the rise also counts the update in flight.
    """

    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    count = min(args.updates, 10)
    held = args.probe_memory == "held"
    global_weights, updates = make_updates(count if held else 0, args.params, args.tensors)
    generator = torch.Generator().manual_seed(1)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = status("VmRSS")
    accumulator = FedAvg().accumulator(global_weights)
    for i in range(count):
        if held:
            accumulator.add(updates[i])
            continue
        weights = {name: torch.randn(g.shape, generator=generator) for name, g in global_weights.items()}
        accumulator.add(ClientUpdate(update_id=f"u{i}", domain="d", weights=weights, num_examples=10))
        del weights
    result = accumulator.result()
    peak = status("VmHWM") - before
    model_bytes = sum(t.numel() * t.element_size() for t in result.values())
    print(json.dumps({"model_bytes": model_bytes, "peak": peak, "count": count}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--tensors", type=int, default=8, help="tensors the parameters are split into")
    parser.add_argument(
        "--byzantine", type=int, default=None, help="f for Krum/Bulyan (default: max for Bulyan)"
    )
    parser.add_argument("--small-updates", type=int, default=15)
    parser.add_argument("--small-params", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for every row, baselines included (governance runs 1: --threads)",
    )
    parser.add_argument(
        "--fold-only",
        action="store_true",
        help="only the limits and the FedAvg folds (issue 12 item 3), not the other rules or Flower",
    )
    parser.add_argument("--probe-memory", choices=["held", "arriving"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_memory:
        probe_memory(args)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    flwr_version = flwr.__version__ if flwr is not None else "not installed"
    print(
        f"versions: python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"flwr {flwr_version}"
    )
    n, d = args.updates, args.params
    f = args.byzantine if args.byzantine is not None else (n - 3) // 4
    print(f"data: {n} updates x {d:,} float32 parameters in {args.tensors} tensors; f = {f}\n")
    global_weights, updates = make_updates(n, d, args.tensors)
    FedAvg().aggregate(updates[:2], global_weights)  # compiles the fused fold (numba) outside the timings

    rows: list[tuple[str, float, str]] = []
    # item 3's pair, interleaved: the float32 limit and FedAvg with every update in memory (tiled)
    limit32, tiled = interleaved_rates(
        n,
        [add_baseline(updates, torch.float32), lambda: FedAvg().aggregate(updates, global_weights)],
        args.repeats,
    )
    few = updates[: max(2, n // 5)]  # the mixed-dtype add_ is slow: fewer updates, same unit
    limit64 = best_rate(len(few), add_baseline(few, torch.float64), args.repeats)
    rows.append(("limit: add_ into float32 sum", limit32, ""))
    rows.append(("limit: add_ into float64 sum", limit64, ""))

    flower: dict[str, float] = {}
    results: list[tuple[list[np.ndarray], int]] = [
        ([u.weights[name].numpy() for name in global_weights], u.num_examples) for u in updates
    ]
    if flwr_aggregate is not None and not args.fold_only:
        flower["fedavg"] = best_rate(n, lambda: flwr_aggregate.aggregate(results), args.repeats)
        flower["fedmedian"] = best_rate(n, lambda: flwr_aggregate.aggregate_median(results), 1)
        flower["fedtrimmedavg"] = best_rate(n, lambda: flwr_aggregate.aggregate_trimmed_avg(results, 0.2), 1)

    ours: dict[str, Strategy] = {
        "fedavg": FedAvg(),
        "fedavgm": STRATEGIES["fedavgm"](server_momentum=0.9),  # type: ignore[call-arg]
        "fedprox": STRATEGIES["fedprox"](),
        "fedadam": STRATEGIES["fedadam"](),
        "fedyogi": STRATEGIES["fedyogi"](),
        "fedadagrad": STRATEGIES["fedadagrad"](),
        "fedbuff": STRATEGIES["fedbuff"](),
        "fedmedian": STRATEGIES["fedmedian"](),
        "fedtrimmedavg": STRATEGIES["fedtrimmedavg"](beta=0.2),  # type: ignore[call-arg]
        "krum": STRATEGIES["krum"](num_byzantine=f),  # type: ignore[call-arg]
        "multikrum": STRATEGIES["multikrum"](num_byzantine=f),  # type: ignore[call-arg]
        "bulyan": STRATEGIES["bulyan"](num_byzantine=f),  # type: ignore[call-arg]
    }
    rows.append(
        (
            "fedavg streaming (accumulator)",
            best_rate(n, streaming_fedavg(updates, global_weights), args.repeats),
            "fedavg",
        )
    )
    rows.append(("fedavg tiled (all in memory)", tiled, "fedavg"))
    for name, strategy in ours.items():
        if args.fold_only:
            break
        if name == "fedavg":
            continue
        rate = best_rate(n, lambda s=strategy: s.aggregate(updates, global_weights), args.repeats)
        rows.append((name, rate, name if name in flower else ""))

    small: list[tuple[str, float, float | None]] = []
    if flwr_aggregate is not None and not args.fold_only:
        small_global, small_updates = make_updates(
            args.small_updates, args.small_params, args.tensors, seed=1
        )
        small_results = [
            ([u.weights[k].numpy() for k in small_global], u.num_examples) for u in small_updates
        ]
        fs = (args.small_updates - 3) // 4
        m = args.small_updates - fs
        pairs: list[tuple[str, Strategy, Callable[[], Any]]] = [
            (
                "krum",
                STRATEGIES["krum"](num_byzantine=fs),
                lambda: flwr_aggregate.aggregate_krum(small_results, fs, 0),
            ),  # type: ignore[call-arg]
            (
                "multikrum",
                STRATEGIES["multikrum"](num_byzantine=fs, num_selected=m),  # type: ignore[call-arg]
                lambda: flwr_aggregate.aggregate_krum(small_results, fs, m),
            ),
            (
                "bulyan",
                STRATEGIES["bulyan"](num_byzantine=fs),  # type: ignore[call-arg]
                lambda: flwr_aggregate.aggregate_bulyan(
                    list(small_results), fs, flwr_aggregate.aggregate_krum, to_keep=0
                ),
            ),
        ]
        for name, strategy, theirs in pairs:
            mine = best_rate(
                args.small_updates, lambda s=strategy: s.aggregate(small_updates, small_global), args.repeats
            )
            small.append((name, mine, best_rate(args.small_updates, theirs, args.repeats)))

    print(f"{'':34s}{'updates/s':>11s}{'x f32 limit':>13s}{'x f64 limit':>13s}{'x Flower':>10s}")
    for label, rate, flower_key in rows:
        versus = f"{rate / flower[flower_key]:9.2f}x" if flower_key in flower else f"{'':10s}"
        print(f"{label:34s}{rate:11.1f}{rate / limit32:12.3f}x{rate / limit64:12.2f}x{versus}")
    for key, rate in flower.items():
        print(f"{'flower ' + key:34s}{rate:11.1f}{rate / limit32:12.3f}x{rate / limit64:12.2f}x")
    if small:
        print(
            f"\nO(n^2 d) rules on {args.small_updates} updates x {args.small_params:,} parameters "
            f"(f = {(args.small_updates - 3) // 4}), ratios to the f32 limit above:"
        )
        for name, mine, theirs in small:
            print(
                f"{name:20s} meshfl {mine:8.2f}/s ({mine / limit32:.4f}x)   flower {theirs:8.2f}/s "
                f"({theirs / limit32:.4f}x)   meshfl/flower {mine / theirs:6.1f}x"
            )

    if args.fold_only:
        return
    memory = {}
    for mode in ("held", "arriving"):
        command = [sys.executable, __file__, "--probe-memory", mode, "--updates", str(n), "--params", str(d)]
        probe = subprocess.run(
            [*command, "--tensors", str(args.tensors)], capture_output=True, text=True, check=True
        )
        memory[mode] = json.loads(probe.stdout.strip().splitlines()[-1])
    size = memory["held"]["model_bytes"]
    print(
        f"\nstreaming FedAvg peak memory, peak-RSS rise over {memory['held']['count']} updates "
        f"(model {size / 2**20:.0f} MiB float32, largest tensor {1 / args.tensors:.3f} of it):\n"
        f"  accumulator alone (updates already in memory): {memory['held']['peak'] / size:.2f}x model size\n"
        f"  updates arriving one at a time (accumulator + the update in flight): "
        f"{memory['arriving']['peak'] / size:.2f}x model size"
    )


if __name__ == "__main__":
    main()
