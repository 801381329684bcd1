"""Running forcelink commands as people do: a subprocess on a config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def forcelink(
    config: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``forcelink -c config <args>``; FORCELINK_* variables would override
    the file, so the child gets none of them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}
    return subprocess.run(
        [sys.executable, "-m", "forcelink.cli", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def verify_json(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """``forcelink verify --org local --json``: exit status and the document."""
    done = forcelink(config, "verify", "--org", "local", "--json", *args)
    try:
        document = json.loads(done.stdout)
    except ValueError as error:
        raise AssertionError(
            f"verify printed no JSON:\n{done.stdout}\n{done.stderr}"
        ) from error
    return done.returncode, document


def objects(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["object"]: o for o in document["objects"]}
