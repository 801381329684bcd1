"""Event-log topic names, the same on every backend.

``forcelink.sf.<org>.changes``  Salesforce changes of one org, keyed by record id
``forcelink.pg.changes``        Postgres row changes, keyed by table and key
``forcelink.<direction>.<org>``  the consumer group applying one org's changes

The Kafka backend puts ``eventlog.kafka.topic_prefix`` (empty by default) in
front of these on the broker, for clusters that several deployments share.
"""

from __future__ import annotations

PREFIX = "forcelink."
PG_CHANGES = f"{PREFIX}pg.changes"


def salesforce_changes(org: str) -> str:
    return f"{PREFIX}sf.{org}.changes"


def consumer_group(direction: str, org: str) -> str:
    """The consumer group of one org and direction (``sf_to_pg``, ``pg_to_sf``)."""
    return f"{PREFIX}{direction}.{org}"
