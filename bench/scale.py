"""Governance at scale: one ``meshfl governance run`` fed by a load generator of many simulated domains.

    .venv/bin/python bench/scale.py                          # 1,000 domains x 100k params, 10 rounds
    .venv/bin/python bench/scale.py --params 10000000 --domains 20 --rounds 3

The generator publishes real, valid ``ModelUpdate`` events (no training: each domain sends the current
global weights back, which every policy accepts) through the real broker, one per domain and round, for
domains it registers in the catalog like agents do. Governance runs as its own process, as users run it.
Round 1's updates are all on the log before governance starts, so that round measures ingestion alone:
updates/s and MB/s from governance's first decision to its last. Every round gives the time from the
last update appended to the version appended, and governance's RSS is sampled throughout (peak per round
must stay flat). In the same run, a bare confluent-kafka consumer reads the same round-1 updates from the
same topic: governance's ingest rate is printed as a fraction of it (aim: >= 50%).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _round.procs import child_env, meshfl_command  # noqa: E402
from _round.workload import FEATURES, LABEL, NUM_CLASSES, task_toml, write_domains  # noqa: E402

from governance.rounds import initial_version  # noqa: E402
from meshfl.broker import LocalBroker, free_port_block  # noqa: E402
from meshfl.bus import EventConsumer, EventProducer, ensure_topics, read_all  # noqa: E402
from meshfl.domain.agent import update_id_for  # noqa: E402
from meshfl.domain.config import load_domain  # noqa: E402
from meshfl.events import (  # noqa: E402
    DataProductRef,
    GovernanceDecision,
    KeyAction,
    KeyEvent,
    ModelSpec,
    ModelUpdate,
    ModelVersion,
    RoundPolicy,
    TrainingTask,
    utcnow,
)
from meshfl.identity.canonical import state_digests  # noqa: E402
from meshfl.identity.keys import generate_private_key, key_id, public_bytes  # noqa: E402
from meshfl.identity.local import identity_env, with_governance_keys  # noqa: E402
from meshfl.identity.signing import Signer, verify_event  # noqa: E402
from meshfl.identity.trust import governance_signer  # noqa: E402
from meshfl.logs import configure_logging  # noqa: E402
from meshfl.settings import load_settings  # noqa: E402
from meshfl.topics import Topic, topic_name  # noqa: E402


def model_for(params: int) -> ModelSpec:
    """An MLP 64-h-h2-10 of about ``params`` float32 parameters."""
    hidden = max(16, int((params / 2) ** 0.5))
    second = max(16, (params - 64 * hidden - hidden) // (hidden + 11))
    return ModelSpec(
        architecture="mlp", input_dim=len(FEATURES), hidden=[hidden, second], output_dim=NUM_CLASSES
    )


class RssSampler(threading.Thread):
    """Samples a process's VmRSS and CPU time (user + system, all threads) every 0.1 s: ``peak``
    gives the RSS max over a window, ``cpu`` the CPU seconds spent in it."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.cpu_samples: list[tuple[float, float]] = []
        self.sched_samples: list[tuple[float, float, float]] = []  # main thread: on CPU, runnable waiting
        self.stop = threading.Event()

    def run(self) -> None:
        path = Path(f"/proc/{self.pid}/status")
        stat = Path(f"/proc/{self.pid}/stat")
        sched = Path(f"/proc/{self.pid}/task/{self.pid}/schedstat")
        ticks = os.sysconf("SC_CLK_TCK")
        while not self.stop.wait(0.1):
            try:
                now = time.time()
                for line in path.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append((now, int(line.split()[1]) * 1024))
                fields = stat.read_text().rpartition(")")[2].split()
                self.cpu_samples.append((now, (int(fields[11]) + int(fields[12])) / ticks))
                running, waiting = sched.read_text().split()[:2]
                self.sched_samples.append((now, int(running) / 1e9, int(waiting) / 1e9))
            except OSError:
                return

    def peak(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)

    def cpu(self, start: float, end: float) -> float:
        inside = [cpu for t, cpu in self.cpu_samples if start <= t <= end]
        return inside[-1] - inside[0] if len(inside) > 1 else 0.0

    def main_thread(self, start: float, end: float) -> tuple[float, float, float]:
        """The main (deciding) thread's shares of the window: on a CPU, runnable but waiting for one
        (the machine's other load), and neither (blocked: polling, committing, sleeping)."""
        inside = [(t, run, wait) for t, run, wait in self.sched_samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0, 0.0, 0.0
        span = inside[-1][0] - inside[0][0]
        running = (inside[-1][1] - inside[0][1]) / span
        waiting = (inside[-1][2] - inside[0][2]) / span
        return running, waiting, max(0.0, 1.0 - running - waiting)


def log_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """The high watermark of every partition of ``topic`` (where round 1's updates end)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-scale-{uuid.uuid4().hex[:6]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()


def bare_read(bootstrap: str, topic: str, ends: dict[int, int]) -> tuple[float, int]:
    """Seconds and bytes for a bare consumer to read ``topic`` from its start up to ``ends`` (every
    message, chunks included), from its first message to its last."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-scale-bare-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 64 * 1024 * 1024,
        }
    )
    left = {p: end for p, end in ends.items() if end > 0}
    consumer.assign([TopicPartition(topic, p, 0) for p in left])
    size = 0
    start = None
    while left:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        start = start or time.perf_counter()
        size += len(message.value() or b"")
        if message.offset() + 1 >= left.get(message.partition(), 0):
            left.pop(message.partition(), None)
    seconds = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    return seconds, size


