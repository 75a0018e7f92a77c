"""Tests for :mod:`crmkit.testing_postgres` (start a real throwaway PostgreSQL)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from crmkit.testing_postgres import PostgresServer, find_postgres_bindir, postgres_available

pytestmark = pytest.mark.slow


def _port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _roundtrip(url: str, table: str, value: str) -> list[str]:
    """Create ``table`` in the database at ``url``, insert ``value``, read back."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (id serial PRIMARY KEY, name text)"))
            conn.execute(sa.text(f"INSERT INTO {table} (name) VALUES (:v)"), {"v": value})
        with engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT name FROM {table} ORDER BY id")).scalars())
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("pg")) as srv:
        yield srv


def test_postgres_is_available() -> None:
    assert postgres_available()
    bindir = find_postgres_bindir()
    assert bindir is not None
    assert (bindir / "initdb").exists()


def test_lifecycle_two_isolated_databases(tmp_path: Path) -> None:
    pg = PostgresServer(tmp_path / "pg")
    started = time.monotonic()
    pg.start()
    elapsed = time.monotonic() - started
    port = pg.port
    try:
        assert pg.running
        assert elapsed < 30, f"start() took {elapsed:.1f}s"
        assert _port_is_open(port)
        assert pg.url == f"postgresql+psycopg://{pg.user}@127.0.0.1:{port}/postgres"

        url_a = pg.create_database("crm_a")
        url_b = pg.create_database("crm_b", template="template1")
        assert url_a == pg.url_for("crm_a")
        assert url_a.endswith(f":{port}/crm_a")
        assert url_b.endswith(f":{port}/crm_b")

        assert _roundtrip(url_a, "clients", "Alice") == ["Alice"]
        assert _roundtrip(url_b, "deals", "Big deal") == ["Big deal"]

        # Each database only sees its own table.
        assert _tables(url_a) == {"clients"}
        assert _tables(url_b) == {"deals"}

        # Same table name in both databases holds independent data.
        assert _roundtrip(url_b, "clients", "Bob") == ["Bob"]
        engine = sa.create_engine(url_a)
        try:
            with engine.connect() as conn:
                names = conn.execute(sa.text("SELECT name FROM clients")).scalars().all()
                assert names == ["Alice"]
                assert conn.execute(sa.text("SHOW fsync")).scalar_one() == "off"
                assert conn.execute(sa.text("SHOW server_encoding")).scalar_one() == "UTF8"
        finally:
            engine.dispose()
    finally:
        pg.stop()

    assert not pg.running
    assert not _port_is_open(port)
    assert (tmp_path / "pg" / "postgresql.log").exists()
    pg.stop()  # idempotent


def test_create_database_errors(server: PostgresServer) -> None:
    server.create_database("dup")
    with pytest.raises(RuntimeError, match="already exists"):
        server.create_database("dup")
    with pytest.raises(ValueError, match="invalid database name"):
        server.create_database("bad/name")
    server.drop_database("dup")
    assert server.create_database("dup").endswith("/dup")


def test_start_failure_reports_server_log(tmp_path: Path) -> None:
    pg = PostgresServer(tmp_path / "bad", settings={"shared_buffers": "'bogus'"})
    with pytest.raises(RuntimeError, match=r"(?s)pg_ctl start failed.*shared_buffers"):
        pg.start()
    assert not pg.running
