"""crmkit backup and restore: a consistent copy of a live deployment, brought back whole."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from crmkit.cli import build_cli
from crmkit.core.errors import DatabaseError, DeploymentError, ValidationError
from crmkit.core.plugins import load_plugins
from crmkit.transfer.backup import backup, read_manifest, restore, with_database_url

BATCH = 5  # clients per writer transaction, each with a deal and an interaction
SEED = 6000  # clients, deals and interactions each, written before the backup


# -- helpers ----------------------------------------------------------------------------
def is_pg(crm: Any) -> bool:
    return bool(crm.engine.dialect.name == "postgresql")


@pytest.fixture
def target_url(request: pytest.FixtureRequest, crm: Any) -> Callable[[], str | None]:
    """A new empty database of the same kind as ``crm``'s (None: SQLite in the folder)."""

    def make() -> str | None:
        if not is_pg(crm):
            return None
        server = request.getfixturevalue("crmkit_postgres")
        return str(server.create_database(f"r_{uuid.uuid4().hex[:16]}"))

    return make


def plugins() -> Any:
    return load_plugins(entry_points=False)


def seed(crm: Any, n: int) -> None:
    """``n`` clients, deals and interactions in bulk (fast; the seed is not under test)."""
    t = crm.metadata.tables
    now = dt.datetime.now(dt.UTC)
    with crm.connect() as conn:
        start = conn.execute(select(func.coalesce(func.max(t["clients"].c.id), 0))).scalar()
        ids = range(start + 1, start + n + 1)
        conn.execute(
            t["clients"].insert(),
            [
                {
                    "id": i,
                    "name": f"Seed {i}",
                    "email": f"seed{i}@example.com",
                    "owner_id": 1,
                    "requisites": {"inn": str(7700000000 + i)},
                    "params": {},
                    "external_id": f"seed-{i}",
                    "stage": "lead",
                }
                for i in ids
            ],
        )
        conn.execute(
            t["deals"].insert(),
            [
                {
                    "client_id": i,
                    "pipeline": "b2b",
                    "stage": "qualification",
                    "title": f"Deal {i}",
                    "amount": 1000,
                    "currency": "RUB",
                    "owner_id": 1,
                }
                for i in ids
            ],
        )
        conn.execute(
            t["interactions"].insert(),
            [
                {
                    "client_id": i,
                    "user_id": 1,
                    "kind": "call",
                    "direction": "outbound",
                    "occurred_at": now,
                    "topic": "first_contact",
                    "outcome": "interested",
                }
                for i in ids
            ],
        )
        if is_pg(crm):  # explicit ids: move the sequences on
            for name in ("clients",):
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), {start + n})")
                )


class Writer(threading.Thread):
    """Keeps writing tagged batches through the API, one transaction per batch.

    Batch ``b`` makes clients ``w{b}-0`` .. ``w{b}-{BATCH-1}``, each with a
    deal and an interaction; every fifth batch fails after its third client
    and is rolled back. ``committed`` maps each committed batch to its commit
    time; ``failed`` lists the rolled-back ones.
    """

    def __init__(self, crm: Any) -> None:
        super().__init__(daemon=True)
        self.crm = crm
        self.stop = threading.Event()
        self.go = threading.Event()  # cleared: the writer waits between batches
        self.go.set()
        self.committed: dict[int, float] = {}
        self.started: dict[int, float] = {}
        self.failed: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        batch = 0
        try:
            while not self.stop.is_set():
                self.go.wait()
                self.started[batch] = time.monotonic()
                try:
                    with self.crm.session() as s:
                        for i in range(BATCH):
                            if batch % 5 == 4 and i == 3:
                                raise _Abort
                            c = s.clients.create(f"W {batch}-{i}", external_id=f"w{batch}-{i}")
                            d = s.deals.open(c.id, amount=10 * i)
                            s.interactions.log(
                                c.id,
                                "call",
                                topic="first_contact",
                                outcome="interested",
                                direction="outbound",
                                deal_id=d.id,
                            )
                    self.committed[batch] = time.monotonic()
                except _Abort:
                    self.failed.append(batch)
                batch += 1
        except BaseException as exc:  # re-raised in the test
            self.error = exc

    def wait_for(self, batches: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.committed) < batches:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the writer is stuck"
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.go.set()
        self.join(60)
        if self.error is not None:
            raise self.error


