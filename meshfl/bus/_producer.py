"""``EventProducer``: typed, idempotent, optionally transactional, with chunking above the limit.

Events are encoded outside the client (``meshfl.codec``); an encoded event larger than
``settings.max_message_bytes`` goes out as ``Chunk`` events with the same key, hence on one
partition and, with idempotence, in order and without duplicates. Delivery failures are collected
by the delivery callback and raised by ``flush`` (or the transaction commit), never lost.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from meshfl import faults
from meshfl.bus._chunk_seal import SEAL_HEADER, chain_headers
from meshfl.bus._chunking import chunk_overhead, chunk_size_for, iter_chunks
from meshfl.bus._config import FENCED_CODES, bus_error, is_fatal, producer_config, resolve_codec
from meshfl.bus._dead_letter import DeadLetter
from meshfl.bus._envelope import CHUNK_HEADER, SENDER_HEADER, headers_to_list
from meshfl.errors import BusError, FencedError
from meshfl.events import Event
from meshfl.logs import get_logger
from meshfl.retry import retrying
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

if TYPE_CHECKING:
    from meshfl.bus._consumer import EventConsumer
    from meshfl.codec import EventCodec
    from meshfl.identity import Signer, StateDigest

log = get_logger("meshfl.bus.producer")

_QUEUE_FULL_TIMEOUT = 300.0
"""How long ``produce`` waits for room in librdkafka's queue before giving up."""
_TXN_TIMEOUT = 60.0
_RENEW_WINDOW_S = 5.0
"""How long after its fatal error a client may still be renewed. A renewal's ``init_transactions``
fences whoever holds the transactional id: once the group may have handed the partitions to a
standby (its session is 6 s in standby deployments), renewing would fence the rightful new owner.
Past the window the producer reports itself fenced, so the daemon stops and a restart rejoins the
group before it takes anything over."""
_MAX_KEPT_FAILURES = 20


