"""Backup and restore of a whole deployment: its database and its ``crmkit.toml``.

A backup is one gzip-compressed tar archive holding

``manifest.json``
    what the archive is: the crmkit version that wrote it, the database
    dialect, the schema revisions of the copy (``alembic_version``) and each
    branch's status, the row count of every table in the copy, the size and
    SHA-256 of the other members, and when it was made.
``crmkit.toml``
    the deployment's settings, as they are on disk.
``database/crmkit.db`` (SQLite) or ``database/crmkit.dump`` (PostgreSQL)
    a consistent copy of the database, taken while others keep writing:

    * SQLite: the online backup API (``sqlite3.Connection.backup``) in one
      step, which copies the database as of one read transaction (in WAL
      mode writers go on meanwhile; a copy in several steps would restart
      whenever another connection writes, and might never finish).
    * PostgreSQL: ``pg_dump --format=custom`` reading the snapshot of a
      ``REPEATABLE READ`` transaction of our own (``--snapshot``), the same
      one in which the manifest's revisions and row counts are read.

:func:`restore` makes a new deployment from an archive: it writes
``crmkit.toml`` (with the new database URL), restores the data (a file copy
for SQLite, ``pg_restore --single-transaction`` into an empty PostgreSQL
database), checks it (SQLite: ``quick_check`` and ``foreign_key_check``;
both: the row counts of the manifest), and upgrades the schema when the
running crmkit is newer. A SQLite backup can also be restored into
PostgreSQL: the copy is upgraded to the running crmkit's schema, then copied
table by table in foreign-key order, in batches. Restoring a PostgreSQL
backup into SQLite is refused (restore it into PostgreSQL).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmkit.core.errors import (
    Conflict,
    DatabaseError,
    DeploymentError,
    NotFound,
    ValidationError,
)

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Connection, Engine

    from crmkit.core.app import CRM
    from crmkit.core.plugins import Plugins

FORMAT = "crmkit-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG_MEMBER = "crmkit.toml"
SQLITE_MEMBER = "database/crmkit.db"
PG_MEMBER = "database/crmkit.dump"
COPY_BATCH = 5000
_CHUNK = 1 << 20


# -- backup -----------------------------------------------------------------------------
def backup(
    crm: CRM,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    as_user: str | int | None = None,
) -> dict[str, Any]:
    """Write a consistent backup of ``crm`` (database and ``crmkit.toml``) to ``path``.

    Safe while other sessions and processes write. A backup holds every
    record, so the acting user ``as_user`` (default: the deployment's admin)
    must be an admin. The archive is written to a temporary file next to
    ``path`` and renamed when complete, so ``path`` holds a whole backup or
    nothing; refuses to replace an existing file unless ``overwrite``.
    Returns the manifest (plus ``file``, ``bytes`` and ``seconds``).
    """
    from crmkit import __version__
    from crmkit.core.app import _safe
    from crmkit.core.model import Role

    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ValidationError(f"{target} is a folder; give a file name", field="file")
    if not target.parent.is_dir():
        raise NotFound(f"the folder {target.parent} does not exist", field="file")
    if target.exists() and not overwrite:
        raise Conflict(f"{target} already exists; refusing to overwrite it", field="file")
    dialect = crm.engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise DatabaseError(f"cannot back up a {dialect} database (only SQLite and PostgreSQL)")
    with crm.session(as_user=as_user, readonly=True) as s:
        s.require_role(Role.ADMIN)
    config_path = crm.config.root / CONFIG_MEMBER
    started = dt.datetime.now(dt.UTC)
    # the copy is made next to the archive, not in /tmp (which may be small)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work:
        copy = Path(work) / "database"
        if dialect == "sqlite":
            member = SQLITE_MEMBER
            info = _sqlite_copy(crm, copy)
        else:
            member = PG_MEMBER
            info = _pg_dump(crm, copy)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "crmkit_version": __version__,
            "created_at": started.isoformat(),
            "dialect": dialect,
            "database": _safe(crm.config.database_url),
            **info,
            "files": {
                CONFIG_MEMBER: _digest(config_path),
                member: _digest(copy),
            },
        }
        _write_archive(target, manifest, {CONFIG_MEMBER: config_path, member: copy})
    manifest["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3)
    return {**manifest, "file": str(target), "bytes": target.stat().st_size}


def _sqlite_copy(crm: CRM, dest: Path) -> dict[str, Any]:
    """Copy the live SQLite database to ``dest`` in one step of the online backup API."""
    if _sqlite_file(crm.config.database_url) is None:
        raise DatabaseError("cannot back up an in-memory SQLite database", field="database")
    raw = crm.engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        copy = sqlite3.connect(dest, isolation_level=None)
        try:
            source.backup(copy)  # pages=-1: one step, one read snapshot
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"the SQLite backup failed: {exc}", field="database") from None
    finally:
        raw.close()
    engine = _sqlite_engine(dest)
    try:
        with engine.connect() as conn:
            return _describe(crm, conn)
    finally:
        engine.dispose()


def _pg_dump(crm: CRM, dest: Path) -> dict[str, Any]:
    """``pg_dump`` the database as of a snapshot in which the manifest is read too."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    try:
        with crm.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                server = int(conn.execute(text("SHOW server_version_num")).scalar_one())
                info = _describe(crm, conn)
                tool, version = pg_tool("pg_dump", server // 10000)
                env, conninfo = _libpq(crm.config.database_url)
                _run(
                    [
                        str(tool),
                        "--format=custom",
                        "--no-owner",
                        "--no-privileges",
                        f"--snapshot={snapshot}",
                        f"--file={dest}",
                        f"--dbname={conninfo}",
                    ],
                    env,
                    what="pg_dump",
                )
    except OperationalError as exc:
        from crmkit.core.app import _database_error

        raise _database_error(exc, crm.config.database_url) from None
    return {**info, "server_version": server, "pg_dump_version": version}


def _describe(crm: CRM, conn: Connection) -> dict[str, Any]:
    """The revisions, schema status and row counts that ``conn`` sees."""
    from sqlalchemy import func, inspect, select, table

    revisions = _revisions(conn)
    names = sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
    counts = {
        name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in names
    }
    return {
        "revisions": revisions,
        "schema": _status(crm, revisions),
        "plugins": sorted(name for name, _ in crm.plugins.pm.list_name_plugin()),
        "tables": counts,
    }


def _revisions(conn: Connection) -> list[str]:
    from alembic.runtime.migration import MigrationContext

    return sorted(MigrationContext.configure(conn).get_current_heads())


def _status(crm: CRM, revisions: Sequence[str]) -> list[dict[str, Any]]:
    """Per branch of the running crmkit: the revision ``revisions`` put it at, and its head.

    The same rows as :meth:`CRM.schema_status`, for revisions read elsewhere.
    """
    from alembic.script import ScriptDirectory

    from crmkit.core import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config(crm))
    applied = set()
    if revisions:
        applied = {r.revision for r in script.iterate_revisions(tuple(revisions), "base")}
    rows = []
    for label, lineage in sorted(migrate.branches(crm).items()):
        mine = [rev for rev in lineage if rev in applied]
        cur = mine[0] if mine else None
        rows.append(
            {"branch": label, "current": cur, "head": lineage[0], "up_to_date": cur == lineage[0]}
        )
    return rows


def _digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


def _write_archive(target: Path, manifest: dict[str, Any], members: dict[str, Path]) -> None:
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # holds the data
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar,  # 9: 2.5x slower
        ):
            body = json.dumps(manifest, indent=2).encode("utf-8")
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(body)
            info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(body))
            for name, source in members.items():
                info = tar.gettarinfo(str(source), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o600
                with source.open("rb") as f:
                    tar.addfile(info, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- reading an archive -----------------------------------------------------------------
_UNREADABLE = (tarfile.TarError, EOFError, OSError, ValueError, zlib.error)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the backup at ``path``; a clear error if it is not a crmkit backup."""
    path = Path(path).expanduser()
    with _open_archive(path) as tar:
        return _manifest(tar, path)


def _open_archive(path: Path) -> tarfile.TarFile:
    if not path.exists():
        raise NotFound(f"no such file: {path}", field="file")
    if not path.is_file():
        raise ValidationError(f"{path} is not a file", field="file")
    try:
        return tarfile.open(path, mode="r:*")
    except _UNREADABLE as exc:
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, reason: Any) -> ValidationError:
    if isinstance(reason, tarfile.ReadError) and "could not be opened" in str(reason):
        reason = "not a tar or .tar.gz archive"
    lines = str(reason).strip().splitlines()
    detail = lines[0].rstrip(":") if lines else type(reason).__name__
    return ValidationError(f"{path.name} is not a readable crmkit backup ({detail})", field="file")


def _manifest(tar: tarfile.TarFile, path: Path) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST)
        f = tar.extractfile(member)
        data = json.loads(f.read().decode("utf-8")) if f is not None else None
    except KeyError:
        raise _corrupt(path, f"no {MANIFEST}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"{MANIFEST} is not JSON: {exc}") from None
    except _UNREADABLE as exc:
        raise _corrupt(path, exc) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _corrupt(path, f"{MANIFEST} does not describe a crmkit backup")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValidationError(
            f"{path.name} is a crmkit backup of format version {data.get('format_version')!r}; "
            f"this crmkit reads version {FORMAT_VERSION} (upgrade crmkit)",
            field="file",
        )
    for key, kind in (("dialect", str), ("revisions", list), ("files", dict), ("tables", dict)):
        if not isinstance(data.get(key), kind):
            raise _corrupt(path, f"{MANIFEST} lacks {key!r}")
    return data


def _extract(tar: tarfile.TarFile, path: Path, manifest: dict[str, Any], work: Path) -> None:
    """Extract the members the manifest lists into ``work``, checking size and SHA-256."""
    for name, expected in manifest["files"].items():
        if name not in (CONFIG_MEMBER, SQLITE_MEMBER, PG_MEMBER):
            raise _corrupt(path, f"unexpected member {name!r}")
        try:
            member = tar.getmember(name)
        except KeyError:
            raise _corrupt(path, f"{name} is missing") from None
        source = tar.extractfile(member) if member.isfile() else None
        if source is None:
            raise _corrupt(path, f"{name} is not a file")
        dest = work / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        size = 0
        with dest.open("wb") as out:
            while chunk := source.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size != expected.get("size") or sha.hexdigest() != expected.get("sha256"):
            raise _corrupt(path, f"{name} does not match its checksum")


# -- restore ----------------------------------------------------------------------------
def restore(
    path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    database_url: str | None = None,
    plugins: Plugins | None = None,
) -> CRM:
    """Make a new deployment in ``directory`` from the backup at ``path``; return it open.

    ``database_url`` names the database to restore into (default: SQLite in
    ``directory``); a PostgreSQL database must exist and be empty. Refuses a
    folder that already holds a deployment and an existing SQLite file.
    ``plugins`` replaces plugin loading (default: built-ins, entry points and
    the restored ``crmkit.toml``'s modules); modules that ``crmkit.toml`` names
    are added to given plugins too. When anything fails, what was written is
    removed again. The schema is upgraded when this crmkit is newer than the
    backup; a backup newer than this crmkit is refused.
    """
    from crmkit.core.config import CONFIG_NAME

    archive = Path(path).expanduser().resolve()
    root = Path(directory).expanduser().resolve()
    if (root / CONFIG_NAME).exists():
        raise DeploymentError(
            f"{root} already holds a crmkit deployment; refusing to overwrite it", field="path"
        )
    if root.exists() and not root.is_dir():
        raise DeploymentError(f"{root} is not a folder", field="path")
    with _open_archive(archive) as tar:
        manifest = _manifest(tar, archive)
        made_dir = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        try:
            # extracted inside the new deployment's folder: the database is then
            # moved into place, not copied, and /tmp need not hold it
            with tempfile.TemporaryDirectory(prefix=".crmkit-restore-", dir=root) as tmp:
                work = Path(tmp)
                try:
                    _extract(tar, archive, manifest, work)
                except _UNREADABLE as exc:
                    raise _corrupt(archive, exc) from None
                tar.close()
                return _restore(manifest, work, archive, root, database_url, plugins)
        except BaseException:
            if made_dir:
                with contextlib.suppress(OSError):
                    root.rmdir()
            raise


def _restore(
    manifest: dict[str, Any],
    work: Path,
    archive: Path,
    root: Path,
    database_url: str | None,
    plugins: Plugins | None,
) -> CRM:
    import tomllib

    from crmkit.core.config import CONFIG_NAME, DEFAULT_DB_NAME

    source = manifest["dialect"]
    url = database_url or f"sqlite:///{DEFAULT_DB_NAME}"
    target = _dialect(url)
    if source == "postgresql" and target != "postgresql":
        raise ValidationError(
            "this is a backup of a PostgreSQL database: restore it into an empty PostgreSQL "
            "database with --database URL (restoring it into SQLite is not supported)",
            field="database",
        )
    if source not in ("sqlite", "postgresql") or target not in ("sqlite", "postgresql"):
        raise ValidationError(
            f"cannot restore a {source} backup into {target} (SQLite and PostgreSQL only)",
            field="database",
        )
    config_text = (work / CONFIG_MEMBER).read_text("utf-8")
    try:
        tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise _corrupt(archive, f"its crmkit.toml is not valid TOML: {exc}") from None
    config_text = with_database_url(config_text, url)

    written: list[Path] = []
    crm: CRM | None = None
    restored_pg = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        sqlite_file = None
        if target == "sqlite":
            from crmkit.core.config import resolve_sqlite_url

            sqlite_file = _sqlite_file(resolve_sqlite_url(url, root))
            if sqlite_file is None:
                raise ValidationError("cannot restore into an in-memory database", field="database")
            if sqlite_file.exists():
                raise DeploymentError(
                    f"{sqlite_file} already exists; refusing to overwrite it", field="database"
                )
        config_path = root / CONFIG_NAME
        with open(config_path, "x", encoding="utf-8") as f:
            f.write(config_text)
        written.append(config_path)
        crm = _open(root, url, plugins)
        _check_revisions(crm, manifest)
        if target == "sqlite":
            assert sqlite_file is not None
            _sqlite_restore(crm, work / SQLITE_MEMBER, sqlite_file, manifest, written)
        else:
            _pg_require_empty(crm)
            restored_pg = True
            if source == "postgresql":
                _pg_restore(crm, work / PG_MEMBER, manifest)
            else:
                _copy_from_sqlite(crm, work / SQLITE_MEMBER, manifest)
        if not all(row["up_to_date"] for row in crm.schema_status()):
            crm.upgrade()
        with crm.session(readonly=True):
            pass  # the admin of the restored crmkit.toml exists and is active
    except BaseException:
        if crm is not None:
            if restored_pg:
                with contextlib.suppress(Exception):
                    _pg_drop_all(crm)
            crm.close()
        for item in reversed(written):
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    Path(f"{item}{suffix}").unlink()
        raise
    return crm


def _open(root: Path, url: str, plugins: Plugins | None) -> CRM:
    """The restored deployment, on ``url`` even when ``CRMKIT_DATABASE_URL`` is set."""
    import importlib

    import attrs

    from crmkit.core.app import CRM
    from crmkit.core.config import Config, resolve_sqlite_url
    from crmkit.core.plugins import load_plugins

    config = Config.load(root)
    config = attrs.evolve(config, database_url=resolve_sqlite_url(url, root))
    if plugins is None:
        plugins = load_plugins(modules=config.plugin_modules, disable=config.plugin_disable)
    else:
        for dotted in config.plugin_modules:
            if not plugins.pm.has_plugin(dotted) and not plugins.pm.is_blocked(dotted):
                try:
                    plugins.pm.register(importlib.import_module(dotted), name=dotted)
                except ImportError as exc:
                    raise DeploymentError(
                        f"the restored crmkit.toml names the plugin module {dotted!r}, "
                        f"which cannot be imported: {exc}",
                        field="plugins.modules",
                    ) from None
    crm = CRM(config, plugins)
    plugins.startup(crm=crm)
    return crm


def _check_revisions(crm: CRM, manifest: dict[str, Any]) -> None:
    """Refuse a backup whose schema this crmkit (and its plugins) does not know."""
    from crmkit.core import migrate

    lineages = migrate.branches(crm)
    known = {rev for lineage in lineages.values() for rev in lineage}
    unknown = [rev for rev in manifest["revisions"] if rev not in known]
    if not unknown:
        return
    named = {row["branch"]: row["head"] for row in manifest.get("schema", [])}
    missing = sorted(set(named) - set(lineages))
    hint = (
        f"the backup has the schema branch(es) {', '.join(missing)}, which no installed "
        "plugin provides; install those plugins"
        if missing
        else "the backup was made by a newer crmkit; upgrade crmkit"
    )
    raise DatabaseError(
        f"the backup's schema revision(s) {', '.join(unknown)} are unknown here: {hint}",
        field="schema",
    )


def _check_counts(manifest: dict[str, Any], counts: dict[str, int]) -> None:
    expected = {k: int(v) for k, v in manifest["tables"].items()}
    wrong = [
        f"{name}: {counts.get(name)} rows instead of {rows}"
        for name, rows in sorted(expected.items())
        if counts.get(name) != rows
    ]
    if wrong:
        raise DatabaseError(
            "the restored data does not match the backup's manifest: " + "; ".join(wrong),
            field="database",
        )


def _table_counts(conn: Connection, names: Sequence[str]) -> dict[str, int]:
    from sqlalchemy import func, select, table

    return {
        name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in names
    }


# -- SQLite ------------------------------------------------------------------------------
def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_engine(path: Path) -> Engine:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(f"sqlite:///{path}", poolclass=NullPool)


def _sqlite_check(path: Path, manifest: dict[str, Any]) -> None:
    """Integrity, foreign keys and row counts of a SQLite copy, before it is used."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise DatabaseError(
                    f"the backup's database is damaged: {'; '.join(problems[:3])}",
                    field="database",
                )
            broken = db.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                table, rowid, parent, _ = broken[0]
                raise DatabaseError(
                    f"the backup's database breaks {len(broken)} foreign key(s), e.g. "
                    f"{table} row {rowid} refers to a missing {parent} row",
                    field="database",
                )
            names = list(manifest["tables"])
            counts = {
                name: int(db.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
                for name in names
                if re.fullmatch(r"[A-Za-z0-9_]+", name)
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"the backup's database cannot be read: {exc}") from None
    _check_counts(manifest, counts)


def _sqlite_restore(
    crm: CRM, copy: Path, dest: Path, manifest: dict[str, Any], written: list[Path]
) -> None:
    _sqlite_check(copy, manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        raise DeploymentError(f"{dest} already exists; refusing to overwrite it", field="database")
    written.append(dest)
    shutil.move(copy, dest)  # a rename when on the same file system


# -- PostgreSQL --------------------------------------------------------------------------
def _dialect(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise ValidationError(f"not a database URL: {exc}", field="database") from None


def _libpq(url: str) -> tuple[dict[str, str], str]:
    """The environment and libpq connection string for the PostgreSQL ``url``.

    The password goes into ``PGPASSWORD`` (not the command line, where other
    users could read it); query parameters (``sslmode`` ...) are passed on.
    """
    from sqlalchemy.engine import make_url

    u = make_url(url)
    params: dict[str, str] = {
        k: str(v) for k, v in u.query.items() if isinstance(v, str) and re.fullmatch(r"\w+", k)
    }
    for key, value in (("host", u.host), ("port", u.port), ("user", u.username)):
        if value is not None:
            params[key] = str(value)
    params["dbname"] = u.database or ""
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGDATABASE")}
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)
    conninfo = " ".join(f"{k}='{_quote(v)}'" for k, v in params.items())
    return env, conninfo


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def pg_tool(name: str, at_least: int = 0) -> tuple[Path, int]:
    """The PostgreSQL client tool ``name`` (``pg_dump``, ``pg_restore``) and its major version.

    Looked for in ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``
    (newest first), then ``PATH``; the first of
    major version ``at_least`` or newer is taken (``pg_dump`` cannot dump a
    newer server).
    """
    found: list[tuple[Path, int]] = []
    for candidate in _pg_candidates(name):
        version = _tool_version(candidate)
        if version is None:
            continue
        if version >= at_least:
            return candidate, version
        found.append((candidate, version))
    if found:
        listed = ", ".join(f"{p} ({v})" for p, v in found)
        raise DeploymentError(
            f"{name} of PostgreSQL {at_least} or newer is needed; found only {listed}. "
            f"Install the PostgreSQL {at_least} client tools or put them first on PATH",
            field=name,
        )
    raise DeploymentError(
        f"{name} was not found; install the PostgreSQL client tools (e.g. "
        "'apt-get install postgresql-client') or put the folder holding it on PATH",
        field=name,
    )


def _pg_candidates(name: str) -> Iterator[Path]:
    seen: set[Path] = set()

    def fresh(path: Path) -> bool:
        if path in seen or not os.access(path, os.X_OK):
            return False
        seen.add(path)
        return True

    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
            if out and fresh(Path(out) / name):
                yield Path(out) / name
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
        if fresh(bindir / name):
            yield bindir / name
    which = shutil.which(name)
    if which and fresh(Path(which)):
        yield Path(which)


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", bindir.parent.name)) or (-1,)


def _tool_version(tool: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def _run(cmd: list[str], env: dict[str, str], *, what: str) -> None:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[0] if lines else f"exit code {proc.returncode}"
        raise DatabaseError(f"{what} failed: {reason}", field="database")


def _pg_require_empty(crm: CRM) -> None:
    from sqlalchemy import inspect

    with crm.connect(readonly=True) as conn:
        names = inspect(conn).get_table_names()
    if names:
        from crmkit.core.app import _safe

        shown = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
        raise DeploymentError(
            f"the database {_safe(crm.config.database_url)} is not empty (it has the tables "
            f"{shown}); restore needs an empty database",
            field="database",
        )


def _pg_restore(crm: CRM, dump: Path, manifest: dict[str, Any]) -> None:
    from sqlalchemy import text

    with crm.connect(readonly=True) as conn:
        server = int(conn.execute(text("SHOW server_version_num")).scalar_one())
    needed = max(server // 10000, int(manifest.get("pg_dump_version") or 0))
    tool, _ = pg_tool("pg_restore", needed)
    env, conninfo = _libpq(crm.config.database_url)
    _run(
        [
            str(tool),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={conninfo}",
            str(dump),
        ],
        env,
        what="pg_restore",
    )
    with crm.connect(readonly=True) as conn:
        _check_counts(manifest, _table_counts(conn, list(manifest["tables"])))


def _pg_drop_all(crm: CRM) -> None:
    """Undo a failed restore: drop every table of the database (it was empty before)."""
    from sqlalchemy import MetaData

    with crm.connect() as conn:
        meta = MetaData()
        meta.reflect(conn)
        meta.drop_all(conn)


def _copy_from_sqlite(crm: CRM, copy: Path, manifest: dict[str, Any]) -> None:
    """Copy a SQLite backup into the empty PostgreSQL database of ``crm``, table by table.

    The copy is first upgraded to this crmkit's schema (the columns then match
    ``crm.metadata``); the target is migrated to the same heads; rows go over
    in foreign-key order, ``COPY_BATCH`` at a time, in one transaction; last,
    the id sequences are moved past the copied ids.
    """
    import attrs
    from sqlalchemy import func, inspect, select, text

    from crmkit.core.app import CRM

    _sqlite_check(copy, manifest)
    source = CRM(attrs.evolve(crm.config, database_url=f"sqlite:///{copy}"), crm.plugins)
    try:
        if not all(row["up_to_date"] for row in source.schema_status()):
            source.upgrade()
        crm.upgrade()
        tables = list(crm.metadata.sorted_tables)
        with source.connect(readonly=True) as src:
            extra = set(inspect(src).get_table_names()) - set(crm.metadata.tables)
            extra -= {"alembic_version"}
            if extra:
                raise DatabaseError(
                    "the backup holds tables that no installed plugin declares: "
                    f"{', '.join(sorted(extra))}; install their plugins",
                    field="schema",
                )
            present = set(inspect(src).get_table_names())
            with crm.connect() as dst:
                for table in tables:
                    if table.name not in present:
                        continue
                    order = list(table.primary_key.columns) or list(table.columns)[:1]
                    result = src.execution_options(yield_per=COPY_BATCH).execute(
                        select(table).order_by(*order)
                    )
                    for chunk in result.mappings().partitions(COPY_BATCH):
                        dst.execute(table.insert(), [dict(r) for r in chunk])
                    result.close()
                for table in tables:  # serial ids go on after the copied ones
                    if len(table.primary_key.columns) != 1:
                        continue
                    (col,) = table.primary_key.columns
                    seq = dst.execute(
                        text("SELECT pg_get_serial_sequence(:t, :c)"),
                        {"t": table.name, "c": col.name},
                    ).scalar()
                    top = dst.execute(select(func.max(col))).scalar() if seq else None
                    if top is not None:
                        dst.execute(text("SELECT setval(:s, :v)"), {"s": seq, "v": top})
                names = [t.name for t in tables if t.name in present]
                _check_counts({"tables": _table_counts(src, names)}, _table_counts(dst, names))
    finally:
        source.close()


# -- crmkit.toml -------------------------------------------------------------------------
_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
_URL = re.compile(r"^(\s*)url\s*=")


def with_database_url(config_text: str, url: str) -> str:
    """``crmkit.toml`` text with ``[database] url`` set to ``url``; comments are kept."""
    import tomllib

    line = f"url = {json.dumps(url)}"
    lines = config_text.splitlines()
    section = None
    header_at = None
    for i, text in enumerate(lines):
        header = _HEADER.match(text)
        if header:
            section = header.group(1)
            if section == "database":
                header_at = i
            continue
        if section == "database" and _URL.match(text):
            lines[i] = _URL.match(text).group(1) + line  # type: ignore[union-attr]
            break
    else:
        if header_at is not None:
            lines.insert(header_at + 1, line)
        else:
            lines += ["", "[database]", line]
    out = "\n".join(lines) + "\n"
    try:
        parsed = tomllib.loads(out)
    except tomllib.TOMLDecodeError:
        parsed = {}
    if parsed.get("database", {}).get("url") != url:
        raise ValidationError(
            "cannot set [database] url in the backup's crmkit.toml", field="crmkit.toml"
        )
    return out


__all__ = ["backup", "pg_tool", "read_manifest", "restore", "with_database_url"]
