"""The baseline: Flower's legacy gRPC server and one ``start_client`` process per domain."""

from __future__ import annotations

import json
import time
from pathlib import Path

from _round.procs import Children, free_port, python_script, wait_for_port
from _round.workload import SideResult, round_figures

HERE = Path(__file__).resolve().parent


def run_flower(work: Path, domain_dirs: list[Path], task_file: Path, timeout: float) -> SideResult:
    """Run the whole Flower federation; raises ``RuntimeError`` with the logs' tails if it fails."""
    began = time.monotonic()
    port = free_port()
    address = f"127.0.0.1:{port}"
    out = work / "flower-rounds.json"
    children = Children(work / "logs-flower")
    try:
        server = children.start(
            "server",
            python_script(
                HERE / "flower_server.py", address, str(task_file), str(len(domain_dirs)), str(out)
            ),
        )
        wait_for_port(port, timeout=60, proc=server)
        for folder in domain_dirs:
            children.start(
                f"client-{folder.name}",
                python_script(HERE / "flower_client.py", address, str(folder), str(task_file)),
            )
        deadline = time.monotonic() + timeout
        while server.poll() is None and time.monotonic() < deadline:
            failed = children.failed()
            if failed:
                raise RuntimeError(f"Flower {failed[0]} failed:\n{children.tail(failed[0])}")
            time.sleep(0.2)
        if server.poll() is None:
            raise RuntimeError(f"Flower did not finish within {timeout} s:\n{children.tail('server')}")
        if server.returncode != 0 or not out.is_file():
            raise RuntimeError(f"Flower server exited with {server.returncode}:\n{children.tail('server')}")
    finally:
        children.stop()
    records = json.loads(out.read_text())
    closed_at = {r["round"]: r["began"] for r in records}
    trains = {r["round"]: r["train_seconds"] for r in records}
    failures = sum(r["failures"] for r in records)
    note = f"{failures} failed fits" if failures else ""
    return SideResult(round_figures(closed_at, trains), time.monotonic() - began, note=note)
