"""Which federation settings bring the digits demo closest to centralized training (same rows, same budget)?

    python bench/sweep.py [--task digits] [--seeds 42 1 2] [--json out/sweep.json]

Every configuration is one task override (strategy, server optimizer, FedProx's mu, local epochs, learning
rate); each runs the whole synchronous federation in process (``bench._quality.sim``: the agents'
``train_local`` with their per-round seeds, versions from ``governance.rounds.aggregate_version``, no Kafka)
and is compared with the centralized model trained on the same pooled rows for ``rounds x local_epochs``
epochs with the same seed. Both depend on the task seed (initial weights, shuffling); the data partition is
the demo's. The table prints the federated accuracy over the seeds (mean, min-max) and the mean ratio to
centralized; the literature behind each row: FedAvgM (Hsu et al. 2019, arXiv:1909.06335), FedAdam/FedYogi
(Reddi et al. ICLR 2021, arXiv:2003.00295), FedProx (Li et al. MLSys 2020, arXiv:1812.06127), local steps
(Wang et al. 2021, "A Field Guide to Federated Optimization", arXiv:2107.06917).
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

from bench._quality.sim import Federation, centralized_accuracy, load_federation, run_sync
from bench._round.machine import describe
from meshfl.events import StrategySpec
from meshfl.logs import configure_logging

# (label, task overrides). The first row is the task file as it is; budgets stay rounds x local_epochs = 40.
CONFIGS: list[tuple[str, dict[str, object]]] = [
    ("fedavg lr 0.05 (the previous default)", {"learning_rate": 0.05}),
    ("fedavg (task file)", {}),
    ("fedavg lr 0.1", {"learning_rate": 0.1}),
    ("fedavg lr 0.02", {"learning_rate": 0.02}),
    ("fedavg E=1 R=40", {"local_epochs": 1, "rounds": 40}),
    ("fedavg E=4 R=10", {"local_epochs": 4, "rounds": 10}),
    ("fedavg batch 16", {"batch_size": 16}),
    ("fedprox mu 0.01", {"strategy": StrategySpec(name="fedprox", params={"proximal_mu": 0.01})}),
    ("fedprox mu 0.1", {"strategy": StrategySpec(name="fedprox", params={"proximal_mu": 0.1})}),
    ("fedavgm slr 1 m 0.5", {"strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.5})}),
    ("fedavgm slr 1 m 0.7", {"strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.7})}),
    (
        "fedavgm slr 0.5 m 0.9",
        {
            "strategy": StrategySpec(
                name="fedavgm", params={"server_learning_rate": 0.5, "server_momentum": 0.9}
            )
        },
    ),
    ("fedavgm slr 1.5 m 0", {"strategy": StrategySpec(name="fedavgm", params={"server_learning_rate": 1.5})}),
    ("fedadam eta 0.01", {"strategy": StrategySpec(name="fedadam", params={"eta": 0.01})}),
    ("fedadam eta 0.003", {"strategy": StrategySpec(name="fedadam", params={"eta": 0.003})}),
    ("fedyogi eta 0.01", {"strategy": StrategySpec(name="fedyogi", params={"eta": 0.01})}),
    (
        "fedavgm m 0.5, lr 0.1",
        {"learning_rate": 0.1, "strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.5})},
    ),
    (
        "fedavgm m 0.5, batch 16",
        {"batch_size": 16, "strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.5})},
    ),
    ("fedavg lr 0.1, batch 16", {"learning_rate": 0.1, "batch_size": 16}),
    ("fedavg lr 0.1, E=4 R=10", {"learning_rate": 0.1, "local_epochs": 4, "rounds": 10}),
    ("fedavg lr 0.05, E=4 R=10", {"learning_rate": 0.05, "local_epochs": 4, "rounds": 10}),
    ("fedavg lr 0.1, cosine", {"learning_rate": 0.1, "lr_schedule": "cosine"}),
    ("fedavg lr 0.2, cosine", {"learning_rate": 0.2, "lr_schedule": "cosine"}),
    ("fedavg lr 0.1, cosine, batch 16", {"learning_rate": 0.1, "lr_schedule": "cosine", "batch_size": 16}),
    (
        "fedavg E=1 R=40, lr 0.1, cosine",
        {"learning_rate": 0.1, "lr_schedule": "cosine", "local_epochs": 1, "rounds": 40},
    ),
    (
        "fedavgm m 0.7, lr 0.1, cosine",
        {
            "learning_rate": 0.1,
            "lr_schedule": "cosine",
            "strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.7}),
        },
    ),
    (
        "fedavgm m 0.5, lr 0.2, cosine",
        {
            "learning_rate": 0.2,
            "lr_schedule": "cosine",
            "strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.5}),
        },
    ),
    (
        "fedavgm m 0.5, lr 0.1, cosine, batch 16",
        {
            "learning_rate": 0.1,
            "lr_schedule": "cosine",
            "batch_size": 16,
            "strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.5}),
        },
    ),
    (
        "fedadam eta 0.01, lr 0.1, cosine",
        {
            "learning_rate": 0.1,
            "lr_schedule": "cosine",
            "strategy": StrategySpec(name="fedadam", params={"eta": 0.01}),
        },
    ),
    (
        "fedavgm m 0.5, lr 0.1, cosine",
        {
            "learning_rate": 0.1,
            "lr_schedule": "cosine",
            "strategy": StrategySpec(name="fedavgm", params={"server_momentum": 0.5}),
        },
    ),
]


def run(fed: Federation, seeds: list[int], configs: list[tuple[str, dict[str, object]]]) -> list[dict]:
    rows = []
    for label, overrides in configs:
        feds, ratios, centrals = [], [], []
        began = time.perf_counter()
        for seed in seeds:
            variant = fed.with_task(seed=seed, **overrides)
            federated = run_sync(variant)[-1]
            central = centralized_accuracy(variant)
            feds.append(federated)
            centrals.append(central)
            ratios.append(federated / central)
        rows.append(
            {
                "config": label,
                "overrides": {
                    k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in overrides.items()
                },
                "federated": feds,
                "centralized": centrals,
                "ratio": ratios,
                "seconds": time.perf_counter() - began,
            }
        )
        print(_line(rows[-1]), flush=True)
    return rows


def _line(row: dict) -> str:
    feds, ratios = row["federated"], row["ratio"]
    return (
        f"| {row['config']} | {statistics.fmean(feds):.3f} ({min(feds):.3f}-{max(feds):.3f}) "
        f"| {statistics.fmean(row['centralized']):.3f} | {statistics.fmean(ratios):.3f} "
        f"(min {min(ratios):.3f}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument(
        "--only", nargs="*", help="run only the configurations whose label contains one of these"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    configure_logging(level="WARNING")
    for label, value in describe("not used: in-process simulation"):
        print(f"{label}: {value}")
    fed = load_federation(args.task)
    configs = [c for c in CONFIGS if not args.only or any(s in c[0] for s in args.only)]
    print(f"\ntask {fed.task.id}, {len(fed.domains)} domains, seeds {args.seeds}\n")
    print("| configuration | federated accuracy, mean (min-max) | centralized | federated / centralized |")
    print("|---|---|---|---|")
    rows = run(fed, args.seeds, configs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"task": fed.task.id, "seeds": args.seeds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
