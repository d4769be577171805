"""Per-round overhead of meshfl beside Flower's, measured in one run on this machine.

Overhead of a round = wall time between two consecutive global models minus the slowest participant's
local training time in that round, for 10 domains/clients and a ~1.0M-parameter MLP on loopback; the
figure is the median over rounds 2..N (round 1 includes start-up). Both frameworks train the same model
with the same ``train_local`` call on the same rows, in processes of their own:

* Flower 1.42, legacy gRPC: ``flwr.server.start_server`` (FedAvg, no evaluation) in one process and
  ten ``flwr.client.start_client`` processes (``bench/_round/flower_*.py``).
* meshfl over a real Kafka broker (``LocalBroker`` on free ports, or ``MESHFL_BOOTSTRAP_SERVERS``):
  ``meshfl governance run`` and ten ``meshfl domain run`` processes, the commands users run.
* the floor, on the same broker: the round's bytes moved by bare confluent-kafka processes (ten
  domains each producing the update's bytes in ~1 MB messages, acks=all, idempotent; one server
  reading them all and producing the model back, which every domain reads), with no compression, and
  with lz4 and zstd to show what compressing float bytes costs (``bench/_round/floor.py``).

The broker is freshly started, and a fresh JVM interprets and JIT-compiles the broker's code for
minutes: in session 4 its JIT compiler was still a quarter of the broker's CPU after 12 meshfl rounds,
and meshfl ran first on it while the floor ran after, on the warm broker. A production broker has run
for days, so ``--warm-rounds`` floor rounds (not counted) run on it first; ``--warm-rounds 0`` measures
the cold broker as session 3 and early session 4 did.

    .venv/bin/python bench/round.py                 # about 3-5 minutes on 2 cores
    .venv/bin/python bench/round.py --rounds 10 --json out/round.json

The bar (shared/DESIGN.md): meshfl's overhead at most Flower's; the goal, half of it or less.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from _round.breakdown import SEGMENTS, median_segments
from _round.floor import run_floor
from _round.flower_side import run_flower
from _round.machine import describe, load_average
from _round.meshfl_side import run_meshfl, start_broker
from _round.workload import (
    BATCH_SIZE,
    MODEL,
    ROWS_PER_DOMAIN,
    SideResult,
    make_task,
    median_overhead,
    parameter_count,
    task_toml,
    write_domains,
)

from meshfl.broker import kafka_version
from meshfl.logs import configure_logging


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per framework (>= 3; median of 2..N)")
    parser.add_argument("--domains", type=int, default=10, help="domains (meshfl) = clients (Flower)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds each side may take")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data) and print it")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run meshfl's governance under cProfile and print its top functions",
    )
    parser.add_argument("--only", choices=["flower", "meshfl"], default=None, help="run one side only")
    parser.add_argument(
        "--warm-rounds",
        type=int,
        default=30,
        help="floor rounds run on the fresh broker before meshfl, not counted (0: none; see the docstring)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be >= 3")
    return args


def _fmt(value: float | None) -> str:
    return "    -" if value is None or math.isnan(value) else f"{value:6.3f}"


def _print_rounds(flower: SideResult | None, meshfl: SideResult | None) -> None:
    rounds = sorted({f.round for side in (flower, meshfl) if side for f in side.figures})
    print("\nper round (seconds): wall = between consecutive global models; train = slowest participant")
    side = f"{'wall':>11} {'train':>6} {'overhead':>8}"
    print(f"{'':>5} | {'Flower':<27} | {'meshfl':<27}")
    print(f"{'round':>5} | {side} | {side}")
    for round_ in rounds:
        cells = []
        for side in (flower, meshfl):
            figure = next((f for f in side.figures if f.round == round_), None) if side else None
            if figure is None:
                cells.append(f"{'-':>11} {'-':>6} {'-':>8}")
            else:
                cells.append(f"{figure.wall:11.3f} {figure.slowest_train:6.3f} {figure.overhead:8.3f}")
        print(f"{round_:>5} | {cells[0]} | {cells[1]}")


def _print_breakdown(meshfl: SideResult) -> None:
    if not meshfl.segments:
        print("\nmeshfl breakdown: not available (log lines missing)")
        return
    medians = median_segments(meshfl.segments)
    print(
        "\nmeshfl round, critical path through the last-decided domain"
        " (median over rounds, from the daemons' logs):"
    )
    for key, label in SEGMENTS.items():
        print(f"  {key}. {label:<66} {_fmt(medians.get(key))} s")
    print(
        f"     {'local training of that domain (excluded from overhead)':<66} {_fmt(medians.get('train'))} s"
    )
    print(f"\n  per round: {'round':>5} " + " ".join(f"{k:>6}" for k in [*SEGMENTS, "train"]))
    for round_, parts in sorted(meshfl.segments.items()):
        print(f"             {round_:>5} " + " ".join(_fmt(parts[k]) for k in [*SEGMENTS, "train"]))


def _print_profile(path: Path, what: str) -> None:
    """Top functions by own time, then meshfl's own functions by cumulative time (imports included)."""
    if not path.is_file():
        print(f"\n(no profile written to {path})")
        return
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats(r"/(meshfl|governance)/(?!.*__init__)", 30)
    print(f"\n{what} under cProfile:\n" + out.getvalue())


