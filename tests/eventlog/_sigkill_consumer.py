"""A consumer process for the SIGKILL test: take one batch, report it, hang.

    python -m tests.eventlog._sigkill_consumer <backend> <url> <prefix> <topic> <group>

Prints one JSON line per event it received (topic, partition, offset), then
``READY``, then sleeps without committing until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from forcelink.config import Config
from forcelink.eventlog import open_event_log


async def main(backend: str, url: str, prefix: str, topic: str, group: str) -> None:
    config = Config()
    config.eventlog.backend = "kafka" if backend == "kafka" else "embedded"
    config.database.url = url
    config.eventlog.kafka.bootstrap_servers = url
    config.eventlog.kafka.topic_prefix = prefix
    session_timeout = 6.0 if backend == "kafka" else 2.0
    log = open_event_log(config)
    consumer = await log.consumer(group, [topic], session_timeout=session_timeout)
    batch = []
    while not batch:
        batch = await consumer.poll(max_records=50, timeout=5.0)
    for event in batch:
        print(json.dumps([event.topic, event.partition, event.offset]), flush=True)
    print("READY", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
