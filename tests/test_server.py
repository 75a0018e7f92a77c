"""``crmkit serve``: the HTTP server, on a real uvicorn server and a real client.

Every test serves :func:`crmkit.server.create_app` with
:func:`crmkit.testing_server.serve_app` (uvicorn in a thread, on a free
loopback port) and talks to it over :mod:`http.client`; the last ones run
``crmkit serve`` as a subprocess and stop it with a signal. The deployments
are the ``crm`` fixture's, so the module runs on SQLite and, with
``CRMKIT_TEST_DATABASE=postgresql``, on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="pip install -e '.[server]'")
pytest.importorskip("uvicorn", reason="pip install -e '.[server]'")

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crmkit import CRM, PluginError, __version__, hookimpl
from crmkit.server import create_app, session_for
from crmkit.testing_server import Reply, request, serve_app

SECRET_IN_PATH = "s3cr3t-0123456789abcdef"


# -- a plugin that adds routes ---------------------------------------------------------------
def echo_length(request: Request) -> JSONResponse:
    """``/x/{token}``: a path that carries a secret (as a tracking link does)."""
    return JSONResponse({"length": len(request.path_params["token"])})


def client_count(request: Request) -> JSONResponse:
    """``/api/echo/clients``: the clients the token's user may see, through a session."""
    with session_for(request, readonly=True) as s:
        return JSONResponse({"user": s.user.login, "clients": s.clients.count()})


class Echo:
    """Registers two routes through ``crmkit_routes``."""

    @hookimpl
    def crmkit_routes(self, crm: CRM) -> list[Any]:
        assert isinstance(crm, CRM)
        return [
            Route("/x/{token}", echo_length, methods=["GET"]),
            Route("/api/echo/clients", client_count, methods=["GET"]),
        ]


class TakesHealth:
    @hookimpl
    def crmkit_routes(self) -> list[Any]:
        return [Route("/health", echo_length)]


class TakesEchoPath:
    @hookimpl
    def crmkit_routes(self) -> list[Any]:
        return [Route("/x/{token}", echo_length)]


class NotARoute:
    @hookimpl
    def crmkit_routes(self) -> list[Any]:
        return [("/y", echo_length)]


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    """The ``crm`` fixture (crmkit.testing) registers the ``echo`` plugin."""
    return [("echo", Echo())]


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def users(crm: CRM) -> dict[str, str]:
    """Anna (a manager, one client of her own) and Boris; ``login -> API token``."""
    with crm.session() as s:
        s.users.add("anna", name="Anna Petrova", role="manager")
        s.users.add("boris", name="Boris Ivanov", role="manager")
        s.clients.create("Admin's own")
    with crm.session("anna") as s:
        s.clients.create("Anna's own")
        anna, _ = s.tokens.create("anna", name="laptop")
    with crm.session("boris") as s:
        boris, _ = s.tokens.create("boris", name="script")
    return {"anna": anna, "boris": boris}


@pytest.fixture
def base_url(crm: CRM) -> Iterator[str]:
    """The deployment's application, served on a free loopback port."""
    with serve_app(create_app(crm)) as url:
        yield url


class AccessLines(list[dict[str, Any]]):
    """The JSON objects logged on ``crmkit.access``, and their raw text."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[str] = []

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """The line is written after the last byte is sent: give the server a moment."""
        deadline = time.monotonic() + timeout
        while len(self) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self) >= count, self.raw


@pytest.fixture
def access_log() -> Iterator[AccessLines]:
    """Collect the access log's lines (as JSON) for the test."""
    lines = AccessLines()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            lines.raw.append(text)
            lines.append(json.loads(text))

    logger = logging.getLogger("crmkit.access")
    handler = Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(reply: Reply, status: int, error: str, field: str | None) -> dict[str, Any]:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    assert body["error"] == error, body
    assert body["field"] == field, body
    assert body["message"], body
    return body