def main(argv: list[str]) -> int:
    args = _parse(argv)
    configure_logging("console", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="meshfl-bench-round-"))
    started = time.monotonic()
    flower: SideResult | None = None
    meshfl: SideResult | None = None
    floors: dict[str, float] = {}
    errors: dict[str, str] = {}
    broker = None
    try:
        domain_dirs = write_domains(work / "domains", args.domains)
        task = make_task(f"bench-round-{uuid.uuid4().hex[:8]}", args.rounds, args.domains)
        task_file = work / "task.toml"
        task_file.write_text(task_toml(task))
        bootstrap_note = "MESHFL_BOOTSTRAP_SERVERS" if "MESHFL_BOOTSTRAP_SERVERS" in os.environ else ""
        print("meshfl bench/round.py: per-round overhead, meshfl beside Flower (one run, same machine)")
        for label, value in describe(kafka_version() + (f" ({bootstrap_note})" if bootstrap_note else "")):
            print(f"  {label:<22} {value}")
        sizes = [MODEL.input_dim, *MODEL.hidden, MODEL.output_dim]
        print(f"  {'model':<22} MLP {'-'.join(map(str, sizes))}, {parameter_count():,} float32 parameters")
        print(
            f"  {'workload':<22} {args.domains} domains/clients, {args.rounds} rounds, 1 local epoch over"
            f" {ROWS_PER_DOMAIN} rows, batch {BATCH_SIZE} (SGD), 1 torch thread each"
        )
        if args.only != "meshfl":
            print(f"\n[flower] running ... (load average {load_average()})", flush=True)
            try:
                flower = run_flower(work, domain_dirs, task_file, args.timeout)
                print(f"[flower] done in {flower.seconds:.1f} s {flower.note}", flush=True)
            except RuntimeError as exc:
                errors["flower"] = str(exc)
                print(f"[flower] FAILED: {exc}", flush=True)
        if args.only != "flower":
            print(f"\n[meshfl] starting Kafka ... (load average {load_average()})", flush=True)
            try:
                bootstrap, broker = start_broker(work)
                print(f"[meshfl] Kafka at {bootstrap}", flush=True)
                if args.warm_rounds:
                    print(f"[warm-up] {args.warm_rounds} floor rounds on the fresh broker ...", flush=True)
                    run_floor(
                        work, bootstrap, domains=args.domains, rounds=args.warm_rounds,
                        nbytes=parameter_count() * 4, compression="none", timeout=args.timeout,
                    )  # fmt: skip
                print(f"[meshfl] running ... (load average {load_average()})", flush=True)
                profile_dir = work if args.profile else None
                meshfl = run_meshfl(
                    work, domain_dirs, task, task_file, bootstrap, args.timeout, profile_dir=profile_dir
                )
                if profile_dir is not None:
                    _print_profile(profile_dir / "governance.prof", "the governance daemon")
                    _print_profile(profile_dir / "agent.prof", f"the agent of {domain_dirs[0].name}")
                print(f"[meshfl] done in {meshfl.seconds:.1f} s {meshfl.note}", flush=True)
            except RuntimeError as exc:
                errors["meshfl"] = str(exc)
                print(f"[meshfl] FAILED: {exc}", flush=True)
            if "meshfl" not in errors:
                for compression in ("none", "lz4", "zstd"):
                    print(f"[floor] bare confluent-kafka, compression {compression} ...", flush=True)
                    try:
                        floors[compression] = run_floor(
                            work, bootstrap, domains=args.domains, rounds=args.rounds,
                            nbytes=parameter_count() * 4, compression=compression, timeout=args.timeout,
                        )  # fmt: skip
                    except RuntimeError as exc:
                        errors[f"floor-{compression}"] = str(exc)
                        print(f"[floor] FAILED: {exc}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"\nwork dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    _print_rounds(flower, meshfl)
    flower_median = median_overhead(flower.figures) if flower else float("nan")
    meshfl_median = median_overhead(meshfl.figures) if meshfl else float("nan")
    medians = f"Flower {_fmt(flower_median)} s   meshfl {_fmt(meshfl_median)} s"
    print(f"\nmedian overhead, rounds 2..{args.rounds}:  {medians}")
    ratio = meshfl_median / flower_median if flower and meshfl and flower_median > 0 else float("nan")
    if not math.isnan(ratio):
        verdict = (
            "goal met (<= 0.5)" if ratio <= 0.5 else "bar met (<= 1.0)" if ratio <= 1.0 else "ABOVE Flower"
        )
        print(f"meshfl overhead / Flower overhead = {ratio:.2f}  ({verdict})")
    if floors:
        print("\nthe floor (same bytes, bare confluent-kafka, median s a round over rounds 2..N):")
        for compression, seconds in floors.items():
            print(f"  compression {compression:<5} {seconds:6.3f} s")
        floor = floors.get("none")
        if floor and meshfl is not None and not math.isnan(meshfl_median):
            print(
                f"meshfl overhead / floor (none) = {meshfl_median / floor:.2f}  "
                f"(meshfl adds {meshfl_median - floor:+.3f} s a round to moving the bytes)"
            )
    if meshfl is not None:
        _print_breakdown(meshfl)
    print(f"\nload average at end {load_average()}; bench took {time.monotonic() - started:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "flower": asdict(flower) if flower else None,
            "meshfl": asdict(meshfl) if meshfl else None,
            "flower_median_overhead": flower_median,
            "meshfl_median_overhead": meshfl_median,
            "ratio": ratio,
            "floor_seconds": floors,
            "errors": errors,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
