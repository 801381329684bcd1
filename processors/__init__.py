"""Processors: the sync logic between the event log and the targets."""