class _Abort(Exception):
    pass


class Held(threading.Thread):
    """A batch held open halfway (3 of its clients written) until ``release`` is set."""

    def __init__(self, crm: Any) -> None:
        super().__init__(daemon=True)
        self.crm = crm
        self.inside = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.crm.session() as s:
                for i in range(BATCH):
                    s.clients.create(f"Held {i}", external_id=f"h-{i}")
                    if i == 2:
                        self.inside.set()
                        assert self.release.wait(60)
        except BaseException as exc:
            self.error = exc
            self.inside.set()

    def __enter__(self) -> Held:
        self.start()
        assert self.inside.wait(60) and self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.join(60)
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def held(crm: Any, writer: Writer) -> Iterator[None]:
    """A :class:`Held` batch, started while the writer pauses.

    SQLite does not queue waiting writers fairly: a thread that commits and
    begins again at once can keep another waiting for seconds.
    """
    writer.go.clear()
    try:
        with Held(crm):
            writer.go.set()
            yield
    finally:
        writer.go.set()


def overlapping(writer: Writer, archives: list[tuple[Any, float, float]]) -> list[int]:
    """The writer's batches committed while one of the backups ran."""
    return [
        batch
        for batch, at in list(writer.committed.items())
        if any(began < at < ended for _, began, ended in archives)
    ]


def held_clients(crm: Any) -> int:
    clients = crm.metadata.tables["clients"]
    with crm.connect(readonly=True) as conn:
        return int(
            conn.execute(select(func.count()).where(clients.c.external_id.like("h-%"))).scalar_one()
        )


def cli(crm: Any, *args: str) -> Any:
    runner = CliRunner()
    result = runner.invoke(
        build_cli(crm.plugins), ["-C", str(crm.config.root), *args], obj=crm.plugins
    )
    return result


def batch_counts(crm: Any) -> dict[int, tuple[int, int, int]]:
    """Per writer batch: its clients, deals and interactions in ``crm``."""
    t = crm.metadata.tables
    clients, deals, inter = t["clients"], t["deals"], t["interactions"]
    out: dict[int, list[int]] = {}
    with crm.connect(readonly=True) as conn:
        for label, q in (
            (0, select(clients.c.external_id)),
            (1, select(clients.c.external_id).join(deals, deals.c.client_id == clients.c.id)),
            (2, select(clients.c.external_id).join(inter, inter.c.client_id == clients.c.id)),
        ):
            for (ext,) in conn.execute(q.where(clients.c.external_id.like("w%"))):
                batch = int(ext[1:].split("-")[0])
                out.setdefault(batch, [0, 0, 0])[label] += 1
    return {b: (c[0], c[1], c[2]) for b, c in out.items()}


def check_foreign_keys(crm: Any) -> None:
    t = crm.metadata.tables
    with crm.connect(readonly=True) as conn:
        if not is_pg(crm):
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        for child, parent, column in (
            ("deals", "clients", "client_id"),
            ("interactions", "clients", "client_id"),
            ("interactions", "deals", "deal_id"),
            ("contacts", "clients", "client_id"),
        ):
            c, p = t[child], t[parent]
            orphans = conn.execute(
                select(func.count())
                .select_from(c.outerjoin(p, p.c.id == c.c[column]))
                .where(c.c[column].is_not(None), p.c.id.is_(None))
            ).scalar()
            assert orphans == 0, f"{child}.{column} without its {parent} row"


