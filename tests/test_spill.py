"""Large payloads in file-backed memory (``meshfl.spill``): same bytes, same decisions, pages released,
no file left behind.

A few-MB payload with a lowered threshold and window stands for the 1 GB model of
``bench/large_model.py``: what is checked is that a spilled set is not resident while it is assembled,
that every pass over it (digest, finite check, fold) costs a window, not the payload, that the results
are the in-memory path's bits, and that its file goes with its set (decided, rejected, expired,
dropped) and with a killed process.
"""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import blake3
import pytest
import torch

from governance.policies import FiniteValues, PolicyContext
from governance.policies.base import Candidate
from governance.rounds import aggregate_version, initial_version
from governance.strategies import ClientUpdate
from governance.strategies.accumulator import WeightedSumAccumulator
from meshfl import spill
from meshfl.bus import ChunkSetError, Reassembler
from meshfl.events import Chunk, ModelUpdate, StrategySpec
from meshfl.tensors import from_wire, layout_sha256, tensors_sha256, to_wire
from tests.audit.audit_builders import make_task, perturbed

MIB = 1 << 20
PAYLOAD = 24 * MIB
CHUNK = 900_000
TOPIC = "updates"


@pytest.fixture(autouse=True)
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spill, "WINDOW_BYTES", MIB)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def _resident() -> int:
    return _status("RssAnon") + _status("RssFile")


def _mapped(directory: Path) -> list[str]:
    """This process's mappings of files in ``directory`` (an unnamed file shows as ``#inode (deleted)``)."""
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if str(directory) in line]


def _chunks(data: bytes, message_id: str, *, digest: str | None = None) -> list[Chunk]:
    pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    named = digest or blake3.blake3(data).hexdigest()  # what writers name a set by
    return [
        Chunk(message_id=message_id, index=i, count=len(pieces), total_size=len(data), blake3=named, data=p)
        for i, p in enumerate(pieces)
    ]


def _reassembler(tmp_path: Path, **kwargs: int) -> Reassembler:
    return Reassembler(
        max_buffered_bytes=4 * PAYLOAD, spill_bytes=MIB, spill_dir=tmp_path, timeout_ms=1000, **kwargs
    )


def _feed(reassembler: Reassembler, chunks: list[Chunk], *, start: int = 0, at_ms: int = 0):  # type: ignore[no-untyped-def]
    done = None
    for offset, chunk in enumerate(chunks, start=start):
        done = reassembler.add(chunk, topic=TOPIC, partition=0, offset=offset, timestamp_ms=at_ms)
    return done


