"""The floor under a meshfl round: the same bytes moved by bare confluent-kafka processes, no framework.

Ten domain processes each produce the update's bytes (in ~1 MB messages, acks=all, idempotent) after
reading the model; one server process reads all updates and produces the next model, which every
domain reads (``floor_proc.py``). The figure is the median time between two consecutive models over
rounds 2..N, for each compression asked for ("none" is the floor; lz4 and zstd show what compressing
incompressible float bytes costs per hop).
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from _round.procs import Children, python_script

HERE = Path(__file__).resolve().parent


def _create_topics(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [
        NewTopic(f"{prefix}.{name}", num_partitions=1, replication_factor=-1)
        for name in ("versions", "updates")
    ]
    for future in admin.create_topics(topics).values():
        future.result(30)


def run_floor(
    work: Path, bootstrap: str, *, domains: int, rounds: int, nbytes: int, compression: str, timeout: float
) -> float:
    """Median seconds a round over rounds 2..``rounds``; raises ``RuntimeError`` if a process fails."""
    prefix = f"bench-floor-{compression}-{uuid.uuid4().hex[:8]}"
    _create_topics(bootstrap, prefix)
    out = work / f"{prefix}.json"
    children = Children(work / f"logs-{prefix}")
    common = [bootstrap, prefix]
    try:
        for index in range(domains):
            children.start(
                f"domain-{index}",
                python_script(
                    HERE / "floor_proc.py",
                    "domain",
                    *common,
                    f"d{index}",
                    str(rounds),
                    str(nbytes),
                    compression,
                ),
            )
        server = children.start(
            "server",
            python_script(
                HERE / "floor_proc.py",
                "server",
                *common,
                str(domains),
                str(rounds),
                str(nbytes),
                compression,
                str(out),
            ),
        )
        deadline = time.monotonic() + timeout
        while server.poll() is None and time.monotonic() < deadline:
            failed = children.failed()
            if failed:
                raise RuntimeError(f"floor {failed[0]} failed:\n{children.tail(failed[0])}")
            time.sleep(0.1)
        if server.poll() is None or server.returncode != 0:
            raise RuntimeError(f"floor server did not finish cleanly:\n{children.tail('server')}")
    finally:
        children.stop()
    stamps = json.loads(out.read_text())
    durations = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    return statistics.median(durations[1:]) if len(durations) > 1 else durations[0]