# -- the consistency test ---------------------------------------------------------------
def test_backup_while_writing_is_consistent(
    crm: Any, tmp_path: Path, target_url: Callable[[], str | None]
) -> None:
    seed(crm, SEED)
    crm.pipelines, crm.interaction_kinds, crm.lifecycle  # noqa: B018  (warm, before threads)
    writer = Writer(crm)
    writer.start()
    try:
        archives: list[tuple[dict[str, Any], float, float]] = []
        # two backups, more (up to five) until one has overlapped a committed batch
        while len(archives) < 2 or (not overlapping(writer, archives) and len(archives) < 5):
            n = len(archives)
            writer.wait_for(3 * (n + 1))
            # the first backup runs while a batch is half written (deterministic); on
            # SQLite that batch holds the write lock, so the writer waits meanwhile
            with held(crm, writer) if n == 0 else contextlib.nullcontext():
                began = time.monotonic()
                info = backup(crm, tmp_path / f"b{n}.tar.gz")
                archives.append((info, began, time.monotonic()))
        writer.wait_for(len(writer.committed) + 2)
    finally:
        writer.finish()
    assert held_clients(crm) == BATCH
    assert overlapping(writer, archives), "no backup overlapped a committed write"
    for n, (info, began, ended) in enumerate(archives):
        restored = restore(
            tmp_path / f"b{n}.tar.gz",
            tmp_path / f"r{n}",
            database_url=target_url(),
            plugins=plugins(),
        )
        try:
            check_foreign_keys(restored)
            assert held_clients(restored) == (0 if n == 0 else BATCH)  # all or nothing
            counts = batch_counts(restored)
            for batch, got in counts.items():  # no half-written batch
                assert got == (BATCH, BATCH, BATCH), (batch, got)
                assert batch not in writer.failed
            before = {b for b, at in writer.committed.items() if at <= began}
            after = {b for b, at in writer.started.items() if at >= ended}
            assert before <= set(counts), "a batch committed before the backup is missing"
            assert not (after & set(counts)), "a batch begun after the backup is in it"
            assert set(counts) < set(writer.committed)  # the writes after it are not
            with restored.connect(readonly=True) as conn:
                clients = restored.metadata.tables["clients"]
                total = conn.execute(select(func.count()).select_from(clients)).scalar()
            half = held_clients(restored)
            assert total == info["tables"]["clients"] == SEED + BATCH * len(counts) + half
            for args in (("client", "list"), ("deal", "list"), ("db", "current")):
                result = cli(restored, *args, "--format", "json")
                assert result.exit_code == 0, (args, result.output, result.stderr)
                assert json.loads(result.stdout)
            assert json.loads(cli(restored, "db", "current", "--format", "json").stdout)[0][
                "up_to_date"
            ]
            with restored.session() as s:  # it takes new writes; ids go on
                new = s.clients.create("After the restore", email="after@example.com")
                assert new.id > total
                s.deals.open(new.id, amount=5)
        finally:
            restored.close()


