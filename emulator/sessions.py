"""Access tokens the org has issued, and who they belong to.

A token is valid until ``expires_at`` on the org's clock (so advancing the
clock expires it) or until it is revoked. ``lookup`` is what both the REST
middleware and the CometD server call.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from forcelink.emulator.clock import Clock

ORG_ID = "00D000000000001AAA"
DEFAULT_TOKEN_SECONDS = 7200.0


@dataclass(frozen=True)
class Session:
    token: str
    user_id: str
    username: str
    client_id: str
    issued_at: datetime
    expires_at: datetime


class SessionStore:
    def __init__(self, clock: Clock, lifetime_seconds: float = DEFAULT_TOKEN_SECONDS):
        self._clock = clock
        self.lifetime_seconds = lifetime_seconds
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def issue(self, user_id: str, username: str, client_id: str) -> Session:
        now = self._clock.now()
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
        session = Session(
            token,
            user_id,
            username,
            client_id,
            now,
            now + timedelta(seconds=self.lifetime_seconds),
        )
        with self._lock:
            self._sessions[token] = session
        return session

    def lookup(self, token: str) -> Session | None:
        """The live session for ``token``; None if unknown, revoked or expired."""
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if session.expires_at <= self._clock.now():
                del self._sessions[token]
                return None
            return session

    def revoke(self, token: str | None = None) -> int:
        """Revoke one token, or every token when None; return how many."""
        with self._lock:
            if token is None:
                count = len(self._sessions)
                self._sessions.clear()
                return count
            return 1 if self._sessions.pop(token, None) else 0
