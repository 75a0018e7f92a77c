"""Bulk import of clients: mapping, validation, dedupe, abort, idempotency, resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from crmkit import ConfigError, Segment, ValidationError, hookimpl
from crmkit.core.validation import fast_check, schema_problems
from crmkit.transfer.importer import Mapping, import_file, parse_amount, parse_number

SCHEMA = {
    "type": "object",
    "properties": {
        "turnover": {"type": "number", "minimum": 0},
        "reps": {"type": "integer", "minimum": 0},
        "regions": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "bonded": {"type": "boolean"},
    },
    "required": ["turnover"],
    "additionalProperties": False,
}


class Distributors:
    @hookimpl
    def crmkit_segments(self):
        return [Segment("distributor", "Distributor", SCHEMA)]


@pytest.fixture
def crmkit_plugins():
    return [Distributors()]


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def clients(crm):
    with crm.session(readonly=True) as s:
        return {c.name: c for c in s.clients.iter()}


def test_csv_without_mapping(crm, tmp_path):
    source = write(
        tmp_path / "c.csv",
        (
            "name,email,phone,segment,param.turnover,param.reps,param.regions,requisite.tax_id,"
            "contact.name,contact.position,source,external_id\n"
            'Acme,Buy@ACME.example,+7 900 000-00-01,distributor,"1 500 000,50",12,'
            "Samara; Kazan,7701,Ivan,CEO,website,A-1\n"
            "Beta,beta@x.example,,,,,,,,,,\n"
        ),
    )
    result = import_file(crm, "clients", source)
    assert (result.read, result.inserted, result.rejected) == (2, 2, 0)
    acme = clients(crm)["Acme"]
    assert acme.email == "Buy@acme.example" and acme.external_id == "A-1"
    assert acme.params == {"turnover": 1500000.5, "reps": 12, "regions": ["Samara", "Kazan"]}
    assert acme.requisites == {"tax_id": "7701"} and acme.stage == "lead"
    with crm.session() as s:
        [ivan] = s.contacts.list(acme.id)
        assert (ivan.name, ivan.position) == ("Ivan", "CEO")
        assert s.history.stage_at("client", acme.id, acme.created_at) == "lead"


def test_jsonl_with_nested_params_and_contact(crm, tmp_path):
    lines = [
        {
            "name": "Acme",
            "segment": "distributor",
            "params": {"turnover": 10, "bonded": True},
            "contact": {"name": "Ivan", "email": "ivan@acme.example"},
        },
        {"name": "Beta", "email": "b@x.example", "created_at": "2024-05-01T10:00:00+03:00"},
        ["not", "an", "object"],
    ]
    source = write(tmp_path / "c.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    result = import_file(crm, "clients", source)
    assert (result.inserted, result.rejected) == (2, 1)
    assert result.errors[0].line == 3 and "not a JSON object" in result.errors[0].reason
    found = clients(crm)
    assert found["Acme"].params == {"turnover": 10, "bonded": True}
    assert found["Beta"].created_at.isoformat() == "2024-05-01T07:00:00+00:00"


def test_mapping_translates_columns_values_dates_and_numbers(crm, tmp_path):
    with crm.session() as s:
        s.users.add("anna", role="manager")
    mapping = write(
        tmp_path / "map.toml",
        """
        [columns]
        "Company" = "name"
        "Manager" = "owner"
        "Turnover" = "param.turnover"
        "Since" = "created_at"
        [values.owner]
        "Anna Smirnova" = "anna"
        [dates]
        format = "%d.%m.%Y"
        [numbers]
        decimal = ","
        [defaults]
        segment = "distributor"
        source = "import"
    """.replace("\n        ", "\n"),
    )
    source = write(
        tmp_path / "c.csv", "Company;Manager;Turnover;Since\nAcme;Anna Smirnova;1,250;31.12.2023\n"
    )
    result = import_file(crm, "clients", source, mapping=mapping)
    assert result.inserted == 1, result.errors
    acme = clients(crm)["Acme"]
    assert acme.owner == "anna" and acme.segment == "distributor" and acme.source == "import"
    assert acme.params == {"turnover": 1.25}
    assert acme.created_at.date().isoformat() == "2023-12-31"


def test_bad_rows_are_reported_with_line_column_and_reason(crm, tmp_path):
    source = write(
        tmp_path / "c.csv",
        (
            "name,email,segment,param.turnover,owner,source\n"
            "Good,good@x.example,distributor,5,,\n"
            ",noname@x.example,,,,\n"
            "Bad email,not-an-email,,,,\n"
            "Negative,,distributor,-5,,\n"
            "Ghost,,,,ghost,\n"
            "TV,,,,,tv\n"
            "Unknown param,,distributor,x,,\n"
            "Good 2,good2@x.example,,,,\n"
            "Short row\n"
        ),
    )
    errors_to = tmp_path / "errors.csv"
    result = import_file(crm, "clients", source, errors_to=errors_to)
    assert (result.read, result.inserted, result.rejected) == (9, 2, 7)
    with errors_to.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_line = {int(r["line"]): r for r in rows}
    assert by_line[3]["column"] == "name" and "is required" in by_line[3]["reason"]
    assert by_line[4]["column"] == "email"
    assert by_line[5]["column"] == "param.turnover" and "minimum" in by_line[5]["reason"]
    assert by_line[6]["reason"] == "owner: no user 'ghost'"
    assert by_line[7]["column"] == "source"
    assert by_line[8]["reason"] == "params.turnover: 'x' is not a number"
    assert "has 1 values for 6 columns" in by_line[10]["reason"]
    assert json.loads(by_line[4]["row"])["email"] == "not-an-email"
    assert set(clients(crm)) == {"Good", "Good 2"}


def test_abort_writes_nothing_and_reports_every_bad_row(crm, tmp_path):
    rows = "".join(f"C{i},c{i}@x.example\n" for i in range(30))
    source = write(
        tmp_path / "c.csv",
        "name,email\n"
        + rows
        + "Bad,bad\n"
        + rows.replace("C", "D").replace("@x", "@y")
        + "Worse,worse\n",
    )
    result = import_file(crm, "clients", source, on_error="abort", batch_size=7)
    assert result.aborted and result.inserted == 0
    assert [e.line for e in result.errors] == [32, 63]
    assert clients(crm) == {}


def test_duplicates_within_the_file_and_against_the_database(crm, tmp_path):
    with crm.session() as s:
        s.clients.create("Stored", email="stored@x.example", phone="+7 900 000 00 00")
    source = write(
        tmp_path / "c.csv",
        (
            "name,email,external_id,phone\n"
            "First,dup@x.example,,\n"
            "Second,DUP@x.example,,\n"
            "Ext A,,E-1,\n"
            "Ext B,,E-1,\n"
            "Stored,STORED@x.example,,\n"
        ),
    )
    result = import_file(crm, "clients", source, batch_size=100)
    reasons = {e.line: e.reason for e in result.errors}
    assert reasons == {
        3: "duplicate of line 2 in this file",
        5: "duplicate of line 4 in this file",
    }
    assert (result.inserted, result.unchanged, result.rejected) == (2, 1, 2)
    renamed = write(tmp_path / "r.csv", "name,email,phone\nStored renamed,stored@x.example,\n")
    refused = import_file(crm, "clients", renamed)
    assert refused.errors[0].reason == (
        "client #1 'Stored' already exists and differs in name; use --update-existing to merge"
    )
    merged = import_file(crm, "clients", renamed, update_existing=True)
    assert merged.updated == 1
    stored = clients(crm)["Stored renamed"]  # the empty phone column kept the stored phone
    assert stored.phone == "+7 900 000 00 00" and stored.email == "stored@x.example"
    assert len(clients(crm)) == 3


def test_importing_twice_changes_nothing(crm, tmp_path):
    source = write(
        tmp_path / "c.csv",
        "name,email,segment,param.turnover\n"
        + "".join(f"C{i},c{i}@x.example,distributor,{i}\n" for i in range(50)),
    )
    first = import_file(crm, "clients", source, batch_size=8)
    with crm.session(readonly=True) as s:
        events = len(s.connection.exec_driver_sql("SELECT id FROM events").all())
    second = import_file(crm, "clients", source, batch_size=8)
    assert (first.inserted, second.inserted, second.unchanged, second.rejected) == (50, 0, 50, 0)
    with crm.session(readonly=True) as s:
        assert s.clients.count() == 50
        assert len(s.connection.exec_driver_sql("SELECT id FROM events").all()) == events


def test_an_import_killed_midway_is_completed_by_rerunning_it(crm, tmp_path):
    total = 20_000
    source = write(
        tmp_path / "c.csv",
        "name,email\n" + "".join(f"Client {i},c{i}@x.example\n" for i in range(total)),
    )
    env = {**os.environ, "CRMKIT_LOAD_PLUGINS": ""}
    command = [
        sys.executable,
        "-m",
        "crmkit",
        "-C",
        str(crm.config.root),
        "import",
        "clients",
        str(source),
        "--batch-size",
        "200",
        "--no-progress",
    ]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline and child.poll() is None:
        with crm.session(readonly=True) as s:
            count = s.clients.count()
        if count >= 1000:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with crm.session(readonly=True) as s:
        stored = s.clients.count()
    assert 0 < stored < total, "the import should have been killed midway"
    assert stored % 200 == 0  # only whole batches were committed
    rerun = subprocess.run(
        [*command, "--format", "json"], env=env, capture_output=True, text=True, check=True
    )
    summary = json.loads(rerun.stdout)
    assert (summary["inserted"], summary["unchanged"]) == (total - stored, stored)
    with crm.session(readonly=True) as s:
        assert s.clients.count() == total


@pytest.mark.parametrize(
    ("content", "kwargs", "field", "message"),
    [
        (b"", {}, "file", "is empty"),
        (b"name,email\n", {}, "file", "has a header but no rows"),
        (b"email\nx@y.example\n", {}, "name", "no column gives the client's name"),
        ("name\nМосква\n".encode("cp1251"), {}, "encoding", "is not utf-8"),
        (b"name\nA\n", {"file_format": "xml"}, "format", "is not csv or jsonl"),
        (b"name\nA\n", {"encoding": "klingon"}, "encoding", "unknown encoding"),
    ],
)
def test_files_that_cannot_be_imported(crm, tmp_path, content, kwargs, field, message):
    source = tmp_path / "c.csv"
    source.write_bytes(content)
    with pytest.raises(ValidationError) as err:
        import_file(crm, "clients", source, **kwargs)
    assert err.value.field == field and message in err.value.message
    assert clients(crm) == {}


def test_other_encodings_with_the_option(crm, tmp_path):
    source = tmp_path / "c.csv"
    source.write_bytes("name\nМосква Трейд\n".encode("cp1251"))
    assert import_file(crm, "clients", source, encoding="cp1251").inserted == 1
    assert "Москва Трейд" in clients(crm)


def test_mapping_errors(crm, tmp_path):
    source = write(tmp_path / "c.csv", "Company\nAcme\n")
    with pytest.raises(ConfigError, match="maps to unknown field 'nmae'"):
        import_file(crm, "clients", source, mapping=Mapping(columns={"Company": "nmae"}))
    with pytest.raises(ConfigError, match=r"unknown field 'stages'.*, stage.NAME\)"):
        import_file(crm, "deals", source, mapping=Mapping(columns={"Company": "stages"}))
    bad = write(tmp_path / "map.toml", "[numbers]\ndecimal = ';'\n")
    with pytest.raises(ConfigError) as err:
        import_file(crm, "clients", source, mapping=bad)
    assert err.value.field == "mapping.numbers.decimal"


def test_dates_in_the_wrong_format(crm, tmp_path):
    source = write(tmp_path / "c.csv", "name,created_at\nA,31.12.2023\nB,2023-12-31\n")
    result = import_file(crm, "clients", source)
    assert result.inserted == 1
    assert result.errors[0].column == "created_at"
    assert "is not a date in the format ISO 8601" in result.errors[0].reason


@pytest.mark.parametrize(
    ("raw", "decimal", "expected"),
    [
        ("1234", None, 1234),
        ("12.5", None, 12.5),
        ("1 234,50", None, 1234.5),
        ("1,234.50", None, 1234.5),
        ("1.234,50", None, 1234.5),
        ("1\u00a0234", None, 1234),
        ("1'234'567", None, 1234567),
        ("12,5", None, 12.5),
        ("1,234", ",", 1.234),
        ("1,234", ".", 1234),
        ("1.234.567", None, 1234567),
        ("-3", None, -3),
    ],
)
def test_numbers_as_spreadsheets_write_them(raw, decimal, expected):
    assert parse_number(raw, decimal=decimal) == expected


@pytest.mark.parametrize("raw", ["1,234", "abc", "nan", "inf", "1,2,3.4.5", ""])
def test_numbers_that_are_refused(raw):
    with pytest.raises(ValueError):
        parse_number(raw)


@pytest.mark.parametrize(
    ("raw", "decimal", "expected"),
    [
        ("1500", None, "1500.00"),
        ("12.5", None, "12.50"),
        ("1 234,56", None, "1234.56"),
        ("1,234.56", None, "1234.56"),
        ("1.234.567,8", None, "1234567.80"),
        ("1,234", ".", "1234.00"),
        ("99999999999999.99", None, "99999999999999.99"),  # exact: never through a float
        (99.9, None, "99.90"),
        (7, None, "7.00"),
    ],
)
def test_amounts_as_spreadsheets_write_them(raw, decimal, expected):
    assert str(parse_amount(raw, decimal=decimal)) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("1.005", "more than two decimals"),
        ("-5", "negative"),
        ("1,234", "ambiguous"),
        ("1e20", "too large"),
        ("lots", "not an amount"),
        ("nan", "finite"),
        (True, "boolean"),
    ],
)
def test_amounts_that_are_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_amount(raw)


def test_a_mapping_may_name_columns_the_file_does_not_have(crm, tmp_path):
    mapping = Mapping(columns={"Company": "name", "Mail": "email"})
    source = write(tmp_path / "c.csv", "Company\nAcme\n")
    assert import_file(crm, "clients", source, mapping=mapping).inserted == 1


def test_integers_must_be_whole():
    assert parse_number("3.0", integer=True) == 3
    with pytest.raises(ValueError, match="not a whole number"):
        parse_number("3.5", integer=True)


@pytest.mark.parametrize(
    "instance",
    [
        {"turnover": 5},
        {"turnover": -1},
        {"turnover": "5"},
        {"reps": 2.5},
        {"reps": 3},
        {"regions": ["a", ""]},
        {"regions": ["a"]},
        {"bonded": 1},
        {"bonded": True},
        {"x": 1},
        {},
        [],
        {"turnover": 1e308},
        {"turnover": float("nan")},
    ],
)
def test_the_compiled_validator_agrees_with_jsonschema(instance):
    partial = {k: v for k, v in SCHEMA.items() if k != "required"}
    assert fast_check(partial)(instance) == (not schema_problems(partial, instance))


def test_cli_import(invoke, tmp_path):
    source = write(tmp_path / "c.csv", "name,email\nAcme,a@x.example\nBad,bad\n")
    errors = tmp_path / "errors.csv"
    result = invoke("import", "clients", str(source), "--errors-to", str(errors), json=True)
    assert result.exit_code == 0, result
    assert (result.json["inserted"], result.json["rejected"]) == (1, 1)
    assert result.json["errors"] == [
        {"line": 3, "column": "email", "reason": "email: 'bad' is not a valid email address"}
    ]
    table = invoke("import", "clients", str(source))
    assert table.output.startswith("Imported clients: read 2, inserted 0, updated 0, unchanged 1")
    assert "line 3, column 'email'" in table.stderr
    aborted = invoke("import", "clients", str(source), "--on-error", "abort")
    assert aborted.exit_code == 2 and aborted.output.startswith("Aborted: nothing was written.")
    empty = write(tmp_path / "e.csv", "")
    failed = invoke("import", "clients", str(empty))
    assert failed.exit_code == 2 and failed.stderr == "Error: file: e.csv is empty\n"
    missing = invoke("import", "clients", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "cannot open" in missing.stderr


def test_an_export_imports_back(crm, crm_factory, tmp_path):
    """`crmkit export clients` then `crmkit import clients`: the same cards, requisites too."""
    from crmkit.transfer.export import export

    with crm.session() as s:
        s.clients.create(
            "Acme",
            email="buy@acme.example",
            segment="distributor",
            params={"turnover": 12.5, "regions": ["Samara"]},
            requisites={"tax_id": "7701"},
            source="website",
            external_id="A-1",
        )
        s.clients.create("Ivan", kind="person", phone="+7 900 000 00 00")
        export(s, "clients", tmp_path / "clients.csv")
    other = crm_factory("other", plugins=[Distributors()])
    result = import_file(other, "clients", tmp_path / "clients.csv")
    assert (result.inserted, result.rejected) == (2, 0), result.errors

    def cards(deployment):
        fields = (
            "name",
            "kind",
            "email",
            "phone",
            "segment",
            "params",
            "requisites",
            "source",
            "external_id",
            "created_at",
            "stage",
        )
        return {n: tuple(getattr(c, f) for f in fields) for n, c in clients(deployment).items()}

    assert cards(other) == cards(crm)