def _needs_new_client(exc: KafkaException) -> bool:
    """A fatal transactional error that is not a fence: this client can never end a transaction again,
    but a new one with the same transactional id can (a fence means another owner: never renewed)."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.fatal() and error.code() not in FENCED_CODES


class EventProducer:
    """Produces meshfl events; a context manager that flushes (or aborts a transaction) on exit."""

    def __init__(
        self,
        settings: MeshflSettings,
        *,
        codec: EventCodec | None = None,
        transactional_id: str | None = None,
        client_id: str | None = None,
        signer: Signer | None = None,
        on_committed: Callable[[Topic, Event], None] | None = None,
    ) -> None:
        """``on_committed`` sees each event once it is visible to read_committed readers (after the
        commit of its transaction; without transactions, once queued): metrics count what the log holds,
        never what an aborted transaction took back."""
        self._settings = settings
        self._on_committed = on_committed
        self._uncommitted: list[tuple[Topic, Event]] = []
        self._signer = signer
        self._codec = resolve_codec(settings, codec)
        self._transactional = transactional_id is not None
        self._sender = (transactional_id or client_id or "").encode()
        self._in_transaction = False
        self._initialized = False
        self._failures: list[str] = []
        self._failure_count = 0
        self._partitions: dict[str, int] = {}
        self._ends: dict[tuple[str, int], int] = {}
        self._fatal: KafkaError | None = None
        self._broken = False  # a fatal transactional error: the client must be renewed (``_renew``)
        self._broken_at = 0.0  # time.monotonic() of that error (``_RENEW_WINDOW_S``)
        self._renewals = 0
        self._config = producer_config(settings, transactional_id=transactional_id, client_id=client_id)
        self._config["error_cb"] = self._on_client_error
        self._producer = self._new_client()
        self._chunk_size = chunk_size_for(
            settings.max_message_bytes, chunk_overhead(self._codec, str(uuid.uuid4()))
        )

    @property
    def sender(self) -> str:
        """What this producer's records name in their ``meshfl-sender`` header (its transactional or
        client id): a reader looking for its own records filters on it (``EventConsumer(only_sender=)``)."""
        return self._sender.decode()

    @property
    def chunk_size(self) -> int:
        """Data bytes per chunk: ``max_message_bytes`` minus the framing of a ``Chunk``."""
        return self._chunk_size

    def produce(
        self,
        topic: Topic,
        event: Event,
        *,
        key: str | None,
        headers: Mapping[str, str] | None = None,
        digests: Mapping[str, StateDigest] | None = None,
    ) -> None:
        """Queue one event; chunked when its encoding is above ``settings.max_message_bytes``.

        With a ``signer`` the event is signed first (``digests``: model-state digests of the signing
        scheme already known, see ``meshfl.identity.state_digests``); the signed event is what goes on
        the bus.
        """
        name = topic_name(self._settings, topic)
        if self._signer is not None and "signature" in type(event).model_fields:
            event = self._signer.sign(event, digests=digests)
        parts = self._codec.encode_parts(event)  # never joined when chunked: no whole-message copy
        size = sum(memoryview(part).nbytes for part in parts)
        extra = headers_to_list(headers)
        if self._on_committed is not None:
            if self._in_transaction:
                self._uncommitted.append((topic, event))
            else:
                self._on_committed(topic, event)
        if size <= self._settings.max_message_bytes:
            whole = [*extra, (SENDER_HEADER, self._sender)] if self._sender else extra
            self._send(name, b"".join(parts), key=key, headers=whole, partition=None)
            return
        message_id = str(uuid.uuid4())
        # A null key would let the partitioner scatter the chunks; pin them to one partition instead.
        partition = None if key is not None else self._partition_for(name, message_id)
        chunk_headers = [*extra, (CHUNK_HEADER, b"1"), (SENDER_HEADER, self._sender)]
        count = 0
        # Views of the parts (a chunk spanning two is a join): the seal chains them back to front, one
        # signature a set, so that readers tell them from copies (``_chunk_seal``).
        chunks = deque(iter_chunks(parts, chunk_size=self._chunk_size, message_id=message_id))
        seals = deque(chain_headers(self._signer, list(chunks))) if self._signer is not None else None
        while chunks:
            chunk = chunks.popleft()  # a join goes once sent
            sealed = chunk_headers if seals is None else [*chunk_headers, (SEAL_HEADER, seals.popleft())]
            self._send(name, self._codec.encode(chunk), key=key, headers=sealed, partition=partition)
            count += 1
            if faults.armed("producer.chunk"):
                self._producer.flush(_TXN_TIMEOUT)  # the chunks so far reach the broker, then die
                faults.kill_point("producer.chunk")
        log.info(
            "chunked event queued",
            topic=name,
            key=key,
            message_id=message_id,
            event_type=type(event).__name__,
            size=size,
            chunks=count,
        )

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued event; raise ``BusError`` if any delivery failed or timed out."""
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(min(1.0, timeout))
        # In steps, so that a refused login (no delivery report comes for it) ends the wait at once.
        while remaining and self._fatal is None and time.monotonic() < deadline:
            remaining = self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        if remaining:
            why = f": {self._fatal.name()} ({self._fatal.str()})" if self._fatal is not None else ""
            raise BusError(f"{remaining} messages not delivered within {timeout} s{why}")
        self._raise_failures()

    def written_ends(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): one past the highest offset of a delivery reported so far.

        Everything this producer wrote below it is on the log (committed, or aborted: invisible);
        what it still has in flight lands above it. Governance records it as where its log tail starts.
        """
        self._producer.poll(0)
        return dict(self._ends)

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    @property
    def renewals(self) -> int:
        """Times the client was replaced after a fatal transactional error (``abort_transaction``)."""
        return self._renewals

    def init_transactions(self, timeout: float = _TXN_TIMEOUT) -> None:
        """Fence every earlier producer with this ``transactional.id`` and settle its open transaction.

        Call it before reading the state the transactions will build on: once it returns, no zombie
        can commit, and its unfinished transaction is aborted (invisible to read_committed readers).
        """
        if not self._transactional:
            raise BusError("init_transactions needs a producer built with a transactional_id")
        if self._initialized:
            return
        try:
            self._producer.init_transactions(timeout)
        except KafkaException as exc:
            raise bus_error("initializing transactions", exc) from exc
        self._initialized = True

    def begin_transaction(self) -> None:
        if not self._transactional:
            raise BusError("begin_transaction needs a producer built with a transactional_id")
        if self._broken:  # an earlier renewal failed (broker away): try again before anything else
            self._renew()
        self.init_transactions()
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise bus_error("beginning a transaction", exc) from exc
        self._in_transaction = True

    def commit_transaction(
        self, consumer: EventConsumer | None = None, offsets: Sequence[TopicPartition] | None = None
    ) -> None:
        """Commit what was produced, with the consumer's offsets when given (consume-transform-produce).

        The offsets default to ``consumer.safe_offsets()``; after the commit they are the group's
        committed offsets, atomically with the events. An abortable failure aborts and raises.
        """
        if not self._in_transaction:
            raise BusError("commit_transaction without begin_transaction")
        if offsets is not None and consumer is None:
            raise BusError("offsets can only be committed with the consumer whose group they belong to")
        try:
            if consumer is not None:
                to_commit = list(offsets) if offsets is not None else consumer.safe_offsets()
                # Dead letters of the records these offsets pass go in the same transaction.
                passed = {(tp.topic, tp.partition) for tp in to_commit}
                for letter in consumer.take_dead_letters(passed):
                    self.produce_dead_letter(letter)
                consumer._flush_dead_letters()  # the offsets may pass records that were dead-lettered
                if to_commit:
                    self._producer.send_offsets_to_transaction(
                        to_commit, consumer.consumer_group_metadata(), _TXN_TIMEOUT
                    )
            self._commit_with_retries()
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.txn_requires_abort():
                self.abort_transaction()
                raise BusError(f"transaction aborted: {error.str()}") from exc
            # Fatal: the outcome is not known (the caller reads the log); the abort renews the client.
            if not self._broken and _needs_new_client(exc):
                self._broken, self._broken_at = True, time.monotonic()
            raise bus_error("committing a transaction", exc) from exc
        self._in_transaction = False
        committed, self._uncommitted = self._uncommitted, []
        if self._on_committed is not None:
            for topic, event in committed:
                self._on_committed(topic, event)
        self._raise_failures()

    def abort_transaction(self) -> None:
        """Abort: nothing produced since ``begin_transaction`` becomes visible to read_committed readers.

        A no-op when no transaction is open (``commit_transaction`` already aborted on an abortable
        error): librdkafka refuses a second abort.

        A fatal error is never retried: the client could not end a transaction again. One seen here:
        EndTxn(abort) of a transaction begun just after a commit, whose partition registration was
        still refused while the broker wrote the previous commit's markers, is refused as
        INVALID_TXN_STATE once they are written (no transaction open on the broker's side), and
        librdkafka makes that fatal. The client is then renewed (``_renew``): the new one's
        ``init_transactions`` fences the old one and has the coordinator abort whatever it left open,
        the outcome of an abort. After a fatal commit the outcome of that commit is unknown: read the log.
        """
        if not self._in_transaction:
            return
        try:
            if not self._broken:
                try:
                    self._producer.abort_transaction(_TXN_TIMEOUT)
                except KafkaException as exc:
                    if not _needs_new_client(exc):
                        raise bus_error("aborting a transaction", exc) from exc
                    self._broken, self._broken_at = True, time.monotonic()
                    log.warning(
                        "abort failed with a fatal error; renewing the client", error=exc.args[0].str()
                    )
            if self._broken:
                self._renew()
        finally:
            self._failures.clear()
            self._failure_count = 0
            self._uncommitted.clear()
        self._in_transaction = False

    def close(self) -> None:
        """Flush (or abort an open transaction), then release the client."""
        try:
            if self._in_transaction:
                try:
                    if self._broken:  # no renewal to close it: the next owner's fence aborts it
                        raise BusError("the client is in a fatal state")
                    self.abort_transaction()
                except BusError as exc:
                    # Fenced or failed: the broker aborts what this producer left open; nothing is lost.
                    log.warning("open transaction not aborted on close", error=str(exc))
            else:
                self.flush()
        finally:
            self._release(purge=self._fatal is not None or self._broken)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def produce_dead_letter(self, letter: DeadLetter) -> None:
        """Queue a dead letter (raw bytes and reason headers) through this producer's transaction."""
        name = topic_name(self._settings, Topic.DEAD_LETTERS)
        self._send(name, letter.value, key=letter.key, headers=letter.wire_headers(), partition=None)

    # --- internals ------------------------------------------------------------------------------

    def _new_client(self) -> Producer:
        try:
            return Producer(self._config)
        except KafkaException as exc:
            raise bus_error("creating the producer", exc) from exc

    def _release(self, *, purge: bool) -> None:
        if purge:  # nothing queued can be delivered: do not wait out its timeout
            self._producer.purge()
            with contextlib.suppress(KafkaException):  # a client in a fatal state raises it again here
                self._producer.flush(0)
        # Its abort of an open transaction on close fails (a warning; for a fenced client, the fence
        # raised again): said already, and the client is closed all the same.
        with warnings.catch_warnings(), contextlib.suppress(KafkaException):
            warnings.simplefilter("ignore", RuntimeWarning)
            self._producer.close()

    def _renew(self) -> None:
        """Replace a client in a fatal state by a new one with the same transactional id, initialized:
        the old one is fenced and its open transaction aborted by the coordinator (a restart's outcome).
        The new client is made before the old one goes: if it cannot be, the old one stays to renew
        again, within ``_RENEW_WINDOW_S`` of the error; after it, ``FencedError`` (never fence a newer
        owner: stop)."""
        elapsed = time.monotonic() - self._broken_at
        if elapsed > _RENEW_WINDOW_S:
            raise FencedError(
                f"the transactional client failed {elapsed:.0f} s ago and could not be renewed within"
                f" {_RENEW_WINDOW_S:.0f} s; renewing now could fence a newer owner: restart to rejoin"
            )
        fresh = self._new_client()
        self._release(purge=True)
        self._fatal = None
        self._initialized = False
        self._producer = fresh
        self.init_transactions(timeout=max(1.0, _RENEW_WINDOW_S - elapsed))
        self._broken = False
        self._renewals += 1
        log.info("transactional client renewed after a fatal error", client=self._sender.decode())

    def _send(
        self,
        name: str,
        value: bytes,
        *,
        key: str | None,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> None:
        kwargs = {} if partition is None else {"partition": partition}
        produce = functools.partial(
            self._producer.produce,
            name,
            value=value,
            key=key,
            headers=headers,
            on_delivery=self._delivered,
            **kwargs,
        )
        try:
            try:  # the common case first: a retry loop costs more than the produce (a decision each)
                produce()
            except BufferError:
                self._send_when_room(name, produce)
        except BufferError:
            raise BusError(f"producer queue still full after {_QUEUE_FULL_TIMEOUT} s") from None
        except KafkaException as exc:
            raise bus_error(f"producing to {name}", exc) from exc
        self._producer.poll(0)

    def _send_when_room(self, name: str, produce: Callable[[], None]) -> None:
        """A full local queue drains as deliveries complete: wait for room by serving callbacks. The
        queue is bounded (QUEUE_KBYTES), so a large chunked event waits here all the time: quietly."""
        queue_full = retrying(
            f"producing to {name} (queue full)",
            retry_on=lambda exc: isinstance(exc, BufferError),
            deadline=_QUEUE_FULL_TIMEOUT,
            sleep=self._producer.poll,
            quiet=True,
        )
        for attempt in queue_full:
            with attempt:
                produce()

    def _partition_for(self, name: str, message_id: str) -> int:
        count = self._partitions.get(name)
        if count is None:
            try:
                metadata = self._producer.list_topics(name, timeout=10.0).topics.get(name)
            except KafkaException as exc:
                raise bus_error(f"reading the metadata of {name}", exc) from exc
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise BusError(f"topic {name} is not available: {metadata.error if metadata else 'unknown'}")
            count = len(metadata.partitions)
            self._partitions[name] = count
        return zlib.crc32(message_id.encode()) % count

    def _commit_with_retries(self) -> None:
        """Commit; a retriable failure (the outcome is not known yet) is retried until the deadline."""
        commit = retrying(
            "committing a transaction",
            retry_on=lambda exc: (
                isinstance(exc, KafkaException)
                and isinstance(exc.args[0], KafkaError)
                and exc.args[0].retriable()
            ),
            deadline=_TXN_TIMEOUT,
        )
        for attempt in commit:
            with attempt:
                self._producer.commit_transaction(_TXN_TIMEOUT)

    def _on_client_error(self, error: KafkaError) -> None:
        """Client-level errors (no delivery report): authentication refused, brokers down..."""
        if is_fatal(error):
            self._fatal = error
            log.error("fatal client error", error=error.name(), detail=error.str())
        else:
            log.warning("client error", error=error.name(), detail=error.str())

    def _delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is None:
            key = (message.topic(), message.partition())
            self._ends[key] = max(self._ends.get(key, 0), message.offset() + 1)
        else:
            self._failure_count += 1
            if len(self._failures) < _MAX_KEPT_FAILURES:
                self._failures.append(f"{message.topic()}: {err.str()}")
            log.error(
                "delivery failed", topic=message.topic(), partition=message.partition(), error=err.str()
            )

    def _raise_failures(self) -> None:
        if self._failure_count:
            count, failures = self._failure_count, self._failures
            self._failure_count, self._failures = 0, []
            raise BusError(f"{count} deliveries failed, first: {failures[0]}")
