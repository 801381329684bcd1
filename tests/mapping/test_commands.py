"""``forcelink mappings validate|apply|diff`` and validation against a live org."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from forcelink import cli
from forcelink.mapping import apply, check_mappings, load_mappings, org_describe
from tests.support.local_org import LocalOrg, local_org, org

__all__ = ["local_org", "org"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = str(ROOT / "mappings")


def test_validate__examples_are_fine_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(
        ["-c", str(_config(tmp_path)), "mappings", "validate", "--offline", EXAMPLES]
    )

    assert code == 0
    assert "4 mapping(s) ok" in capsys.readouterr().err


def test_validate__prints_one_line_per_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("org: local\nobject: Account\nfields:\n  Nmae: name\n  Fax: fax\n")

    code = cli.main(
        ["-c", str(_config(tmp_path)), "mappings", "validate", "--offline", str(bad)]
    )

    assert code == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}:4: unknown field 'Nmae' on Account (did you mean 'Name'?)",
        f"{bad}:5: unknown field 'Fax' on Account",
    ]


def test_apply_then_diff_through_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fresh_database: str
) -> None:
    base = ["-c", str(_config(tmp_path)), "mappings"]
    url = ["--database-url", fresh_database, "--offline", EXAMPLES]

    assert cli.main([*base, "diff", *url]) == 0
    planned = capsys.readouterr().out
    assert cli.main([*base, "apply", *url]) == 0
    applied = capsys.readouterr().out
    assert cli.main([*base, "diff", *url]) == 0
    after = capsys.readouterr().out

    assert planned == applied
    assert 'CREATE TABLE "salesforce"."site_photo__c"' in applied
    assert after == ""


def test_validate__reports_columns_apply_would_not_change(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fresh_database: str
) -> None:
    file = tmp_path / "account.yaml"
    file.write_text("org: local\nobject: Account\nfields:\n  Name: name\n")
    apply(fresh_database, load_mappings([file]))
    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO salesforce.account (name) VALUES ('A long name')")
    file.write_text(
        "org: local\nobject: Account\nfields:\n  Name: {type: varchar(4)}\n"
    )
    base = ["-c", str(_config(tmp_path)), "mappings", "validate", "--offline"]

    code = cli.main([*base, "--database-url", fresh_database, str(file)])

    assert code == 1
    assert capsys.readouterr().out.startswith(
        f"{file}:4: salesforce.account.name stays character varying(255)"
    )


def test_the_examples_validate_against_the_live_org_describe(org: LocalOrg) -> None:
    describe = org_describe(org.salesforce())

    mappings, errors = check_mappings([EXAMPLES], describe)

    assert errors == []
    assert len(mappings) == 4
    offline = {m.object: m.definition() for m in load_mappings([EXAMPLES])}
    assert {m.object: m.definition() for m in mappings} == offline


def test_unknown_names_against_the_live_org_get_suggestions(
    org: LocalOrg, tmp_path: Path
) -> None:
    file = tmp_path / "typos.yaml"
    file.write_text("org: local\nobject: Acount\nfields: {Name: name}\n")

    _, errors = check_mappings([file], org_describe(org.salesforce()))

    assert [str(e) for e in errors] == [
        f"{file}:2: unknown object 'Acount' in org 'local' (did you mean 'Account'?)"
    ]


def _config(tmp_path: Path) -> Path:
    """A forcelink.yaml with no orgs, so nothing is contacted but the database."""
    file = tmp_path / "forcelink.yaml"
    file.write_text("mappings: []\n")
    return file
