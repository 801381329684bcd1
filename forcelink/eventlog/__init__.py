"""The event log: connectors publish changes to it, processors consume them.

``open_event_log(config)`` returns the backend ``config.eventlog.backend``
names: ``embedded`` (a log in forcelink's Postgres database, the default) or
``kafka``. The contract both keep is in ``forcelink.eventlog.base``.
"""

from __future__ import annotations

from forcelink.config import Config
from forcelink.eventlog.base import (
    DEFAULT_SESSION_TIMEOUT,
    Consumer,
    Event,
    EventLog,
    EventRecord,
    Position,
    TopicPartition,
    UnknownTopic,
    partition_for,
)

__all__ = [
    "DEFAULT_SESSION_TIMEOUT",
    "Consumer",
    "Event",
    "EventLog",
    "EventRecord",
    "Position",
    "TopicPartition",
    "UnknownTopic",
    "open_event_log",
    "partition_for",
]


def open_event_log(config: Config) -> EventLog:
    """The configured backend, not yet connected (it connects on first use)."""
    if config.eventlog.backend == "kafka":
        from forcelink.eventlog.kafka import KafkaEventLog

        return KafkaEventLog(config.eventlog.kafka)
    from forcelink.eventlog.embedded import EmbeddedEventLog

    return EmbeddedEventLog(config.database.url, config.eventlog.embedded)
