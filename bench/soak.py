"""Soak: many domains for many rounds while agents and governance are SIGKILLed and restarted at random.

Runs a real federation (governance and every domain agent as its own ``python -m meshfl`` process) on a
broker of its own (or ``--bootstrap``), a small digits MLP over ``--domains`` domains cut from the
bundled digits data, rounds that close at ``min_domains`` or a deadline (so a killed agent never blocks
them). Every ``--kill-every`` seconds it SIGKILLs a random agent (restarted after a moment) or, with
probability ``--governance-share``, the governance service (restarted at once). At the end it reads the
log and prints: rounds completed, updates accepted and rejected, accepted updates lost (never
aggregated nor withdrawn: must be 0), messages decided twice and versions published twice (must be 0),
governance RSS over time (must stay flat), and whether ``audit replay`` reproduces every version.

    python bench/soak.py [--domains 20] [--rounds 200] [--kill-every 20] [--max-minutes 60]

Exit code 0 when nothing was lost or doubled and the replay reproduced every version.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from governance.audit import events_from_bus, replay
from meshfl.broker import LocalBroker, free_port_block
from meshfl.bus import ensure_topics, read_all
from meshfl.datasets import DATASETS, DomainSpec, materialize_dataset
from meshfl.domain.tasks import load_task_file
from meshfl.errors import BusError
from meshfl.events import DecisionOutcome, GovernanceDecision, ModelSpec, ModelVersion, RoundPolicy
from meshfl.identity import load_public_key
from meshfl.identity.local import identity_env, provision_local
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

REPO = Path(__file__).resolve().parents[1]
SETTLED = {"buffer_staleness", "policy_form"}


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
        "system": f"{platform.system()} {platform.release()}",
    }


class Fleet:
    """The daemons as processes; logs in ``work``. Only governance gets its private key."""

    def __init__(self, work: Path, env: dict[str, str], settings: MeshflSettings) -> None:
        self.work, self.settings = work, settings
        self.env = {**env, **identity_env(settings, with_private_key=False)}
        self.governance_env = {**env, **identity_env(settings, with_private_key=True)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        env = self.governance_env if args[:1] == ("governance",) else self.env
        with (self.work / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "meshfl", *args], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def make_domains(root: Path, count: int) -> list[Path]:
    base = DATASETS["digits"]
    spec = dataclasses.replace(
        base,
        domains=tuple(
            DomainSpec(f"soak-{i:02d}", f"soak-{i:02d}@example.com", "soak domain") for i in range(count)
        ),
        alpha=100.0,  # near-IID: this measures resilience, not learning under skew
        min_rows=max(8, 1400 // (count * 3)),
    )
    materialize_dataset(spec, root, seed=7)
    return [root / d.name for d in spec.domains]


def latest_round(settings: MeshflSettings, task_id: str) -> int:
    versions = [
        e.event for e in read_all(settings, Topic.MODEL_VERSIONS) if isinstance(e.event, ModelVersion)
    ]
    return max((v.round for v in versions if v.task_id == task_id), default=-1)


def verdict(settings: MeshflSettings, task_id: str) -> dict[str, object]:
    versions = [
        e.event for e in read_all(settings, Topic.MODEL_VERSIONS) if isinstance(e.event, ModelVersion)
    ]
    versions = [v for v in versions if v.task_id == task_id]
    decisions = [
        e.event for e in read_all(settings, Topic.DECISIONS) if isinstance(e.event, GovernanceDecision)
    ]
    from_updates = [d for d in decisions if d.source_offset is not None]
    accepted = {d.update_id for d in from_updates if d.outcome == DecisionOutcome.ACCEPTED}
    settled = {d.update_id for d in decisions if d.policy in SETTLED}
    aggregated = {u for v in versions for u in v.contributing_updates}
    final_round = max((v.round for v in versions), default=0)
    open_round = {d.update_id for d in from_updates if d.round > final_round}
    per_source = Counter((d.source_partition, d.source_offset) for d in from_updates)
    per_version = Counter(v.version for v in versions)
    return {
        "rounds_completed": final_round,
        "accepted": len(accepted),
        "rejected": sum(1 for d in from_updates if d.outcome == DecisionOutcome.REJECTED),
        "lost": len(accepted - aggregated - settled - open_round),
        "decided_twice": sum(1 for n in per_source.values() if n > 1),
        "published_twice": sum(1 for n in per_version.values() if n > 1),
        "aggregated_twice": sum(
            1 for n in Counter(u for v in versions for u in v.contributing_updates).values() if n > 1
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between two kills")
    parser.add_argument(
        "--governance-share", type=float, default=0.3, help="share of kills aimed at governance"
    )
    parser.add_argument("--deadline", type=float, default=20.0, help="round deadline, seconds")
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop there even if rounds remain")
    parser.add_argument("--check-every", type=float, default=10.0, help="seconds between progress reads")
    parser.add_argument("--stagger", type=float, default=3.0, help="seconds between agent starts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=os.environ.get("MESHFL_BOOTSTRAP_SERVERS"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the fleet is stopped on the way out

    with tempfile.TemporaryDirectory(prefix="meshfl-soak-") as tmp:
        work = Path(tmp)
        broker: LocalBroker | None = None
        bootstrap = args.bootstrap
        if not bootstrap:
            broker = LocalBroker(data_dir=work / "kafka", port=free_port_block(2))
            bootstrap = broker.start(timeout=180.0)
        prefix = f"soak-{int(time.time())}."
        settings = MeshflSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
        env = dict(
            os.environ,
            MESHFL_BOOTSTRAP_SERVERS=bootstrap,
            MESHFL_TOPIC_PREFIX=prefix,
            MESHFL_LOG_FORMAT="json",
        )
        domains = make_domains(work / "domains", args.domains)
        task = load_task_file(REPO / "domains" / "tasks" / "digits.toml").model_copy(
            update={
                "id": "soak-digits",
                "rounds": args.rounds,
                "local_epochs": 1,
                "model": ModelSpec(architecture="mlp", input_dim=64, hidden=[16], output_dim=10),
                "round_policy": RoundPolicy(
                    min_domains=max(1, args.domains // 2), deadline_seconds=args.deadline
                ),
            }
        )
        task_file = work / "task.json"
        task_file.write_text(task.model_dump_json())
        ensure_topics(settings)
        settings = provision_local(settings, work / "keys", domains)  # keys made, domains registered
        fleet = Fleet(work, env, settings)
        governance = ["governance", "run", "--tasks", str(task_file)]
        fleet.start("governance", *governance)
        for path in domains:  # staggered: 20 interpreters importing torch at once time out on metadata
            fleet.start(path.name, "domain", "run", "--domain", str(path))
            time.sleep(args.stagger)
        kills = Counter[str]()
        exits = Counter[str]()
        rss: list[tuple[float, float]] = []
        down: dict[str, float] = {}
        started = time.monotonic()
        next_kill = started + args.kill_every
        next_check, reached = started, -1
        try:
            while time.monotonic() - started < args.max_minutes * 60:
                now = time.monotonic()
                if now >= next_check:  # a snapshot read of the versions: not every loop
                    next_check = now + args.check_every
                    try:
                        current = latest_round(settings, task.id)
                    except BusError as exc:  # a slow broker answer is not the end of the soak
                        print(json.dumps({"t": round(now - started), "bus_error": str(exc)}), file=sys.stderr)
                        current = reached
                    if current != reached:
                        reached = current
                        rss_now = round(rss[-1][1]) if rss else 0
                        line = {"t": round(now - started), "round": current, "rss_mib": rss_now}
                        line["kills"], line["exits"] = dict(kills), dict(exits)
                        print(json.dumps(line), file=sys.stderr, flush=True)
                    if current >= args.rounds:
                        break
                # A supervisor's job: a daemon that exited by itself (e.g. a broker timeout at start-up
                # on this loaded machine) is counted and started again.
                for name, proc in list(fleet.procs.items()):
                    if proc.poll() is not None:
                        exits[f"{name.split('-')[0]} exit {proc.returncode}"] += 1
                        del fleet.procs[name]
                        if name == "governance":
                            fleet.start("governance", *governance)
                        else:
                            down[name] = now + 1.0
                gov = fleet.procs.get("governance")
                if gov is not None and gov.poll() is None:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        rss.append((now - started, psutil.Process(gov.pid).memory_info().rss / 2**20))
                for name, at in list(down.items()):
                    if now >= at:
                        fleet.start(name, "domain", "run", "--domain", str(work / "domains" / name))
                        del down[name]
                if reached < 1:
                    next_kill = now + args.kill_every  # kills start once the federation runs: round 1 done
                elif now >= next_kill:
                    next_kill = now + args.kill_every
                    if rng.random() < args.governance_share:
                        fleet.kill("governance")
                        fleet.start("governance", *governance)
                        kills["governance"] += 1
                    else:
                        alive = [p.name for p in domains if p.name in fleet.procs]
                        if alive:
                            victim = rng.choice(alive)
                            fleet.kill(victim)
                            down[victim] = now + rng.uniform(1.0, args.deadline)
                            kills["agent"] += 1
                time.sleep(2.0)
            wall = time.monotonic() - started
        finally:
            fleet.stop_all()
        try:
            figures = verdict(settings, task.id)
            figures["kills"] = dict(kills)
            print(json.dumps(figures), flush=True)  # before the replay, so a replay failure loses nothing
            pinned = load_public_key(settings.governance_public_key or "")
            result = replay(events_from_bus(settings, task.id), task.id, governance_key=pinned)
        finally:
            if broker is not None:
                broker.stop()

    series = [round(m, 1) for _, m in rss]
    quarter = max(1, len(series) // 4)
    figures.update(
        {
            "domains": args.domains,
            "rounds_asked": args.rounds,
            "wall_seconds": round(wall, 1),
            "kills": dict(kills),
            "exited_by_themselves": dict(exits),
            "governance_rss_mib": {
                "samples": len(series),
                "first_quarter_median": sorted(series[:quarter])[quarter // 2] if series else None,
                "last_quarter_median": sorted(series[-quarter:])[quarter // 2] if series else None,
                "max": max(series) if series else None,
                "series_every_10th": series[::10],
            },
            "replay_reproduces_every_version": result.ok,
            "machine": machine(),
        }
    )
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    clean = figures["lost"] == 0 and figures["decided_twice"] == 0 and figures["published_twice"] == 0
    return 0 if clean and result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