# -- /health -------------------------------------------------------------------------------
def test_health_answers_ok(base_url: str) -> None:
    reply = request(f"{base_url}/health")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"status": "ok", "version": __version__, "database": "ok"}
    assert "server" not in reply.headers  # uvicorn's banner is off
    head = request(f"{base_url}/health", method="HEAD")
    assert head.status == 200 and head.body == b""


def _unreachable_url(crm: CRM, tmp_path: Path) -> str:
    """A database URL of the same kind as ``crm``'s that nothing answers at."""
    from sqlalchemy.engine import make_url

    url = make_url(crm.config.database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{tmp_path / 'removed-folder' / 'crmkit.db'}"
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def test_health_is_503_when_the_database_does_not_answer(
    crm: CRM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMKIT_DATABASE_URL", _unreachable_url(crm, tmp_path))
    broken = CRM.open(crm.config.root, plugins=crm.plugins)
    with serve_app(create_app(broken)) as url:
        reply = request(f"{url}/health")
        assert reply.status == 503
        assert reply.json() == {
            "status": "unavailable",
            "version": __version__,
            "database": "unavailable",
        }
        # an authenticated route says the same, as a JSON error, not a traceback
        me = request(f"{url}/api/me", headers=bearer("crmk_whatever"))
        assert me.status == 503, me
        assert me.json()["error"] == "DatabaseError"
        assert crm.config.database_url not in me.text  # no password, no path


# -- /api/me and the token ---------------------------------------------------------------------
def test_me_is_the_user_of_the_token(base_url: str, users: dict[str, str], crm: CRM) -> None:
    reply = request(f"{base_url}/api/me", headers=bearer(users["anna"]))
    assert reply.status == 200, reply
    body = reply.json()
    assert body == {"id": body["id"], "login": "anna", "name": "Anna Petrova", "role": "manager"}
    assert request(f"{base_url}/api/me", headers=bearer(users["boris"])).json()["login"] == "boris"
    # the scheme's case does not matter; the token's use is recorded
    assert request(f"{base_url}/api/me", headers={"authorization": f"bearer {users['anna']}"})
    with crm.session() as s:
        [token] = s.tokens.list(user="anna")
        assert token.last_used_at is not None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
    ids=["none", "empty", "bearer-without-token", "basic"],
)
def test_me_without_a_token_is_401(base_url: str, headers: dict[str, str]) -> None:
    body = assert_error(
        request(f"{base_url}/api/me", headers=headers), 401, "PermissionDenied", "authorization"
    )
    assert "Authorization: Bearer" in body["message"]


def test_me_with_a_bad_or_revoked_token_is_401(
    base_url: str, users: dict[str, str], crm: CRM
) -> None:
    for token in ("crmk_not-a-token", users["anna"] + "x", "x" * 2000):
        reply = request(f"{base_url}/api/me", headers=bearer(token))
        assert_error(reply, 401, "PermissionDenied", "authorization")
        assert reply.headers.get("www-authenticate") == "Bearer"
    with crm.session() as s:
        [token] = s.tokens.list(user="boris")
        s.tokens.revoke(token.id)
    assert request(f"{base_url}/api/me", headers=bearer(users["boris"])).status == 401
    assert request(f"{base_url}/api/me", headers=bearer(users["anna"])).status == 200


def test_unknown_path_and_wrong_method_are_json(base_url: str) -> None:
    body = assert_error(request(f"{base_url}/nothing/here"), 404, "HTTPError", None)
    assert body["message"] == "no such page"
    reply = request(f"{base_url}/api/me", method="POST", body=b"{}")
    body = assert_error(reply, 405, "HTTPError", None)
    assert body["message"] == "method not allowed"
    # Starlette answers HEAD for every GET
    assert set(reply.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert_error(request(f"{base_url}/health", method="DELETE"), 405, "HTTPError", None)


# -- plugin routes ---------------------------------------------------------------------------
def test_a_plugin_route_is_served(base_url: str) -> None:
    reply = request(f"{base_url}/x/{SECRET_IN_PATH}")
    assert reply.status == 200
    assert reply.json() == {"length": len(SECRET_IN_PATH)}


def test_a_plugin_route_acts_as_the_token_user(base_url: str, users: dict[str, str]) -> None:
    """Access policies apply over HTTP as elsewhere: a manager sees her own clients only."""
    anna = request(f"{base_url}/api/echo/clients", headers=bearer(users["anna"]))
    assert anna.json() == {"user": "anna", "clients": 1}
    boris = request(f"{base_url}/api/echo/clients", headers=bearer(users["boris"]))
    assert boris.json() == {"user": "boris", "clients": 0}
    assert_error(request(f"{base_url}/api/echo/clients"), 401, "PermissionDenied", "authorization")


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (TakesHealth(), "the path '/health' is already served by crmkit"),
        (TakesEchoPath(), "the path '/x/{token}' is already served by echo"),
        (NotARoute(), "crmkit_routes must return Starlette routes"),
    ],
    ids=["core-path", "another-plugin", "not-a-route"],
)
def test_a_plugin_route_that_collides_is_refused(
    crm: CRM, register_plugin: Callable[..., Any], plugin: Any, message: str
) -> None:
    register_plugin(plugin, name="greedy")
    with pytest.raises(PluginError) as info:
        create_app(crm)
    assert info.value.field == "crmkit_routes"
    assert info.value.message.startswith("greedy: ")
    assert message in info.value.message


