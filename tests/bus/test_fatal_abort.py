"""An abort that meets a fatal transactional error renews the client instead of failing forever.

librdkafka 2.x, on the real broker: a transaction begun right after a commit queues a record, its
partition registration is refused while the coordinator still writes the commit's markers
(CONCURRENT_TRANSACTIONS), and an abort then sent is refused as INVALID_TXN_STATE once they are
written (the coordinator has no transaction open), which librdkafka makes fatal: every later call
fails the same way. Governance retried that abort until its recovery deadline (10 minutes) when it
began transactions right after committing. The producer must renew its client (same transactional
id: ``init_transactions`` fences the old one and aborts what it left open) and go on.
"""

from __future__ import annotations

import time
import uuid

import pytest
from bus_helpers import decision
from confluent_kafka import KafkaError, KafkaException, Producer

from meshfl.bus import EventProducer, _producer, read_all
from meshfl.codec import EventCodec
from meshfl.errors import BusError, FencedError
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic

pytestmark = pytest.mark.kafka

_TRIES = 300
"""Each try meets the race with a chance of about 1 in 5 here (idle or loaded): a few seconds in all."""


def test_an_abort_that_meets_a_fatal_error_renews_the_client_and_goes_on(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    txn = EventProducer(bus_settings, codec=codec, transactional_id=f"txn-{uuid.uuid4().hex[:6]}")
    committed: list[str] = []
    tries = 0
    deadline = time.monotonic() + 120.0
    try:
        while txn.renewals < 2 and tries < _TRIES and time.monotonic() < deadline:
            tries += 1
            txn.begin_transaction()
            txn.produce(Topic.DECISIONS, decision(tries), key="d")
            txn.commit_transaction()
            committed.append(decision(tries).decision_id)
            txn.begin_transaction()
            txn.produce(Topic.DECISIONS, decision(10_000 + tries), key="d")
            time.sleep(0.005)  # its registration is on the wire, the commit's markers not all written yet
            txn.abort_transaction()  # raised INVALID_TXN_STATE, and again on every retry, before
            assert not txn.in_transaction
        # The renewed client carries on: a transaction commits, and an ordinary abort aborts.
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(0), key="d")
        txn.commit_transaction()
        committed.append(decision(0).decision_id)
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(20_000), key="d")
        txn.flush()
        txn.abort_transaction()
    finally:
        txn.close()
    assert txn.renewals >= 1, f"the fatal abort was not met in {tries} tries: the race did not happen"
    print(f"{txn.renewals} renewals in {tries} tries")
    # Exactly the committed records, in order; nothing of an aborted transaction (renewed or not).
    seen = [env.event.decision_id for env in read_all(bus_settings, Topic.DECISIONS, codec=codec)]
    assert seen == committed


class _FaultyClient(Producer):
    """The real client, with one injected fault at a time: a fatal abort, a creation that fails."""

    fail_abort = False
    fail_create = False

    def __init__(self, config: dict) -> None:  # type: ignore[type-arg]
        if _FaultyClient.fail_create:
            raise KafkaException(KafkaError(KafkaError._SSL, "ssl.ca.location: No such file", fatal=True))
        super().__init__(config)

    def abort_transaction(self, *args: float) -> None:
        if _FaultyClient.fail_abort:
            _FaultyClient.fail_abort = False
            raise KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "injected", fatal=True))
        super().abort_transaction(*args)


def test_a_renewal_whose_client_cannot_be_made_is_tried_again(
    bus_settings: MeshflSettings, codec: EventCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal that cannot make its new client (a certificate file away for a moment) leaves the old
    one to renew again: it closed it first, and every later call met a closed client (RuntimeError,
    which no recovery retries: the daemon died)."""
    monkeypatch.setattr(_producer, "Producer", _FaultyClient)
    txn = EventProducer(bus_settings, codec=codec, transactional_id=f"txn-{uuid.uuid4().hex[:6]}")
    try:
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(1), key="d")
        _FaultyClient.fail_abort = _FaultyClient.fail_create = True
        with pytest.raises(BusError, match="creating the producer"):
            txn.abort_transaction()
        _FaultyClient.fail_create = False
        txn.abort_transaction()  # the renewal, tried again
        assert txn.renewals == 1 and not txn.in_transaction
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(2), key="d")
        txn.commit_transaction()
    finally:
        _FaultyClient.fail_abort = _FaultyClient.fail_create = False
        txn.close()
    seen = [env.event.decision_id for env in read_all(bus_settings, Topic.DECISIONS, codec=codec)]
    assert seen == [decision(2).decision_id]


def test_a_fenced_producer_with_an_open_transaction_closes(
    bus_settings: MeshflSettings, codec: EventCodec
) -> None:
    """confluent-kafka's close aborts the open transaction and raises the fence again (the client is
    closed all the same): close raised a KafkaException, which ended governance when it let go of a
    partition it had lost with a transaction open, and replaced the FencedError of a fenced daemon."""
    transactional_id = f"txn-{uuid.uuid4().hex[:6]}"
    old = EventProducer(bus_settings, codec=codec, transactional_id=transactional_id)
    old.begin_transaction()
    old.produce(Topic.DECISIONS, decision(1), key="d")
    old.flush()
    with EventProducer(bus_settings, codec=codec, transactional_id=transactional_id) as new:
        new.init_transactions()  # fences the old one, aborts its transaction
        old.close()
        new.begin_transaction()
        new.produce(Topic.DECISIONS, decision(2), key="d")
        new.commit_transaction()
    seen = [env.event.decision_id for env in read_all(bus_settings, Topic.DECISIONS, codec=codec)]
    assert seen == [decision(2).decision_id]


def test_a_renewal_past_its_window_stops_instead_of_fencing_a_newer_owner(
    bus_settings: MeshflSettings, codec: EventCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal fences whoever holds the transactional id. One tried long after the fatal error (the
    coordinator was away, governance kept retrying its recovery) could fence the standby that took the
    partitions over meanwhile: past the window the producer says it is fenced, so the daemon stops."""
    monkeypatch.setattr(_producer, "Producer", _FaultyClient)
    monkeypatch.setattr(_producer, "_RENEW_WINDOW_S", 0.0)
    txn = EventProducer(bus_settings, codec=codec, transactional_id=f"txn-{uuid.uuid4().hex[:6]}")
    try:
        txn.begin_transaction()
        txn.produce(Topic.DECISIONS, decision(1), key="d")
        _FaultyClient.fail_abort = True
        with pytest.raises(FencedError, match="could not be renewed"):
            txn.abort_transaction()
        assert txn.renewals == 0
        with pytest.raises(FencedError):
            txn.begin_transaction()  # still never renewed
        assert txn.renewals == 0
    finally:
        _FaultyClient.fail_abort = False
        txn.close()
    assert list(read_all(bus_settings, Topic.DECISIONS, codec=codec)) == []
