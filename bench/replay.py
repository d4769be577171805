"""Audit replay cost against the federation it audits, measured in one run.

Runs the digits federation (5 domains, 20 rounds by default) with ``meshfl demo`` on a broker of its
own, then replays that federation's log (read every audited topic from the start, recompute every
version, compare the hashes) and prints both wall times, their ratio and the machine. The bar
(issue 5): the replay takes less than 10% of the federation's wall time.

    .venv/bin/python bench/replay.py [--rounds 20] [--bootstrap HOST:PORT] [--json out/bench-replay.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from governance.audit import events_from_bus, replay
from meshfl.broker import LocalBroker, free_port_block
from meshfl.identity import load_public_key
from meshfl.settings import MeshflSettings

REPO = Path(__file__).resolve().parents[1]
BAR = 0.10


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
    }


def run_federation(bootstrap: str, prefix: str, rounds: int, out: Path) -> dict[str, object]:
    summary = out / "demo.json"
    command = [
        sys.executable,
        "-m",
        "meshfl",
        "demo",
        "--rounds",
        str(rounds),
        "--bootstrap",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--out",
        str(out / "demo"),
        "--json",
        str(summary),
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    data = json.loads(summary.read_text())
    data["process_seconds"] = wall
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--bootstrap", default=os.environ.get("MESHFL_BOOTSTRAP_SERVERS"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="meshfl-bench-replay-") as tmp:
        work = Path(tmp)
        broker: LocalBroker | None = None
        bootstrap = args.bootstrap
        if not bootstrap:
            broker = LocalBroker(data_dir=work / "kafka", port=free_port_block(2))
            bootstrap = broker.start(timeout=120.0)
        try:
            prefix = f"bench-replay-{int(time.time())}."
            demo = run_federation(bootstrap, prefix, args.rounds, work)
            settings = MeshflSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
            task_id = str(demo["task_id"])
            started = time.perf_counter()
            events = events_from_bus(settings, task_id)
            read_seconds = time.perf_counter() - started
            # the demo made governance's key pair under its --out folder; the auditor pins its public half
            pinned = load_public_key(work / "demo" / "keys" / "governance.pub")
            result = replay(events, task_id, governance_key=pinned)
            replay_seconds = time.perf_counter() - started
        finally:
            if broker is not None:
                broker.stop()

    federation_seconds = float(demo["federation_seconds"])  # type: ignore[arg-type]
    ratio = replay_seconds / federation_seconds
    figures = {
        "task": task_id,
        "domains": len(demo["domains"]),  # type: ignore[arg-type]
        "versions": len(result.versions),
        "events": result.events_read,
        "all_reproduced": result.ok,
        "federation_seconds": round(federation_seconds, 3),
        "replay_seconds": round(replay_seconds, 3),
        "replay_read_seconds": round(read_seconds, 3),
        "replay_compute_seconds": round(result.seconds, 3),
        "ratio": round(ratio, 4),
        "bar": BAR,
        "machine": machine(),
    }
    print(
        f"federation ({figures['domains']} domains, {args.rounds} rounds): {federation_seconds:.2f} s wall\n"
        f"replay of its log ({figures['events']} events, {figures['versions']} versions): "
        f"{replay_seconds:.2f} s (read {read_seconds:.2f} s, recompute {result.seconds:.2f} s)\n"
        f"ratio {ratio:.3%} (bar < {BAR:.0%}); every version reproduced: {result.ok}\n"
        f"machine: {figures['machine']}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if result.ok and ratio < BAR else 1


if __name__ == "__main__":
    sys.exit(main())
