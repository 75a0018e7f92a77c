"""The plugin's HTTP routes (added to ``crmkit serve`` through ``crmkit_routes``).

``GET|HEAD /t/o/{token}.gif``
    The open pixel: always the same 43-byte transparent GIF, whatever the
    token (a forged or expired token records nothing, and the answer does
    not tell), with ``Cache-Control: no-store`` and ``Referrer-Policy:
    no-referrer``. The query string is ignored.
``GET|HEAD /t/c/{token}``
    A tracked link: a redirect (302) to the link stored with the message
    under the token's index; the target never comes from the request. A bad
    token answers 404.
``GET /p/{token}``
    The document hosted with a message, its pages marked ``data-page``, with
    a small script that reports the reading time per page.
``POST /p/beat``
    The script's heartbeats: ``{"v": VIEW_TOKEN, "s": SEQ, "p": PAGE, "t": SECONDS}``
    (at most 1 KB). Always 204 when well formed, counted or not.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import secrets
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from crmkit import ValidationError
from crmkit.core.schema import utcnow
from crmkit.server import client_ip

from . import settings, signing
from .classify import COUNTED, classify, truncate_ip
from .tables import DOCUMENTS, OUTBOX
from .tracking import EventWriter, record_beat, start_view

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM

#: The open pixel: a 1x1 transparent GIF, 43 bytes.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
#: Headers of every tracking answer: never cached, never tell the target where from.
PRIVATE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
PIXEL_HEADERS = {**PRIVATE, "Content-Type": "image/gif", "Content-Length": str(len(PIXEL))}
#: The largest heartbeat body taken.
MAX_BEAT = 1024
#: A user agent longer than this is stored cut.
MAX_AGENT = 400


def routes(crm: CRM) -> list[Route]:
    """The routes, bound to one :class:`Tracker` of ``crm``."""
    tracker = Tracker(crm)
    return [
        Route("/t/o/{token}.gif", tracker.pixel, methods=["GET", "HEAD"]),
        Route("/t/c/{token}", tracker.click, methods=["GET", "HEAD"]),
        Route("/p/beat", tracker.beat, methods=["POST"]),
        Route("/p/{token}", tracker.document, methods=["GET"]),
    ]


class Tracker:
    """The endpoints, with the deployment's keys, settings and event writer."""

    def __init__(self, crm: CRM) -> None:
        self.crm = crm
        self.keys = signing.keys(crm)
        self.settings = settings.load(crm)
        self.writer = EventWriter(crm)
        self._closing_registered = False

    # -- what every hit shares ---------------------------------------------------------
    def _private(self, request: Request) -> bool:
        """Whether the request asks not to be tracked and the deployment honours it."""
        if not self.settings.honour_dnt:
            return False
        headers = _headers(request)
        return headers.get("dnt") == "1" or headers.get("sec-gpc") == "1"

    def _event(
        self,
        request: Request,
        kind: str,
        message_id: int,
        *,
        sent_at: dt.datetime | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        now = utcnow()
        ip = client_ip(request)
        since = (now - sent_at).total_seconds() if sent_at is not None else None
        headers = _headers(request)
        classification, reasons = classify(
            kind,
            method=request.method,
            headers=headers,
            ip=ip,
            seconds_since_delivery=since,
        )
        data = {
            "ip": truncate_ip(ip) if self.settings.truncate_ip else ip,
            "user_agent": headers.get("user-agent", "")[:MAX_AGENT],
            "method": request.method,
            "reasons": reasons,
        }
        data.update(extra.pop("data", {}))
        return {
            "message_id": message_id,
            "kind": kind,
            "at": now,
            "classification": classification,
            "counted": classification in COUNTED,
            "data": data,
            **extra,
        }

    async def _record(self, request: Request, event: dict[str, Any]) -> None:
        if not self._closing_registered:
            request.app.state.on_shutdown.append(self.writer.close)
            self._closing_registered = True
        await self.writer.record(event)

    # -- the pixel ------------------------------------------------------------------------
    async def pixel(self, request: Request) -> Response:
        token = request.path_params["token"]
        claims = self.keys.verify(token, signing.OPEN)
        if claims is not None and self.settings.tracking and not self._private(request):
            await self._record(request, self._event(request, "open", claims.id))
        return Response(PIXEL if request.method == "GET" else b"", headers=PIXEL_HEADERS)

    # -- tracked links --------------------------------------------------------------------
    async def click(self, request: Request) -> Response:
        claims = self.keys.verify(request.path_params["token"], signing.CLICK)
        if claims is None:
            raise HTTPException(404)
        found = await run_in_threadpool(self._message, claims.id)
        if found is None or claims.link >= len(found["links"] or []):
            raise HTTPException(404)
        target = found["links"][claims.link]
        if self.settings.tracking:
            await self._record(
                request,
                self._event(
                    request,
                    "click",
                    claims.id,
                    sent_at=found["sent_at"],
                    link=claims.link,
                    data={"url": target},
                ),
            )
        return RedirectResponse(target, status_code=302, headers=PRIVATE)

    def _message(self, message_id: int) -> dict[str, Any] | None:
        from sqlalchemy import select

        outbox = self.crm.metadata.tables[OUTBOX]
        with self.crm.connect(readonly=True) as conn:
            row = conn.execute(
                select(outbox.c.id, outbox.c.links, outbox.c.sent_at).where(
                    outbox.c.id == message_id
                )
            ).first()
        return dict(row._mapping) if row is not None else None

    # -- the hosted document --------------------------------------------------------------
    async def document(self, request: Request) -> Response:
        claims = self.keys.verify(request.path_params["token"], signing.DOCUMENT)
        if claims is None:
            raise HTTPException(404)
        doc = await run_in_threadpool(self._document, claims.id)
        if doc is None:
            raise HTTPException(404)
        html = doc["html"]
        nonce = secrets.token_urlsafe(16)
        if self.settings.tracking and not self._private(request):
            event = self._event(request, "page_view", claims.id)
            view_id = await run_in_threadpool(
                start_view,
                self.crm,
                claims.id,
                classification=event["classification"],
                data=event["data"],
            )
            if view_id is not None:
                event["view_id"] = view_id
                await self._record(request, event)
                ttl = self.settings.view_minutes * 60.0
                view_token = self.keys.sign(signing.VIEW, view_id, ttl=ttl)
                html = _with_script(html, view_token, self.settings.heartbeat_seconds, nonce)
        headers = {
            **PRIVATE,
            "X-Robots-Tag": "noindex, nofollow",
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; img-src data: 'self'; "
                f"script-src 'nonce-{nonce}'; connect-src 'self'; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            ),
        }
        return HTMLResponse(html, headers=headers)

    def _document(self, message_id: int) -> dict[str, Any] | None:
        from sqlalchemy import select

        table = self.crm.metadata.tables[DOCUMENTS]
        with self.crm.connect(readonly=True) as conn:
            row = conn.execute(select(table).where(table.c.message_id == message_id)).first()
        return dict(row._mapping) if row is not None else None

    # -- heartbeats -----------------------------------------------------------------------
    async def beat(self, request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BEAT):
            raise ValidationError(f"a heartbeat is at most {MAX_BEAT} bytes", field="body")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BEAT:
                raise ValidationError(f"a heartbeat is at most {MAX_BEAT} bytes", field="body")
        beat = parse_beat(body)
        claims = self.keys.verify(beat["v"], signing.VIEW)
        if claims is not None and self.settings.tracking:
            await run_in_threadpool(
                record_beat,
                self.crm,
                claims.id,
                seq=beat["s"],
                page=beat["p"],
                seconds=beat["t"],
            )
        return Response(status_code=204, headers=PRIVATE)


#: The request headers tracking reads (ASGI gives them lower-cased, as bytes).
_WANTED = frozenset(
    {b"user-agent", b"dnt", b"sec-gpc", b"sec-purpose", b"purpose", b"x-moz", b"x-purpose"}
)


def _headers(request: Request) -> dict[str, str]:
    """The headers tracking reads, from one pass over the request's (kept on the request)."""
    found: dict[str, str] | None = request.scope.get("crmkit.tracking_headers")
    if found is None:
        found = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in request.scope["headers"]
            if name in _WANTED
        }
        request.scope["crmkit.tracking_headers"] = found
    return found


