"""Where a record came from and when, as far as a reader can tell before any signature is checked.

* ``log_time``: the record's time on the log's clock. meshfl creates its topics with LogAppendTime, so
  this is the broker's clock and no producer can move it. On a topic someone else created with
  CreateTime, a producer's stamp is used, but never past the reader's present, so that one record
  stamped in the future cannot age every later chunk set of its partition at once.
* ``chunk_sender``: whose reassembly budget a chunk set counts against: the ``meshfl-sender`` header
  the producer sets, else the record key. It is a claim (signatures bind it to a key); what it buys is
  that one claimant's declarations never spend anyone else's budget.
"""

from __future__ import annotations

import time

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Message

from meshfl.bus._envelope import SENDER_HEADER, decode_key

_MAX_SENDER = 256


def log_time(message: Message) -> tuple[int, bool]:
    """(milliseconds, whether it is the broker's LogAppendTime)."""
    kind, stamp = message.timestamp()
    if kind == TIMESTAMP_LOG_APPEND_TIME:
        return int(stamp), True
    return min(int(stamp), int(time.time() * 1000)), False


def chunk_sender(message: Message) -> str:
    for name, value in message.headers() or ():
        if name == SENDER_HEADER and value:
            return value.decode("utf-8", errors="backslashreplace")[:_MAX_SENDER]
    return (decode_key(message.key()) or "")[:_MAX_SENDER]
