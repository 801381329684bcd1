"""The embedded event log: topics, records, group positions, group members.

Revision ID: 0002_eventlog
Revises: 0001_bookkeeping

Tables, all in schema ``forcelink`` (``forcelink.eventlog.embedded`` is the
only code that reads or writes them):

``eventlog_partitions``
    One row per (topic, partition), created with the topic. ``next_offset``
    is the offset the next record published to the partition gets; a
    publisher holds this row's lock until it commits, which makes offset
    order equal commit order (see ``embedded.py`` for why that matters).
``eventlog_records``
    The records, keyed (topic, partition, offset). ``headers`` is NULL when
    a record has none, which is the common case.
``eventlog_positions``
    Per (group, topic, partition), the committed position: the offset of the
    next record the group has not yet processed.
``eventlog_members``
    The live members of each consumer group; a member whose ``expires_at``
    has passed is dead and its partitions are free.
``eventlog_leases``
    Which member owns which partition for a group. A lease counts only while
    its member is alive.
"""

from __future__ import annotations

from alembic import op

revision: str = "0002_eventlog"
down_revision: str | None = "0001_bookkeeping"
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = """
CREATE SCHEMA IF NOT EXISTS forcelink;

CREATE TABLE forcelink.eventlog_partitions (
    topic       text NOT NULL,
    partition   integer NOT NULL CHECK (partition >= 0),
    next_offset bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE forcelink.eventlog_records (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         bytea NOT NULL,
    value       bytea NOT NULL,
    headers     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

CREATE TABLE forcelink.eventlog_positions (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

CREATE TABLE forcelink.eventlog_members (
    group_id    text NOT NULL,
    member_id   text NOT NULL,
    topics      text[] NOT NULL,
    joined_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (group_id, member_id)
);

CREATE TABLE forcelink.eventlog_leases (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    member_id   text NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
"""

DOWNGRADE = """
DROP TABLE forcelink.eventlog_leases;
DROP TABLE forcelink.eventlog_members;
DROP TABLE forcelink.eventlog_positions;
DROP TABLE forcelink.eventlog_records;
DROP TABLE forcelink.eventlog_partitions;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