def parse_beat(body: bytes) -> dict[str, Any]:
    """Check a heartbeat's body; :class:`~crmkit.ValidationError` naming the bad field."""
    try:
        beat = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("a heartbeat is a JSON object", field="body") from None
    if not isinstance(beat, dict):
        raise ValidationError("a heartbeat is a JSON object", field="body")
    if not isinstance(beat.get("v"), str):
        raise ValidationError("is required: the view token", field="v")
    for key, what in (("s", "the sequence number"), ("p", "the page")):
        value = beat.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
            raise ValidationError(f"must be {what}, a whole number from 1", field=key)
    seconds = beat.get("t")
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ValidationError("must be the seconds read, a number >= 0", field="t")
    return beat


#: The reading script: which page is on screen, for how long while the tab is visible.
READING_SCRIPT = """
(function () {
  var cfg = JSON.parse(document.getElementById("crmkit-reading").textContent);
  var pages = Array.prototype.slice.call(document.querySelectorAll("[data-page]"));
  var current = pages.length ? parseInt(pages[0].getAttribute("data-page"), 10) : 1;
  var seq = 0, active = 0, last = Date.now();
  function onScreen() {
    // the page under the reading line, which moves down the window as the
    // reader scrolls down the document: a quarter down at the top, the bottom
    // at the end, so that a last page too short to reach the top is read too
    var height = window.innerHeight, best = current;
    var room = document.documentElement.scrollHeight - height;
    var progress = room > 0 ? Math.min(1, Math.max(0, window.scrollY / room)) : 0;
    var line = height * (0.25 + 0.75 * progress) - 1;
    pages.forEach(function (el) {  // the last page that begins above the line
      if (el.getBoundingClientRect().top <= line) {
        best = parseInt(el.getAttribute("data-page"), 10);
      }
    });
    return best;
  }
  function tick() {
    var now = Date.now();
    if (document.visibilityState === "visible") { active += (now - last) / 1000; }
    last = now;
  }
  function send() {
    tick();
    if (active < 0.05) { return; }
    seq += 1;
    var body = JSON.stringify({v: cfg.view, s: seq, p: current, t: Math.round(active * 100) / 100});
    active = 0;
    if (navigator.sendBeacon) {
      navigator.sendBeacon(cfg.beat, new Blob([body], {type: "text/plain"}));
    } else {
      fetch(cfg.beat, {method: "POST", body: body, keepalive: true});
    }
  }
  function follow() {
    var page = onScreen();
    if (page !== current) { send(); current = page; }
  }
  window.addEventListener("scroll", follow, {passive: true});
  window.addEventListener("resize", follow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { send(); } else { last = Date.now(); }
  });
  window.addEventListener("pagehide", send);
  setInterval(send, cfg.every * 1000);
  window.crmkitReading = {send: send, page: function () { return current; }};
})();
"""


def _with_script(html: str, view_token: str, every: float, nonce: str) -> str:
    """``html`` with the reading script and its settings before ``</body>``."""
    config = json.dumps({"view": view_token, "beat": "/p/beat", "every": every})
    snippet = (
        f'<script type="application/json" id="crmkit-reading">{config}</script>'
        f'<script nonce="{nonce}">{READING_SCRIPT}</script>'
    )
    at = html.lower().rfind("</body>")
    return html[:at] + snippet + html[at:] if at >= 0 else html + snippet