def test_a_spilled_set_is_assembled_and_read_without_becoming_resident(tmp_path: Path) -> None:
    data = torch.randn(PAYLOAD // 4, generator=torch.Generator().manual_seed(1)).numpy().tobytes()
    chunks = _chunks(data, "big")
    reassembler = _reassembler(tmp_path)
    before = _resident()
    done = _feed(reassembler, chunks)
    assert done is not None and spill.is_spilled(done.payload)
    assert _resident() - before < 4 * MIB  # written through the file: the payload is not resident
    assert os.listdir(tmp_path) == [] and len(_mapped(tmp_path)) == 1  # unnamed: nothing to leak
    digest = hashlib.sha256()
    for window in spill.windows(done.payload):
        digest.update(window)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert _resident() - before < 4 * MIB  # each window's pages left after it was hashed
    assert bytes(done.payload) == data
    assert _resident() - before > PAYLOAD // 2  # the measure sees a read that does not release
    del done, window
    gc.collect()
    assert _mapped(tmp_path) == []  # decided and dropped: the file is gone with its last view


def test_small_sets_keep_anonymous_memory(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK)
    reassembler = Reassembler(max_buffered_bytes=PAYLOAD, spill_bytes=PAYLOAD, spill_dir=tmp_path)
    done = _feed(reassembler, _chunks(data, "small"))
    assert done is not None and bytes(done.payload) == data
    assert not spill.is_spilled(done.payload) and _mapped(tmp_path) == []
    assert [len(w) for w in spill.windows(done.payload)] == [len(data)]  # one piece: today's path


def test_a_rejected_expired_or_dropped_set_takes_its_file_along(tmp_path: Path) -> None:
    data = os.urandom(8 * MIB)
    reassembler = _reassembler(tmp_path)
    # rejected: the digest of the whole does not match
    with pytest.raises(ChunkSetError, match="does not match"):
        _feed(reassembler, _chunks(data, "corrupt", digest="0" * 64))
    assert _mapped(tmp_path) == []
    # expired: half of it, then the log's clock moves past the timeout
    _feed(reassembler, _chunks(data, "partial")[:4])
    assert len(_mapped(tmp_path)) == 1
    (expired,) = reassembler.expire(now_ms=5000)
    assert expired.reason == "chunk-incomplete" and _mapped(tmp_path) == []
    # dropped: a rebalance
    _feed(reassembler, _chunks(data, "revoked")[:3], start=100, at_ms=6000)
    reassembler.drop()
    assert _mapped(tmp_path) == [] and reassembler.held_bytes == 0 and reassembler.reserved_bytes == 0
    assert os.listdir(tmp_path) == []


def test_a_killed_process_leaves_no_file(tmp_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from meshfl.spill import SpillBuffer
        buffer = SpillBuffer({8 * MIB}, Path({str(tmp_path)!r}))
        buffer.write(0, b"x" * {4 * MIB})
        print("written", flush=True)
        sys.stdin.read()
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "written"
        assert os.listdir(tmp_path) == []
        os.kill(process.pid, signal.SIGKILL)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert os.listdir(tmp_path) == []  # the kernel frees an unnamed file with its last holder


def _spilled(weights: dict[str, torch.Tensor], directory: Path) -> dict[str, torch.Tensor]:
    return from_wire(spill.spill_tensors(to_wire(weights), directory), copy=False)


def test_passes_over_spilled_tensors_give_the_in_memory_bits(tmp_path: Path) -> None:
    task = make_task(strategy=StrategySpec(name="fedavgm", params={"server_momentum": 0.9}))
    parent = initial_version(task)
    weights = from_wire(parent.tensors)
    updates = [perturbed(weights, seed=seed, scale=0.3) for seed in range(3)]
    in_memory = [ClientUpdate(f"u{i}", f"d{i}", w, num_examples=11 + i) for i, w in enumerate(updates)]
    spilled = [
        ClientUpdate(f"u{i}", f"d{i}", _spilled(w, tmp_path), num_examples=11 + i)
        for i, w in enumerate(updates)
    ]
    assert all(spill.is_spilled(t) for u in spilled for t in u.weights.values() if t.numel())
    spilled_parent = parent.model_copy(update={"tensors": spill.spill_tensors(parent.tensors, tmp_path)})
    for a, b in zip(in_memory, spilled, strict=True):
        assert layout_sha256(to_wire(a.weights)) == tensors_sha256(
            [t.model_copy(update={"data": memoryview(t.data)}) for t in to_wire(b.weights, copy=False)]
        )
    want = aggregate_version(task, parent, weights, {}, in_memory, created_at=parent.created_at)
    got = aggregate_version(
        task,
        spilled_parent,
        from_wire(spilled_parent.tensors, copy=False),
        {},
        spilled,
        created_at=parent.created_at,
    )
    assert got.sha256 == want.sha256 == tensors_sha256(got.tensors)
    assert tensors_sha256(got.server_state) == tensors_sha256(want.server_state)


def test_the_finite_check_of_a_spilled_update_reads_windows_and_says_the_same(tmp_path: Path) -> None:
    size = 4 * MIB // 4  # four windows
    values = torch.zeros(size)
    values[7] = float("nan")
    values[3 * size // 4] = float("inf")
    values[3 * size // 4 + 1] = float("nan")
    task = make_task()
    ctx = PolicyContext(task=task, open_round=1, latest_version=0, global_weights={}, expected={}, catalog={})
    update = ModelUpdate(
        update_id="u", task_id=task.id, round=1, base_version=0, domain="d", num_examples=1, tensors=[]
    )
    verdicts = []
    for weights in ({"w": values}, _spilled({"w": values}, tmp_path)):
        verdicts.append(FiniteValues().evaluate(Candidate(update=update, weights=weights), ctx))
    assert not verdicts[0].accepted and verdicts[0] == verdicts[1]
    assert "2 NaN and 1 Inf" in verdicts[1].reason


def test_folding_a_spilled_update_costs_a_window_not_the_update(tmp_path: Path) -> None:
    count = PAYLOAD // 4
    update = torch.randn(count, generator=torch.Generator().manual_seed(3))
    spilled = _spilled({"w": update}, tmp_path)
    assert spill.is_spilled(spilled["w"])
    sums = {}
    for weights in ({"w": update}, spilled):
        accumulator = WeightedSumAccumulator({"w": update})
        accumulator.add(ClientUpdate("a", "d", {"w": torch.ones(count)}, num_examples=2))  # sums touched
        file_before = _status("RssFile")
        accumulator.add(ClientUpdate("u", "d", weights, num_examples=5))
        if weights is spilled:
            assert _status("RssFile") - file_before < 4 * MIB
        sums[weights is spilled] = accumulator.result()["w"]
    assert torch.equal(sums[True].view(torch.int32), sums[False].view(torch.int32))


def test_a_file_that_cannot_be_made_or_written_costs_the_spilling_not_the_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(6 * MIB)
    missing = Reassembler(max_buffered_bytes=PAYLOAD, spill_bytes=MIB, spill_dir=tmp_path / "missing")
    done = _feed(missing, _chunks(data, "no-dir"))
    assert done is not None and bytes(done.payload) == data and not spill.is_spilled(done.payload)
    calls = []
    real = spill.SpillBuffer.write

    def disk_full_at_the_third(self, offset, data):  # type: ignore[no-untyped-def]
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(self, offset, data)

    monkeypatch.setattr(spill.SpillBuffer, "write", disk_full_at_the_third)
    done = _feed(_reassembler(tmp_path), _chunks(data, "disk-full"))
    assert done is not None and bytes(done.payload) == data and not spill.is_spilled(done.payload)
    assert len(calls) == 3 and _mapped(tmp_path) == []  # moved to memory, the file closed


def test_only_so_many_sets_are_filled_in_files_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spill, "MAX_OPEN_FILES", 1)
    data = os.urandom(4 * MIB)
    reassembler = _reassembler(tmp_path)
    _feed(reassembler, _chunks(data, "first")[:2])  # open: holds the one file
    second = _feed(reassembler, _chunks(data, "second"), start=10)
    assert second is not None and bytes(second.payload) == data and not spill.is_spilled(second.payload)
    third = _feed(reassembler, _chunks(data, "first")[2:], start=2)  # completes: its file is sealed
    assert third is not None and spill.is_spilled(third.payload)
    fourth = _feed(reassembler, _chunks(data, "fourth"), start=20)
    assert fourth is not None and spill.is_spilled(fourth.payload)  # a file again once one is sealed