def register_domains(settings, names: list[str]) -> dict[str, Signer]:  # type: ignore[no-untyped-def]
    """A key per simulated domain, registered by governance on the keys topic (one producer for all):
    the load generator signs every descriptor and update with its domain's key, as agents do."""
    signers = {name: Signer(name, generate_private_key()) for name in names}
    with EventProducer(
        settings, signer=governance_signer(settings), client_id="bench-scale-keys"
    ) as producer:
        for name, signer in signers.items():
            event = KeyEvent(
                domain=name, key_id=key_id(signer.public_key), public_key=public_bytes(signer.public_key),
                action=KeyAction.REGISTERED, effective_at=utcnow(), reason="bench/scale.py",
            )  # fmt: skip
            producer.produce(Topic.KEYS, event, key=f"{name}/{event.key_id}")
    return signers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--profile", type=Path, help="py-spy record governance into this file (collapsed stacks)"
    )
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="meshfl-bench-scale-"))
    broker = None
    governance = None
    try:
        bootstrap = os.environ.get("MESHFL_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = LocalBroker(data_dir=work / "kafka", port=free_port_block(2))
            bootstrap = broker.start(timeout=120)
        prefix = f"bench-scale-{uuid.uuid4().hex[:8]}."
        settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix)
        settings = with_governance_keys(settings, work / "keys")  # signed, as in production
        spec = model_for(args.params)
        task = TrainingTask(
            id=f"scale-{uuid.uuid4().hex[:6]}", description="bench/scale.py", owner="bench@example.org",
            model=spec, features=FEATURES, label=LABEL, num_classes=NUM_CLASSES, rounds=args.rounds,
            local_epochs=1, batch_size=32, learning_rate=0.05, optimizer="sgd", seed=7,
            round_policy=RoundPolicy(min_domains=args.domains),
        )  # fmt: skip
        task_file = work / "task.toml"
        task_file.write_text(task_toml(task))
        template = load_domain(write_domains(work / "domains", 1)[0]).descriptors()[0]
        names = [f"sim-{i:04d}" for i in range(args.domains)]
        descriptors = [template.model_copy(update={"id": f"{n}.rows", "domain": n}) for n in names]
        base = initial_version(task)
        nbytes = sum(len(t.data) for t in base.tensors)
        print("meshfl bench/scale.py: one governance, a load generator of simulated domains (one run)")
        print(f"  {platform.processor() or platform.machine()}, {os.cpu_count()} cores; broker {bootstrap}")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"  load average at start {load} (a shared machine: figures are noisy)")
        print(
            f"  {args.domains} domains x {nbytes // 4:,} float32 parameters ({nbytes / 1e6:.2f} MB each), "
            f"{args.rounds} rounds\n"
        )
        ensure_topics(settings)
        started = time.perf_counter()
        signers = register_domains(settings, names)
        producer = EventProducer(settings)
        for descriptor in descriptors:
            signed = signers[descriptor.domain].sign(descriptor)
            producer.produce(Topic.CATALOG, signed, key=descriptor.id)
        producer.flush()
        took = time.perf_counter() - started
        print(f"{args.domains} domain keys registered and descriptors published in {took:.1f} s")

        def publish(round_: int, version: ModelVersion) -> float:
            digests = {"tensors": state_digests(version)["tensors"]}  # the same tensors: hashed once
            for name, descriptor in zip(names, descriptors, strict=True):
                update = ModelUpdate(
                    update_id=update_id_for(task.id, round_, name), task_id=task.id, round=round_,
                    base_version=version.version, domain=name,
                    data_products=[DataProductRef(id=descriptor.id, version=descriptor.version)],
                    num_examples=64, metrics={"train_seconds": 0.0}, tensors=version.tensors,
                    created_at=utcnow(),
                )  # fmt: skip
                signed = signers[name].sign(update, digests=digests)
                producer.produce(Topic.UPDATES, signed, key=task.id)
            producer.flush(600)
            return time.time()

        started = time.perf_counter()
        publish(1, base)
        took = time.perf_counter() - started
        round_one = log_ends(bootstrap, topic_name(settings, Topic.UPDATES))
        print(f"round 1's {args.domains} updates on the log in {took:.1f} s; starting governance")
        command = meshfl_command(
            "governance", "run", "--tasks", str(task_file), "--service-id", f"scale-{task.id}",
            "--exit-when-complete", "--bootstrap", bootstrap, "--topic-prefix", prefix,
        )  # fmt: skip
        log = (work / "governance.log").open("wb")
        env = child_env(identity_env(settings, with_private_key=True))
        governance = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = RssSampler(governance.pid)
        sampler.start()
        if args.profile is not None:
            spy = [shutil.which("py-spy") or "py-spy", "record", "--pid", str(governance.pid)]
            subprocess.Popen([*spy, "--rate", "50", "--format", "raw", "--output", str(args.profile)])
        watcher = EventConsumer(settings, [Topic.MODEL_VERSIONS], dead_letters=False, accept=(ModelVersion,))
        deadline = time.monotonic() + args.timeout
        done = 0
        bare = (0.0, 0)
        try:
            while done < args.rounds and time.monotonic() < deadline:
                if governance.poll() not in (None, 0):
                    raise RuntimeError(f"governance exited with {governance.returncode}:\n{_tail(work)}")
                envelope = watcher.poll(1.0)
                if envelope is None:
                    continue
                version = envelope.event
                if (
                    not isinstance(version, ModelVersion)
                    or version.task_id != task.id
                    or version.version == 0
                ):
                    continue
                done = version.round
                print(
                    f"  version {version.version} (round {done}) at {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
                if done == 1:  # round 1's updates, read bare while governance waits for round 2
                    bare = bare_read(bootstrap, topic_name(settings, Topic.UPDATES), round_one)
                if done < args.rounds:
                    publish(done + 1, version)
        finally:
            watcher.close()
        if done < args.rounds:
            raise RuntimeError(f"only {done} of {args.rounds} rounds within {args.timeout} s:\n{_tail(work)}")
        governance.wait(timeout=300)
        sampler.stop.set()
        producer.close()
        return _report(args, settings, task, nbytes, sampler, bare, signers)
    finally:
        if governance is not None and governance.poll() is None:
            governance.terminate()
            governance.wait(30)
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def _tail(work: Path) -> str:
    return "\n".join((work / "governance.log").read_text(errors="replace").splitlines()[-15:])


def _verify_seconds(update: ModelUpdate, public_key) -> float:  # type: ignore[no-untyped-def]
    """Seconds to check ``update``'s signature as governance must: hash its tensors (BLAKE3 in scheme 2),
    verify Ed25519."""
    started = time.perf_counter()
    verify_event(update, public_key)  # hashes the tensors in the scheme the signature names
    return time.perf_counter() - started


def _report(args, settings, task, nbytes, sampler, bare_run, signers) -> int:  # type: ignore[no-untyped-def]
    """Per-round figures from the log's own (broker) timestamps, after the run."""
    updates: dict[int, list[int]] = {}
    floor_seconds = 0.0
    for env in read_all(settings, Topic.UPDATES, timeout=60):
        if isinstance(env.event, ModelUpdate) and env.event.task_id == task.id:
            updates.setdefault(env.event.round, []).append(env.timestamp_ms)
            if env.event.round == 1:
                floor_seconds += _verify_seconds(env.event, signers[env.event.domain].public_key)
    decisions: dict[int, list[int]] = {}
    for env in read_all(settings, Topic.DECISIONS, timeout=60):
        if isinstance(env.event, GovernanceDecision) and env.event.task_id == task.id:
            decisions.setdefault(env.event.round, []).append(env.timestamp_ms)
    versions: dict[int, int] = {}
    for env in read_all(settings, Topic.MODEL_VERSIONS, timeout=60):
        if isinstance(env.event, ModelVersion) and env.event.task_id == task.id and env.event.version:
            versions[env.event.round] = env.timestamp_ms
    count = args.domains
    first, last = min(decisions[1]), max(decisions[1])
    seconds = max(last - first, 1) / 1000
    ingest = count / seconds
    bare_seconds, bare_bytes = bare_run
    bare = count / max(bare_seconds, 1e-6)
    print(f"\nround 1 (all {count} updates on the log before governance started):")
    bare_mb = bare_bytes / max(bare_seconds, 1e-6) / 1e6
    print(f"  governance ingests {ingest:8.1f} updates/s, {ingest * nbytes / 1e6:8.1f} MB/s (decode+checks)")
    print(f"  bare consumer      {bare:8.1f} updates/s, {bare_mb:8.1f} MB/s (same topic, same run)")
    ratio = ingest / bare
    cpu = sampler.cpu(first / 1000, last / 1000)
    print(
        f"  governance CPU in that window {cpu:.1f} s of {seconds:.1f} s "
        f"({cpu / seconds:.0%} of a core; {cpu / count * 1000:.2f} ms CPU an update)"
    )
    running, waiting, blocked = sampler.main_thread(first / 1000, last / 1000)
    print(
        f"  its main thread: {running:.0%} on a CPU, {waiting:.0%} runnable waiting for one (other load), "
        f"{blocked:.0%} blocked"
    )
    print(f"  governance / bare consumer = {ratio:.2f} (aim >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
    floor = count / max(floor_seconds, 1e-6)
    print(
        f"  signature checks alone {floor:8.1f} updates/s: the BLAKE3 of each update's tensors and one\n"
        f"  Ed25519 verify, in this process (what any governance that checks senders spends): "
        f"{floor / bare:.2f}x the bare consumer; governance = {ingest / floor:.2f}x of it"
    )
    print("\nper round: last update appended -> version appended, governance peak RSS in the round")
    peaks = []
    previous_end = 0.0
    for round_ in sorted(versions):
        end = versions[round_] / 1000
        lag = (versions[round_] - max(updates.get(round_, [versions[round_]]))) / 1000
        peak = sampler.peak(previous_end, end)
        previous_end = end
        peaks.append(peak)
        print(f"  round {round_:>3}: {lag:7.3f} s   peak RSS {peak / 2**20:8.1f} MiB")
    if len(peaks) > 2:
        growth = max(peaks[1:]) / max(min(peaks[1:]), 1)
        model_mb = nbytes / 2**20
        print(
            f"\npeak RSS rounds 2..{len(peaks)}: {min(peaks[1:]) / 2**20:.1f}-"
            f"{max(peaks[1:]) / 2**20:.1f} MiB "
            f"(max/min {growth:.2f}; flat if close to 1); model {model_mb:.1f} MiB, "
            f"all of a round's updates {model_mb * count:.1f} MiB"
        )
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
