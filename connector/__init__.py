"""Connectors: the outside systems (Postgres WAL, Salesforce, S3)."""