# -- the archive --------------------------------------------------------------------------
def test_archive_holds_manifest_config_and_database(crm: Any, tmp_path: Path) -> None:
    (crm.config.root / "crmkit.toml").write_text(
        (crm.config.root / "crmkit.toml").read_text().replace('"UTC"', '"Europe/Moscow"')
    )
    with crm.session() as s:
        s.clients.create("Acme", email="buy@acme.example")
    info = backup(crm, tmp_path / "b.tar.gz")
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        names = tar.getnames()
        toml = tar.extractfile("crmkit.toml").read().decode()  # type: ignore[union-attr]
    database = "database/crmkit.dump" if is_pg(crm) else "database/crmkit.db"
    assert names == ["manifest.json", "crmkit.toml", database]
    assert "Europe/Moscow" in toml
    manifest = read_manifest(tmp_path / "b.tar.gz")
    assert manifest["dialect"] == crm.engine.dialect.name
    assert manifest["revisions"] == ["crmkit_0013"]
    assert manifest["schema"] == crm.schema_status()
    assert manifest["tables"]["clients"] == 1 and manifest["tables"]["users"] == 1
    assert set(manifest["files"]) == {"crmkit.toml", database}
    assert "password" not in json.dumps(manifest)
    assert dt.datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert info["file"] == str(tmp_path / "b.tar.gz") and info["bytes"] > 0
    assert (tmp_path / "b.tar.gz").stat().st_mode & 0o077 == 0  # it holds the data
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_cli_backup_and_restore(crm: Any, tmp_path: Path, target_url: Any) -> None:
    with crm.session() as s:
        c = s.clients.create("Acme", email="buy@acme.example")
        s.deals.open(c.id, amount=100, title="Printers")
    archive = tmp_path / "b.tar.gz"
    made = cli(crm, "backup", str(archive))
    assert made.exit_code == 0, made.output + made.stderr
    assert made.stdout.startswith(f"Backed up {crm.config.root} to {archive}")
    assert "clients 1, contacts 0, deals 1" in made.stdout
    again = cli(crm, "backup", str(archive))
    assert again.exit_code == 4 and "already exists" in again.stderr
    assert cli(crm, "backup", str(archive), "--force").exit_code == 0
    url = target_url()
    args = ["restore", str(archive), str(tmp_path / "new"), "--format", "json"]
    result = cli(crm, *args, *(["--database", url] if url else []))
    assert result.exit_code == 0, result.output + result.stderr
    info = json.loads(result.stdout)
    assert info["directory"] == str(tmp_path / "new")
    assert info["schema"][0]["up_to_date"] and info["upgraded"] == []
    from crmkit.core.app import CRM

    if url is None:  # the folder holds the deployment and nothing else
        assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [
            "crmkit.db",
            "crmkit.toml",
        ]
    with CRM.open(tmp_path / "new", plugins=plugins()) as restored, restored.session() as s:
        assert [d.title for d in s.deals.list()] == ["Printers"]
        assert restored.config.database_url == (url or f"sqlite:///{tmp_path / 'new/crmkit.db'}")


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection")  # alembic's SQLite batch
def test_restore_upgrades_an_older_schema(crm: Any, tmp_path: Path, target_url: Any) -> None:
    from alembic import command

    from crmkit.core.migrate import alembic_config

    with crm.session() as s:
        s.clients.create("Old", email="old@example.com")
    with crm.connect() as conn:  # as a database of the first release
        command.downgrade(alembic_config(crm, conn), "crmkit@crmkit_0001")
    backup(crm, tmp_path / "old.tar.gz")
    assert read_manifest(tmp_path / "old.tar.gz")["revisions"] == ["crmkit_0001"]
    restored = restore(
        tmp_path / "old.tar.gz", tmp_path / "r", database_url=target_url(), plugins=plugins()
    )
    try:
        assert restored.schema_status()[0]["current"] == "crmkit_0013"
        with restored.session() as s:
            (old,) = s.clients.list()
            s.deals.open(old.id, amount=1)  # the lifecycle tables are there
    finally:
        restored.close()


def test_restore_refuses_a_backup_newer_than_crmkit(
    crm: Any, tmp_path: Path, target_url: Any
) -> None:
    backup(crm, tmp_path / "b.tar.gz")
    rewrite(tmp_path / "b.tar.gz", tmp_path / "new.tar.gz", revisions=["crmkit_0099"])
    url = target_url()
    with pytest.raises(DatabaseError, match="made by a newer crmkit; upgrade crmkit"):
        restore(tmp_path / "new.tar.gz", tmp_path / "r", database_url=url, plugins=plugins())
    assert not (tmp_path / "r").exists()


def test_restore_refuses_a_plugin_branch_that_is_not_installed(
    crm: Any, tmp_path: Path, target_url: Any
) -> None:
    backup(crm, tmp_path / "b.tar.gz")
    schema = [*read_manifest(tmp_path / "b.tar.gz")["schema"]]
    schema.append({"branch": "loyalty", "current": "loyalty_0001", "head": "loyalty_0001"})
    rewrite(
        tmp_path / "b.tar.gz",
        tmp_path / "p.tar.gz",
        revisions=["crmkit_0002", "loyalty_0001"],
        schema=schema,
    )
    url = target_url()
    with pytest.raises(DatabaseError, match=r"branch.*loyalty, which no installed plugin"):
        restore(tmp_path / "p.tar.gz", tmp_path / "r", database_url=url, plugins=plugins())


def rewrite(source: Path, dest: Path, **manifest_changes: Any) -> None:
    """A copy of a backup with its manifest changed."""
    with tarfile.open(source) as tar, tarfile.open(dest, "w:gz") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                data = json.dumps({**json.loads(data), **manifest_changes}).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))


