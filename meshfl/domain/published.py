"""What this domain already put on the log: its own update of a (task, round), read back on restart.

Agents publish their updates without a transaction (one idempotent produce and a flush: a transaction
added two broker round trips and commit markers to every round, and held governance's read_committed
fetch behind the slowest open transaction of the partition). The ``AgentProgress`` record follows the
update, so a kill between the two leaves an update on the log that the progress does not name. The
restarted agent must then not train that round again: training is reproducible but the update is not
(its ``created_at``, ``train_seconds`` and signature differ), and two different updates under one id
would leave which one counts to the reader. So before it trains a round it has not published itself,
the agent looks for its own update of that round here, from the base version's log time on (a round's
update is always appended after its base version), and adopts it when found.

A kill in the middle of a chunked update leaves an incomplete chunk set: never reassembled, so not
found here; the agent publishes the round again (a new chunk set of the same update id) and governance
expires the incomplete one.
"""

from __future__ import annotations

from collections.abc import Callable

from meshfl.bus import EventProducer, offsets_at, read_all
from meshfl.errors import BusError, FencedError, RegistryUnavailableError, SignatureError
from meshfl.events import AgentProgress, ModelUpdate, utcnow
from meshfl.identity import TrustRegistry
from meshfl.logs import get_logger
from meshfl.settings import MeshflSettings
from meshfl.topics import Topic, topic_name

log = get_logger("meshfl.domain")

DEFAULT_DELIVERY_TIMEOUT_MS = 300_000
"""librdkafka's default ``message.timeout.ms`` (alias ``delivery.timeout.ms``)."""
_FLUSH_MARGIN_S = 30.0
"""Past the delivery timeout: an in-flight request is failed only once its own timeout runs out."""

CLOCK_MARGIN_MS = 60_000
"""Read from this long before the base version's log time: partitions of a cluster are appended by
different brokers, whose clocks may differ a little."""


def publish_timeout(settings: MeshflSettings) -> float:
    """Seconds an update's flush may take: past the producer's delivery timeout (``MESHFL_KAFKA`` may
    raise it), so that when the flush gives up every record was reported and none is still in flight
    to land after the log is read back (and the round trained and published again)."""
    kafka = settings.kafka
    raw = kafka.get("message.timeout.ms", kafka.get("delivery.timeout.ms", DEFAULT_DELIVERY_TIMEOUT_MS))
    try:
        delivery_ms = float(raw)
    except (TypeError, ValueError):
        delivery_ms = DEFAULT_DELIVERY_TIMEOUT_MS  # librdkafka refuses it when the producer is built
    if delivery_ms <= 0:  # 0: no limit; flush until every record is reported
        return float("inf")
    return delivery_ms / 1000 + _FLUSH_MARGIN_S


def signed_by(registry: TrustRegistry, domain: str) -> Callable[[ModelUpdate], bool]:
    """Whether an update is ``domain``'s own: it says so and ``domain``'s trusted key signed it (a copy
    on the log that anyone could have written is adopted only then, never on its ids alone)."""

    def check(update: ModelUpdate) -> bool:
        if update.domain != domain:
            return False
        try:
            registry.verify(update, sender=domain)
        except SignatureError:
            return False
        return True

    return check


def own_update(
    settings: MeshflSettings,
    *,
    task_id: str,
    update_id: str,
    since_ms: int,
    trusted: Callable[[ModelUpdate], bool],
    sender: str | None = None,
    chunk_signers: TrustRegistry | None = None,
) -> ModelUpdate | None:
    """The first complete update ``update_id`` of task ``task_id`` on the log from ``since_ms`` on that
    ``trusted`` accepts (signed by this domain), else None.

    Reads the updates topic from ``since_ms - CLOCK_MARGIN_MS`` to its present end; only on restart
    (or after a publish failed), never on the path of a round the agent published itself. ``sender``
    (the agent's update producer, ``EventProducer.sender``): records other producers' headers name are
    passed over undecoded, so a round of 1,000 domains' updates costs a read, not 1,000 decodes, and
    never fills the reassembly budget before the agent's own set (the header is a claim, so what is
    decoded still has to pass ``trusted``). ``chunk_signers`` (the agent's registry): the agent's own
    sealed set spends its signer's budget, never the one of its header, which anyone can name: a forged
    opener declaring the whole budget under that header made the own update unfound, and the round was
    trained and published again (two different updates under one id).
    """
    name = topic_name(settings, Topic.UPDATES)
    starts = offsets_at(settings, name, max(0, since_ms - CLOCK_MARGIN_MS))
    for env in read_all(
        settings, Topic.UPDATES, starts=starts, only_sender=sender, chunk_signers=chunk_signers
    ):
        update = env.event
        if (
            isinstance(update, ModelUpdate)
            and update.update_id == update_id
            and update.task_id == task_id
            and trusted(update)
        ):
            log.info(
                "own update found on the log",
                task=task_id,
                round=update.round,
                update_id=update_id,
                partition=env.partition,
                offset=env.offset,
            )
            return update
    return None


def record_progress(producer: EventProducer, domain: str, task_id: str, round_: int, update_id: str) -> None:
    """The ``AgentProgress`` of ``round_``, in a transaction of the agent's fenced producer (raises
    ``FencedError`` when a newer agent of the domain took over). Any other failure is logged only: the
    agent knows the round, and a restarted one finds the update itself on the log."""
    progress = AgentProgress(
        domain=domain, task_id=task_id, last_round=round_, last_update_id=update_id, updated_at=utcnow()
    )
    try:
        producer.begin_transaction()
        producer.produce(Topic.AGENT_PROGRESS, progress, key=f"{domain}/{task_id}")
        producer.commit_transaction()
    except FencedError:
        log.error("fenced: another agent of this domain took over; stopping", domain=domain)
        raise
    except (BusError, RegistryUnavailableError) as exc:
        log.warning("progress not recorded", domain=domain, task=task_id, round=round_, error=str(exc))
        producer.abort_transaction()  # a no-op if the commit already aborted it
