"""Every validation error names the file and line, and says what to do."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from forcelink.mapping import MappingErrors, check_mappings, load_mappings
from forcelink.mapping.describe import schema_describe

ACCOUNT = """\
org: local
object: Account
mode: read_write
upsert_key: External_Id__c
fields:
  External_Id__c: external_id__c
  Name: name
"""

# (case, file text, line, words the message must contain)
CASES = [
    (
        "unknown object",
        "org: local\nobject: Acount\nfields:\n  Name: name\n",
        2,
        "unknown object 'Acount' in org 'local' (did you mean 'Account'?)",
    ),
    (
        "unknown field with suggestion",
        ACCOUNT + "  Webiste: website\n",
        8,
        "unknown field 'Webiste' on Account (did you mean 'Website'?)",
    ),
    (
        "missing upsert key",
        "org: local\nobject: Account\nmode: read_write\nfields:\n  Name: name\n",
        3,
        "read_write needs upsert_key",
    ),
    (
        "upsert key not mapped",
        "org: local\nobject: Account\nmode: read_write\nupsert_key: External_Id__c\n"
        "fields:\n  Name: name\n",
        4,
        "upsert_key External_Id__c must also be mapped under fields:",
    ),
    (
        "upsert key not an external id",
        ACCOUNT.replace("upsert_key: External_Id__c", "upsert_key: Name"),
        4,
        "upsert_key Name is not an external id field",
    ),
    (
        "duplicate column",
        ACCOUNT + "  AccountNumber: name\n",
        8,
        "duplicate column 'name': it is already used by Name",
    ),
    (
        "column reserved for forcelink",
        ACCOUNT + "  Phone: _sync_state\n",
        8,
        "duplicate column '_sync_state': it is reserved for forcelink",
    ),
    (
        "column not lower-case",
        ACCOUNT + "  Phone: PhoneNumber\n",
        8,
        "column 'PhoneNumber' for Phone: use lower-case",
    ),
    (
        "bad SOQL filter syntax",
        ACCOUNT + "soql_filter: \"Industry = = 'Energy'\"\n",
        8,
        "bad soql_filter: unexpected token: '=' at column 12",
    ),
    (
        "SOQL filter names an unknown field",
        ACCOUNT + "soql_filter: \"Industy = 'Energy'\"\n",
        8,
        "soql_filter: unknown field 'Industy' on Account (did you mean 'Industry'?)",
    ),
    (
        "SOQL filter with WHERE",
        ACCOUNT + "soql_filter: \"WHERE Industry = 'Energy'\"\n",
        8,
        "soql_filter is the condition only: leave out the word WHERE",
    ),
    (
        "type override that loses data",
        ACCOUNT + "  AnnualRevenue:\n    column: revenue\n    type: integer\n",
        10,
        "AnnualRevenue: type integer cannot hold a currency field without loss "
        "(use numeric, text)",
    ),
    (
        "unknown type override",
        ACCOUNT + "  AnnualRevenue: {type: 'numric(18,2)'}\n",
        8,
        "AnnualRevenue: unknown column type 'numric(18,2)' (did you mean 'numeric'?)",
    ),
    (
        "timestamp without time zone",
        ACCOUNT + "  Last_Visit__c: {type: timestamp}\n",
        8,
        "Last_Visit__c: column type 'timestamp' drops the time zone: use timestamptz",
    ),
    (
        "YAML syntax error",
        ACCOUNT + "  Website: [website\n  Phone: phone\n",
        9,
        "YAML syntax error: expected ',' or ']'",
    ),
    (
        "unknown key with suggestion",
        ACCOUNT + "conflict_polcy: salesforce_wins\n",
        8,
        "unknown key 'conflict_polcy' (did you mean 'conflict_policy'?)",
    ),
    (
        "bad mode",
        ACCOUNT.replace("mode: read_write", "mode: readwrite"),
        3,
        "mode must be one of read_only, read_write, write_only (got 'readwrite') "
        "(did you mean 'read_write'?)",
    ),
    (
        "bad conflict policy",
        ACCOUNT + "conflict_policy: newest\n",
        8,
        "conflict_policy must be one of salesforce_wins",
    ),
    (
        "unknown transform",
        ACCOUNT + "  Website: {transform: trimm}\n",
        8,
        "unknown transform 'trimm' (known: trim, lower, upper, empty_to_null) "
        "(did you mean 'trim'?)",
    ),
    (
        "transform on a number",
        ACCOUNT + "  AnnualRevenue: {transform: trim}\n",
        8,
        "transform trim applies to text fields only",
    ),
    (
        "parent key that is not an external id",
        "org: local\nobject: Contact\nfields:\n  LastName: lastname\n"
        "  AccountId:\n    parent_key: Name\n",
        6,
        "parent_key Name is not an external id of Account",
    ),
    (
        "field mapped twice",
        ACCOUNT + "  name: name2\n",
        8,
        "field Name is mapped twice",
    ),
    (
        "system field renamed",
        ACCOUNT + "  Id: salesforce_id\n",
        8,
        "Id is always mapped to column sfid",
    ),
    (
        "missing object",
        "org: local\nfields:\n  Name: name\n",
        1,
        "missing required key 'object'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_validation__reports_file_line_and_message(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    file = tmp_path / "account.yaml"
    file.write_text(text)

    _, errors = check_mappings([file])

    rendered = [str(e) for e in errors]
    assert any(r.startswith(f"{file}:{line}: {message}") for r in rendered), rendered


SCHEMA = """\
objects:
  Invoice__c:
    keyPrefix: a09
    fields:
      Number__c: {type: string, length: 20, externalId: true}
      Total__c: {type: currency, precision: 18, scale: 2, updateable: false}