def test_restore_keeps_the_config_and_sets_the_new_database(
    crm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if is_pg(crm):
        pytest.skip("restores into SQLite: a PostgreSQL backup cannot")
    config = crm.config.root / "crmkit.toml"
    config.write_text(config.read_text().replace('currency = "RUB"', 'currency = "EUR"'))
    backup(crm, tmp_path / "b.tar.gz")
    monkeypatch.setenv("CRMKIT_DATABASE_URL", f"sqlite:///{crm.config.root / 'crmkit.db'}")
    restored = restore(tmp_path / "b.tar.gz", tmp_path / "r", plugins=plugins())
    restored.close()
    assert restored.config.database_url == f"sqlite:///{tmp_path / 'r' / 'crmkit.db'}"
    text_ = (tmp_path / "r" / "crmkit.toml").read_text()
    assert 'currency = "EUR"' in text_ and 'url = "sqlite:///crmkit.db"' in text_
    assert "# crmkit deployment settings" in text_  # comments kept
    assert (tmp_path / "r" / "crmkit.db").stat().st_size > 0


def test_with_database_url_edits_only_the_url() -> None:
    original = (
        '# top\n[database]\n# the db\nurl = "postgresql://u:p@h/db"\necho = false\n\n'
        '[crmkit]\nadmin = "a"\n'
    )
    changed = with_database_url(original, "sqlite:///crmkit.db")
    assert changed == original.replace("postgresql://u:p@h/db", "sqlite:///crmkit.db")
    assert with_database_url('[crmkit]\nadmin = "a"\n', "sqlite:///x.db").endswith(
        '\n[database]\nurl = "sqlite:///x.db"\n'
    )
    assert with_database_url("[database]\necho = true\n", "sqlite:///x.db").startswith(
        '[database]\nurl = "sqlite:///x.db"\necho = true'
    )


# -- errors: one clear line, a non-zero exit, nothing left behind ----------------------------
def corrupt_archives(good: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    made: dict[str, tuple[Path, str]] = {}
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not an archive\n" * 10)
    made["garbage"] = (garbage, "not a tar or .tar.gz archive")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    made["truncated"] = (truncated, "is not a readable crmkit backup")
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    made["no manifest"] = (empty, "no manifest.json")
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(good) as tar, tarfile.open(tampered, "w:gz") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.startswith("database/"):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            out.addfile(member, io.BytesIO(data))
    made["tampered"] = (tampered, "does not match its checksum")
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as out:
        body = b'{"hello": "world"}'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        out.addfile(info, io.BytesIO(body))
    made["foreign manifest"] = (other, "does not describe a crmkit backup")
    return made


def test_restore_errors_are_one_line(crm: Any, tmp_path: Path) -> None:
    good = tmp_path / "good.tar.gz"
    assert cli(crm, "backup", str(good)).exit_code == 0
    cases: list[tuple[list[str], int, str]] = [
        (["restore", str(tmp_path / "missing.tar.gz"), str(tmp_path / "x")], 3, "no such file"),
        (["restore", str(good), str(crm.config.root)], 6, "refusing to overwrite"),
        (["restore", str(tmp_path), str(tmp_path / "x")], 2, "is not a file"),
    ]
    for name, (path, message) in corrupt_archives(good, tmp_path).items():
        cases.append((["restore", str(path), str(tmp_path / name)], 2, message))
    if is_pg(crm):  # a PostgreSQL backup cannot go into SQLite
        cases.append((["restore", str(good), str(tmp_path / "x")], 2, "restore it into an empty"))
        cases.append(  # nor into a database that holds data
            (
                ["restore", str(good), str(tmp_path / "x"), "--database", crm.config.database_url],
                6,
                "is not empty",
            )
        )
    for args, code, message in cases:
        result = cli(crm, *args)
        assert result.exit_code == code, (args, result.output, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("Error: ")
        assert "Traceback" not in result.stderr + result.output
    leftovers = {p.name for p in tmp_path.iterdir() if p.is_dir()}
    assert leftovers == {"crm"}, leftovers  # no half-made deployment


def test_backup_errors_are_one_line(crm: Any, tmp_path: Path, monkeypatch: Any) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager")
    cases = [
        (["--as", "anna", "backup", str(tmp_path / "b.tar.gz")], 5, "it needs the role admin"),
        (["backup", str(tmp_path / "no" / "b.tar.gz")], 3, "does not exist"),
        (["backup", str(tmp_path)], 2, "is a folder"),
    ]
    if is_pg(crm):
        import crmkit.transfer.backup as module

        monkeypatch.setattr(module, "_pg_candidates", lambda name: iter(()))
        cases.append((["backup", str(tmp_path / "b.tar.gz")], 6, "pg_dump was not found"))
    for args, code, message in cases:
        result = cli(crm, *args)
        assert result.exit_code == code, (args, result.output, result.stderr)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    nowhere = CliRunner().invoke(
        build_cli(crm.plugins), ["-C", str(tmp_path), "backup", str(tmp_path / "b.tar.gz")]
    )
    assert nowhere.exit_code == DeploymentError.exit_code
    assert "no crmkit deployment" in nowhere.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm"]


# -- SQLite into PostgreSQL -----------------------------------------------------------------
def test_sqlite_backup_restores_into_postgresql(
    crm: Any, crm_factory: Any, tmp_path: Path, target_url: Any
) -> None:
    if not is_pg(crm):
        pytest.skip("needs PostgreSQL (CRMKIT_TEST_DATABASE=postgresql)")
    lite = crm_factory("lite", database_url=f"sqlite:///{tmp_path / 'lite' / 'crmkit.db'}")
    assert lite.engine.dialect.name == "sqlite"
    seed(lite, 2500)
    with lite.session() as s:
        team = s.teams.add("Sales")
        s.teams.add("North", parent=team.id)
        c = s.clients.create("Acme", email="buy@acme.example", requisites={"inn": "7701"})
        contact = s.contacts.add(c.id, "Ann", email="ann@acme.example")
        deal = s.deals.open(c.id, amount="1234.56")
        s.interactions.log(
            c.id,
            "call",
            topic="first_contact",
            outcome="interested",
            direction="inbound",
            deal_id=deal.id,
            respondents=[contact.id],
        )
        s.tasks.add("Call back", due="2030-01-01", client_id=c.id, steps=["dial", "talk"])
        s.invoices.issue(deal.id, "1234.56")
    backup(lite, tmp_path / "lite.tar.gz")
    with lite.session(readonly=True) as s:
        before = {k: getattr(s, k).list(limit=None) for k in ("clients", "deals", "interactions")}
        tasks = s.tasks.list(limit=None)
    started = time.monotonic()
    restored = restore(
        tmp_path / "lite.tar.gz", tmp_path / "pg", database_url=target_url(), plugins=plugins()
    )
    took = time.monotonic() - started
    try:
        assert restored.engine.dialect.name == "postgresql"
        check_foreign_keys(restored)
        with restored.session(readonly=True) as s:
            for kind, rows in before.items():
                assert getattr(s, kind).list(limit=None) == rows, kind
            assert s.tasks.list(limit=None) == tasks
            assert [t.name for t in s.teams.list()] == ["North", "Sales"]
        with restored.session() as s:  # the id sequences go on after the copied ids
            new = s.clients.create("New", email="new@example.com")
            assert new.id == 2502
        result = cli(restored, "deal", "list", "--format", "json")
        assert result.exit_code == 0 and json.loads(result.stdout)
    finally:
        restored.close()
    assert took < 60


def test_restore_into_postgresql_refuses_a_bad_url(crm: Any, tmp_path: Path) -> None:
    backup(crm, tmp_path / "b.tar.gz")
    with pytest.raises(ValidationError, match="not a database URL"):
        restore(tmp_path / "b.tar.gz", tmp_path / "r", database_url="no:/url", plugins=plugins())
    assert not (tmp_path / "r").exists()


def test_pg_tools_of_an_older_release_are_refused(tmp_path: Path, monkeypatch: Any) -> None:
    import crmkit.transfer.backup as module

    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    monkeypatch.setattr(module, "_pg_candidates", lambda name: iter([old]))
    with pytest.raises(DeploymentError, match=r"pg_dump of PostgreSQL 15 or newer is needed"):
        module.pg_tool("pg_dump", 15)
    assert module.pg_tool("pg_dump", 9) == (old, 9)
    monkeypatch.setattr(module, "_pg_candidates", lambda name: iter(()))
    with pytest.raises(DeploymentError, match="pg_dump was not found"):
        module.pg_tool("pg_dump", 15)
