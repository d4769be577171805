"""Split-learning throughput: rows/s of training over the bus against the same split model in one process.

    .venv/bin/python bench/split.py [--rows 100000] [--epochs 1] [--batch 256] [--in-flight 8]

The generated data set (``meshfl.vertical.datasets.generated_split``: rows x 30 columns, 3 domains of 10)
is federated with the seed paper's networks, labels at governance: governance and the three domain
agents are real processes (``meshfl governance run`` and ``meshfl domain split``) on a broker (the one
of ``MESHFL_BOOTSTRAP_SERVERS``, else a local one started here). Rows/s over the bus is the training rows
of an epoch over the time between the broker timestamps of its ``start`` command and of its version;
PSI alignment is timed apart. The baseline trains ``meshfl.vertical.central.CentralSplit`` (the same
bottoms, top and batches, one Adam per part) on the pooled columns in this process, one torch thread
like each party, in the same run. The aim is a ratio of at least 0.25. The machine is shared: run it
three times.
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

from meshfl.bus import ensure_topics, read_all
from meshfl.identity.local import identity_env, provision_local
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from meshfl.vertical.alignment import aligned_order
from meshfl.vertical.central import aligned_pooled, train_central
from meshfl.vertical.datasets import generated_split, paper_task
from meshfl.vertical.events import SplitCommand, SplitEpoch, SplitLabelsAt, SplitModelVersion


def _broker(settings: MeshflSettings, work: Path) -> tuple[MeshflSettings, object | None]:
    """The broker of ``MESHFL_BOOTSTRAP_SERVERS``, else a private one on free ports (a shared broker
    with thousands of other topics slows every metadata request of the run)."""
    if os.environ.get("MESHFL_BOOTSTRAP_SERVERS"):
        return settings, None
    from meshfl.broker import LocalBroker, free_port_block

    broker = LocalBroker(settings, data_dir=work / "kafka", port=free_port_block(2))
    address = broker.start(timeout=300)
    return settings.model_copy(update={"bootstrap_servers": address}), broker


def _wait_versions(settings: MeshflSettings, task_id: str, epochs: int, timeout: float) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [
            env
            for env in read_all(settings, Topic.SPLIT_VERSIONS)
            if isinstance(env.event, SplitModelVersion) and env.event.task_id == task_id
        ]
        if len(found) >= epochs:
            return found
        time.sleep(2.0)
    raise SystemExit(f"no {epochs} versions within {timeout:.0f} s")


def _spies(
    folder: Path, names: list[str], procs: list[subprocess.Popen[bytes]]
) -> list[subprocess.Popen[bytes]]:
    """py-spy attached to each daemon until it exits: folded stacks in ``<folder>/<name>.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                *("py-spy", "record", "--format", "raw", "--rate", "50"),
                "--pid",
                str(proc.pid),
                "--output",
                str(folder / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, proc in zip(names, procs, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy on each daemon, folded stacks here"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = MeshflSettings(topic_prefix=f"bench.split-{time.strftime('%H%M%S')}.")
    work = Path(tempfile.mkdtemp(prefix="meshfl-bench-split-"))
    settings, broker = _broker(settings, work)
    try:
        _run(args, settings, work)
    finally:
        if broker is not None:
            broker.stop()  # type: ignore[attr-defined]


def _run(args: argparse.Namespace, settings: MeshflSettings, work: Path) -> None:
    data = generated_split(work / "domains", rows=args.rows)
    task = paper_task(
        data,
        task_id="bench-split",
        labels_at=SplitLabelsAt.GOVERNANCE,
        epochs=args.epochs,
        batch_size=args.batch,
        learning_rate=1e-3,
        max_in_flight=args.in_flight,
        test_fraction=0.0,
        batch_timeout_seconds=120.0,
    )
    task_file = work / "task.json"
    task_file.write_text(json.dumps({"kind": "vertical", **task.model_dump(mode="json")}))
    ensure_topics(settings)
    # signed like every federation: governance's keys, a registered key in every domain folder
    settings = provision_local(settings, work / "keys", [data.root / name for name in data.domains])
    env = {
        **os.environ,
        "MESHFL_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MESHFL_TOPIC_PREFIX": settings.topic_prefix,
        "MESHFL_LOG_LEVEL": "WARNING",
    }
    logs = (work / "daemons.log").open("ab")
    command = [sys.executable, "-m", "meshfl"]

    domain_env = {**env, **identity_env(settings, with_private_key=False)}
    procs = [
        subprocess.Popen(
            [*command, "domain", "split", "--domain", str(data.root / name)],
            env=domain_env,
            stdout=logs,
            stderr=logs,
        )
        for name in data.domains
    ]
    procs.append(
        subprocess.Popen(
            [*command, "governance", "run", "--tasks", str(task_file), "--exit-when-complete"],
            env={**env, **identity_env(settings, with_private_key=True)},
            stdout=logs,
            stderr=logs,
        )
    )
    spies = [] if args.profile is None else _spies(args.profile, [*data.domains, "governance"], procs)
    try:
        versions = _wait_versions(settings, task.id, args.epochs, args.timeout)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs + spies:
            proc.wait(timeout=60)
    control = [
        env for env in read_all(settings, Topic.SPLIT_CONTROL) if getattr(env.event, "task_id", "") == task.id
    ]
    align = next(
        e for e in control if isinstance(e.event, SplitEpoch) and e.event.command == SplitCommand.ALIGN
    )
    starts = {
        e.event.epoch: e.timestamp_ms
        for e in control
        if isinstance(e.event, SplitEpoch) and e.event.command == SplitCommand.START
    }
    first_start = min(starts.values())
    last = max(versions, key=lambda env: env.event.version)
    train_rows = last.event.train_rows
    bus_seconds = (last.timestamp_ms - first_start) / 1000
    bus_rate = train_rows * args.epochs / bus_seconds
    order = aligned_order(data.pooled_ids, align.event.session)
    x, y = aligned_pooled(data.pooled_ids, data.pooled_x, data.pooled_y, order)
    central = train_central(task, x, y, epochs=args.epochs)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"data: {args.rows} rows x 30 columns, 3 domains; batch {args.batch},"
        f" {args.in_flight} in flight, {args.epochs} epoch(s)"
    )
    print(f"PSI alignment: {(first_start - align.timestamp_ms) / 1000:.1f} s for {train_rows} aligned rows")
    print(f"over the bus:  {bus_rate:10.0f} rows/s ({bus_seconds:.1f} s)")
    print(f"in process:    {central.rows_per_second:10.0f} rows/s ({central.train_seconds:.1f} s)")
    print(f"ratio:         {bus_rate / central.rows_per_second:10.3f} (aim >= 0.25)")


if __name__ == "__main__":
    main()
