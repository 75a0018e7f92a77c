"""crmkit's HTTP server: an ASGI application (Starlette) that ``crmkit serve`` runs under uvicorn.

The core serves two routes; plugins add theirs through the
:func:`~crmkit.core.hookspecs.crmkit_routes` hook:

``GET /health``
    ``{"status": "ok", "version": ..., "database": "ok"}``, or status 503
    with ``"database": "unavailable"`` when the database does not answer.
``GET /api/me``
    The user of the request's API token (``Authorization: Bearer crmk_...``):
    the smallest example of an authenticated endpoint.

Every error is a JSON body with a 4xx (or 5xx) status: ``{"error": CLASS,
"field": ..., "message": ...}``, the same body a :class:`~crmkit.CrmError`
gives everywhere. Each request is logged as one JSON line on the
``crmkit.access`` logger: the route's *template* (``/t/o/{token}.gif``), not
the raw path, so that secrets carried in paths never reach the log.

Starlette and uvicorn come with the ``server`` extra
(``pip install 'crmkit[server]'``); this module imports Starlette, so the
command line imports it only in ``crmkit serve``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from crmkit import __version__
from crmkit.core.errors import CrmError, PermissionDenied, PluginError

if TYPE_CHECKING:  # pragma: no cover
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from crmkit.core.app import CRM
    from crmkit.core.store import Session

#: The logger of the access log: one JSON object per request.
access_logger = logging.getLogger("crmkit.access")

#: The routes the core serves itself; plugins may not take these paths.
CORE_PATHS = ("/health", "/api/me")

#: The most bytes of request headers (``name: value`` lines) the server reads: beyond, 431.
#: uvicorn's own limit (h11's 16 KB) applies only to headers that arrive in several reads.
MAX_HEADER_BYTES = 32 * 1024


def create_app(crm: CRM, *, access_log: bool | None = None) -> Starlette:
    """The ASGI application of a deployment: the core's routes and every plugin's.

    ``access_log`` (default: ``[server] access_log``, on) writes one JSON
    line per request to the ``crmkit.access`` logger.
    """
    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/api/me", me, methods=["GET"]),
    ]
    seen = dict.fromkeys(CORE_PATHS, "crmkit")
    for route, plugin in crm.plugins.routes(crm):
        if not isinstance(route, BaseRoute):
            raise PluginError(
                f"{plugin}: crmkit_routes must return Starlette routes, not {route!r}",
                field="crmkit_routes",
            )
        path = getattr(route, "path", None)
        if path is not None and path in seen:
            raise PluginError(
                f"{plugin}: the path {path!r} is already served by {seen[path]}",
                field="crmkit_routes",
            )
        if path is not None:
            seen[path] = plugin
        routes.append(route)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for close in reversed(app.state.on_shutdown):
            await close()
        crm.close()

    app = Starlette(
        routes=routes,
        exception_handlers={
            CrmError: _crm_error,
            HTTPException: _http_error,
            Exception: _internal_error,  # a bug: JSON too; the traceback goes to the server's log
        },
        lifespan=lifespan,
    )
    app.state.crm = crm
    #: coroutines that plugins register to run when the server stops (flush a queue ...)
    app.state.on_shutdown = []
    app.add_middleware(HeaderLimit)
    if access_log is None:
        access_log = bool(crm.config.server.get("access_log", True))
    if access_log:
        app.add_middleware(AccessLog)  # outermost: it logs the 431s too
    return app


# -- the core's routes ---------------------------------------------------------------------
def health(request: Request) -> Response:
    """Whether the server and its database answer."""
    from sqlalchemy import text

    crm: CRM = request.app.state.crm
    try:
        with crm.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse(
            {"status": "unavailable", "version": __version__, "database": "unavailable"},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "version": __version__, "database": "ok"})


def me(request: Request) -> Response:
    """The user of the request's API token."""
    with session_for(request, readonly=True) as s:
        user = s.user
        return JSONResponse(
            {"id": user.id, "login": user.login, "name": user.name, "role": str(user.role)}
        )


