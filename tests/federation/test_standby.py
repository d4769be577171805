"""One active governance per task, with Kafka's own mechanisms: group partitions and transactional fencing.

* Two instances of one service started at once: one owns the task's partition and publishes, the
  other stands by; the active one SIGKILLed, the standby takes over within the session timeout, and
  nothing is published or decided twice.
* Instances share the tasks by partition: with the updates topic in six partitions, the digits and
  breast-cancer tasks land on partitions 4 and 0, which the group's (range) assignor gives to two
  different instances; each runs its task and only its task.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from governance.ownership import task_partition
from meshfl.bus import ensure_topics, read_all
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.federation.conftest import Processes, wait_for
from tests.federation.faults_helpers import (
    accepted,
    assert_exactly_once,
    log_events,
    small_tasks,
    task_args,
    versions,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _held(procs: Processes, name: str) -> list[int] | None:
    """The partitions an instance holds now by its log: its last "owning" line, unless a revocation
    came after it (None: no settled assignment yet)."""
    held = None
    for line in log_events(procs, name):
        if line.get("event") == "owning":
            held = list(line.get("partitions", []))
        elif line.get("event") == "partitions revoked":
            held = None
    return held


def _owner(procs: Processes, names: list[str], partition: int) -> str | None:
    """The one instance holding ``partition`` once every instance has a settled assignment."""
    held = {name: _held(procs, name) for name in names}
    if any(h is None for h in held.values()):
        return None
    owners = [name for name, h in held.items() if h is not None and partition in h]
    return owners[0] if len(owners) == 1 else None


def test_standby_takes_over_when_the_active_instance_dies(
    processes: Processes, mesh_root: Path, settings: MeshflSettings
) -> None:
    task = small_tasks(mesh_root)[1]  # breast-cancer: three small hospitals
    ensure_topics(settings)
    args = ["governance", "run", *task_args([task], processes.log_dir)]
    names = ["gov-a", "gov-b"]
    for name in names:
        processes.start(name, *args, "--instance-id", name)
    wait_for(lambda: _owner(processes, names, 0) is not None, timeout=300, what="an owner of partition 0")
    active = _owner(processes, names, 0)
    standby = next(n for n in names if n != active)
    wait_for(lambda: versions(settings, task.id), timeout=300, what="version 0")
    processes.start("hospital-central", "domain", "run", "--domain", str(mesh_root / "hospital-central"))
    wait_for(lambda: accepted(settings, task.id), timeout=300, what="the first accepted update")

    processes.kill(active)
    killed = time.monotonic()
    wait_for(lambda: _owner(processes, [standby], 0) == standby, timeout=300, what="the standby to take over")
    print(f"standby took over {time.monotonic() - killed:.1f} s after the kill")

    processes.start("hospital-north", "domain", "run", "--domain", str(mesh_root / "hospital-north"))
    wait_for(lambda: len(versions(settings, task.id)) >= task.rounds + 1, timeout=400, what="all versions")
    processes.stop_all()
    assert_exactly_once(settings, [task])
    published = [
        line for line in log_events(processes, standby) if line.get("event") == "model version published"
    ]
    assert published, "the standby published the versions after the takeover"


def test_instances_share_tasks_by_partition(
    processes: Processes, mesh_root: Path, settings: MeshflSettings
) -> None:
    settings = settings.model_copy(update={"partitions": 6})
    processes.settings = settings
    tasks = small_tasks(mesh_root, rounds=1)
    parts = {task.id: task_partition(task.id, 6) for task in tasks}
    assert sorted(parts.values()) == [0, 4], parts  # range assignment: [0, 1, 2] and [3, 4, 5]
    ensure_topics(settings)
    args = ["governance", "run", *task_args(tasks, processes.log_dir)]
    names = ["gov-a", "gov-b"]
    for name in names:
        processes.start(name, *args, "--instance-id", name)
    wait_for(
        lambda: (
            all(_owner(processes, names, p) is not None for p in parts.values())
            and len({_owner(processes, names, p) for p in parts.values()}) == 2
        ),
        timeout=300,
        what="the two task partitions owned by two different instances",
    )
    for domain in ("digits-retail", "digits-finance", "hospital-central", "hospital-north"):
        processes.start(domain, "domain", "run", "--domain", str(mesh_root / domain))
    for task in tasks:
        wait_for(
            lambda task=task: len(versions(settings, task.id)) >= task.rounds + 1,
            timeout=400,
            what=f"{task.id}: all versions",
        )
    # who holds each partition, read while they run (a stopping instance logs its partitions released)
    owners = {task.id: _owner(processes, names, parts[task.id]) for task in tasks}
    processes.stop_all()
    assert_exactly_once(settings, tasks)
    # librdkafka's partitioner put every update where ownership expects it.
    for env in read_all(settings, Topic.UPDATES):
        task_id = getattr(env.event, "task_id", None)
        if task_id is not None:
            assert env.partition == parts[task_id]
    for task in tasks:
        owner = owners[task.id]
        assert owner is not None, owners
        publishers = {
            name
            for name in names
            for line in log_events(processes, name)
            if line.get("event") == "model version published" and line.get("task") == task.id
        }
        assert publishers == {owner}
