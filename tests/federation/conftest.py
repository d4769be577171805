"""Fixtures for whole-federation tests: example domains materialized into a temp folder, and helpers to
run the governance service and domain agents as threads (for speed) or as processes (to kill them)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from meshfl.bus import ensure_topics, read_all
from meshfl.datasets import materialize
from meshfl.domain.agent import DomainAgent
from meshfl.domain.tasks import load_task_file
from meshfl.events import Event, RoundPolicy, TrainingTask
from meshfl.identity import GOVERNANCE, Signer, generate_private_key, sender_of
from meshfl.identity.local import ensure_domain_key, identity_env
from meshfl.identity.trust import domain_signer, governance_signer, publish_key_event, register_domain_dir
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

REPO = Path(__file__).resolve().parents[2]
E = TypeVar("E", bound=Event)
HOSPITALS = ["hospital-central", "hospital-north", "hospital-south"]


@pytest.fixture(scope="session")
def mesh_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example domains with their data written, shared by the session (read-only)."""
    root = tmp_path_factory.mktemp("domains")
    for entry in (REPO / "domains").iterdir():
        if entry.is_dir() and not entry.name.startswith("_"):
            shutil.copytree(entry, root / entry.name, ignore=shutil.ignore_patterns("data"))
    materialize(root, seed=42)
    for domain_dir in root.iterdir():
        if (domain_dir / "domain.toml").is_file():
            ensure_domain_key(domain_dir)
    return root


_REGISTERED: set[tuple[str, str, str]] = set()


def register_domain(settings: MeshflSettings, domain_dir: Path) -> None:
    """Governance registers the domain's key on this test's keys topic (once per topic prefix)."""
    key = (settings.bootstrap_servers, settings.topic_prefix, str(domain_dir))
    if key not in _REGISTERED:
        ensure_topics(settings)
        register_domain_dir(settings, governance_signer(settings), domain_dir)
        _REGISTERED.add(key)


def hospital_task(mesh_root: Path, **overrides: object) -> TrainingTask:
    """The breast-cancer task; each round waits for all three hospitals unless told otherwise."""
    task = load_task_file(mesh_root / "tasks" / "breast-cancer.toml")
    updates = {"rounds": 3, "round_policy": RoundPolicy(min_domains=3), **overrides}
    return task.model_copy(update=updates)


def write_task(task: TrainingTask, path: Path) -> Path:
    path.write_text(task.model_dump_json())
    return path


@dataclass
class EventSigners:
    """Signs hand-made events as their senders would: a mesh domain with its folder's key, any other
    domain name with a fresh key governance registers for it, governance with the session's key."""

    settings: MeshflSettings
    mesh_root: Path
    _signers: dict[str, Signer] = field(default_factory=dict)

    def signer(self, domain: str) -> Signer:
        if domain not in self._signers:
            folder = self.mesh_root / domain
            if domain == GOVERNANCE:
                self._signers[domain] = governance_signer(self.settings)
            elif (folder / "domain.toml").is_file():
                register_domain(self.settings, folder)
                self._signers[domain] = domain_signer(folder, domain)
            else:
                signer = Signer(domain, generate_private_key())
                ensure_topics(self.settings)
                publish_key_event(self.settings, governance_signer(self.settings), domain, signer.public_key)
                self._signers[domain] = signer
        return self._signers[domain]

    def sign(self, event: E) -> E:
        return self.signer(sender_of(event)).sign(event)


@pytest.fixture
def signers(settings: MeshflSettings, mesh_root: Path) -> EventSigners:
    return EventSigners(settings, mesh_root)


@dataclass
class Threads:
    """Daemons run as threads of the test process; all stopped (and joined) at teardown."""

    stop_events: list[threading.Event] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self, name: str, run: Callable[[threading.Event], int]) -> threading.Event:
        stop = threading.Event()

        def _target() -> None:
            try:
                run(stop)
            except BaseException as exc:  # re-raised in the test through check()
                self.errors.append(exc)

        thread = threading.Thread(target=_target, name=name, daemon=True)
        thread.start()
        self.stop_events.append(stop)
        self.threads.append(thread)
        return stop

    def start_agent(self, settings: MeshflSettings, domain_dir: Path) -> threading.Event:
        register_domain(settings, domain_dir)
        agent = DomainAgent(settings, domain_dir, heartbeat_interval=1.0)
        return self.start(f"agent-{domain_dir.name}", agent.run)

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def stop_all(self) -> None:
        for stop in self.stop_events:
            stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.fixture
def daemons() -> Iterator[Threads]:
    threads = Threads()
    try:
        yield threads
    finally:
        threads.stop_all()
    threads.check()


@dataclass
class Processes:
    """Daemons as real processes (``python -m meshfl ...``), so a test can SIGKILL them."""

    settings: MeshflSettings
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``python -m meshfl *args``; ``env`` adds variables (e.g. the ``MESHFL_KILL_AT`` hooks)."""
        full = dict(os.environ)
        full.update(
            MESHFL_BOOTSTRAP_SERVERS=self.settings.bootstrap_servers,
            MESHFL_TOPIC_PREFIX=self.settings.topic_prefix,
            MESHFL_PARTITIONS=str(self.settings.partitions),
            MESHFL_MAX_MESSAGE_BYTES=str(self.settings.max_message_bytes),
            MESHFL_LOG_FORMAT="json",
            **identity_env(self.settings, with_private_key=args[:1] == ("governance",)),
            **(env or {}),
        )
        if args[:2] == ("domain", "run") and "--domain" in args:
            register_domain(self.settings, Path(args[args.index("--domain") + 1]))
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshfl", *args], stdout=log, stderr=subprocess.STDOUT, env=full
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def terminate(self, name: str, timeout: float = 30.0) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def processes(settings: MeshflSettings, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(settings=settings, log_dir=tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


_ENSURED: set[tuple[str, str]] = set()


def events(settings: MeshflSettings, topic: Topic) -> list[Event]:
    """Every event of ``topic`` now (the topics are created first, so a test may look before a daemon)."""
    key = (settings.bootstrap_servers, settings.topic_prefix)
    if key not in _ENSURED:
        ensure_topics(settings)
        _ENSURED.add(key)
    return [env.event for env in read_all(settings, topic)]


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, what: str, check: Callable[[], None] | None = None
) -> None:
    """Poll ``predicate`` until true; fail with ``what`` on timeout (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if predicate():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
