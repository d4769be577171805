"""Entity alignment by private set intersection, without Kafka: rows only some domains hold are left out,
every party gets the same order, and no message carries an id."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from meshfl.events import Event
from meshfl.tensors import from_wire
from meshfl.vertical.aligner import Aligner
from meshfl.vertical.alignment import aligned_order, eval_batches, split_rows, train_batches
from meshfl.vertical.events import SplitAlignment, SplitLabelsAt, SplitReport
from meshfl.vertical.psi import AlignmentError, new_client, reply

from .split_builders import split_task


def _run(aligners: dict[str, Aligner]) -> list[Event]:
    queue: deque[Event] = deque()
    for aligner in aligners.values():
        queue.extend(aligner.start())
    seen: list[Event] = []
    while queue:
        event = queue.popleft()
        seen.append(event)
        if isinstance(event, SplitAlignment):
            queue.extend(aligners[event.recipient].handle(event))
            queue.extend(aligners[event.recipient].handle(event))  # duplicates are ignored
    return seen


@pytest.mark.parametrize("at", [SplitLabelsAt.GOVERNANCE, SplitLabelsAt.DOMAIN])
def test_three_domains_align_on_the_rows_all_hold(at: SplitLabelsAt) -> None:
    task = split_task(labels_at=at)
    everyone = [f"patient-{i:04d}" for i in range(60)]
    held = {
        "d0": [*everyone[:50], "only-d0"],
        "d1": [*everyone[5:60], "only-d1"],
        "d2": list(reversed(everyone[3:58])),
    }
    labels = torch.arange(len(held["d0"])) % 2
    aligners = {
        name: Aligner(task, name, ids, "s1", labels=labels if name == "d0" else None)
        for name, ids in held.items()
    }
    seen = _run(aligners)
    expected = aligned_order(everyone[5:50], "s1")
    for name, aligner in aligners.items():
        assert aligner.result is not None
        assert [held[name][i] for i in aligner.result.local_index] == expected
    digests = {a.result.digest for a in aligners.values() if a.result is not None}
    assert len(digests) == 1
    reports = [e for e in seen if isinstance(e, SplitReport)]
    assert sorted(r.party for r in reports) == ["d0", "d1", "d2"]
    holder = next(r for r in reports if r.party == "d0")
    if at == SplitLabelsAt.GOVERNANCE:
        shared = from_wire(holder.labels)["labels"]
        assert shared.tolist() == [int(labels[held["d0"].index(e)]) for e in expected]
    else:
        assert holder.labels == []
    wire = b"".join(e.payload + e.setup for e in seen if isinstance(e, SplitAlignment))
    for entity in [*everyone, "only-d0", "only-d1"]:
        assert entity.encode() not in wire


def test_a_forged_psi_message_is_an_alignment_error() -> None:
    client = new_client(["a", "b"])
    with pytest.raises(AlignmentError):
        client.intersection(b"\x01garbage", b"\x02garbage")
    with pytest.raises(AlignmentError):
        reply(["a"], client.request, max_client_elements=1)


def test_batches_cover_the_training_rows_once_per_epoch() -> None:
    train, test = split_rows(101, 0.2)
    assert (train, test) == (81, 20)
    batches = train_batches(train, 16, seed=3, epoch=1)
    assert sorted(int(p) for b in batches for p in b) == list(range(81))
    assert min(len(b) for b in batches) >= 2
    assert [b.tolist() for b in batches] == [b.tolist() for b in train_batches(train, 16, seed=3, epoch=1)]
    assert [b.tolist() for b in batches] != [b.tolist() for b in train_batches(train, 16, seed=3, epoch=2)]
    assert [int(p) for b in eval_batches(train, test, 8) for p in b] == list(range(81, 101))
