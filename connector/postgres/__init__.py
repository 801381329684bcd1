"""Postgres change capture: logical replication slot → event log."""
