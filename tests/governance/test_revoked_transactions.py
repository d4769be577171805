"""An assignment change aborts the open transactions; those of partitions this instance lost may have
been fenced already by their new owner (whose ``init_transactions`` aborted them): that is no reason to
stop. Transactions stay open across polls (``governance.transactions``), so a rebalance that gives one
partition to a newly started instance met the old owner's open transaction there, and its abort's
FencedError stopped the whole daemon, partitions it still owned included."""

from __future__ import annotations

import pytest

from governance.closing import RoundCloser
from governance.ownership import PartitionProducers, transactional_id
from governance.service_state import ServiceState
from governance.transactions import Transactions
from meshfl.bus import EventProducer, ensure_topics
from meshfl.errors import FencedError
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic
from tests.bus.bus_helpers import decision

pytestmark = pytest.mark.kafka


def test_a_fenced_transaction_of_a_lost_partition_is_let_go_an_owned_one_still_stops(
    settings: MeshflSettings,
) -> None:
    ensure_topics(settings)
    producers = PartitionProducers(settings, client_prefix="governance-a")
    try:
        producers.own([0, 1])
        txns = Transactions(settings, ServiceState(), None, RoundCloser(settings, ServiceState(), None), 2)  # type: ignore[arg-type]
        for partition in (0, 1):  # each has decided something: the coordinator knows the transaction
            txns._begin(producers, partition).producer.produce(Topic.DECISIONS, decision(partition), key="t")
            producers.get(partition).flush()
        for partition in (0, 1):  # the new owners take over: fenced, their open transactions aborted
            with EventProducer(settings, transactional_id=transactional_id(settings, partition)) as other:
                other.init_transactions()
        with pytest.raises(FencedError):
            txns.abort_all(assigned={1})  # partition 1 is still ours by the group: someone else has it
        assert txns.open
        txns.abort_all(assigned=set())  # lost: nothing left to abort, nothing to stop for
        assert not txns.open
    finally:
        producers.close()
