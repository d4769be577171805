"""Coverage-guided fuzzing (atheris / libFuzzer) of what meshfl decodes off the bus.

    .venv/bin/python bench/fuzz.py [--seconds 600] [--json out/fuzz.json] [--corpus DIR]

Targets (``bench/_fuzz/targets.py``): whole messages in both framings (single-object and Schema
Registry), Avro bodies of every event type behind a valid header, sequences of hostile chunks from
several senders through reassembly, and wire tensor records through ``from_wire`` and the canonical hash.
The seeds are valid encodings of each; libFuzzer mutates them guided by coverage of meshfl's code.

A crash is any exception other than meshfl's own errors (what daemons turn into a dead letter or a
decision), a hang of more than ``--timeout`` seconds on one input, or more than ``--rss-mb`` of memory.
It prints the machine, inputs tried, inputs per second, libFuzzer's coverage and the distinct crashes
with a saved input each; the exit code is 1 if there were any. Goal: 1 million inputs, 0 crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _machine() -> list[tuple[str, str]]:
    sys.path.insert(0, str(HERE))
    from _round.machine import describe

    return [row for row in describe("not used") if row[0] not in ("Kafka", "flwr")]


def _write_seeds(corpus: Path) -> int:
    sys.path.insert(0, str(HERE))
    from _fuzz.targets import seeds

    corpus.mkdir(parents=True, exist_ok=True)
    found = seeds()
    for index, seed in enumerate(found):
        (corpus / f"seed-{index:03d}").write_bytes(seed)
    return len(found)


def run(seconds: int, corpus: Path, crash_dir: Path, *, timeout: int, rss_mb: int) -> dict[str, object]:
    """Fuzz for ``seconds`` in one worker process; returns the figures."""
    stats = crash_dir / "stats.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), env.get("PYTHONPATH", "")] if p)
    command = [
        sys.executable,
        str(HERE / "_fuzz" / "worker.py"),
        str(stats),
        str(crash_dir),
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        "-max_len=4096",
        "-print_final_stats=1",
        str(corpus),
    ]
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    figures = json.loads(stats.read_text()) if stats.exists() else {"inputs": 0, "crashes": {}}
    done = re.findall(r"Done (\d+) runs in (\d+) second", proc.stderr)
    inputs = int(done[-1][0]) if done else int(figures["inputs"])
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", proc.stderr)
    crashes = dict(figures["crashes"])
    if proc.returncode != 0:
        # libFuzzer's own findings (a hang, memory over the limit, a native crash) end the process.
        reason = next(
            (line for line in proc.stderr.splitlines() if "ERROR: libFuzzer" in line or "==ERROR" in line),
            f"worker exited with {proc.returncode}",
        )
        crashes[reason] = {"count": 1, "error": proc.stderr[-2000:], "input": ""}
    return {
        "seconds": round(wall, 1),
        "inputs": inputs,
        "inputs_per_second": round(inputs / wall, 1) if wall else 0.0,
        "coverage": {"cov": int(coverage[-1][0]), "features": int(coverage[-1][1])} if coverage else {},
        "distinct_crashes": len(crashes),
        "crashes": crashes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="how long to fuzz")
    parser.add_argument("--corpus", type=Path, default=None, help="corpus directory (kept and grown)")
    parser.add_argument("--crash-dir", type=Path, default=None, help="where crashing inputs are saved")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory limit of the worker")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="meshfl-fuzz-"))
    corpus = args.corpus or scratch / "corpus"
    crash_dir = args.crash_dir or scratch / "crashes"
    crash_dir.mkdir(parents=True, exist_ok=True)
    seeded = _write_seeds(corpus)
    for label, value in _machine():
        print(f"{label:>24}: {value}")
    print(f"{'seeds':>24}: {seeded} in {corpus}")
    figures = run(args.seconds, corpus, crash_dir, timeout=args.timeout, rss_mb=args.rss_mb)
    print(f"{'fuzzed for':>24}: {figures['seconds']} s")
    print(f"{'inputs tried':>24}: {figures['inputs']:,} ({figures['inputs_per_second']:,} / s)")
    print(f"{'coverage':>24}: {figures['coverage']}")
    print(f"{'distinct crashes':>24}: {figures['distinct_crashes']}")
    for key, crash in dict(figures["crashes"]).items():  # type: ignore[call-overload]
        print(f"  - {key} (x{crash['count']}): {crash['error'][:300]}  input: {crash['input']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if figures["distinct_crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
