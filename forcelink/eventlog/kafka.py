"""The Kafka event log: the contract of ``base.py`` kept by Apache Kafka.

Producer and consumer are aiokafka's (the driver faust-streaming itself runs
on, installed with it). Topic names get ``eventlog.kafka.topic_prefix`` in
front on the broker (``changes`` is ``forcelink.changes`` there); events
carry the name without it.

Publishing: ``acks=all`` with the idempotent producer, the partition chosen
by ``partition_for`` (Kafka's murmur2, so a Java producer would pick the
same), and ``publish`` awaits every record's delivery report. A broker that
stays unreachable for ``PUBLISH_TIMEOUT`` raises ``SourceUnavailable``; some
of the batch may be stored anyway (the caller publishes it again; consumers
see duplicates, never gaps).

Consuming: a consumer group with automatic commits off; ``commit`` sends the
offsets the processor finished (last processed offset + 1, Kafka's
convention). Kafka itself keeps the group's members and assignment: a
member that stops heartbeating for the session timeout is dropped and its
partitions move. The broker refuses session timeouts below its
``group.min.session.timeout.ms`` (6 s by default).

Why not faust's consumer. The brief chose faust-streaming for processors;
it was tried as the consumer side here (faust 0.15.3 on Kafka 4.1.1, an app
started in-process with ``await app.start()``, an agent iterating
``stream.noack().events()`` into a queue, ``event.ack()`` then
``app.consumer.commit()``). Receiving and committing worked, but:

* ``app.stop()`` never returns while events it handed out are unacked: it
  logged ``wait_empty: Waiting for tasks [...]`` for the 15 unacked events
  over and over until the process was killed. Closing a consumer without
  committing -- the normal way a processor gives work back for redelivery --
  hangs.
* It is push-based: events arrive in an agent coroutine, so a
  ``poll``/``commit`` interface needs a queue between the agent and the
  caller, and faust commits acked offsets on its own timer
  (``broker_commit_every`` / ``broker_commit_interval``), which had to be set
  out of reach to keep commits in the processor's hands.
* An app needs its own internal topic (``<app id>-__assignor-__leader``); with
  topic declaration off (forcelink creates topics with explicit partition
  counts) it logs ``Topic ... not found in cluster metadata`` and
  ``Ignoring missing topic``.

aiokafka's consumer gives exactly the contract (fetch, explicit commit,
close without commit) with none of that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import OffsetAndMetadata

from forcelink.config import KafkaConfig
from forcelink.errors import SourceUnavailable
from forcelink.eventlog.base import (
    DEFAULT_SESSION_TIMEOUT,
    Closing,
    Event,
    EventRecord,
    Position,
    TopicPartition,
    UnknownTopic,
    last_positions,
    partition_for,
)

log = logging.getLogger("forcelink.eventlog.kafka")

PUBLISH_TIMEOUT = 30.0
"""Seconds ``publish`` waits for delivery reports before SourceUnavailable."""

REQUEST_TIMEOUT_MS = 10_000
METADATA_ATTEMPTS = 15
METADATA_RETRY_SECONDS = 0.2


def _unavailable(what: str, error: BaseException) -> SourceUnavailable:
    return SourceUnavailable(f"Kafka unavailable while {what}: {error!r}")


class KafkaEventLog(Closing):
    """The event log on Kafka; see the module docstring for how."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}

    def broker_name(self, topic: str) -> str:
        return self._config.topic_prefix + topic

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def ensure_topic(self, name: str, partitions: int | None = None) -> None:
        count = partitions or self._config.partitions
        if count < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1 (got {count})")
        topic = NewTopic(self.broker_name(name), count, self._config.replication_factor)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._config.bootstrap_servers,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        try:
            await admin.start()
            response = await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            return
        except KafkaError as error:
            raise _unavailable("creating a topic", error) from error
        finally:
            await admin.close()
        _check_created(response, name)
        log.info("created topic %s with %d partitions", topic.name, count)

    async def partitions(self, topic: str) -> int:
        if topic not in self._partitions:
            self._partitions[topic] = await self._fetch_partitions(topic)
        return self._partitions[topic]

    async def _fetch_partitions(self, topic: str) -> int:
        """The topic's partition count from the cluster's metadata.

        A topic created a moment ago may not be in every broker's metadata
        yet, so a missing topic is looked up again for a few seconds before
        it counts as unknown.
        """
        producer = await self._started_producer()
        for attempt in range(METADATA_ATTEMPTS):
            try:
                cluster = await producer.client.fetch_all_metadata()
            except KafkaError as error:
                raise _unavailable("reading a topic", error) from error
            found = cluster.partitions_for_topic(self.broker_name(topic))
            if found:
                return len(found)
            if attempt + 1 < METADATA_ATTEMPTS:
                await asyncio.sleep(METADATA_RETRY_SECONDS)
        raise UnknownTopic(f"no such topic: {topic} (ensure_topic first)")

    async def publish(self, topic: str, records: Sequence[EventRecord]) -> None:
        if not records:
            return
        count = await self.partitions(topic)
        producer = await self._started_producer()
        name = self.broker_name(topic)
        try:
            deliveries = [
                await producer.send(
                    name,
                    record.value,
                    key=record.key,
                    partition=partition_for(record.key, count),
                    headers=[(k, v.encode()) for k, v in record.headers.items()],
                )
                for record in records
            ]
            await asyncio.wait_for(asyncio.gather(*deliveries), PUBLISH_TIMEOUT)
        except (KafkaError, TimeoutError) as error:
            await self._discard_producer()
            raise _unavailable("publishing", error) from error
        log.debug("published %d records to %s", len(records), name)

    async def _discard_producer(self) -> None:
        """Drop the producer after a failed publish; the next one starts afresh.

        aiokafka's idempotent producer numbers records per partition before
        sending them. When a batch fails (seen: ``LeaderNotAvailableError``
        just after a broker restart) its numbers are never reused, so every
        later batch is refused with ``OutOfOrderSequenceNumber`` for good; the
        Java client would bump the producer epoch here, aiokafka does not. A
        new producer gets a new producer id and starts its numbering at 0.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), REQUEST_TIMEOUT_MS / 1000)
        except (KafkaError, TimeoutError) as error:
            log.warning("discarded a failed producer uncleanly: %r", error)

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._config.bootstrap_servers,
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
            )
            try:
                await producer.start()
            except KafkaError as error:
                await producer.stop()
                raise _unavailable("connecting a producer", error) from error
            self._producer = producer
        return self._producer

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    ) -> KafkaConsumer:
        for topic in topics:
            await self.partitions(topic)
        consumer = KafkaConsumer(self, group, list(topics), session_timeout)
        await consumer.start()
        return consumer


def _check_created(response: Any, name: str) -> None:
    """Raise unless the CreateTopics response says created or already there."""
    for entry in getattr(response, "topic_errors", []):
        code = entry[1]
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        message = entry[2] if len(entry) > 2 else ""
        raise SourceUnavailable(
            f"Kafka refused to create topic {name}: error {code} {message}"
        )


class KafkaConsumer(Closing):
    """One member of a Kafka consumer group."""

    def __init__(
        self,
        log_: KafkaEventLog,
        group: str,
        topics: list[str],
        session_timeout: float,
    ) -> None:
        self._log = log_
        self._group = group
        self._prefix = log_._config.topic_prefix
        session_ms = int(session_timeout * 1000)
        self._consumer = AIOKafkaConsumer(
            *(log_.broker_name(t) for t in topics),
            bootstrap_servers=log_._config.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
            request_timeout_ms=max(REQUEST_TIMEOUT_MS, session_ms + 5000),
        )

    @property
    def group(self) -> str:
        return self._group

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(
            TopicPartition(tp.topic.removeprefix(self._prefix), tp.partition)
            for tp in self._consumer.assignment()
        )

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except KafkaError as error:
            await self._consumer.stop()
            raise _unavailable("joining a group", error) from error
        log.info("joined group %s", self._group)

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Event]:
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
        except KafkaError as error:
            raise _unavailable("polling", error) from error
        return [
            Event(
                topic=tp.topic.removeprefix(self._prefix),
                partition=tp.partition,
                offset=m.offset,
                key=m.key if m.key is not None else b"",
                value=m.value if m.value is not None else b"",
                headers={k: v.decode() for k, v in m.headers},
                timestamp=m.timestamp / 1000,
            )
            for tp, messages in batches.items()
            for m in messages
        ]

    async def commit(self, done: Iterable[Event | Position]) -> None:
        highest = last_positions(done)
        owned = self.assignment()
        offsets = {
            KafkaTP(self._log.broker_name(tp.topic), tp.partition): OffsetAndMetadata(
                offset + 1, ""
            )
            for tp, offset in highest.items()
            if tp in owned
        }
        dropped = set(highest) - owned
        try:
            if offsets:
                await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            dropped = set(highest)
            log.info("group %s: commit dropped by a rebalance: %s", self._group, error)
        except KafkaError as error:
            raise _unavailable("committing", error) from error
        if dropped:
            log.info(
                "group %s: dropped commits for partitions no longer owned: %s",
                self._group,
                sorted((tp.topic, tp.partition) for tp in dropped),
            )

    async def close(self) -> None:
        await self._consumer.stop()
        log.info("left group %s", self._group)
