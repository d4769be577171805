"""``meshfl demo``: a whole federation on real data, as separate processes over a real broker.

The demo is a user of meshfl like any other: it starts the governance service and one agent per
domain as their own processes (the same commands a platform team runs), watches the model-version
topic like a data scientist would, evaluates every version on a held-out test set that no domain
trains on, and compares the result with a centralized model trained on the pooled data with the same
model and budget (epochs = rounds x local epochs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from meshfl.access import domain_principal_name
from meshfl.bus import EventConsumer, ensure_topics
from meshfl.datasets import find_testset, materialize
from meshfl.domain.config import DomainConfig, discover_domains, load_domain
from meshfl.domain.data import load_xy_file, prepare_local_data, product_serves
from meshfl.domain.tasks import load_task_file
from meshfl.domain.training import evaluate, train_centralized
from meshfl.errors import MeshflError
from meshfl.events import FederationMode, ModelVersion, StrategySpec, TrainingTask
from meshfl.extras import require
from meshfl.identity.local import identity_env, provision_local
from meshfl.identity.trust import EnvelopeVerifier
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire
from meshfl.topics import Topic

log = get_logger("meshfl.demo")


class RoundRecord(BaseModel):
    version: int
    round: int
    domains: list[str]
    accuracy: float
    loss: float
    wall_seconds: float
    sha256: str


class DemoSummary(BaseModel):
    task_id: str
    mode: str
    bootstrap: str
    topic_prefix: str
    rounds: list[RoundRecord]
    federated_accuracy: float
    centralized_accuracy: float
    centralized_loss: float
    ratio_to_centralized: float
    federation_seconds: float
    centralized_seconds: float
    domains: list[str]
    accepted_updates: dict[str, int] = {}
    """Accepted updates aggregated per domain over the run (async: does the straggler contribute?)."""


@dataclass
class DemoPlan:
    task: TrainingTask
    task_file: Path
    domains: list[DomainConfig]
    domain_dirs: list[Path]
    test_file: Path
    out_dir: Path
    timeout: float = 600.0
    slow_domain: str | None = None
    slow_delay: float = 1.0
    """Seconds the straggler waits after training each update: a few versions of the fast domains'
    pace on this machine (``bench/async_sweep.py`` sweeps it in cycles), so it lands several updates."""
    extra_env: dict[str, str] = field(default_factory=dict)
    client_kafka: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per process (``governance``, ``agent-<domain>``): its own librdkafka credentials (``--secure``)."""


