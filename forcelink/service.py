"""The long-running forcelink process: components under one lifecycle.

``forcelink run`` builds a :class:`Service` from the configuration and a list
of components (connectors, processors, the API). Each component is an async
callable that runs until the service stops. The restart policy follows the
error tree in :mod:`forcelink.errors`:

* a :class:`~forcelink.errors.TransientError` restarts that component alone,
  with exponential backoff (1 s, 2 s, 4 s ... capped at 15 s), while the
  others keep running; a component that then runs for a while starts
  again from 1 s at its next failure;
* any other exception is a bug or a terminal condition: it is logged with its
  traceback and the whole service stops with exit status 1, so a supervisor
  (systemd, Kubernetes) sees the failure instead of a half-working process.

The service writes ``.forcelink/run.json`` with where it listens, so people and
scripts can find it, and removes nothing on exit (the file says ``stopped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forcelink.errors import TransientError

log = logging.getLogger("forcelink.service")

RunFn = Callable[[asyncio.Event], Awaitable[None]]
MAX_BACKOFF = 15.0
"""Seconds: a sync service should notice a source back within this."""


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class Component:
    """One unit of work; ``run(stop)`` returns when ``stop`` is set."""

    name: str
    run: RunFn
    restarts: int = 0


@dataclass
class Service:
    components: list[Component]
    run_file: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    state: State = State.STARTING

    async def serve(self) -> int:
        """Run every component until SIGINT/SIGTERM or a fatal error."""
        stop = asyncio.Event()
        self._install_signals(stop)
        self._write_run_file(State.RUNNING)
        self.state = State.RUNNING
        log.info("service running: %s", ", ".join(c.name for c in self.components))

        tasks = [
            asyncio.create_task(self._supervise(c, stop), name=c.name)
            for c in self.components
        ]
        failed = await self._wait(tasks, stop)

        self.state = State.FAILED if failed else State.STOPPED
        self._write_run_file(self.state)
        log.info("service %s", self.state.value)
        return 1 if failed else 0

    async def _wait(self, tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> bool:
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [*tasks, stopper], return_when=asyncio.FIRST_COMPLETED
        )
        failed = any(t is not stopper and t.exception() for t in done)
        self.state = State.STOPPING
        stop.set()
        finished, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            log.warning(
                "component %s did not stop in 30 s; cancelling", task.get_name()
            )
            task.cancel()
        stopper.cancel()
        return failed or any(t.exception() for t in finished if not t.cancelled())

    async def _supervise(self, component: Component, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                await component.run(stop)
                return
            except TransientError as error:
                if time.monotonic() - started > 5 * MAX_BACKOFF:
                    backoff = 1.0
                component.restarts += 1
                log.warning(
                    "%s failed (%s); restarting in %.0f s",
                    component.name,
                    error,
                    backoff,
                )
            except Exception:
                log.exception("%s failed and cannot be restarted", component.name)
                raise
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _install_signals(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

    def _write_run_file(self, state: State) -> None:
        if self.run_file is None:
            return
        self.run_file.parent.mkdir(parents=True, exist_ok=True)
        body = {**self.info, "state": state.value, "updated_at": time.time()}
        tmp = self.run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.run_file)
