"""A large model through the real broker: governance's peak memory against the model, rounds against the bus.

    .venv/bin/python bench/large_model.py                      # 250M float32 parameters (1 GB), 4 domains
    .venv/bin/python bench/large_model.py --params 25000000    # a 100 MB trial

One ``meshfl governance run`` (its own process, as users run it) federates a synthetic MLP across
``--domains`` simulated domains. The domains do no training (the round is about bytes): a load generator
reads each new global version from the bus, as agents do, and sends it back as each domain's signed,
valid update, chunked like any payload above the message limit. Printed: governance's peak RSS (VmHWM)
as a multiple of the model's float32 bytes, also above its RSS at rest before round 1 (torch and the
libraries), and seconds per round beside the broker's raw throughput measured in the same run: bare
confluent-kafka moving the same bytes (``domains`` x model up, read by one consumer while they are
produced, then one model down), acks=all, idempotent, no compression, ~1 MB messages.

Governance's peak is its libraries (torch: ~0.65x) plus the round's float64 sums (2x, the accumulator
issue 12 asks for): the update being decided and the parent version live in file-backed mappings
(``meshfl.spill``, sets of at least ``spill_bytes``), read in windows whose pages leave the process
after each pass, so neither is resident (they sit in the kernel's page cache, reclaimable, not in
governance's RSS).

Memory: needs about 11x the model free (governance ~3x at its peak, the generator ~4x, the page cache
of the spilled files and the broker's aside); the bench refuses to start with less available
(``--force`` to try anyway). Run it alone, with ``nice``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _round.procs import child_env, meshfl_command  # noqa: E402
from _round.workload import FEATURES, LABEL, NUM_CLASSES, task_toml, write_domains  # noqa: E402
from scale import model_for, register_domains  # noqa: E402

from meshfl.broker import LocalBroker, free_port_block  # noqa: E402
from meshfl.bus import EventConsumer, EventProducer, ensure_topics  # noqa: E402
from meshfl.domain.agent import update_id_for  # noqa: E402
from meshfl.domain.config import load_domain  # noqa: E402
from meshfl.events import DataProductRef, ModelUpdate, ModelVersion, RoundPolicy, TrainingTask, utcnow  # noqa: E402
from meshfl.identity.canonical import state_digests  # noqa: E402
from meshfl.identity.local import identity_env, with_governance_keys  # noqa: E402
from meshfl.logs import configure_logging  # noqa: E402
from meshfl.modelspec import num_parameters  # noqa: E402
from meshfl.settings import load_settings  # noqa: E402
from meshfl.topics import Topic  # noqa: E402

MESSAGE = 900_000
"""Bytes per bare message: meshfl's chunk size (``max_message_bytes``)."""


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Memory(threading.Thread):
    """Samples a process's VmRSS and VmHWM (the kernel's own peak) every 0.05 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.path = Path(f"/proc/{pid}/status")
        self.samples: list[tuple[float, int]] = []
        self.hwm = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                fields = dict(
                    line.split(":", 1) for line in self.path.read_text().splitlines() if line.startswith("Vm")
                )
            except OSError:
                return
            if "VmRSS" not in fields:  # the process is exiting
                return
            self.samples.append((time.time(), int(fields["VmRSS"].split()[0]) * 1024))
            self.hwm = max(self.hwm, int(fields["VmHWM"].split()[0]) * 1024)

    def peak(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)

    def now(self) -> int:
        return self.samples[-1][1] if self.samples else 0


def bare_round(bootstrap: str, domains: int, nbytes: int) -> float:
    """Seconds for bare confluent-kafka to move one round's bytes: ``domains`` x ``nbytes`` produced
    while one consumer reads them, then ``nbytes`` back, read once."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [f"bench-large-bare-{uuid.uuid4().hex[:8]}-{side}" for side in ("up", "down")]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(30)
    payload = os.urandom(MESSAGE)
    try:
        started = time.perf_counter()
        for topic, total in ((topics[0], domains * nbytes), (topics[1], nbytes)):
            count = -(-total // MESSAGE)
            reader = threading.Thread(target=_read, args=(bootstrap, topic, count))
            reader.start()
            producer = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "acks": "all",
                    "enable.idempotence": True,
                    "compression.type": "none",
                    "linger.ms": 5,
                }
            )
            for _ in range(count):
                while True:
                    try:
                        producer.produce(topic, payload)
                        break
                    except BufferError:
                        producer.poll(0.05)
                producer.poll(0)
            producer.flush(600)
            reader.join()
        return time.perf_counter() - started
    finally:
        for future in admin.delete_topics(topics).values():
            with contextlib.suppress(Exception):  # cleanup of a bench topic: the figure is taken
                future.result(30)