def plan_demo(
    *,
    domains_root: Path,
    task_file: Path,
    out_dir: Path,
    rounds: int | None = None,
    mode: FederationMode | None = None,
    timeout: float = 600.0,
    seed: int = 42,
) -> DemoPlan:
    """Materialize the example data, load the task and pick the domains that can serve it."""
    report = materialize(domains_root, seed=seed)
    log.info("domains materialized", root=str(domains_root), domains=len(report.domains))
    task = load_task_file(task_file)
    dirs = discover_domains(domains_root)
    configs = [load_domain(d) for d in dirs]
    serving = [
        (d, c)
        for d, c in zip(dirs, configs, strict=True)
        if any(product_serves(p, task) is None for p in c.data_products)
    ]
    if not serving:
        raise MeshflError(f"no domain under {domains_root} serves task {task.id}")
    overrides: dict[str, object] = {}
    if rounds is not None:
        overrides["rounds"] = rounds
    if mode is not None and mode != task.mode:
        overrides["mode"] = mode
        if mode == FederationMode.ASYNC:
            overrides.update(async_overrides(task, len(serving), rounds))
    if overrides:
        task = task.model_copy(update=overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    effective_task_file = out_dir / "task.json"
    effective_task_file.write_text(task.model_dump_json(indent=2))
    test_file = find_testset(domains_root, task)
    return DemoPlan(
        task=task,
        task_file=effective_task_file,
        domains=[c for _, c in serving],
        domain_dirs=[d for d, _ in serving],
        test_file=test_file,
        out_dir=out_dir,
        timeout=timeout,
    )


ASYNC_BUFFER_SIZE = 4
"""FedBuff's K in the async demo unless the task file sets one, and at most one fewer than the domains:
with the five digits domains the fast four never wait for the straggler, whose updates land in later
buffers (``bench/async_sweep.py``, README "Learning quality")."""
ASYNC_MAX_STALENESS = 20


def async_overrides(task: TrainingTask, domains: int, rounds: int | None) -> dict[str, object]:
    """A sync task file run asynchronously: FedBuff (unless the file names it) with K and a staleness
    window unless the file sets them, and, unless ``rounds`` is given, as many versions as give the
    same number of accepted updates as the synchronous run (``rounds x domains / K``)."""
    policy = task.round_policy
    k = policy.buffer_size or max(1, min(ASYNC_BUFFER_SIZE, domains - 1))  # never a barrier over all
    out: dict[str, object] = {
        # a barrier over all domains would not be async; a sync strategy's parameters do not apply
        "round_policy": policy.model_copy(
            update={
                "buffer_size": k,
                "max_staleness": policy.max_staleness or ASYNC_MAX_STALENESS,
                "min_domains": 1,
            }
        ),
    }
    if task.strategy.name != "fedbuff":
        out["strategy"] = StrategySpec(name="fedbuff")
    if rounds is None:
        out["rounds"] = max(1, round(task.rounds * domains / k))
    return out


def update_budget_rounds(task: TrainingTask, domains: int) -> int:
    """Synchronous rounds with as many accepted updates as ``task`` makes (async: versions x K)."""
    if task.mode != FederationMode.ASYNC:
        return task.rounds
    return max(1, round(task.rounds * task.round_policy.buffer_size / domains))


class _Fleet:
    """The demo's child processes: governance plus one agent per domain, logs in ``out_dir/logs``."""

    def __init__(self, settings: MeshflSettings, plan: DemoPlan) -> None:
        self._settings = settings
        self._plan = plan
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs = plan.out_dir / "logs"
        self._logs.mkdir(parents=True, exist_ok=True)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MESHFL_BOOTSTRAP_SERVERS=self._settings.bootstrap_servers,
            MESHFL_TOPIC_PREFIX=self._settings.topic_prefix,
            MESHFL_LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
        )
        env.update(self._plan.extra_env)
        env.update(extra or {})
        return env

    def _start(self, name: str, args: list[str], extra: dict[str, str] | None = None) -> None:
        if name in self._plan.client_kafka:  # its own principal, never the admin's MESHFL_KAFKA
            extra = {**(extra or {}), "MESHFL_KAFKA": json.dumps(self._plan.client_kafka[name])}
        log_file = (self._logs / f"{name}.log").open("wb")
        self._procs[name] = subprocess.Popen(
            [sys.executable, "-m", "meshfl", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self._env(extra),
        )

    def start(self) -> None:
        governance_env = identity_env(self._settings, with_private_key=True)
        self._start("governance", ["governance", "run", "--tasks", str(self._plan.task_file)], governance_env)
        for domain_dir, config in zip(self._plan.domain_dirs, self._plan.domains, strict=True):
            args = ["domain", "run", "--domain", str(domain_dir)]
            if config.name == self._plan.slow_domain:
                args += ["--simulate-delay", str(self._plan.slow_delay)]
            self._start(f"agent-{config.name}", args, identity_env(self._settings, with_private_key=False))

    def check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                tail = (self._logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise MeshflError(f"{name} exited with code {proc.returncode}:\n" + "\n".join(tail))

    def stop(self, grace: float = 20.0) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def secure_plan(admin: MeshflSettings, plan: DemoPlan) -> MeshflSettings:
    """Give governance, every agent and the demo's own reader a principal of their own on a secured
    cluster (``meshfl.access``): the demo then runs exactly as a secured deployment would.

    Returns the auditor's settings, with which the demo watches versions (it reads, never writes).
    """
    from meshfl.access import federation, principal_settings, provision
    from meshfl.bus import ensure_topics
    from meshfl.identity.local import provision_local

    # Keys first, with the admin's rights: the demo's own reader may not write the keys topic.
    ensure_topics(admin)
    admin = provision_local(admin, plan.out_dir / "keys", plan.domain_dirs)
    names = [config.name for config in plan.domains]
    out = plan.out_dir / "credentials"
    done = {item.principal: item.credentials_file for item in provision(admin, federation(admin, names), out)}
    plan.client_kafka["governance"] = json.loads(done["governance"].read_text())
    for name in names:
        plan.client_kafka[f"agent-{name}"] = json.loads(done[domain_principal_name(name)].read_text())
    log.info("demo principals provisioned", principals=sorted(done), credentials=str(out))
    return principal_settings(admin, done["auditor"])


def run_demo(
    settings: MeshflSettings,
    plan: DemoPlan,
    *,
    on_version: Callable[[RoundRecord], None] | None = None,
) -> DemoSummary:
    """Run the federation to its last round, then the centralized baseline; return the summary."""
    torch.set_num_threads(1)
    ensure_topics(settings)
    # Signed from the first event: governance's key pair (out_dir/keys unless set), a key per domain.
    # Registering domain keys is governance's act: secured (``--secure``), with governance's principal;
    # the demo itself then reads with its own (read-only) one.
    registrar = settings
    if "governance" in plan.client_kafka:
        registrar = settings.model_copy(update={"kafka": plan.client_kafka["governance"]})
    settings = provision_local(registrar, plan.out_dir / "keys", plan.domain_dirs).model_copy(
        update={"kafka": settings.kafka}
    )
    verifier = EnvelopeVerifier.for_governance_events(settings, reader="demo")
    x_test, y_test = load_xy_file(plan.test_file, plan.task)
    fleet = _Fleet(settings, plan)
    records: list[RoundRecord] = []
    started = time.perf_counter()
    fleet.start()
    try:
        with EventConsumer(settings, [Topic.MODEL_VERSIONS], client_id="meshfl-demo") as consumer:
            previous = time.perf_counter()
            deadline = time.monotonic() + plan.timeout
            while not records or records[-1].round < plan.task.rounds:
                if time.monotonic() > deadline:
                    raise MeshflError(f"the federation did not finish within {plan.timeout:.0f} s")
                fleet.check_alive()
                env = consumer.poll(0.5)
                if (
                    env is None
                    or not isinstance(env.event, ModelVersion)
                    or env.event.task_id != plan.task.id
                    or not verifier.accept(env)
                ):
                    continue
                version = env.event
                metrics = evaluate(plan.task.model, from_wire(version.tensors), x_test, y_test)
                now = time.perf_counter()
                record = RoundRecord(
                    version=version.version,
                    round=version.round,
                    domains=version.contributing_domains,
                    accuracy=metrics["accuracy"],
                    loss=metrics["loss"],
                    wall_seconds=now - previous,
                    sha256=version.sha256,
                )
                previous = now
                records.append(record)
                if on_version is not None:
                    on_version(record)
        federation_seconds = time.perf_counter() - started
    finally:
        fleet.stop()
    centralized_started = time.perf_counter()
    central = centralized_baseline(plan, x_test, y_test)
    centralized_seconds = time.perf_counter() - centralized_started
    final = records[-1].accuracy
    return DemoSummary(
        task_id=plan.task.id,
        mode=plan.task.mode.value,
        bootstrap=settings.bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        rounds=records,
        federated_accuracy=final,
        centralized_accuracy=central["accuracy"],
        centralized_loss=central["loss"],
        ratio_to_centralized=final / central["accuracy"] if central["accuracy"] else 0.0,
        federation_seconds=federation_seconds,
        centralized_seconds=centralized_seconds,
        domains=[c.name for c in plan.domains],
        accepted_updates=dict(Counter(d for r in records for d in r.domains)),
    )


def centralized_baseline(plan: DemoPlan, x_test: torch.Tensor, y_test: torch.Tensor) -> dict[str, float]:
    """The same model trained on the pooled training rows of all domains, for rounds x local epochs.

    It pools exactly the rows the agents train on (each domain's holdout stays out), so the
    comparison measures federation, not a difference in data.
    """
    parts = [prepare_local_data(config, plan.task) for config in plan.domains]
    x = torch.cat([p.x_train for p in parts])
    y = torch.cat([p.y_train for p in parts])
    # the same budget in passes over the data: async versions of K updates count as K / domains rounds
    epochs = update_budget_rounds(plan.task, len(plan.domains)) * plan.task.local_epochs
    result = train_centralized(plan.task, x, y, epochs=epochs, seed=plan.task.seed)
    return evaluate(plan.task.model, result.state, x_test, y_test)


def plot_summary(summary: DemoSummary, path: Path) -> None:
    """Accuracy per round, federated vs the centralized baseline, as a PNG."""
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    rounds = [r.round for r in summary.rounds]
    ax.plot(rounds, [r.accuracy for r in summary.rounds], marker="o", label=f"federated ({summary.mode})")
    ax.axhline(
        summary.centralized_accuracy, color="tab:red", linestyle="--", label="centralized, same budget"
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (global model version)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"meshfl demo: {summary.task_id}, {len(summary.domains)} domains")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
