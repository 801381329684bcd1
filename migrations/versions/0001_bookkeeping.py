"""forcelink's bookkeeping schema: orgs, positions, failures, conflicts, mappings.

Revision ID: 0001_bookkeeping
Revises: (none, first revision)

Tables, all in schema ``forcelink`` (mapped data lives elsewhere, by default in
schema ``salesforce``):

``orgs``
    One row per configured org; ``name`` is the name used in forcelink.yaml
    and in every other table's ``org`` column.
``offsets``
    Where each source has safely got to, keyed by (org, source, key). The
    position is text because every source has its own kind of position:
    ``source='cometd'``, ``key='/data/AccountChangeEvent'``, position
    ``'12345'`` (a replay id); ``source='pg_slot'``, ``key='forcelink_local'``,
    position ``'0/16B3748'`` (an LSN); ``source='eventlog'``, key
    ``'<topic>/<partition>'``, position ``'42'``. ``details`` holds anything
    else a source wants to keep beside its position. A position is written
    only after the next stage has durably accepted everything before it.
``dead_letters``
    Terminal failures with the record and the error, so they can be replayed
    (``state`` moves open -> retrying -> resolved, or -> discarded).
``conflicts``
    Every decided conflict, with both versions and the outcome.
``mapping_versions``
    Each mapping definition ``forcelink mappings apply`` put in place.
``backfill_progress``
    Where a bulk backfill of one object has got to, to resume after a crash.
``sync_records``
    What was last synced for each record: conflict detection compares both
    sides against it and echo suppression recognises our own writes by it.
"""

from __future__ import annotations

from alembic import op

revision: str = "0001_bookkeeping"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = """
CREATE TABLE forcelink.orgs (
    name         text PRIMARY KEY,
    org_id       varchar(18),
    instance_url text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE forcelink.offsets (
    org        text NOT NULL,
    source     text NOT NULL,
    key        text NOT NULL,
    position   text NOT NULL,
    details    jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, source, key)
);

CREATE TABLE forcelink.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org         text NOT NULL,
    direction   text NOT NULL
                CHECK (direction IN ('to_salesforce', 'to_postgres')),
    object      text NOT NULL,
    record_key  text,
    payload     jsonb NOT NULL,
    error       jsonb NOT NULL,
    error_class text NOT NULL,
    attempts    integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retried_at  timestamptz,
    state       text NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'retrying', 'resolved', 'discarded'))
);
CREATE INDEX dead_letters_open ON forcelink.dead_letters (org, object, created_at)
    WHERE state IN ('open', 'retrying');
CREATE INDEX dead_letters_record ON forcelink.dead_letters (org, object, record_key);

CREATE TABLE forcelink.conflicts (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org                text NOT NULL,
    object             text NOT NULL,
    sfid               varchar(18),
    record_key         text,
    policy             text NOT NULL CHECK (policy IN (
                           'salesforce_wins', 'postgres_wins',
                           'last_writer_wins', 'merge_fields')),
    outcome            text NOT NULL,
    salesforce_version jsonb,
    postgres_version   jsonb,
    result             jsonb,
    decided_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conflicts_record ON forcelink.conflicts (org, object, sfid);

CREATE TABLE forcelink.mapping_versions (
    org        text NOT NULL,
    object     text NOT NULL,
    version    integer NOT NULL,
    table_name text NOT NULL,
    checksum   text NOT NULL,
    definition jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, object, version)
);

CREATE TABLE forcelink.backfill_progress (
    org        text NOT NULL,
    object     text NOT NULL,
    job_id     text,
    cursor     text,
    rows       bigint NOT NULL DEFAULT 0,
    state      text NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'running', 'done', 'failed')),
    error      jsonb,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, object)
);

CREATE TABLE forcelink.sync_records (
    org                 text NOT NULL,
    object              text NOT NULL,
    sfid                varchar(18) NOT NULL,
    last_synced_at      timestamptz NOT NULL DEFAULT now(),
    last_systemmodstamp timestamptz,
    last_values_hash    text,
    last_values         jsonb,
    PRIMARY KEY (org, object, sfid)
);
"""

DOWNGRADE = """
DROP TABLE forcelink.sync_records;
DROP TABLE forcelink.backfill_progress;
DROP TABLE forcelink.mapping_versions;
DROP TABLE forcelink.conflicts;
DROP TABLE forcelink.dead_letters;
DROP TABLE forcelink.offsets;
DROP TABLE forcelink.orgs;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
