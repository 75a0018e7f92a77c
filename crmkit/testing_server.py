"""``crmkit.testing_server``: run an ASGI application under a real uvicorn server in a test.

crmkit's tests, and a plugin's, check HTTP routes against a real server on
a loopback port with a real client, not through an in-process transport::

    from crmkit.server import create_app
    from crmkit.testing_server import serve_app, request

    def test_my_route(crm):
        with serve_app(create_app(crm)) as base_url:
            reply = request(f"{base_url}/my/route", headers={"Authorization": "Bearer ..."})
            assert reply.status == 200
            assert reply.json() == {...}

:func:`serve_app` starts uvicorn in a thread on ``127.0.0.1`` and a free
port, waits until it accepts connections and gives the base URL
(``http://127.0.0.1:PORT``); leaving the block stops the server (which runs
the application's shutdown, closing its ``crm``) and waits for the thread.
:func:`request` is a small client over :mod:`http.client` that returns a
:class:`Reply` for every status, 4xx and 5xx included. Neither needs
anything beyond uvicorn (the ``server`` extra) and the standard library.
"""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Reply", "request", "serve_app"]


@contextlib.contextmanager
def serve_app(
    app: Any, *, host: str = "127.0.0.1", timeout: float = 10.0, **config: Any
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yield its base URL, ``http://HOST:PORT``.

    The port is chosen by the system (a free one). ``config`` goes to
    ``uvicorn.Config`` (``log_level`` defaults to ``"warning"``; as in
    ``crmkit serve``, uvicorn's own access log and ``Server`` header are off:
    :class:`crmkit.server.AccessLog` writes crmkit's log).
    Raises :class:`RuntimeError` when the server does not start within
    ``timeout`` seconds, and when it does not stop within ``timeout`` after
    the block.
    """
    import socket

    import uvicorn

    config.setdefault("log_level", "warning")
    config.setdefault("access_log", False)
    config.setdefault("server_header", False)  # as ``crmkit serve`` runs it
    config.setdefault("lifespan", "on")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:
            failure.append(exc)

    # uvicorn installs signal handlers only in the main thread: Ctrl-C still stops pytest
    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start: {failure[0] if failure else 'exited'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within {timeout} s")
            time.sleep(0.01)
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
            raise RuntimeError(f"uvicorn did not stop within {timeout} s")


@dataclass
class Reply:
    """What the server answered: ``status``, ``headers`` (lower-case names) and ``body``."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    json: Any = None,
    timeout: float = 10.0,
) -> Reply:
    """Send one request (a new connection) and read the whole reply, whatever its status.

    ``json`` sends that value as a JSON body with its content type.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"request() speaks plain http to a host, not {url!r}")
    sent = dict(headers or {})
    if json is not None:
        body = jsonlib.dumps(json)
        sent.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        return Reply(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=data,
        )
    finally:
        conn.close()
