"""Start-up time of the ``meshfl`` commands that do not train, beside bare interpreters in the same run.

    .venv/bin/python bench/startup.py [--reps 7]

Each command runs ``--reps`` times as a fresh process (the console script beside this interpreter);
the figure is the median wall time and the median CPU time (user + system of the child, from
``getrusage``), which a loaded machine inflates much less than wall time. Baselines in the same run:
``python -c pass``, ``python -c "import typer"`` (the CLI framework alone) and ``python -c "import
torch"`` (what a command that imported torch would pay at least). Each command is also run once in a
probe that lists whether torch, numpy, pyarrow or fastavro were imported.

The bar (issue 12): ``meshfl --help`` and ``meshfl broker status`` under 0.5 s, no torch import.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BAR_SECONDS = 0.5
HEAVY = ("torch", "numpy", "pyarrow", "fastavro", "confluent_kafka", "structlog")
PROBE = """
import json, sys
sys.argv = ["meshfl", *json.loads(sys.argv[1])]
from meshfl.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("MODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})) + "\\n")
"""


def _meshfl() -> list[str]:
    script = Path(sys.executable).with_name("meshfl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "meshfl"]


def _run(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _median(argv: list[str], reps: int) -> tuple[float, float]:
    _run(argv)  # warm the page cache
    runs = [_run(argv) for _ in range(reps)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _modules(args: list[str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, check=False
    )
    for line in done.stderr.splitlines():
        if line.startswith("MODULES "):
            return set(json.loads(line.removeprefix("MODULES ")))
    raise RuntimeError(f"probe of meshfl {' '.join(args)} printed no module list:\n{done.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("meshfl bench/startup.py: start-up of commands that do not train (one run, same machine)")
    cpu = platform.processor() or platform.machine()
    print(f"  {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"  load average at start {load} (a shared machine: run it three times)\n")
    baselines = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import typer'": [sys.executable, "-c", "import typer, typer.rich_utils"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    }
    commands = {"meshfl --help": ["--help"], "meshfl broker status": ["broker", "status"]}
    rows = {name: _median(argv, args.reps) for name, argv in baselines.items()}
    for name, extra in commands.items():
        rows[name] = _median([*_meshfl(), *extra], args.reps)
    bare_wall, bare_cpu = rows["python -c pass"]
    print(f"{'command':<28} {'wall s':>7} {'cpu s':>7} {'wall / bare':>12} {'cpu / bare':>11}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<28} {wall:7.3f} {cpu:7.3f} {wall / bare_wall:12.1f} {cpu / max(bare_cpu, 1e-3):11.1f}")
    failed = False
    print()
    for name, extra in commands.items():
        wall, cpu = rows[name]
        loaded = sorted(set(HEAVY) & _modules(extra))
        torch_free = "torch" not in loaded
        verdict = "met" if cpu < BAR_SECONDS and torch_free else "NOT met"
        failed |= not torch_free
        print(
            f"{name}: cpu {cpu:.3f} s, wall {wall:.3f} s (bar {BAR_SECONDS} s: {verdict}); "
            f"heavy modules imported: {', '.join(loaded) or 'none'}"
        )
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
