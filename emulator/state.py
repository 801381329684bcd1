"""Persisting an org under ``--state DIR`` so a restart keeps its data.

Two files: ``org.pickle`` (records, id counters, users, connected apps,
clock offset) and ``journal.jsonl`` (the change events, written by the
journal itself). Both are replaced atomically (write, then rename), so a
crash during a save leaves the previous save whole. Tokens are not kept:
clients log in again after a restart, as after any session loss.

The pickle is only ever read from the directory this emulator wrote; it is
not a format for files from elsewhere.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

from forcelink.emulator.org import Org

log = logging.getLogger("forcelink.emulator.state")

ORG_FILE = "org.pickle"
JOURNAL_FILE = "journal.jsonl"


def save(org: Org, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = org.export_state()
    partial = directory / (ORG_FILE + ".partial")
    with partial.open("wb") as out:
        pickle.dump(state, out, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, directory / ORG_FILE)
    org.journal.dump(directory / JOURNAL_FILE)
    log.info("state saved to %s (%d writes)", directory, state["writes"])


def load(org: Org, directory: Path) -> bool:
    """Load a saved state if there is one; return whether there was."""
    source = directory / ORG_FILE
    if not source.exists():
        return False
    with source.open("rb") as data:
        org.import_state(pickle.load(data))
    journal = directory / JOURNAL_FILE
    if journal.exists():
        org.journal.load(journal)
    log.info("state loaded from %s", directory)
    return True
