"""Throwaway PostgreSQL servers for tests.

This module starts a private, disposable PostgreSQL cluster using the server
binaries shipped by Debian's ``postgresql`` package (or any other installation
that can be found through ``pg_config`` or ``PATH``).  It only depends on the
standard library; :mod:`psycopg` is used, when importable, for an extra
readiness check after the server has started.

Typical use from a pytest fixture::

    @pytest.fixture(scope="session")
    def pg_server(tmp_path_factory):
        with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
            yield server

    @pytest.fixture
    def db_url(pg_server, request):
        return pg_server.create_database(f"t_{uuid.uuid4().hex}")

The server listens on ``127.0.0.1`` only, on a free port, uses ``trust``
authentication and test-friendly durability settings (``fsync=off`` ...).
PostgreSQL refuses to run as ``root``; when the current process is root, the
server processes are run as the ``postgres`` system user from a dedicated
world-traversable temporary directory that is removed again by
:meth:`PostgresServer.stop`.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["PostgresServer", "find_postgres_bindir", "postgres_available"]

logger = logging.getLogger(__name__)

#: System user that runs the server when the current process is root.
SYSTEM_USER = "postgres"

#: Settings appended to ``postgresql.conf``; durability is traded for speed.
TEST_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "psql")
_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, psql) were not found. Install them, "
    "e.g. `sudo apt-get install postgresql` on Debian/Ubuntu, `brew install postgresql` "
    "on macOS, or put the directory containing initdb on PATH."
)
_LOG_TAIL_LINES = 40
# sun_path is 108 bytes on Linux; PostgreSQL appends "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR_LEN = 80
# Database names usable unescaped in a URL; max 63 bytes (NAMEDATALEN - 1).
_DBNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$")


# --------------------------------------------------------------------------- #
# Locating / installing binaries
# --------------------------------------------------------------------------- #
def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric version tuple
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) if parts else (-1,)


def find_postgres_bindir() -> Path | None:
    """Return the directory holding ``initdb``/``pg_ctl``/``psql``, or ``None``.

    Looked up, in order: ``pg_config --bindir``, the highest-versioned
    ``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu layout), then ``PATH``.
    """
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_binaries(Path(out)):
            return Path(out)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    for bindir in reversed(candidates):
        if _has_binaries(bindir):
            return bindir

    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = Path(initdb).resolve().parent
        if _has_binaries(bindir):
            return bindir
    return None


def _is_root() -> bool:
    return os.geteuid() == 0


def _can_install() -> bool:
    return _is_root() and shutil.which("apt-get") is not None


def postgres_available() -> bool:
    """Return whether a test server can be started.

    True when the server binaries are installed, or when they can be
    installed automatically (running as root on a system with ``apt-get``).
    Never installs anything itself.
    """
    return find_postgres_bindir() is not None or _can_install()


def _install_debian_postgresql() -> None:
    logger.warning(
        "PostgreSQL server binaries not found; installing Debian's 'postgresql' package "
        "with apt-get (this can take a minute)"
    )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n"
                f"{_tail(proc.stdout + proc.stderr)}\n{_INSTALL_HINT}"
            )


def _ensure_bindir(install: bool) -> Path:
    bindir = find_postgres_bindir()
    if bindir is not None:
        return bindir
    if install and _can_install():
        _install_debian_postgresql()
        bindir = find_postgres_bindir()
        if bindir is not None:
            return bindir
        raise RuntimeError(
            "Installed Debian's 'postgresql' package but still cannot find initdb/pg_ctl. "
            + _INSTALL_HINT
        )
    raise RuntimeError(_INSTALL_HINT)


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #
def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _world_traversable(directory: Path) -> bool:
    """Whether ``directory`` and all its ancestors can be traversed by other users."""
    resolved = directory.resolve()
    return all(p.stat().st_mode & 0o001 for p in (resolved, *resolved.parents))


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    logger.warning("Creating system user %r to run PostgreSQL", SYSTEM_USER)
    proc = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", SYSTEM_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"could not create system user {SYSTEM_USER!r} (PostgreSQL refuses to run as "
            f"root): {proc.stderr.strip()}"
        )
    return pwd.getpwnam(SYSTEM_USER)


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # uid without a passwd entry (some containers)
        return getpass.getuser()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #
class PostgresServer:
    """A disposable PostgreSQL cluster listening on ``127.0.0.1``.

    Args:
        base_dir: Directory for the cluster (``<base_dir>/data``), its log
            (``<base_dir>/postgresql.log``) and its unix socket.  When running
            as root the cluster lives in a dedicated temporary directory owned
            by the ``postgres`` user instead (pytest's temporary directories
            are not traversable by other users); the log is copied to
            ``base_dir`` on :meth:`stop`.
        bindir: Directory with ``initdb``/``pg_ctl``/``psql``; found
            automatically when omitted (see :func:`find_postgres_bindir`).
        install: Whether to ``apt-get install postgresql`` when no binaries
            are found and the process is root.
        settings: Extra ``postgresql.conf`` settings, as raw (already quoted)
            values, overriding :data:`TEST_SETTINGS`.
        start_timeout: Seconds ``pg_ctl -w`` waits for the server to start.
    """

    host: str = "127.0.0.1"

    def __init__(
        self,
        base_dir: Path,
        *,
        bindir: Path | None = None,
        install: bool = True,
        settings: dict[str, str] | None = None,
        start_timeout: int = 60,
    ) -> None:
        self.base_dir = Path(base_dir)
        self._bindir = bindir
        self._install = install
        self._settings = {**TEST_SETTINGS, **(settings or {})}
        self._start_timeout = start_timeout
        self._as_root = _is_root()
        #: Database superuser: ``postgres`` when root, else the current OS user.
        self.user: str = SYSTEM_USER if self._as_root else _current_user()
        self._port: int | None = None
        self._workdir: Path | None = None
        self._own_workdir = False
        self._running = False
        self.start_seconds: float | None = None

    # -- paths -------------------------------------------------------------- #
    @property
    def workdir(self) -> Path:
        """Directory holding ``data/``, the log and the socket directory."""
        if self._workdir is None:
            raise RuntimeError("PostgresServer has not been started")
        return self._workdir

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (``PGDATA``)."""
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's unix-domain socket."""
        return self.workdir / "run"

    @property
    def log_file(self) -> Path:
        """The server log written by ``pg_ctl -l``."""
        return self.workdir / "postgresql.log"

    @property
    def bindir(self) -> Path:
        """Directory of the PostgreSQL binaries in use."""
        if self._bindir is None:
            self._bindir = _ensure_bindir(self._install)
        return self._bindir

    # -- connection info ---------------------------------------------------- #
    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` was not called yet."""
        return self._running

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("PostgresServer has not been started")
        return self._port

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (``postgresql+psycopg://...``) for ``database``."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default ``postgres`` maintenance database."""
        return self.url_for("postgres")

    # -- lifecycle ---------------------------------------------------------- #
    def start(self) -> Self:
        """Initialise the cluster (first call only) and start the server.

        Returns the server itself, so ``server = PostgresServer(p).start()``
        works.  Raises :class:`RuntimeError` (including the server log tail)
        if ``initdb`` or ``pg_ctl`` fail.
        """
        if self._running:
            return self
        started = time.monotonic()
        bindir = self.bindir
        if self._workdir is None:
            self._workdir = self._make_workdir()
        try:
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(bindir)
            self._start_on_free_port(bindir)
        except BaseException:
            self._remove_workdir()
            raise

        self._running = True
        atexit.register(self.stop)
        try:
            self._check_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        logger.info(
            "PostgreSQL test server started on %s:%s in %.2fs",
            self.host,
            self._port,
            self.start_seconds,
        )
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl -m immediate stop``); idempotent.

        When running as root the temporary cluster directory is removed and
        the server log is copied to ``<base_dir>/postgresql.log`` first.
        """
        atexit.unregister(self.stop)
        if self._workdir is None:
            return
        try:
            if self._running:
                self._running = False
                proc = self._run_server_cmd(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ]
                )
                if proc.returncode != 0:
                    raise RuntimeError(self._failure("pg_ctl stop", proc))
        finally:
            self._remove_workdir()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self._running else "stopped"
        return f"<PostgresServer {state} base_dir={str(self.base_dir)!r}>"

    # -- databases ---------------------------------------------------------- #
    def create_database(self, name: str, *, template: str = "template0") -> str:
        """Create database ``name`` and return its SQLAlchemy URL.

        ``template0`` is copied by default (a pristine, ~8 MB database: cheap
        enough to create one per test).  Pass ``template=`` the name of a
        prepared database (e.g. with migrations applied) to clone it instead;
        the template must have no open connections while it is copied.
        Raises :class:`ValueError` for names that are not URL-safe and
        :class:`RuntimeError` if the database cannot be created (e.g. exists).
        """
        if not _DBNAME_RE.match(name):
            raise ValueError(
                f"invalid database name {name!r}: use at most 63 letters, digits, '_', '$', '-'"
            )
        self.psql(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (``WITH (FORCE)``: open connections are killed)."""
        self.psql(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through ``psql`` as the superuser; return its output.

        Raises :class:`RuntimeError` with psql's error output on failure.
        """
        if not self._running:
            raise RuntimeError("PostgresServer is not running")
        proc = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=self._client_env(),
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"psql failed (exit code {proc.returncode}) running {sql!r}:\n{proc.stderr.strip()}"
            )
        return proc.stdout

    # -- internals ---------------------------------------------------------- #
    def _remove_workdir(self) -> None:
        """Delete a private temporary cluster directory, keeping a copy of the log."""
        if self._workdir is None or not self._own_workdir:
            return
        with contextlib.suppress(OSError):
            if self.log_file.exists():
                self.base_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.log_file, self.base_dir / "postgresql.log")
        shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None
        self._own_workdir = False

    def _make_workdir(self) -> Path:
        if not self._as_root:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            workdir = self.base_dir
            if len(str(workdir / "run")) > _MAX_SOCKET_DIR_LEN:
                # The unix socket path would be too long: use a short private dir.
                workdir = Path(tempfile.mkdtemp(prefix="crmkit-pg-"))
                self._own_workdir = True
            (workdir / "run").mkdir(exist_ok=True)
            return workdir

        account = _ensure_system_user()
        parent: str | None = None
        for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
            if Path(candidate).is_dir() and _world_traversable(Path(candidate)):
                parent = candidate
                break
        if parent is None:
            raise RuntimeError(
                "no temporary directory traversable by the 'postgres' user was found"
            )
        workdir = Path(tempfile.mkdtemp(prefix="crmkit-pg-", dir=parent))
        self._own_workdir = True
        (workdir / "run").mkdir()
        for path in (workdir, workdir / "run"):
            os.chmod(path, 0o755)
            os.chown(path, account.pw_uid, account.pw_gid)
        return workdir

    def _server_cmd(self, cmd: Sequence[str]) -> list[str]:
        if not self._as_root:
            return list(cmd)
        if shutil.which("runuser") is not None:
            return ["runuser", "-u", SYSTEM_USER, "--", *cmd]
        if shutil.which("setpriv") is not None:
            return [
                "setpriv",
                f"--reuid={SYSTEM_USER}",
                f"--regid={SYSTEM_USER}",
                "--init-groups",
                "--",
                *cmd,
            ]
        raise RuntimeError(
            "running as root, but neither 'runuser' nor 'setpriv' is available to drop "
            "privileges to the 'postgres' user (PostgreSQL refuses to run as root)"
        )

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        if self._as_root:
            env["HOME"] = str(self.workdir)
            env["USER"] = env["LOGNAME"] = SYSTEM_USER
        return env

    def _client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        return env

    def _run_server_cmd(
        self, cmd: Sequence[str], timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        # cwd must be accessible to the (possibly unprivileged) server user.
        return subprocess.run(
            self._server_cmd(cmd),
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env=self._server_env(),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def _failure(self, what: str, proc: subprocess.CompletedProcess[str]) -> str:
        parts = [f"{what} failed with exit code {proc.returncode}"]
        output = (proc.stdout + proc.stderr).strip()
        if output:
            parts.append(f"--- output ---\n{_tail(output)}")
        try:
            log = self.log_file.read_text(errors="replace")
        except OSError:
            log = ""
        if log.strip():
            # A private workdir is removed on failure; its log is kept in base_dir.
            kept = self.base_dir / "postgresql.log" if self._own_workdir else self.log_file
            parts.append(f"--- server log tail (full log: {kept}) ---\n{_tail(log)}")
        return "\n".join(parts)

    def _initdb(self, bindir: Path) -> None:
        proc = self._run_server_cmd(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                f"--username={self.user}",
                "--no-sync",
            ],
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(self._failure("initdb", proc))

    def _write_settings(self) -> None:
        settings = {
            **self._settings,
            "port": str(self.port),
            "unix_socket_directories": "'" + str(self.socket_dir).replace("'", "''") + "'",
        }
        lines = ["", "# --- crmkit.testing_postgres ---"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        # Later entries win, so appending on every start is fine.
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def _start_on_free_port(self, bindir: Path, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            self._port = _free_port()
            self._write_settings()
            try:
                self._pg_ctl_start(bindir)
            except RuntimeError as exc:
                # Lost a race for the port (another process bound it meanwhile)?
                lost_race = "could not bind" in str(exc) or "already in use" in str(exc)
                if lost_race and attempt < attempts:
                    logger.info("port %s was taken, retrying with another one", self._port)
                    continue
                raise
            return

    def _pg_ctl_start(self, bindir: Path) -> None:
        proc = self._run_server_cmd(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(self._start_timeout),
                "start",
            ],
            timeout=self._start_timeout + 30,
        )
        if proc.returncode != 0:
            raise RuntimeError(self._failure("pg_ctl start", proc))

    def _check_ready(self) -> None:
        """Confirm the server accepts TCP connections (psycopg, if installed)."""
        try:
            import psycopg
        except ImportError:
            if not _port_open(self.port):
                raise RuntimeError(
                    f"PostgreSQL started but port {self.port} is not accepting connections\n"
                    + _tail(self.log_file.read_text(errors="replace"))
                ) from None
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(
                    host=self.host,
                    port=self.port,
                    user=self.user,
                    dbname="postgres",
                    connect_timeout=5,
                ):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL started but is not accepting connections: {exc}\n"
                        + _tail(self.log_file.read_text(errors="replace"))
                    ) from exc
                time.sleep(0.1)
