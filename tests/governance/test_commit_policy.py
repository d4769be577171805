"""When governance commits a partition's open transaction, without Kafka (``governance.transactions``).

The guarantees the loop builds on: a version is committed at once with the decisions that formed it,
a round that gathers keeps its decisions in one transaction (bounded in time), an idle transaction
with nothing gathering commits after a short linger, and the batch bounds hold.
"""

from __future__ import annotations

from typing import cast

from governance.rounds import PendingUpdate, TaskState, initial_version
from governance.transactions import LINGER_S, MAX_BYTES, MAX_OPEN_S, MAX_UPDATES, OpenTransaction
from meshfl.bus import EventProducer
from meshfl.events import ModelSpec, TrainingTask
from meshfl.tensors import from_wire

T0 = 1000.0


def _state() -> TaskState:
    task = TrainingTask.model_validate(
        {
            "id": "t",
            "description": "",
            "owner": "o@example.com",
            "features": ["a", "b"],
            "label": "y",
            "num_classes": 2,
            "rounds": 10,
            "model": ModelSpec(architecture="mlp", input_dim=2, hidden=[2], output_dim=2),
        }
    )
    latest = initial_version(task)
    return TaskState(task=task, latest=latest, latest_weights=from_wire(latest.tensors), server_state={})


def _open(state: TaskState) -> OpenTransaction:
    txn = OpenTransaction(cast(EventProducer, None), [state], [state.latest.version])
    txn.began = txn.last = T0
    return txn


def _accept(state: TaskState) -> None:
    pending = PendingUpdate("u", "retail", 10, state.latest.version, None, partition=0, first_offset=5)
    state.pending.append(pending)


def test_an_idle_transaction_with_no_round_gathering_commits_after_the_linger() -> None:
    txn = _open(_state())  # e.g. only rejections so far
    assert not txn.due(T0 + LINGER_S / 2)
    assert txn.due(T0 + LINGER_S)
    txn.last = T0 + 1.5
    assert not txn.due(T0 + 1.5 + LINGER_S / 2)
    assert txn.due(T0 + MAX_OPEN_S)  # updates coming all the time: still bounded


def test_a_gathering_round_keeps_its_decisions_in_one_transaction_up_to_max_open() -> None:
    state = _state()
    txn = _open(state)
    _accept(state)
    assert not txn.due(T0 + 10 * LINGER_S)  # no commit between the round's updates
    assert not txn.due(T0 + MAX_OPEN_S - 0.01)
    assert txn.due(T0 + MAX_OPEN_S)


def test_a_version_is_committed_at_once_with_the_decisions_that_formed_it() -> None:
    state = _state()
    txn = _open(state)
    _accept(state)
    assert not txn.due(T0)
    state.latest = state.latest.model_copy(update={"version": state.latest.version + 1})
    assert txn.due(T0)


def test_the_batch_bounds_hold() -> None:
    state = _state()
    _accept(state)
    by_count = _open(state)
    by_count.decided = MAX_UPDATES - 1
    assert not by_count.due(T0)
    by_count.decided = MAX_UPDATES
    assert by_count.due(T0)
    by_bytes = _open(state)
    by_bytes.moved = MAX_BYTES
    assert by_bytes.due(T0)
