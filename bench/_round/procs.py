"""Child processes of the bench: started with their output in a log file, always stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
"""``bench/``, put on the children's ``PYTHONPATH`` so they can import ``_round``."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def python_script(path: Path, *args: str) -> list[str]:
    """The command line that runs a script of ``_round`` with this interpreter."""
    return [sys.executable, str(path), *args]


def meshfl_command(*args: str) -> list[str]:
    """``meshfl ARGS``: the console script beside this interpreter, as users run it."""
    script = Path(sys.executable).with_name("meshfl")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "meshfl", *args]


def profiled(command: list[str], out: Path) -> list[str]:
    """``command`` (a Python console script or ``python -m``) run under cProfile, stats to ``out``."""
    if command[0] == sys.executable:
        return [sys.executable, "-m", "cProfile", "-o", str(out), *command[1:]]
    return [sys.executable, "-m", "cProfile", "-o", str(out), *command]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(BENCH_DIR) + (os.pathsep + path if path else "")
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Children:
    """The processes one side of the bench started; ``stop`` ends each of them by its own pid."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr in ``<log_dir>/<name>.log``."""
        with (self.log_dir / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=child_env(env))
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def failed(self) -> list[str]:
        """Children that exited with a non-zero code."""
        return [name for name, proc in self.procs.items() if proc.poll() not in (None, 0)]

    def tail(self, name: str, lines: int = 20) -> str:
        text = self.log_path(name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
