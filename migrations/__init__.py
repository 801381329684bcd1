"""Alembic migrations for forcelink's bookkeeping schema."""
