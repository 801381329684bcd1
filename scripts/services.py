#!/usr/bin/env python3
"""Start and stop forcelink's backing services on this machine.

    python scripts/services.py up [--only postgres,kafka,s3]
    python scripts/services.py env      # shell exports for the running set
    python scripts/services.py down

Services, all on loopback, all state under one folder (default ``.services``):

* PostgreSQL 15 from Debian's packages: a private cluster, ``wal_level=logical``,
  trust auth and replication allowed on loopback. initdb refuses root, so as
  root the cluster runs as the ``postgres`` user.
* Apache Kafka (KRaft, one combined broker/controller) from the Maven Central
  jars that ``scripts/install.sh`` caches in ``.cache/kafka/libs``.
* moto's S3-compatible server, reached only through boto3's ``endpoint_url``.

Ports come from ``--port-base`` (default 54320): Postgres = base, Kafka =
base+1, Kafka controller = base+2, S3 = base+3. Several copies can run side by
side with different ``--dir`` and ``--port-base``. Standard library only, so
it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
KAFKA_LIBS = ROOT / ".cache" / "kafka" / "libs"
ALL = ("postgres", "kafka", "s3")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "env", "restart"])
    parser.add_argument(
        "--dir", default=os.environ.get("FORCELINK_SERVICES_DIR", ".services")
    )
    parser.add_argument(
        "--port-base",
        type=int,
        default=int(os.environ.get("FORCELINK_PORT_BASE", "54320")),
    )
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated subset")
    args = parser.parse_args()

    state = Path(args.dir).resolve()
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(ALL)
    if unknown:
        parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    services = Services(state, args.port_base)

    if args.action == "up":
        for name in wanted:
            getattr(services, f"{name}_up")()
        print(services.exports(wanted))
    elif args.action == "down":
        for name in reversed(wanted):
            getattr(services, f"{name}_down")()
    elif args.action == "restart":
        for name in wanted:
            getattr(services, f"{name}_down")()
            getattr(services, f"{name}_up")()
    else:
        print(services.exports(wanted))
    return 0


def log(message: str) -> None:
    print(f"services: {message}", file=sys.stderr, flush=True)


def wait_port(port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(
        f"services: {what} did not listen on port {port} in {timeout:.0f}s"
    )


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Services:
    def __init__(self, state: Path, base: int) -> None:
        self.state = state
        self.pg_port = base
        self.kafka_port = base + 1
        self.controller_port = base + 2
        self.s3_port = base + 3

    def exports(self, wanted: list[str]) -> str:
        lines = []
        if "postgres" in wanted:
            url = f"postgresql://forcelink@localhost:{self.pg_port}/forcelink"
            lines.append(f"export FORCELINK_DATABASE_URL={url}")
        if "kafka" in wanted:
            lines.append(
                "export FORCELINK_EVENTLOG_KAFKA_BOOTSTRAP_SERVERS="
                f"localhost:{self.kafka_port}"
            )
        if "s3" in wanted:
            lines.append(
                f"export FORCELINK_IMAGES_S3_ENDPOINT_URL=http://localhost:{self.s3_port}"
            )
        return "\n".join(lines)

    # -- PostgreSQL -----------------------------------------------------------

    def _as_pg_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def postgres_up(self) -> None:
        data = self.state / "postgres"
        if port_open(self.pg_port):
            log(f"postgres already listening on {self.pg_port}")
            return
        if not (data / "PG_VERSION").exists():
            self._initdb(data)
        logfile = data / "server.log"
        subprocess.run(
            self._as_pg_user(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(logfile),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.pg_port, "postgres")
        self._create_role_and_db()
        log(f"postgres up on {self.pg_port} (data {data})")

    def _initdb(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
            shutil.chown(self.state, "postgres", "postgres")
        data.chmod(0o700)
        subprocess.run(
            self._as_pg_user(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        settings = {
            "listen_addresses": "'localhost'",
            "port": str(self.pg_port),
            "unix_socket_directories": f"'{data}'",
            "wal_level": "logical",
            "max_wal_senders": "20",
            "max_replication_slots": "20",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "timezone": "'UTC'",
            "logical_decoding_work_mem": "64MB",
        }
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# forcelink development cluster\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host all all ::1/128 trust\n"
            "local replication all trust\n"
            "host replication all 127.0.0.1/32 trust\n"
            "host replication all ::1/128 trust\n",
            encoding="utf-8",
        )
        if os.geteuid() == 0:
            for path in (data / "postgresql.conf", data / "pg_hba.conf"):
                shutil.chown(path, "postgres", "postgres")

    def _psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            [
                "psql",
                "-h",
                "localhost",
                "-p",
                str(self.pg_port),
                "-U",
                "postgres",
                "-d",
                db,
                "-tAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def _create_role_and_db(self) -> None:
        if not self._psql("SELECT 1 FROM pg_roles WHERE rolname = 'forcelink'"):
            self._psql("CREATE ROLE forcelink LOGIN SUPERUSER REPLICATION")
        if not self._psql("SELECT 1 FROM pg_database WHERE datname = 'forcelink'"):
            self._psql("CREATE DATABASE forcelink OWNER forcelink")

    def postgres_down(self) -> None:
        data = self.state / "postgres"
        if not (data / "postmaster.pid").exists():
            return
        subprocess.run(
            self._as_pg_user(
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        log("postgres stopped")

    # -- Kafka ----------------------------------------------------------------

    def _java(self, main_class: str, *args: str) -> list[str]:
        if not KAFKA_LIBS.is_dir():
            raise SystemExit(
                f"services: no Kafka jars in {KAFKA_LIBS}; run scripts/install.sh first"
            )
        return [
            "java",
            "-Xms256m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={ROOT / 'deploy/kafka/log4j2.yaml'}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            main_class,
            *args,
        ]

    def kafka_up(self) -> None:
        home = self.state / "kafka"
        if port_open(self.kafka_port):
            log(f"kafka already listening on {self.kafka_port}")
            return
        home.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        props.write_text(self._kafka_properties(home), encoding="utf-8")
        if not (home / "data" / "meta.properties").exists():
            cluster = uuid.uuid4().hex[:22]
            subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster,
                    "-c",
                    str(props),
                    "--standalone",
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        with open(home / "broker.log", "ab") as out:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(props)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (home / "broker.pid").write_text(str(proc.pid))
        wait_port(self.kafka_port, "kafka", timeout=90)
        log(f"kafka up on {self.kafka_port} (pid {proc.pid})")

    def _kafka_properties(self, home: Path) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=localhost:{self.controller_port}",
                f"listeners=PLAINTEXT://localhost:{self.kafka_port},"
                f"CONTROLLER://localhost:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://localhost:{self.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={home / 'data'}",
                "num.partitions=6",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "",
            ]
        )

    def kafka_down(self) -> None:
        pidfile = self.state / "kafka" / "broker.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text())
        _terminate(pid, "kafka", grace=30)
        pidfile.unlink()

    # -- S3 (moto) ------------------------------------------------------------

    def s3_up(self) -> None:
        home = self.state / "s3"
        if port_open(self.s3_port):
            log(f"s3 already listening on {self.s3_port}")
            return
        home.mkdir(parents=True, exist_ok=True)
        with open(home / "s3.log", "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(self.s3_port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (home / "s3.pid").write_text(str(proc.pid))
        wait_port(self.s3_port, "s3")
        log(f"s3 (moto) up on {self.s3_port}")

    def s3_down(self) -> None:
        pidfile = self.state / "s3" / "s3.pid"
        if not pidfile.exists():
            return
        _terminate(int(pidfile.read_text()), "s3", grace=10)
        pidfile.unlink()


def _terminate(pid: int, name: str, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log(f"{name} stopped")
            return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    log(f"{name} killed after {grace:.0f}s")


if __name__ == "__main__":
    raise SystemExit(main())