def test_a_plugin_error_in_a_handler_is_json(crm: CRM, register_plugin: Callable[..., Any]) -> None:
    """A CrmError raised by a plugin's handler is the same JSON body, with its status."""
    from crmkit import NotFound

    def missing(request: Request) -> JSONResponse:
        raise NotFound("no client #42", field="client")

    class Missing:
        @hookimpl
        def crmkit_routes(self) -> list[Any]:
            return [Route("/api/missing", missing)]

    register_plugin(Missing(), name="missing")
    with serve_app(create_app(crm)) as url:
        reply = request(f"{url}/api/missing")
    body = assert_error(reply, 404, "NotFound", "client")
    assert body["message"] == "no client #42"


def test_a_bug_in_a_handler_is_a_json_500_without_details(
    crm: CRM, register_plugin: Callable[..., Any], access_log: AccessLines
) -> None:
    def broken(request: Request) -> JSONResponse:
        raise RuntimeError(f"the detail {SECRET_IN_PATH} stays in the server's log")

    class Broken:
        @hookimpl
        def crmkit_routes(self) -> list[Any]:
            return [Route("/api/broken", broken)]

    register_plugin(Broken(), name="broken")
    with serve_app(create_app(crm)) as url:
        reply = request(f"{url}/api/broken")
        assert request(f"{url}/health").status == 200  # the server goes on
    body = assert_error(reply, 500, "InternalError", None)
    assert SECRET_IN_PATH not in reply.text and "RuntimeError" not in reply.text
    assert "log" in body["message"]
    access_log.wait_for(2)
    assert [(line["route"], line["status"]) for line in access_log] == [
        ("/api/broken", 500),
        ("/health", 200),
    ]


# -- the access log --------------------------------------------------------------------------
def test_access_log_names_route_templates_never_raw_paths(
    base_url: str, users: dict[str, str], access_log: AccessLines
) -> None:
    request(f"{base_url}/health")
    request(f"{base_url}/x/{SECRET_IN_PATH}")
    request(f"{base_url}/api/me", headers=bearer(users["anna"]))
    request(f"{base_url}/nothing/{SECRET_IN_PATH}?key={SECRET_IN_PATH}")
    request(f"{base_url}/api/me", method="POST")
    access_log.wait_for(5)
    got = [(line["method"], line["route"], line["status"]) for line in access_log]
    assert got == [
        ("GET", "/health", 200),
        ("GET", "/x/{token}", 200),
        ("GET", "/api/me", 200),
        ("GET", "-", 404),
        ("POST", "/api/me", 405),
    ]
    text = "\n".join(access_log.raw)
    assert SECRET_IN_PATH not in text
    assert users["anna"] not in text
    for line, raw in zip(access_log, access_log.raw, strict=True):
        assert set(line) == {"at", "method", "route", "status", "bytes", "ms", "client"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line["at"])
        assert line["client"] == "127.0.0.1"
        assert isinstance(line["ms"], float | int) and line["ms"] >= 0
        assert "\n" not in raw
    assert access_log[0]["bytes"] == len(request(f"{base_url}/health").body)