"""


@pytest.mark.parametrize(
    ("extra", "errors"),
    [
        ("", ["not updateable: it cannot be written in mode read_write"]),
        ("    direction: to_postgres\n", []),
    ],
)
def test_validation__non_updateable_field_in_write_mode(
    tmp_path: Path, extra: str, errors: list[str]
) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(SCHEMA)
    file = tmp_path / "invoice.yaml"
    file.write_text(
        "org: billing\nobject: Invoice__c\nmode: read_write\nupsert_key: Number__c\n"
        "fields:\n  Number__c:\n  Total__c:\n" + extra
    )

    _, found = check_mappings([file], {"billing": schema_describe(schema)})

    assert [str(e) for e in found] == [
        f"{file}:7: Total__c is {e}" for e in errors
    ] or (
        errors
        and len(found) == 1
        and str(found[0]).startswith(f"{file}:7: Total__c is {errors[0]}")
    )


def test_load_mappings__raises_every_error_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ACCOUNT + "  Webiste: website\n")
    (tmp_path / "b.yaml").write_text("org: local\nobject: Contakt\nfields: {}\n")

    with pytest.raises(MappingErrors) as raised:
        load_mappings([tmp_path])

    lines = str(raised.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'a.yaml'}:8: ")
    assert lines[1].startswith(f"{tmp_path / 'b.yaml'}:2: ")


def test_load_mappings__same_object_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ACCOUNT)
    (tmp_path / "b.yaml").write_text(
        ACCOUNT.replace("object: Account", "object: account")
    )

    _, errors = check_mappings([tmp_path])

    assert [str(e) for e in errors] == [
        f"{tmp_path / 'b.yaml'}:1: local/Account is already mapped at "
        f"{tmp_path / 'a.yaml'}:1"
    ]


def test_the_example_mappings_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]

    mappings = load_mappings([root / "mappings"])

    objects = {m.object: m for m in mappings}
    assert set(objects) == {"Account", "Contact", "WorkOrder", "Site_Photo__c"}
    assert {m.org for m in mappings} == {"local"}
    assert objects["Account"].table == "salesforce.account"
    assert objects["Site_Photo__c"].upsert_key == "Image_Id__c"


def test_several_mappings_in_one_file_share_the_org(tmp_path: Path) -> None:
    file = tmp_path / "all.yaml"
    file.write_text(
        textwrap.dedent(
            """\
            org: local
            mappings:
              - object: Account
                fields: {Name: name}
              - object: Contact
                table: crm.people
                fields: {LastName: last_name}
            """
        )
    )

    mappings = load_mappings([file])

    assert [(m.org, m.table, m.line) for m in mappings] == [
        ("local", "salesforce.account", 3),
        ("local", "crm.people", 5),
    ]


def test_the_documented_examples_are_valid(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "mappings.md").read_text()
    blocks = [b.split("```", 1)[0] for b in docs.split("```yaml\n")[1:]]
    files = []
    for index, block in enumerate(blocks):
        files.append(tmp_path / f"doc{index}.yaml")
        files[-1].write_text(block)

    first = load_mappings([files[0]])[0]
    second = load_mappings([files[1]])

    assert len(blocks) == 2
    assert first.table == "salesforce.contact"
    assert "account__r__external_id__c" in first.columns
    assert first.column("email") is not None
    assert first.column("title") is not None
    assert [m.object for m in second] == ["Account", "Contact"]
