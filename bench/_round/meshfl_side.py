"""meshfl's side: a real Kafka broker, ``meshfl governance run`` and one ``meshfl domain run`` per domain.

Round close times are the ``created_at`` of the ``ModelVersion`` events (set by governance when a
round's updates are all in, just before it aggregates: the same instant as the start of Flower's
``aggregate_fit``); training times are each ``ModelUpdate``'s ``metrics["train_seconds"]``. Both are
read back from the log after the run, so the bench adds no consumer that competes for CPU meanwhile.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from pathlib import Path

from _round.breakdown import breakdown
from _round.procs import Children, meshfl_command, profiled
from _round.workload import SideResult, round_figures
from meshfl.broker import LocalBroker, free_port_block
from meshfl.bus import ensure_topics, read_all
from meshfl.events import ModelUpdate, ModelVersion, TrainingTask
from meshfl.identity.local import identity_env, provision_local
from meshfl.settings import load_settings
from meshfl.topics import Topic

DAEMON_ENV = {"MESHFL_LOG_FORMAT": "json", "MESHFL_LOG_LEVEL": "INFO"}


def start_broker(work: Path) -> tuple[str, LocalBroker | None]:
    """``MESHFL_BOOTSTRAP_SERVERS`` if set, else a fresh single-node broker on free ports in ``work``."""
    given = os.environ.get("MESHFL_BOOTSTRAP_SERVERS")
    if given:
        return given, None
    broker = LocalBroker(data_dir=work / "kafka", port=free_port_block(2))
    return broker.start(timeout=120), broker


def run_meshfl(
    work: Path,
    domain_dirs: list[Path],
    task: TrainingTask,
    task_file: Path,
    bootstrap: str,
    timeout: float,
    *,
    profile_dir: Path | None = None,
) -> SideResult:
    """Run the federation to its last round; raises ``RuntimeError`` with a log tail if a daemon fails.

    With ``profile_dir``, the governance daemon and the first domain's agent run under cProfile and
    write their stats there (``governance.prof``, ``agent.prof``).
    """
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}."
    settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    ensure_topics(settings)
    settings = provision_local(settings, work / "keys", domain_dirs)  # signed, as in production
    governance_env = {**DAEMON_ENV, **identity_env(settings, with_private_key=True)}
    agent_env = {**DAEMON_ENV, **identity_env(settings, with_private_key=False)}
    common = ["--bootstrap", bootstrap, "--topic-prefix", prefix]
    children = Children(work / "logs-meshfl")
    try:
        command = meshfl_command(
            "governance", "run", "--tasks", str(task_file), "--service-id", f"bench-{run_id}",
            "--exit-when-complete", *common,
        )  # fmt: skip
        if profile_dir is not None:
            command = profiled(command, profile_dir / "governance.prof")
        governance = children.start("governance", command, governance_env)
        for index, folder in enumerate(domain_dirs):
            command = meshfl_command("domain", "run", "--domain", str(folder), *common)
            if profile_dir is not None and index == 0:
                command = profiled(command, profile_dir / "agent.prof")
            children.start(f"agent-{folder.name}", command, agent_env)
        deadline = time.monotonic() + timeout
        while governance.poll() is None and time.monotonic() < deadline:
            failed = children.failed()
            if failed:
                raise RuntimeError(f"meshfl {failed[0]} exited with an error:\n{children.tail(failed[0])}")
            time.sleep(0.2)
        if governance.poll() is None:
            raise RuntimeError(f"meshfl did not finish within {timeout} s:\n{children.tail('governance')}")
        if governance.returncode != 0:
            raise RuntimeError(
                f"meshfl governance exited with {governance.returncode}:\n{children.tail('governance')}"
            )
    finally:
        children.stop()
    closed_at: dict[int, float] = {}
    for env in read_all(settings, Topic.MODEL_VERSIONS):
        if isinstance(env.event, ModelVersion) and env.event.task_id == task.id:
            closed_at[env.event.round] = env.event.created_at.timestamp()
    trains: dict[int, list[float]] = defaultdict(list)
    by_domain: dict[tuple[int, str], float] = {}
    for env in read_all(settings, Topic.UPDATES):
        update = env.event
        if isinstance(update, ModelUpdate) and update.task_id == task.id:
            seconds = float(update.metrics["train_seconds"])
            trains[update.round].append(seconds)
            by_domain[(update.round, update.domain)] = seconds
    segments = breakdown(
        children.log_path("governance"),
        [children.log_path(f"agent-{folder.name}") for folder in domain_dirs],
        by_domain,
    )
    rounds_done = max(closed_at, default=0)
    note = "" if rounds_done == task.rounds else f"only {rounds_done} of {task.rounds} rounds on the log"
    return SideResult(
        round_figures(closed_at, trains), time.monotonic() - began, note=note, segments=segments
    )
