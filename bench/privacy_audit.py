"""Empirical privacy audit of meshfl's central DP: the lower bound on epsilon beside the accountant's.

For each noise multiplier, ``--trials`` releases with a canary domain's update present and as many with
it zeroed out, each release ``governance.rounds.aggregate_version`` itself (FedAdam, 10 domains, one
version, fresh noise key per release); a threshold test on what the strongest adversary reads off each
version gives a Clopper-Pearson lower bound on epsilon (95%), in the manner of Jagielski et al. 2020 and
Nasr et al. 2021 (``governance.audit.dp_audit``). The same audit then runs against mechanisms with one
defect of issue 10 put back. The bound of a correct mechanism stays below the accountant's epsilon;
the broken ones rise far above it (up to about ``log(trials / 2 / 4.4)``, the most this many releases can
show). The accountant's epsilon is the baseline of the same run.

    .venv/bin/python bench/privacy_audit.py [--trials 2000] [--z 1 2 4] [--json out/privacy-audit.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from governance.audit.dp_audit import AuditSetup, audit, audit_broken


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000, help="releases per world (present / absent)")
    parser.add_argument("--broken-trials", type=int, default=600, help="releases per world, broken ones")
    parser.add_argument("--z", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="noise multipliers")
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    rows = []
    header = (
        f"{'z':>5} {'mechanism':<28} {'trials':>6} {'eps accountant':>14} {'eps lower bound':>15} {'s':>6}"
    )
    print(header)
    for z in args.z:
        setup = AuditSetup(domains=args.domains, noise_multiplier=z, trials=args.trials)
        started = time.perf_counter()
        honest = audit(setup)
        results = [(honest, time.perf_counter() - started)]
        started = time.perf_counter()
        broken = audit_broken(setup, trials=args.broken_trials)
        per = (time.perf_counter() - started) / len(broken)
        results += [(b, per) for b in broken]
        for result, seconds in results:
            print(
                f"{z:>5g} {result.mechanism:<28} {result.trials:>6} {result.epsilon_accountant:>14.3f} "
                f"{result.epsilon_lower:>15.3f} {seconds:>6.1f}"
            )
            rows.append({"noise_multiplier": z, "seconds": seconds, **asdict(result)})
        sys.stdout.flush()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
