"""The producer's bounded queue always has room for one record of the largest size the settings allow."""

from __future__ import annotations

from confluent_kafka import Producer

from meshfl.bus._config import producer_config
from meshfl.settings import MeshflSettings


def test_a_record_at_the_message_limit_fits_the_bounded_queue() -> None:
    # A 70 MB event under a 100 MB limit is sent whole: it must fit the queue (64 MiB by default), or
    # produce() would find the queue full however empty it is, retry for 300 s and fail.
    settings = MeshflSettings(bootstrap_servers="127.0.0.1:1", max_message_bytes=100_000_000)
    client = Producer(producer_config(settings))
    try:
        # queued (never delivered: no broker there); BufferError "Queue full" when it does not fit
        client.produce("t", value=bytes(70_000_000))
        assert len(client) >= 1  # the record, and the client's own events
    finally:
        client.purge()
        client.flush(0)