def test_access_log_trusts_a_proxy_on_the_same_host_only(
    base_url: str, access_log: AccessLines
) -> None:
    """uvicorn's proxy headers: X-Forwarded-For counts from 127.0.0.1 (FORWARDED_ALLOW_IPS)."""
    request(f"{base_url}/health", headers={"X-Forwarded-For": "203.0.113.7"})
    access_log.wait_for(1)
    assert access_log[0]["client"] == "203.0.113.7"


def test_access_log_can_be_turned_off(crm: CRM, access_log: AccessLines) -> None:
    with serve_app(create_app(crm, access_log=False)) as url:
        assert request(f"{url}/health").status == 200
    assert access_log == []
    config = crm.config.root / "crmkit.toml"
    config.write_text(config.read_text("utf-8") + "\n[server]\naccess_log = false\n", "utf-8")
    with CRM.open(crm.config.root, plugins=crm.plugins) as reopened:
        assert reopened.config.server == {"access_log": False}
        with serve_app(create_app(reopened)) as url:
            assert request(f"{url}/health").status == 200
    assert access_log == []


# -- abuse -------------------------------------------------------------------------------------
def _raw_request(base_url: str, data: bytes) -> bytes:
    """Send raw bytes; what came back before the server closed (b"" when it just closed)."""
    host, port = base_url.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received


def _status(answer: bytes) -> int | None:
    found = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("size", [40_000, 100_000, 1_000_000])
