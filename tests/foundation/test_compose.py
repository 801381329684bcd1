"""docker-compose.yml cannot run here (no Docker engine): check it statically."""

from __future__ import annotations

from pathlib import Path

import yaml

from forcelink import config

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_has_the_production_services() -> None:
    services = _compose()["services"]

    assert isinstance(services, dict)
    assert {"postgres", "kafka", "minio", "forcelink", "prometheus"} <= set(services)
    assert "wal_level=logical" in services["postgres"]["command"]
    assert (
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    )


def test_every_forcelink_variable_is_a_config_key_that_applies() -> None:
    services = _compose()["services"]
    assert isinstance(services, dict)
    env = {
        k: str(v)
        for k, v in services["forcelink"]["environment"].items()
        if k.startswith("FORCELINK_")
    }

    loaded = config.load(ROOT / "tests/foundation/empty.yaml", environ=env)

    assert loaded.database.url.endswith("@postgres:5432/forcelink")
    assert loaded.eventlog.backend == "kafka"
    assert loaded.eventlog.kafka.bootstrap_servers == "kafka:9092"
    assert loaded.eventlog.kafka.partitions == 12
    assert loaded.images.backend == "s3"
    assert loaded.logging.json is True
    unknown = [name for name in env if not _is_config_variable(name)]
    assert unknown == []


def _is_config_variable(name: str) -> bool:
    """True when FORCELINK_<NAME> names a scalar key of forcelink.yaml."""
    import dataclasses

    def walk(obj: object, prefix: str) -> set[str]:
        names: set[str] = set()
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            dotted = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                names |= walk(value, f"{dotted}.")
            elif f.name != "source":
                names.add("FORCELINK_" + dotted.upper().replace(".", "_"))
        return names

    return name in walk(config.Config(), "")


def test_files_the_compose_file_mounts_exist() -> None:
    for path in ("Dockerfile", "deploy/prometheus/prometheus.yml"):
        assert (ROOT / path).is_file(), path


def test_readme_configuration_table_matches_the_code() -> None:
    from forcelink.commands.config import reference_table

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = readme.index("<!-- config-reference:end -->")

    assert readme[start:end].strip() == reference_table().strip(), (
        "README's table is stale: regenerate it with `forcelink config reference`"
    )


def test_readme_shows_the_two_commands_and_a_true_layout() -> None:
    readme = (ROOT / "README.md").read_text()

    assert "make run" in readme and "make test" in readme
    for folder in (
        "connector/",
        "processors/",
        "api/",
        "emulator/",
        "mappings/",
        "migrations/",
        "tests/",
        "bench/",
        "deploy/",
        "scripts/",
        "forcelink/",
    ):
        assert f"`{folder}`" in readme, folder
        assert (ROOT / folder).is_dir(), folder
