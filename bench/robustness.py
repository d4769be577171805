"""Test accuracy of every aggregation strategy, clean and with one poisoned domain, on the example tasks.

    python bench/robustness.py [--tasks digits breast-cancer] [--seeds 42 1 2] [--json out/robustness.json]

One compromised domain (signed and admitted: signatures do not stop a malicious insider) attacks in every
round (``bench._quality.attacks``: scaled x100 delta, sign flip x4, label flipping); the others are honest.
Each cell is the final version's test accuracy, mean over the task seeds with the spread (min-max). Runs are
in-process simulations with the project's own pure functions (the agents' ``train_local`` and per-round
seeds, ``governance.rounds.aggregate_version`` for every version): the arithmetic of a federation over
Kafka, without the transport. ``tests/federation/test_poisoning.py`` checks the figures over Kafka.
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

from bench._quality.attacks import ATTACKS, adversary
from bench._quality.sim import Federation, load_federation, run_sync
from bench._quality.variants import VARIANTS, use_root
from bench._round.machine import describe
from meshfl.events import StrategySpec
from meshfl.logs import configure_logging

ATTACKER = {"digits": "digits-retail", "breast-cancer": "hospital-south"}
"""The poisoned domain of each task: the median-sized one (``--attacker`` picks another)."""


def strategies(num_domains: int) -> list[tuple[str, StrategySpec]]:
    """FedAvg and every robust rule that can run with ``num_domains`` updates and one Byzantine domain."""
    out = [
        ("fedavg", StrategySpec(name="fedavg")),
        ("fedmedian", StrategySpec(name="fedmedian")),
        ("fedtrimmedavg", StrategySpec(name="fedtrimmedavg", params={"beta": 1.0 / num_domains})),
        ("normbound", StrategySpec(name="normbound")),
        ("centeredclip", StrategySpec(name="centeredclip")),
        ("trustscore", StrategySpec(name="trustscore")),
    ]
    if num_domains >= 5:  # Krum needs n >= 2f + 3
        out[1:1] = [
            ("krum", StrategySpec(name="krum", params={"num_byzantine": 1})),
            ("multikrum", StrategySpec(name="multikrum", params={"num_byzantine": 1})),
        ]
    if num_domains >= 7:  # Bulyan needs n >= 4f + 3
        out.append(("bulyan", StrategySpec(name="bulyan", params={"num_byzantine": 1})))
    return out


def cell(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "breast-cancer"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--only", nargs="*", help="strategies to run (default: all that fit)")
    parser.add_argument("--attacker", help="the poisoned domain (default: per task, see ATTACKER)")
    parser.add_argument(
        "--rounds", type=int, default=8, help="rounds per federation (8: tests/federation/test_poisoning.py)"
    )
    parser.add_argument(
        "--variants", action="store_true", help="also the tuned rules of bench._quality.variants"
    )
    parser.add_argument(
        "--fltrust-root",
        type=int,
        nargs="*",
        default=[],
        help="also FLTrust with a root set of this many rows (bench only, bench._quality.variants)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    configure_logging(level="WARNING")
    for label, value in describe("not used: in-process simulation"):
        print(f"{label}: {value}")
    results: dict[str, dict] = {}
    began = time.perf_counter()
    for task_name in args.tasks:
        fed = load_federation(task_name)
        fed = fed.with_task(rounds=args.rounds)
        attacker = args.attacker or ATTACKER[task_name]
        task = fed.task
        print(
            f"\n{task.id}: {len(fed.domains)} domains, {attacker} poisoned, {task.rounds} rounds x "
            f"{task.local_epochs} epochs, lr {task.learning_rate} {task.lr_schedule}, seeds {args.seeds}\n"
        )
        print("| strategy | " + " | ".join(args.attacks) + " |")
        print("|---|" + "---|" * len(args.attacks))
        table: dict[str, dict[str, list[float]]] = {}
        rules: list[tuple[str, StrategySpec | int]] = list(strategies(len(fed.domains)))
        if args.variants:
            rules += VARIANTS
        rules += [(f"fltrust, {rows} root rows", rows) for rows in args.fltrust_root]
        root_domain = next(name for name in fed.domains if name != attacker)
        for label, rule in rules:
            if args.only and label not in args.only:
                continue
            row: dict[str, list[float]] = {}
            for attack in args.attacks:
                row[attack] = []
                for seed in args.seeds:
                    spec = (
                        rule
                        if isinstance(rule, StrategySpec)
                        else use_root(fed, rows=rule, seed=seed, domain=root_domain)
                    )
                    run = run_sync(fed.with_task(seed=seed, strategy=spec), adversary(attack, attacker))
                    row[attack].append(run[-1])
            table[label] = row
            print(f"| {label} | " + " | ".join(cell(row[a]) for a in args.attacks) + " |", flush=True)
        keep = [i for i, name in enumerate(fed.domains) if name != attacker]
        honest = Federation(
            task, [fed.domains[i] for i in keep], [fed.data[i] for i in keep], fed.x_test, fed.y_test
        )
        ceiling = [run_sync(honest.with_task(seed=seed))[-1] for seed in args.seeds]
        print(
            f"\nwithout {attacker} at all (the task's strategy on the honest domains' data): {cell(ceiling)}"
        )
        results[task_name] = {
            "task": task.id,
            "attacker": attacker,
            "seeds": args.seeds,
            "table": table,
            "honest_only": ceiling,
        }
    print(f"\n{time.perf_counter() - began:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