def test_huge_headers_are_refused_and_the_server_goes_on(
    base_url: str, access_log: AccessLines, size: int
) -> None:
    """Refused whether the headers arrive in one read (crmkit's limit) or several (uvicorn's)."""
    huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * size + b"\r\n\r\n"
    answer = _raw_request(base_url, huge)
    assert answer == b"" or _status(answer) in (400, 431), answer[:200]
    if _status(answer) == 431:  # crmkit's answer: a JSON error, logged
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["error"] == "HTTPError" and body["field"] is None
        assert re.fullmatch(
            r"the request's headers are too large \(\d+ bytes; 32768 at most\)", body["message"]
        )
        access_log.wait_for(1)
        assert [(line["route"], line["status"]) for line in access_log] == [("/health", 431)]
    many = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * (size // 8) + b"\r\n"
    assert _status(_raw_request(base_url, many)) in (400, 431, None)
    assert request(f"{base_url}/health").status == 200


def test_headers_under_the_limit_are_served(base_url: str) -> None:
    reply = request(f"{base_url}/health", headers={"X-Big": "a" * 30_000})
    assert reply.status == 200


def test_garbage_is_a_400_and_the_server_goes_on(base_url: str) -> None:
    garbage = _raw_request(base_url, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage == b"" or _status(garbage) == 400, garbage[:200]
    assert request(f"{base_url}/health").status == 200


def test_a_big_body_on_a_get_route_does_not_break_the_server(base_url: str) -> None:
    reply = request(f"{base_url}/health", method="POST", body=b"x" * 1_000_000)
    assert reply.status == 405
    assert request(f"{base_url}/health").status == 200


# -- crmkit serve, a real process -----------------------------------------------------------
class Served:
    """``crmkit serve`` as a subprocess; a thread collects its stderr lines."""

    def __init__(self, root: Path, *args: str) -> None:
        env = {**os.environ, "CRMKIT_LOAD_PLUGINS": "", "PYTHONUNBUFFERED": "1"}
        env.pop("CRMKIT_DATABASE_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crmkit", "-C", str(root), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def port(self, timeout: float = 30.0) -> int:
        """The port uvicorn says it listens on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                if found:
                    return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.process.kill()
        self.process.wait()
        self._reader.join(5)
        pytest.fail(f"crmkit serve did not start: {self.lines}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig``; the exit code, within ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - the failure the test is about
            self.process.kill()
            self.process.wait()
            pytest.fail(f"crmkit serve did not stop within {timeout} s of signal {sig}")
        finally:
            self._reader.join(5)
        return self.process.returncode

    def access_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_crmkit_serve_answers_and_stops_on_a_signal(crm: CRM, sig: int) -> None:
    served = Served(crm.config.root, "--port", "0")
    try:
        port = served.port()
        reply = request(f"http://127.0.0.1:{port}/health")
        assert reply.status == 200
        assert reply.json()["database"] == "ok"
        assert request(f"http://127.0.0.1:{port}/x/{SECRET_IN_PATH}").status == 404
    finally:
        code = served.stop(sig)
    # uvicorn shuts down gracefully, then re-raises SIGTERM, so that a service manager sees it
    assert code == (-signal.SIGTERM if sig == signal.SIGTERM else 0), served.lines
    assert "INFO:     Application shutdown complete." in served.lines
    assert "Aborted!" not in served.lines
    log = served.access_lines()
    assert [(line["route"], line["status"]) for line in log] == [("/health", 200), ("-", 404)]
    text = "\n".join(served.lines)
    assert SECRET_IN_PATH not in text
    assert "Traceback" not in text
    assert served.process.stdout is not None and served.process.stdout.read() == ""


@pytest.mark.slow
def test_crmkit_serve_takes_host_and_port_from_the_config(crm: CRM) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = crm.config.root / "crmkit.toml"
    config.write_text(
        config.read_text("utf-8") + f'\n[server]\nhost = "127.0.0.1"\nport = {port}\n', "utf-8"
    )
    served = Served(crm.config.root)
    try:
        assert served.port() == port
        assert request(f"http://127.0.0.1:{port}/health").status == 200
    finally:
        assert served.stop(signal.SIGINT) == 0, served.lines


def test_crmkit_serve_refuses_a_bad_server_setting(crm: CRM, invoke: Callable[..., Any]) -> None:
    config = crm.config.root / "crmkit.toml"
    config.write_text(config.read_text("utf-8") + '\n[server]\nport = "80"\n', "utf-8")
    result = invoke("serve")
    assert result.exit_code == 6, result
    assert "server.port" in result.stderr


@pytest.mark.parametrize("missing", ["starlette", "uvicorn"])
def test_crmkit_serve_without_the_server_extra(crm: CRM, missing: str) -> None:
    """Exit code 6 and what to install, whichever of the two is missing (not a traceback)."""
    code = (
        f"import runpy, sys; sys.modules[{missing!r}] = None; "
        f"sys.argv = ['crmkit', '-C', {str(crm.config.root)!r}, 'serve']; "
        "runpy.run_module('crmkit', run_name='__main__')"
    )
    env = {**os.environ, "CRMKIT_LOAD_PLUGINS": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 6, done
    assert done.stderr.startswith("Error: serve: the HTTP server needs the server extra (")
    assert missing in done.stderr
    assert done.stderr.rstrip().endswith("pip install 'crmkit[server]'")


@pytest.mark.slow
def test_a_port_in_use_is_a_clear_error(crm: CRM) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        served = Served(crm.config.root, "--port", str(busy.getsockname()[1]))
        try:
            code = served.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            served.stop(signal.SIGKILL)
            pytest.fail("crmkit serve went on although its port was taken")
    served.stop()
    assert code != 0
    assert "address already in use" in "\n".join(served.lines).lower()


def test_http_client_sees_a_keep_alive_connection(base_url: str) -> None:
    """Several requests on one connection (as browsers and proxies send them)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for path in ("/health", "/nothing", "/health"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == (404 if path == "/nothing" else 200)
    finally:
        conn.close()


# -- the example plugin of docs/server.rst ------------------------------------------------------
def test_the_documented_example_plugin(crm_factory: Callable[..., Any]) -> None:
    """``docs/examples/crmkit_client_api.py``, served as docs/server.rst shows it."""
    examples = Path(__file__).resolve().parents[1] / "docs" / "examples"
    sys.path.insert(0, str(examples))
    try:
        import crmkit_client_api
    finally:
        sys.path.remove(str(examples))
    crm = crm_factory("api", plugins=[("client_api", crmkit_client_api)])
    config = crm.config.root / "crmkit.toml"
    config.write_text(
        config.read_text("utf-8") + '\n[server]\npublic_url = "https://crm.example.com/"\n', "utf-8"
    )
    crm = CRM.open(crm.config.root, plugins=crm.plugins)
    with crm.session() as s:
        s.users.add("anna", name="Anna Petrova", role="manager")
        s.users.add("boris", name="Boris Ivanov", role="manager")
    with crm.session("anna") as s:
        client = s.clients.create("Vostok Trade")
        s.deals.open(client.id, pipeline="b2b", amount=500_000, title="Printers")
        anna, _ = s.tokens.create("anna", name="laptop")
    with crm.session("boris") as s:
        boris, _ = s.tokens.create("boris", name="laptop")
    with serve_app(create_app(crm)) as url:
        reply = request(f"{url}/api/clients/{client.id}", headers=bearer(anna))
        other = request(f"{url}/api/clients/{client.id}", headers=bearer(boris))
        missing = request(f"{url}/api/clients/999", headers=bearer(anna))
        not_a_number = request(f"{url}/api/clients/abc", headers=bearer(anna))
        without = request(f"{url}/api/clients/{client.id}")
    assert reply.status == 200, reply
    assert reply.json() == {
        "id": client.id,
        "name": "Vostok Trade",
        "segment": None,
        "open_deals": [
            {"id": 1, "stage": "qualification", "amount": "500000.00", "currency": "RUB"}
        ],
        "url": f"https://crm.example.com/api/clients/{client.id}",
    }
    shown = (examples.parent / "server.rst").read_text("utf-8")
    assert reply.text in shown
    assert other.status in (403, 404), other
    assert other.text in shown
    assert_error(missing, 404, "NotFound", other.json()["field"])
    assert not_a_number.status == 404
    assert_error(without, 401, "PermissionDenied", "authorization")


def test_the_bodies_shown_in_the_docs_are_what_the_server_answers(
    crm: CRM, users: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every JSON body that docs/server.rst shows for the core's routes, as the server sends it."""
    shown = (Path(__file__).resolve().parents[1] / "docs" / "server.rst").read_text("utf-8")

    def assert_shown(reply: Reply) -> None:
        body = reply.text.replace(f'"version":"{__version__}"', '"version":"0.1.0"')
        assert body in shown, body

    with serve_app(create_app(crm)) as url:
        assert_shown(request(f"{url}/health"))
        assert_shown(request(f"{url}/api/me", headers=bearer(users["anna"])))
        assert_shown(request(f"{url}/api/me"))
        assert_shown(request(f"{url}/api/me", headers=bearer("crmk_nope")))
        assert_shown(request(f"{url}/no/such/page"))
        assert_shown(request(f"{url}/health", method="POST"))
    assert (
        '"error":"HTTPError","field":null,"message":"the request\'s headers are too large ('
        in shown
    )
    assert '"message":"internal error (the server\'s log has the traceback)"}' in shown
    monkeypatch.setenv("CRMKIT_DATABASE_URL", _unreachable_url(crm, tmp_path))
    with serve_app(create_app(CRM.open(crm.config.root, plugins=crm.plugins))) as url:
        assert_shown(request(f"{url}/health"))