# -- what handlers use ---------------------------------------------------------------------
def bearer_token(request: Request) -> str:
    """The API token of ``Authorization: Bearer TOKEN``; :class:`PermissionDenied` without one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PermissionDenied(
            "send an API token as 'Authorization: Bearer TOKEN' "
            "(make one with 'crmkit user token create')",
            field="authorization",
        )
    return token.strip()


@contextlib.contextmanager
def session_for(request: Request, *, readonly: bool = False) -> Iterator[Session]:
    """A session as the user of the request's API token (checked on every request).

    Use it in a synchronous handler (Starlette runs those in a thread pool):
    the session's access policies apply exactly as on the command line.
    """
    crm: CRM = request.app.state.crm
    try:
        user = crm.authenticate(bearer_token(request))
    except PermissionDenied as exc:  # an unknown, revoked or expired token: 401, not 403
        raise PermissionDenied(exc.message, field="authorization") from None
    with crm.session(as_user=user.id, readonly=readonly) as s:
        yield s


def client_ip(scope: Scope | Request) -> str | None:
    """The peer's IP address (uvicorn's ``--forwarded-allow-ips`` decides whether proxies count)."""
    client = (scope.scope if isinstance(scope, Request) else scope).get("client")
    return client[0] if client else None


async def _crm_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CrmError)
    if isinstance(exc, PermissionDenied) and exc.field == "authorization":
        return JSONResponse(exc.to_dict(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return JSONResponse(exc.to_dict(), status_code=exc.http_status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    messages = {404: "no such page", 405: "method not allowed"}
    body = {
        "error": "HTTPError",
        "field": None,
        "message": messages.get(exc.status_code, str(exc.detail)),
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    body = {
        "error": "InternalError",
        "field": None,
        "message": "internal error (the server's log has the traceback)",
    }
    return JSONResponse(body, status_code=500)


class HeaderLimit:
    """ASGI middleware: a 431 JSON error for headers larger than :data:`MAX_HEADER_BYTES`."""

    def __init__(self, app: ASGIApp, limit: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.limit:
                message = (
                    f"the request's headers are too large ({size} bytes; {self.limit} at most)"
                )
                body = {"error": "HTTPError", "field": None, "message": message}
                response = JSONResponse(body, status_code=431, headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- the access log ------------------------------------------------------------------------
class AccessLog:
    """ASGI middleware: one JSON line per HTTP request on :data:`access_logger`.

    Fields: ``at`` (UTC, ISO 8601), ``method``, ``route`` (the matched
    route's template, or ``-`` when none matched), ``status``, ``bytes`` (of
    the body sent), ``ms`` (to the last byte) and ``client`` (the peer's IP).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def send_logged(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                # built by hand (json.dumps of a dict costs more than the rest of a pixel's
                # answer); only the route and the method, which come from code or the
                # request line, go through json.dumps
                client = client_ip(scope)
                line = (
                    f'{{"at":"{_now_text()}","method":{_quoted(scope["method"])},'
                    f'"route":{_quoted(_route_template(scope))},"status":{status},'
                    f'"bytes":{sent},"ms":{round((time.perf_counter() - started) * 1000, 2)},'
                    f'"client":{_quoted(client) if client is not None else "null"}}}'
                )
                handler = access_logger.handlers[0] if len(access_logger.handlers) == 1 else None
                if isinstance(handler, _AccessLogHandler):  # crmkit serve's own: no LogRecord
                    handler.write(line)
                else:
                    access_logger.info(line)


@functools.lru_cache(maxsize=1024)
def _quoted(text: str) -> str:
    return json.dumps(text)


_clock: list[Any] = [0, ""]


def _now_text() -> str:
    """The current UTC second as ISO 8601 text, made once per second."""
    second = int(time.time())
    if _clock[0] != second:
        _clock[0] = second
        _clock[1] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return str(_clock[1])


class _AccessLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler of :func:`configure_access_log`: lines are written without a LogRecord."""

    def write(self, line: str) -> None:
        with self.lock or contextlib.nullcontext():
            self.stream.write(line + "\n")
            self.flush()


def _route_template(scope: Scope) -> str:
    """The path template of the route that served ``scope`` (never the raw path)."""
    route = scope.get("route")  # set by Starlette's router on the scope we passed down
    if route is not None:
        return str(getattr(route, "path", "-"))
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "-"))
    return "-"


def configure_access_log(stream: Any = None) -> None:
    """Send :data:`access_logger`'s lines, bare, to ``stream`` (default: stderr)."""
    handler = _AccessLogHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_logger.handlers[:] = [handler]
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False


def serve(crm: CRM, *, host: str, port: int, log_level: str = "info") -> None:
    """Run the application under uvicorn until interrupted (``crmkit serve``)."""
    try:
        import uvicorn
    except ImportError as exc:  # Starlette alone: the same message as without either
        from crmkit.core.errors import DeploymentError

        raise DeploymentError(
            f"the HTTP server needs the server extra ({exc.name} is not installed): "
            "pip install 'crmkit[server]'",
            field="serve",
        ) from None

    app = create_app(crm)
    configure_access_log()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # crmkit's own, structured (AccessLog)
        server_header=False,
        proxy_headers=True,
    )
