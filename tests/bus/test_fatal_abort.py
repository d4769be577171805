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

from meshfl.bus import EventProducer, read_all
from meshfl.codec import EventCodec
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
