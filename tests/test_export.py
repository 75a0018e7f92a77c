"""crmkit export: clients, deals and interactions to CSV and JSON Lines, streaming."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from crmkit import Segment, hookimpl
from crmkit.core.errors import NotFound, ValidationError
from crmkit.core.model import to_json
from crmkit.transfer.export import columns, export, param_names, records


class ShopSegment:
    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        return [
            Segment(
                name="shop",
                title="Shop",
                schema={
                    "type": "object",
                    "properties": {
                        "area": {"type": "number", "minimum": 0},
                        "code": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "open": {"type": "boolean"},
                    },
                },
            )
        ]


@pytest.fixture
def crmkit_plugins() -> list[object]:
    return [ShopSegment()]


def fill(crm: Any, clients: int = 12) -> None:
    """Clients with params, requisites and contacts; deals; interactions with respondents."""
    with crm.session() as s:
        s.users.add("anna", role="manager", name="Anna Petrova")
        for i in range(1, clients + 1):
            params: dict[str, Any] = {"area": 10.5 * i, "code": f"Ш-{i}"}
            if i % 3 == 0:
                params["tags"] = ["a,b", 'quote "q"']
            if i % 4 == 0:
                params["open"] = i % 8 == 0
            c = s.clients.create(
                f'Shop "{i}", Ltd',
                email=f"shop{i}@example.com",
                segment="shop" if i % 5 else None,
                params=params if i % 5 else {},
                requisites={"inn": f"77{i:08d}", "city": "Москва\nCentre"},
                owner="anna" if i % 2 else None,
                external_id=f"x-{i}" if i % 2 else None,
            )
            if i % 2:
                contact = s.contacts.add(c.id, f"Contact {i}", email=f"p{i}@example.com")
                deal = s.deals.open(c.id, amount=f"{1000 + i}.25", title=f"Deal {i}")
                s.interactions.log(
                    c.id,
                    "call",
                    topic="first_contact",
                    outcome="interested",
                    direction="outbound",
                    deal_id=deal.id,
                    respondents=[contact.id],
                    note="line one\nline two, with comma",
                )
            s.interactions.log(c.id, "email", topic="first_contact", outcome="sent")


def stored(crm: Any, kind: str) -> list[dict[str, Any]]:
    """What the repositories give, in id order, as JSON."""
    with crm.session(readonly=True) as s:
        repo = getattr(s, kind)
        found = repo.list(limit=None)
    return sorted(to_json(found), key=lambda row: row["id"])


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("kind", ["clients", "deals", "interactions"])
def test_jsonl_round_trip(crm: Any, tmp_path: Path, kind: str) -> None:
    fill(crm)
    target = tmp_path / f"{kind}.jsonl"
    with crm.session(readonly=True) as s:
        count = export(s, kind, target)
    lines = [json.loads(line) for line in target.read_text("utf-8").splitlines()]
    assert lines == stored(crm, kind)
    assert count == len(lines) > 0
    assert list(lines[0]) == columns(kind)


@pytest.mark.parametrize("kind", ["clients", "deals", "interactions"])
def test_csv_round_trip(crm: Any, tmp_path: Path, kind: str) -> None:
    fill(crm)
    target = tmp_path / f"{kind}.csv"
    with crm.session(readonly=True) as s:
        count = export(s, kind, target)
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = stored(crm, kind)
    assert count == len(rows) == len(expected)
    assert list(rows[0]) == columns(kind)
    assert rows == [{k: csv_cell(v) for k, v in row.items()} for row in expected]
    nested = {"clients": ["params", "requisites"], "interactions": ["respondents"]}
    for name in nested.get(kind, []):  # nested values: JSON text in one column
        assert [json.loads(r[name]) for r in rows] == [e[name] for e in expected]


def test_csv_flattens_params_for_spreadsheets(crm: Any, tmp_path: Path) -> None:
    fill(crm)
    target = tmp_path / "clients.csv"
    with crm.session(readonly=True) as s:
        assert param_names(s) == ["area", "code", "tags", "open"]  # the schema's order
        export(s, "clients", target, flatten_params=True)
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-4:] == ["param.area", "param.code", "param.tags", "param.open"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["1"]["param.area"] == "10.5"
    assert by_id["1"]["param.code"] == "Ш-1"  # text as it is, not JSON-quoted
    assert json.loads(by_id["3"]["param.tags"]) == ["a,b", 'quote "q"']
    assert by_id["8"]["param.open"] == "true"
    assert by_id["4"]["param.open"] == "false"
    assert by_id["5"]["param.area"] == ""  # no segment, no params
    assert json.loads(by_id["3"]["params"])["tags"] == ["a,b", 'quote "q"']  # JSON column kept


def test_export_streams_in_batches(crm: Any) -> None:
    """Rows go out while later batches are still unread: bounded memory."""
    with crm.connect() as conn:  # many rows, quickly (the seed is not under test)
        clients = crm.metadata.tables["clients"]
        conn.execute(
            clients.insert(),
            [{"name": f"C{i}", "owner_id": 1, "requisites": {}, "params": {}} for i in range(250)],
        )
    queries: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM clients" in statement:
            queries.append(statement)

    class Probe(io.StringIO):
        at_first_row: int | None = None

        def write(self, text: str) -> int:
            if self.at_first_row is None:
                self.at_first_row = len(queries)
            return super().write(text)

    out = Probe()
    event.listen(crm.engine, "before_cursor_execute", count)
    try:
        with crm.session(readonly=True) as s:
            assert export(s, "clients", out, format="jsonl", batch_size=7) == 250
    finally:
        event.remove(crm.engine, "before_cursor_execute", count)
    assert len(queries) == 250 // 7 + 2  # full batches, the last partial one, the empty end
    assert all("LIMIT" in q for q in queries)
    assert out.at_first_row is not None and out.at_first_row <= 2
    ids = [json.loads(line)["id"] for line in out.getvalue().splitlines()]
    assert ids == sorted(ids) and len(set(ids)) == 250


def test_records_stream_deals_and_interactions_in_id_order(crm: Any) -> None:
    fill(crm, clients=9)
    with crm.session(readonly=True) as s:
        for kind in ("deals", "interactions"):
            got = [to_json(r) for r in records(s, kind, batch_size=2)]
            assert got == stored(crm, kind)


def test_stdout_csv_and_summary_on_stderr(crm: Any, invoke: Any) -> None:
    fill(crm, clients=3)
    result = invoke("export", "clients", "-")
    assert result.exit_code == 0, result
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["name"] for r in rows] == ['Shop "1", Ltd', 'Shop "2", Ltd', 'Shop "3", Ltd']
    assert result.stderr.strip() == "Exported 3 clients to stdout"
    as_json = invoke("export", "deals", "-", "--file-format", "jsonl", "--format", "json")
    assert as_json.exit_code == 0, as_json
    assert [json.loads(line)["title"] for line in as_json.output.splitlines()] == [
        "Deal 1",
        "Deal 3",
    ]
    assert json.loads(as_json.stderr)["rows"] == 2


def test_cli_summary_and_json(crm: Any, invoke: Any, tmp_path: Path) -> None:
    fill(crm, clients=4)
    target = tmp_path / "i.jsonl"
    result = invoke("export", "interactions", str(target))
    assert result.exit_code == 0, result
    assert result.output.strip() == f"Exported 6 interactions to {target}"
    info = invoke("export", "deals", str(tmp_path / "d.csv"), json=True).json
    assert info["rows"] == 2 and info["kind"] == "deals" and info["file_format"] == "csv"
    one = invoke("export", "deals", str(tmp_path / "one.csv"), as_user="admin")
    assert "Exported 2 deals" in one.output


def test_gzip_and_encoding(crm: Any, invoke: Any, tmp_path: Path) -> None:
    fill(crm, clients=2)
    gz = tmp_path / "clients.csv.gz"
    assert invoke("export", "clients", str(gz)).exit_code == 0
    with gzip.open(gz, "rt", encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    bom = tmp_path / "excel.csv"
    assert invoke("export", "clients", str(bom), "--encoding", "utf-8-sig").exit_code == 0
    assert bom.read_bytes().startswith(b"\xef\xbb\xbfid,name")


def test_empty_export_writes_the_header(crm: Any, tmp_path: Path) -> None:
    with crm.session(readonly=True) as s:
        assert export(s, "deals", tmp_path / "d.csv") == 0
        assert export(s, "deals", tmp_path / "d.jsonl") == 0
    assert (tmp_path / "d.csv").read_text().strip() == ",".join(columns("deals"))
    assert (tmp_path / "d.jsonl").read_text() == ""


def test_bad_kind_and_format_are_clear_errors(crm: Any, invoke: Any, tmp_path: Path) -> None:
    with crm.session(readonly=True) as s:
        with pytest.raises(ValidationError, match=r"cannot export .widgets.*clients, deals"):
            export(s, "widgets", tmp_path / "w.csv")
        with pytest.raises(ValidationError, match="unknown file format 'xml'"):
            export(s, "clients", tmp_path / "w.csv", format="xml")
        with pytest.raises(ValidationError, match="applies only to a CSV export of clients"):
            export(s, "deals", tmp_path / "d.csv", flatten_params=True)
    bad_kind = invoke("export", "widgets", str(tmp_path / "w.csv"))
    assert bad_kind.exit_code == 2
    assert "'widgets' is not one of 'clients', 'deals', 'interactions'" in bad_kind.stderr
    cases = [
        (("clients", str(tmp_path / "c.txt")), "cannot tell the format of 'c.txt'"),
        (("clients", str(tmp_path / "no" / "c.csv")), "does not exist"),
        (("clients", str(tmp_path)), "is a folder"),
        (("clients", str(tmp_path / "c.csv"), "--encoding", "klingon"), "unknown encoding"),
        (("deals", str(tmp_path / "c.csv"), "--flatten-params"), "flatten_params: applies"),
    ]
    for args, message in cases:
        result = invoke("export", *args)
        assert result.exit_code == 2, (args, result)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == []


def test_a_failed_export_leaves_no_file(crm: Any, invoke: Any, tmp_path: Path) -> None:
    fill(crm, clients=2)  # Cyrillic requisites: not writable in ASCII
    target = tmp_path / "clients.csv"
    result = invoke("export", "clients", str(target), "--encoding", "ascii")
    assert result.exit_code == 2
    assert "cannot be written in 'ascii'" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "crm"]


def test_export_reads_as_the_acting_user(crm: Any, invoke: Any, tmp_path: Path) -> None:
    """Exports what the user may export: a head their team's clients; a manager nothing."""
    fill(crm, clients=2)  # the admin's client and anna's
    with crm.session() as s:
        s.teams.add("sales")
        s.users.update("anna", team="sales")
        s.users.add("hugo", role="head", team="sales")
    with crm.session(as_user="hugo", readonly=True) as s:
        assert export(s, "clients", tmp_path / "hugo.jsonl") == 1
    rows = [json.loads(line) for line in (tmp_path / "hugo.jsonl").read_text().splitlines()]
    assert [r["owner"] for r in rows] == ["anna"]
    refused = invoke("export", "clients", str(tmp_path / "anna.csv"), as_user="anna")
    assert refused.exit_code == 5 and "may not export client cards" in refused.stderr
    assert not (tmp_path / "anna.csv").exists()
    result = invoke("export", "clients", str(tmp_path / "x.csv"), as_user="ghost")
    assert result.exit_code == NotFound.exit_code
    assert "no user 'ghost'" in result.stderr
