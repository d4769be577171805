"""Detached broker processes: spawn, find alive, stop, and wait until Kafka answers.

A broker outlives the command that started it (new session, output to a log file, a pid file), so a
later ``meshfl broker stop`` in another process can find it. A pid alone can be reused by another
program, so liveness also checks the process's command line names this node's properties file
(through psutil, so the same code runs wherever psutil does, with or without a procfs).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from meshfl.errors import BrokerError
from meshfl.logs import get_logger

log = get_logger(__name__)

# Popen objects of brokers this process started, kept so they are reaped (no zombies) and not
# reported as "still running" when garbage collected.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# Exit codes of those children once reaped, so a failed start can say how a node ended.
_EXIT_CODES: dict[int, int] = {}

_quiet = logging.getLogger("meshfl.broker.probe")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False  # librdkafka reports every refused connection while a broker boots


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when ``marker`` is given, has it in its command line."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            # Our own child that has not exited runs, whatever its command line reads for a moment
            # (procfs can answer empty while a process is loaded): reporting it dead would relaunch a
            # second JVM onto the ports the first one holds.
            return True
        _EXIT_CODES[pid] = child.returncode
        del _CHILDREN[pid]
        return False
    import psutil  # here: ``meshfl broker status`` of a data dir with no cluster never needs it

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return marker is None or marker in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False  # gone, or some other user's process took the pid


def exit_code(pid: int) -> int | None:
    """The exit code of a child this process started and saw exit (negative: killed by that signal)."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _EXIT_CODES[pid] = child.returncode
        del _CHILDREN[pid]
    return _EXIT_CODES.get(pid)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit code unknown (not started by this process)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails, as it would for the broker (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port_block(count: int = 2, host: str = "127.0.0.1", *, attempts: int = 200) -> int:
    """A port ``p`` with ``p .. p+count-1`` all free, below Linux's ephemeral range (32768+) so that
    outgoing connections do not take a broker's port between this check and its start."""
    low, high = port_range()
    rng = random.SystemRandom()
    for _ in range(attempts):
        first = rng.randrange(low, high - count)
        if not any(port_in_use(host, port) for port in range(first, first + count)):
            return first
    raise BrokerError(f"found no {count} consecutive free ports on {host} in {low}-{high}")


def port_range() -> tuple[int, int]:
    """Where ``free_port_block`` looks: ``MESHFL_PORT_RANGE`` (``LOW-HIGH``) or 20000-32000. Processes
    that start brokers side by side (parallel test workers) each take a range of their own, so one never
    takes the ports another's stopped broker is about to start on again."""
    raw = os.environ.get("MESHFL_PORT_RANGE", "").strip()
    if not raw:
        return 20_000, 32_000
    try:
        low, high = (int(part) for part in raw.split("-", 1))
    except ValueError:
        raise BrokerError(f"MESHFL_PORT_RANGE={raw!r} is not LOW-HIGH") from None
    if not 1024 <= low < high - 16 <= 65_535:
        raise BrokerError(f"MESHFL_PORT_RANGE={raw!r} must be LOW-HIGH within 1024-65535, 16 ports or more")
    return low, high


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(command: list[str], *, cwd: Path, output: Path, pid_file: Path) -> int:
    """Start ``command`` in its own session with stdout and stderr appended to ``output``."""
    with output.open("ab") as sink:
        try:
            child = subprocess.Popen(
                command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise BrokerError(f"could not start {command[0]}: {exc}") from exc
    _CHILDREN[child.pid] = child
    pid_file.write_text(f"{child.pid}\n")
    return child.pid


def send_stop(pid: int, marker: str, *, kill: bool = False) -> None:
    """Send SIGTERM (or SIGKILL) without waiting, so several nodes shut down side by side."""
    if pid_alive(pid, marker):
        import psutil

        try:
            process = psutil.Process(pid)
            process.kill() if kill else process.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return


def terminate(pid: int, marker: str, *, grace: float = 30.0, kill: bool = False) -> None:
    """SIGTERM (a clean, controlled shutdown), then SIGKILL after ``grace`` seconds; or SIGKILL at once."""
    send_stop(pid, marker, kill=kill)
    await_exit(pid, marker, grace=5.0 if kill else grace)


def await_exit(pid: int, marker: str, *, grace: float = 30.0) -> None:
    """Wait for a signalled process to exit, SIGKILL it after ``grace`` seconds."""
    if _wait_dead(pid, marker, grace):
        return
    log.warning("broker did not stop in time, killing it", pid=pid, grace_s=grace)
    send_stop(pid, marker, kill=True)
    if not _wait_dead(pid, marker, 10.0):
        raise BrokerError(f"process {pid} survived SIGKILL; stop it by hand")


def _wait_dead(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return True
        time.sleep(0.1)
    return not pid_alive(pid, marker)


def run_tool(command: list[str], *, timeout: float = 120.0, secret: SecretStr | None = None) -> str:
    """Run a short-lived Kafka tool (storage format), turning a failure into a BrokerError.

    ``secret`` (a password on the command line) is masked in what is reported.
    """

    def masked(text: str) -> str:
        return text.replace(secret.get_secret_value(), "******") if secret is not None else text

    shown = masked(" ".join(command[-8:]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"{shown} failed: {masked(str(exc))}") from exc
    output = masked((done.stdout + done.stderr).strip())
    if done.returncode != 0:
        raise BrokerError(f"{shown} failed with exit {done.returncode}:\n{output}")
    return output


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    if not text.strip():
        return f"({path} is empty: the process wrote nothing before it ended)"
    return "\n".join(text.strip().splitlines()[-lines:])


def wait_for_broker(
    bootstrap: str,
    *,
    timeout: float = 60.0,
    brokers: int = 1,
    check: Callable[[], str | None] | None = None,
    config: dict[str, Any] | None = None,
) -> None:
    """Block until ``bootstrap`` answers a metadata request listing at least ``brokers`` brokers.

    ``check`` is called on every turn and returns a reason to give up (say, the process died), or None;
    ``config`` adds librdkafka settings (SASL/TLS credentials of a secured cluster).
    """
    from confluent_kafka import KafkaException  # librdkafka loads when waiting, not for `status`
    from confluent_kafka.admin import AdminClient

    addresses = [_split(address) for address in bootstrap.split(",")]
    deadline = time.monotonic() + timeout
    admin: AdminClient | None = None
    seen = 0
    while True:
        reason = check() if check is not None else None
        if reason is not None:
            raise BrokerError(reason)
        if admin is None and any(port_answers(host, port) for host, port in addresses):
            admin = AdminClient({**(config or {}), "bootstrap.servers": bootstrap, "logger": _quiet})
        if admin is not None:
            remaining = max(0.5, min(2.0, deadline - time.monotonic()))
            try:
                seen = len(admin.list_topics(timeout=remaining).brokers)
            except KafkaException:
                seen = 0
            if seen >= brokers:
                return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"Kafka at {bootstrap} did not answer with {brokers} broker(s) within {timeout:.0f} s "
                f"(last metadata listed {seen})"
            )
        time.sleep(0.2)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise BrokerError(f"bootstrap address {address!r} is not host:port")
    return host.strip("[]"), int(port)