def _read(bootstrap: str, topic: str, count: int) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-large-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = 0
    while got < count:
        message = consumer.poll(1.0)
        if message is not None and not message.error():
            got += 1
    consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=250_000_000)
    parser.add_argument("--domains", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--force", action="store_true", help="run even with less memory available")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the broker and governance too
    configure_logging("console", "WARNING")
    spec = model_for(args.params)
    nbytes = 4 * num_parameters(spec)
    need = 11 * nbytes + 2 * 2**30
    if mem_available() < need and not args.force:
        print(
            f"bench/large_model.py: {mem_available() / 2**30:.1f} GiB available, about {need / 2**30:.1f} "
            f"GiB needed for a {nbytes / 2**30:.2f} GiB model; not started (--force to try)"
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="meshfl-bench-large-"))
    broker = None
    governance = None
    try:
        bootstrap = os.environ.get("MESHFL_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = LocalBroker(data_dir=work / "kafka", port=free_port_block(2))
            bootstrap = broker.start(timeout=120)
        prefix = f"bench-large-{uuid.uuid4().hex[:8]}."
        settings = load_settings(bootstrap_servers=bootstrap, topic_prefix=prefix)
        settings = with_governance_keys(settings, work / "keys")
        task = TrainingTask(
            id=f"large-{uuid.uuid4().hex[:6]}", description="bench/large_model.py", owner="bench@example.org",
            model=spec, features=FEATURES, label=LABEL, num_classes=NUM_CLASSES, rounds=args.rounds,
            local_epochs=1, batch_size=32, learning_rate=0.05, optimizer="sgd", seed=7,
            round_policy=RoundPolicy(min_domains=args.domains),
        )  # fmt: skip
        task_file = work / "task.toml"
        task_file.write_text(task_toml(task))
        print("meshfl bench/large_model.py: one governance, a large model, simulated domains (one run)")
        print(f"  {platform.processor() or platform.machine()}, {os.cpu_count()} cores; broker {bootstrap}")
        print(f"  load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())} (shared machine)")
        print(
            f"  {num_parameters(spec):,} float32 parameters ({nbytes / 2**30:.2f} GiB), {args.domains} "
            f"domains, {args.rounds} rounds, {mem_available() / 2**30:.1f} GiB available\n"
        )
        bare = bare_round(bootstrap, args.domains, nbytes)
        print(
            f"bare confluent-kafka, one round's bytes "
            f"({(args.domains + 1) * nbytes / 2**30:.1f} GiB): {bare:.1f} s"
        )

        ensure_topics(settings)
        template = load_domain(write_domains(work / "domains", 1)[0]).descriptors()[0]
        names = [f"big-{i}" for i in range(args.domains)]
        descriptors = [template.model_copy(update={"id": f"{n}.rows", "domain": n}) for n in names]
        signers = register_domains(settings, names)
        producer = EventProducer(settings)
        for descriptor in descriptors:
            producer.produce(Topic.CATALOG, signers[descriptor.domain].sign(descriptor), key=descriptor.id)
        producer.flush()

        command = meshfl_command(
            "governance", "run", "--tasks", str(task_file), "--service-id", f"large-{task.id}",
            "--exit-when-complete", "--bootstrap", bootstrap, "--topic-prefix", prefix,
        )  # fmt: skip
        log = (work / "governance.log").open("wb")
        env = child_env(identity_env(settings, with_private_key=True))
        governance = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        memory = Memory(governance.pid)
        memory.start()
        watcher = EventConsumer(settings, [Topic.MODEL_VERSIONS], dead_letters=False, accept=(ModelVersion,))
        deadline = time.monotonic() + args.timeout
        rounds: list[tuple[float, float, int]] = []  # (seconds, publish seconds, peak RSS) per round
        rest = startup = 0
        round_started = publish_seconds = 0.0
        try:
            while len(rounds) < args.rounds and time.monotonic() < deadline:
                if governance.poll() not in (None, 0):
                    raise RuntimeError(f"governance exited with {governance.returncode}:\n{_tail(work)}")
                envelope = watcher.poll(1.0)
                if envelope is None or not isinstance(envelope.event, ModelVersion):
                    continue
                version = envelope.event
                if version.task_id != task.id:
                    continue
                now = time.time()
                if version.version == 0:
                    time.sleep(2.0)  # governance settles after publishing version 0: its RSS at rest
                    rest = memory.now()
                    startup = memory.hwm  # building and publishing version 0
                    now = time.time()
                else:
                    rounds.append((now - round_started, publish_seconds, memory.peak(round_started, now)))
                    print(f"  version {version.version}: {rounds[-1][0]:.1f} s", flush=True)
                if version.round < args.rounds:
                    round_started = time.time()
                    _publish(producer, task, version, names, descriptors, signers)
                    publish_seconds = time.time() - round_started
                del version, envelope
        finally:
            watcher.close()
        if len(rounds) < args.rounds:
            raise RuntimeError(f"{len(rounds)} of {args.rounds} rounds in {args.timeout} s:\n{_tail(work)}")
        governance.wait(timeout=600)
        memory.stop.set()
        producer.close()
        _report(args, nbytes, bare, rest, startup, memory, rounds)
        return 0
    finally:
        if governance is not None and governance.poll() is None:
            governance.terminate()
            governance.wait(60)
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def _publish(producer, task, version, names, descriptors, signers) -> None:  # type: ignore[no-untyped-def]
    """Every domain sends the version's own tensors back (no training: valid, accepted, about bytes)."""
    digests = {"tensors": state_digests(version)["tensors"]}  # every update sends these tensors: hash once
    for name, descriptor in zip(names, descriptors, strict=True):
        update = ModelUpdate(
            update_id=update_id_for(task.id, version.round + 1, name), task_id=task.id,
            round=version.round + 1, base_version=version.version, domain=name,
            data_products=[DataProductRef(id=descriptor.id, version=descriptor.version)],
            num_examples=60 + names.index(name), metrics={"train_seconds": 0.0}, tensors=version.tensors,
            created_at=utcnow(),
        )  # fmt: skip
        producer.produce(Topic.UPDATES, signers[name].sign(update, digests=digests), key=task.id)
    producer.flush(1800)


def _tail(work: Path) -> str:
    return "\n".join((work / "governance.log").read_text(errors="replace").splitlines()[-15:])


def _report(args, nbytes, bare, rest, startup, memory, rounds) -> None:  # type: ignore[no-untyped-def]
    gib = 2**30
    print(
        f"\nmodel: {nbytes / gib:.2f} GiB float32; governance RSS at rest (libraries + version 0) "
        f"{rest / gib:.2f} GiB = {rest / nbytes:.2f}x; start-up peak (building and publishing version 0) "
        f"{startup / gib:.2f} GiB = {startup / nbytes:.2f}x"
    )
    for number, (seconds, publish, peak) in enumerate(rounds, start=1):
        print(
            f"  round {number}: {seconds:7.1f} s ({publish:.1f} s of it the generator publishing), "
            f"{seconds / bare:5.2f}x the bare round; governance peak RSS {peak / gib:.2f} GiB = "
            f"{peak / nbytes:.2f}x the model ({(peak - rest) / nbytes:.2f}x above rest)"
        )
    ratio = memory.hwm / nbytes
    above = (memory.hwm - rest) / nbytes
    print(
        f"governance VmHWM {memory.hwm / gib:.2f} GiB = {ratio:.2f}x the model, {above:.2f}x above rest "
        f"(aim <= 3x: {'met' if ratio <= 3 else 'NOT met'}; above rest {'met' if above <= 3 else 'NOT met'})"
    )
    print(
        "  (peak = libraries at rest + the float64 sums, 2x; the update in flight and the parent are "
        "file-backed, meshfl.spill, and read in windows)"
    )
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
