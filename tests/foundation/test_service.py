"""The service's restart policy: transient failures restart, bugs stop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from forcelink.errors import SourceUnavailable
from forcelink.service import Component, Service


async def test_transient_failure__restarts_that_component_only(tmp_path: Path) -> None:
    attempts = 0
    steady_ran = asyncio.Event()

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise SourceUnavailable("the org is down")
        stop.set()

    async def steady(stop: asyncio.Event) -> None:
        steady_ran.set()
        await stop.wait()

    service = Service(
        [Component("flaky", flaky), Component("steady", steady)],
        run_file=tmp_path / "run.json",
        info={"api_url": "http://127.0.0.1:1"},
    )
    status = await asyncio.wait_for(service.serve(), timeout=30)

    assert status == 0
    assert attempts == 3
    assert service.components[0].restarts == 2
    assert steady_ran.is_set()
    written = json.loads((tmp_path / "run.json").read_text())
    assert written["state"] == "stopped"
    assert written["api_url"] == "http://127.0.0.1:1"


async def test_bug__stops_the_whole_service_with_status_1(tmp_path: Path) -> None:
    async def broken(stop: asyncio.Event) -> None:
        raise ValueError("a bug")

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()

    service = Service(
        [Component("broken", broken), Component("steady", steady)],
        run_file=tmp_path / "run.json",
    )
    status = await asyncio.wait_for(service.serve(), timeout=30)

    assert status == 1
    assert json.loads((tmp_path / "run.json").read_text())["state"] == "failed"
