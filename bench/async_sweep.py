"""Which FedBuff settings make asynchronous rounds as good as synchronous ones per accepted update?

    python bench/async_sweep.py [--seeds 42 1 2] [--updates 100] [--delays 2] [--only K=4] [--json out.json]

The digits demo with one straggler (``digits-support``, the largest domain, which holds most of the 2s,
6s and 7s): each configuration runs the asynchronous federation in process (``bench._quality.async_sim``:
the agents' ``train_local`` and seeds, ``aggregate_version`` with each update's own base, on a simulated
clock where the straggler's cycle is longer by ``delay`` units, a fast cycle being about 2) for
``updates / K`` versions, and is compared with the synchronous federation of the task file (FedAvgM)
run for ``updates / 5`` rounds: the same number of accepted updates and local epochs per update, each
with its learning-rate schedule completed. The straggler must still contribute: the table shows how many
of its updates were accepted and their mean staleness. Literature: FedBuff (Nguyen et al., AISTATS 2022,
arXiv:2106.06639: buffer size K, server learning rate and momentum, staleness weight
``1/sqrt(1 + tau)``), FedAsync's polynomial staleness weights (Xie et al. 2019, arXiv:1903.03934).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._quality.async_sim import run_async
from bench._quality.sim import Federation, load_federation, run_sync
from bench._round.machine import describe
from meshfl.events import FederationMode, RoundPolicy, StrategySpec
from meshfl.logs import configure_logging

SLOW = "digits-support"

# (label, buffer size K, FedBuff params, staleness alpha, max staleness)
CONFIGS: list[tuple[str, int, dict[str, float], float, int]] = [
    ("K=3 slr 1 (the previous demo)", 3, {}, 0.5, 20),
    ("K=2 slr 1", 2, {}, 0.5, 20),
    ("K=4 slr 1", 4, {}, 0.5, 20),
    ("K=4 slr 1 alpha 0", 4, {}, 0.0, 20),
    ("K=4 slr 1 alpha 1", 4, {}, 1.0, 20),
    ("K=4 slr 0.8", 4, {"server_learning_rate": 0.8}, 0.5, 20),
    ("K=4 slr 1.2", 4, {"server_learning_rate": 1.2}, 0.5, 20),
    ("K=4 slr 1 m 0.2", 4, {"server_momentum": 0.2}, 0.5, 20),
    ("K=4 slr 0.5 m 0.5", 4, {"server_learning_rate": 0.5, "server_momentum": 0.5}, 0.5, 20),
    ("K=4 slr 1 m 0.5", 4, {"server_momentum": 0.5}, 0.5, 20),
]


def async_task(
    fed: Federation, k: int, params: dict[str, float], alpha: float, staleness: int, versions: int
):
    return fed.with_task(
        mode=FederationMode.ASYNC,
        rounds=versions,
        strategy=StrategySpec(name="fedbuff", params=params),
        round_policy=RoundPolicy(
            min_domains=1, buffer_size=k, max_staleness=staleness, staleness_alpha=alpha
        ),
    )


def run(
    fed: Federation,
    seeds: list[int],
    updates: int,
    delays: list[float],
    configs,
    *,
    jitter: float = 0.0,
    distinct: bool = False,
) -> list[dict]:
    domains = len(fed.domains)
    sync = {}
    for seed in seeds:
        sync[seed] = run_sync(fed.with_task(seed=seed, rounds=updates // domains))[-1]
    print(
        f"sync (task file, {updates // domains} rounds x {domains} = {updates} updates): "
        f"{statistics.fmean(sync.values()):.3f} ({min(sync.values()):.3f}-{max(sync.values()):.3f})\n",
        flush=True,
    )
    print(
        "| configuration | delay | async accuracy, mean (min-max) | async / sync (min) | "
        f"{SLOW} accepted (of {updates}) | its mean staleness | withdrawn |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = []
    for delay in delays:
        for label, k, params, alpha, staleness in configs:
            if updates % k:
                continue
            began = time.perf_counter()
            accs, ratios, slow, stale, withdrawn = [], [], [], [], []
            for seed in seeds:
                task_fed = async_task(fed.with_task(seed=seed), k, params, alpha, staleness, updates // k)
                result = run_async(task_fed, slow_domain=SLOW, delay=delay, jitter=jitter, distinct=distinct)
                accs.append(result.curve[-1])
                ratios.append(result.curve[-1] / sync[seed])
                slow.append(result.accepted[SLOW])
                stale.append(result.mean_staleness(SLOW))
                withdrawn.append(sum(result.withdrawn.values()))
            row = {
                "config": label,
                "delay": delay,
                "jitter": jitter,
                "distinct": distinct,
                "buffer_size": k,
                "params": params,
                "staleness_alpha": alpha,
                "max_staleness": staleness,
                "async": accs,
                "sync": [sync[s] for s in seeds],
                "ratio": ratios,
                "slow_accepted": slow,
                "slow_staleness": stale,
                "withdrawn": withdrawn,
                "seconds": time.perf_counter() - began,
            }
            rows.append(row)
            print(
                f"| {label} | {delay:g} | {statistics.fmean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f}) | "
                f"{statistics.fmean(ratios):.3f} ({min(ratios):.3f}) | {statistics.fmean(slow):.1f} | "
                f"{statistics.fmean(stale):.1f} | {statistics.fmean(withdrawn):.1f} |",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--updates", type=int, default=100, help="accepted updates per run (a multiple of 5)")
    parser.add_argument(
        "--delays", type=float, nargs="+", default=[2.0], help="straggler's extra cycle, units"
    )
    parser.add_argument(
        "--only", nargs="*", help="run only the configurations whose label contains one of these"
    )
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="cycles drawn from [1 - j, 1 + j] x their length"
    )
    parser.add_argument(
        "--distinct", action="store_true", help="a buffer takes at most one update per domain"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    configure_logging(level="WARNING")
    for label, value in describe("not used: in-process simulation"):
        print(f"{label}: {value}")
    fed = load_federation("digits")
    configs = [c for c in CONFIGS if not args.only or any(s in c[0] for s in args.only)]
    print(f"\ntask {fed.task.id}, {len(fed.domains)} domains, straggler {SLOW}, seeds {args.seeds}\n")
    print(f"jitter {args.jitter}, {'one update per domain per buffer' if args.distinct else 'K oldest'}")
    rows = run(
        fed, args.seeds, args.updates, args.delays, configs, jitter=args.jitter, distinct=args.distinct
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"seeds": args.seeds, "updates": args.updates, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
