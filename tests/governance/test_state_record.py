"""The governance-state record and the id window, without Kafka: what is kept, what is forgotten, and
that a record folds back into the state it was built from."""

from __future__ import annotations

from governance.id_window import forget_at, prune_decided, prune_offsets
from governance.log_state import LogState
from governance.rounds import TaskState, initial_version
from governance.state_record import fold_record, log_positions, state_record
from meshfl.events import DecisionOutcome, FederationMode, ModelSpec, RoundPolicy, TrainingTask
from meshfl.settings import MeshflSettings
from meshfl.tensors import from_wire

ACCEPTED, REJECTED = DecisionOutcome.ACCEPTED, DecisionOutcome.REJECTED


def _task(**fields: object) -> TrainingTask:
    values: dict[str, object] = {
        "id": "t",
        "description": "",
        "owner": "o@example.com",
        "features": ["a", "b"],
        "label": "y",
        "num_classes": 2,
        "rounds": 10,
        "model": ModelSpec(architecture="mlp", input_dim=2, hidden=[2], output_dim=2),
        **fields,
    }
    return TrainingTask.model_validate(values)


def test_a_sync_id_is_kept_while_its_round_is_open_and_an_async_id_while_its_base_is_in_the_window() -> None:
    sync = _task()
    assert forget_at(sync, round_=4, base_version=3) == 4  # kept while the latest version is below 4
    assert forget_at(sync, round_=10**9, base_version=0) == sync.rounds  # a far-future claim: until the end
    async_task = _task(mode=FederationMode.ASYNC, round_policy=RoundPolicy(max_staleness=2))
    assert forget_at(async_task, round_=1, base_version=5) == 8  # staleness 3 > 2 from version 8 on
    assert forget_at(async_task, round_=1, base_version=None) == async_task.rounds
    decided = {"a": ("t", 4), "b": ("t", 5), "c": ("other", 9)}
    assert prune_decided(decided, {"t": 4}) == {"b": ("t", 5)}  # and "other" is not run here


def test_decisions_below_the_committed_offset_and_their_settled_ids_are_dropped() -> None:
    decided_at = {(0, 3): ACCEPTED, (0, 7): ACCEPTED, (0, 8): REJECTED, (1, 2): ACCEPTED}
    ids = {(0, 3): "old", (0, 7): "held", (0, 8): "bad", (1, 2): "elsewhere"}
    kept, kept_ids, settled = prune_offsets(decided_at, ids, {"old", "held", "elsewhere"}, {0: 7})
    assert kept == {(0, 7): ACCEPTED, (0, 8): REJECTED}  # partition 1 is not read here
    assert kept_ids == {(0, 7): "held", (0, 8): "bad"}
    assert settled == {"held"}


def test_a_record_folds_back_into_the_state_it_summarises() -> None:
    task = _task()
    latest = initial_version(task)
    live = TaskState(task=task, latest=latest, latest_weights=from_wire(latest.tensors), server_state={})
    state = LogState()
    state.decided_ids = {"u1": ("t", 1), "u2": ("t", 1)}
    state.decided_at = {(0, 5): ACCEPTED, (0, 6): REJECTED, (0, 2): ACCEPTED}
    state.decided_update = {(0, 5): "u1", (0, 6): "u2", (0, 2): "u0"}
    state.aggregated = {"u0"}
    state.version_from = {("t", 0): {("model-versions", 0): 11}}
    settings = MeshflSettings(topic_prefix="p.")
    ends = log_positions(settings, {("decisions", 0): 40}, {("p.decisions", 0): 52, ("p.other", 0): 99})
    assert ends == {("decisions", 0): 52}
    record = state_record(
        updates_topic="p.model-updates",
        partition=0,
        committed_offset=5,
        log_state=state,
        tasks=[live],
        log_ends=ends,
    )
    assert [(d.offset, d.update_id, d.accepted, d.settled) for d in record.open_decisions] == [
        (5, "u1", True, False),
        (6, "u2", False, False),
    ]
    back = LogState()
    fold_record(record, back)
    assert back.decided_ids == state.decided_ids
    assert back.decided_at == {(0, 5): ACCEPTED, (0, 6): REJECTED}
    assert back.version_from == state.version_from
    assert back.log_ends == ends
