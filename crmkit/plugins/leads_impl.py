"""Web lead capture's work (the hooks in :mod:`crmkit.plugins.leads` call these): :doc:`/leads`.

* :class:`Settings` — ``[plugin.leads]`` of ``crmkit.toml``, checked when the
  deployment opens (a :class:`~crmkit.ConfigError` naming the key);
* :class:`LeadKeys` — the deployment's lead API keys (table ``lead_keys``):
  shown once, stored as their SHA-256, revocable;
* :func:`capture` — one lead in one transaction: the client found by email
  (case-insensitive) and completed, or created; a ``lead_captured`` event;
  the ``lead.captured`` automation event;
* :func:`routes` — ``POST /api/leads``: body limit, per-IP rate limit,
  key, honeypot, parsing of JSON, url-encoded and multipart forms.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import math
import secrets
import threading
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from sqlalchemy import insert, select, update

from crmkit.core.errors import (
    ConfigError,
    Conflict,
    DuplicateError,
    NotFound,
    PermissionDenied,
    Problem,
    ValidationError,
)
from crmkit.core.model import Role
from crmkit.core.schema import utcnow
from crmkit.core.tokens import hash_token

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.app import CRM
    from crmkit.core.store import Session

#: The plugin's table in ``crmkit.toml``.
SECTION = "plugin.leads"
#: Every lead key starts with this, so that a leaked one is recognisable.
KEY_PREFIX = "crml_"
#: The one refusal for a missing, unknown or revoked key: it tells nothing about which exist.
INVALID_KEY = (
    "a valid lead API key is needed: send it as the X-API-Key header or the api_key field "
    "(make one with 'crmkit lead key create')"
)
#: The form's fields that make a lead, in this order.
FIELDS = (
    "name",
    "email",
    "phone",
    "company",
    "message",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)
UTM_FIELDS = tuple(f for f in FIELDS if f.startswith("utm_"))
#: The longest value of each field, in characters.
MAX_LENGTH = {"name": 300, "company": 300, "message": 5000}
MAX_UTM_LENGTH = 200

#: ``utm_source/utm_medium`` to a channel; ``*`` stands for any source or medium.
#: A deployment's ``utm_channels`` are added over these; a default whose channel the
#: deployment does not have is left out.
DEFAULT_UTM_CHANNELS: dict[str, str] = {
    "*/cpc": "advertising",
    "*/ppc": "advertising",
    "*/paid": "advertising",
    "*/display": "advertising",
    "*/banner": "advertising",
    "*/email": "email_campaign",
    "*/newsletter": "email_campaign",
    "*/social": "social",
    "*/smm": "social",
    "facebook/*": "social",
    "instagram/*": "social",
    "linkedin/*": "social",
    "telegram/*": "social",
    "twitter/*": "social",
    "vk/*": "social",
    "*/referral": "referral",
    "*/partner": "partner",
    "*/affiliate": "partner",
    "*/event": "event",
}

_PAIR = "^(\\*|[^/*\\s]+)/(\\*|[^/*\\s]+)$"
SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "per_minute": {"type": "integer", "minimum": 1, "maximum": 100000},
        "max_bytes": {"type": "integer", "minimum": 1024, "maximum": 1048576},
        "honeypot": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]{0,62}$"},
        "default_channel": {"type": "string"},
        "utm_channels": {
            "type": "object",
            "propertyNames": {"pattern": _PAIR},
            "additionalProperties": {"type": "string", "minLength": 1},
        },
    },
}


@frozen
class Settings:
    """``[plugin.leads]``, checked, with the defaults filled in."""

    #: requests to ``POST /api/leads`` per client IP and minute (a token bucket per process)
    per_minute: int = 10
    #: the largest body accepted, in bytes
    max_bytes: int = 16384
    #: the hidden field that people leave empty and bots fill in
    honeypot: str = "website"
    #: the channel of a lead no mapping matches (None: no source)
    default_channel: str | None = "website"
    #: ``source/medium`` (lower case, ``*`` for any) to a channel name
    utm_channels: dict[str, str] = field(factory=dict)

    def channel(self, utm_source: str | None, utm_medium: str | None) -> str | None:
        """The channel of a lead: the exact pair, then ``*/medium``, then ``source/*``."""
        source = (utm_source or "").strip().lower()
        medium = (utm_medium or "").strip().lower()
        candidates = []
        if source and medium:
            candidates.append(f"{source}/{medium}")
        if medium:
            candidates.append(f"*/{medium}")
        if source:
            candidates.append(f"{source}/*")
        for key in candidates:
            if key in self.utm_channels:
                return self.utm_channels[key]
        return self.default_channel


def settings(crm: CRM) -> Settings:
    """The deployment's settings (:class:`~crmkit.ConfigError` naming a wrong key)."""
    cached = crm.__dict__.get("_leads_settings")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    found = parse(crm.config.plugin("leads"), set(crm.channels))
    crm.__dict__["_leads_settings"] = found
    return found


def parse(data: dict[str, Any], channels: set[str]) -> Settings:
    """Check ``[plugin.leads]`` (as a dict) against the deployment's ``channels``."""
    from crmkit.core.validation import schema_problems

    problems = schema_problems(SETTINGS_SCHEMA, data, prefix=SECTION)
    if problems:
        first = problems[0]
        raise ConfigError(f"{first.reason} (in crmkit.toml)", field=first.field or SECTION)
    known = ", ".join(sorted(channels)) or "none"
    mapping = {k: v for k, v in DEFAULT_UTM_CHANNELS.items() if v in channels}
    for key, channel in data.get("utm_channels", {}).items():
        if channel not in channels:
            raise ConfigError(
                f"unknown channel {channel!r} (known: {known}; add one under [clients] channels)",
                field=f"{SECTION}.utm_channels.{key}",
            )
        mapping[key.lower()] = channel
    if "default_channel" in data:
        default = data["default_channel"] or None
        if default is not None and default not in channels:
            raise ConfigError(
                f'unknown channel {default!r} (known: {known}; "" for none)',
                field=f"{SECTION}.default_channel",
            )
    else:
        default = "website" if "website" in channels else None
    return Settings(
        per_minute=data.get("per_minute", 10),
        max_bytes=data.get("max_bytes", 16384),
        honeypot=data.get("honeypot", "website"),
        default_channel=default,
        utm_channels=mapping,
    )


# -- keys ---------------------------------------------------------------------------------------
@frozen
class LeadKey:
    """A lead API key as stored: everything but the secret."""

    id: int
    name: str
    status: str  #: active or revoked
    created_at: dt.datetime
    created_by: str | None = None
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


#: The SHA-256 (hex) under which a key is stored: the same digest as API tokens'.
hash_key = hash_token


class LeadKeys:
    """The deployment's lead API keys. Only an admin makes, lists and revokes them."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.t = session.tables["lead_keys"]

    def create(self, name: str = "website") -> tuple[str, LeadKey]:
        """Make a key; returns ``(secret, key)``. The secret is returned here only."""
        from crmkit.core.validation import require_text

        self._admin()
        name = require_text(name, field="name", max_length=100)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = self.s.connection.execute(
            insert(self.t)
            .values(
                name=name, key_hash=hash_key(secret), created_at=utcnow(), created_by=self.s.user.id
            )
            .returning(self.t.c.id)
        ).scalar_one()
        self.s.record("lead_key", key_id, "created", {"name": name})
        return secret, self.get(key_id)

    def get(self, key_id: int) -> LeadKey:
        """The key with this id; :class:`NotFound`."""
        self._admin()
        row = self.s.connection.execute(self._select().where(self.t.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"no lead key with id {key_id}", field="key")
        return _key(row)

    def list(self) -> builtins.list[LeadKey]:
        """Every key by id, revoked ones too."""
        self._admin()
        return [_key(r) for r in self.s.connection.execute(self._select().order_by(self.t.c.id))]

    def revoke(self, key_id: int) -> LeadKey:
        """Revoke a key: the next lead sent with it is refused. Twice is a :class:`Conflict`."""
        key = self.get(key_id)
        if key.revoked_at is not None:
            raise Conflict(f"lead key #{key.id} is already revoked", field="key")
        self.s.connection.execute(
            update(self.t).where(self.t.c.id == key.id).values(revoked_at=utcnow())
        )
        self.s.record("lead_key", key.id, "revoked", {"name": key.name})
        return self.get(key.id)

    def check(self, secret: Any) -> int:
        """The id of the active key ``secret``; :class:`PermissionDenied` naming ``api_key``."""
        denied = PermissionDenied(INVALID_KEY, field="api_key")
        if not isinstance(secret, str):
            raise denied
        secret = secret.strip()
        if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            raise denied
        row = self.s.connection.execute(
            select(self.t.c.id, self.t.c.revoked_at).where(self.t.c.key_hash == hash_key(secret))
        ).first()
        if row is None or row.revoked_at is not None:
            raise denied
        return int(row.id)

    def used(self, key_id: int) -> None:
        """Record that a lead came with the key (its ``last_used_at``)."""
        self.s.connection.execute(
            update(self.t).where(self.t.c.id == key_id).values(last_used_at=utcnow())
        )

    def _admin(self) -> None:
        if self.s.user.role is not Role.ADMIN:
            raise PermissionDenied(
                f"user {self.s.user.login!r} ({self.s.user.role.value}) may not manage lead "
                "keys; it needs the role admin",
                field="user",
            )

    def _select(self) -> Any:
        users = self.s.tables["users"]
        return select(self.t, users.c.login.label("creator")).select_from(
            self.t.outerjoin(users, users.c.id == self.t.c.created_by)
        )


def _key(row: Any) -> LeadKey:
    m = row._mapping
    return LeadKey(
        id=m["id"],
        name=m["name"],
        status="revoked" if m["revoked_at"] is not None else "active",
        created_at=m["created_at"],
        created_by=m["creator"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
    )


# -- a lead -------------------------------------------------------------------------------------
def clean(form: dict[str, Any]) -> dict[str, str | None]:
    """The lead's fields from a parsed form, checked: :class:`ValidationError` naming each field."""
    from crmkit.core.validation import normalize_email, normalize_phone

    problems: list[Problem] = []
    lead: dict[str, str | None] = {}
    for name in FIELDS:
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            else:
                problems.append(Problem(name, "must be text"))
                continue
        value = value.strip() if value is not None else None
        value = value or None
        limit = MAX_LENGTH.get(name, MAX_UTM_LENGTH if name.startswith("utm_") else 300)
        try:
            if name == "email":
                value = normalize_email(value, field="email")
            elif name == "phone":
                value = normalize_phone(value, field="phone")
            if value is not None and len(value) > limit:
                raise ValidationError(f"is longer than {limit} characters", field=name)
        except ValidationError as exc:
            problems.append(Problem(exc.field or name, exc.message))
            continue
        lead[name] = value
    if not problems and not lead.get("email") and not lead.get("phone"):
        problems.append(Problem("email", "a lead needs an email or a phone"))
    if problems:
        raise ValidationError.from_problems(problems)
    return lead


def capture(
    crm: CRM, secret: Any, form: dict[str, Any], *, request_id: str | None = None
) -> dict[str, Any] | None:
    """Store one lead in one transaction; ``{"client_id", "created"}``, or None for a bot's.

    The key is checked first (:class:`PermissionDenied` naming ``api_key``);
    a filled honeypot field then stores nothing and returns None; the fields
    are checked (:class:`ValidationError` naming each bad one). The session
    acts as ``[automation] lead_user`` (default: the deployment's admin),
    who owns the clients it creates.
    """
    conf = settings(crm)
    as_user = crm.config.automation.get("lead_user")
    with crm.session(as_user=as_user) as s:
        keys = LeadKeys(s)
        key_id = keys.check(secret)
        trap = form.get(conf.honeypot)
        if trap not in (None, "") and (not isinstance(trap, str) or trap.strip()):
            return None
        lead = clean(form)
        channel = conf.channel(lead.get("utm_source"), lead.get("utm_medium"))
        with s.access.on_behalf("web lead capture (POST /api/leads)"):
            client_id, created = _save(s, lead, channel)
            client = s.clients._fetch(client_id)
            s.record(
                "client",
                client_id,
                "lead_captured",
                {"lead": lead, "channel": channel, "created": created, "key": key_id},
            )
        keys.used(key_id)
        automation = crm.automation
        if automation.wants("lead.captured"):
            from crmkit.core.automation import payload_of

            payload = payload_of(client=client, created=created, lead=lead, channel=channel)
            event_key = f"lead:{client_id}:{request_id or uuid.uuid4().hex}"
            automation.fire(s, "lead.captured", payload, event_key)
        return {"client_id": client_id, "created": created}


def _save(s: Session, lead: dict[str, str | None], channel: str | None) -> tuple[int, bool]:
    """The client of the lead: found by email and completed, or created."""
    email = lead.get("email")
    existing = s.clients._find(email=email) if email else None
    if existing is None:
        name = lead.get("company") or lead.get("name") or email or lead.get("phone")
        assert name is not None
        try:
            client = s.clients.create(
                name,
                kind="company" if lead.get("company") else "person",
                email=email,
                phone=lead.get("phone"),
                source=channel,
            )
        except DuplicateError:  # another lead with this email committed meanwhile
            existing = s.clients._find(email=email)
            if existing is None:
                raise
        else:
            person = lead.get("name")
            if lead.get("company") and person:
                s.contacts.add(client.id, person, email=email, phone=lead.get("phone"))
            return client.id, True
    changes: dict[str, Any] = {}
    if lead.get("phone") and not existing.phone:
        changes["phone"] = lead["phone"]
    if channel and not existing.source:
        changes["source"] = channel
    if changes:
        s.clients.update(existing.id, **changes)
    return existing.id, False


# -- the HTTP route -------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per client IP: ``per_minute`` requests a minute, bursts of as many.

    In memory, per server process: each of several workers counts its own.
    """

    def __init__(self, per_minute: int, *, clock: Any = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, ip: str) -> float:
        """0 when the request may go on, else the seconds until it may."""
        now = self.clock()
        with self.lock:
            tokens, then = self.buckets.get(ip, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self.buckets[ip] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self.buckets[ip] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self.buckets) > 10000:  # forget the addresses whose bucket is full again
                full = self.capacity / self.rate
                self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < full}
        return wait


def _error(status: int, message: str, field: str | None = None, **headers: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"error": "HTTPError", "field": field, "message": message},
        status_code=status,
        headers=headers or None,
    )


async def _read_body(request: Any, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """The fields of a JSON, url-encoded or multipart body; :class:`ValidationError` otherwise."""
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        if kind == "application/json" or kind.endswith("+json"):
            data = json.loads(body or b"null")
            if not isinstance(data, dict):
                raise ValidationError("must be a JSON object of the form's fields", field="body")
            return data
        if kind in ("application/x-www-form-urlencoded", ""):
            text = body.decode("utf-8")
            return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
        if kind == "multipart/form-data":
            return _multipart(content_type, body)
    except UnicodeDecodeError:
        raise ValidationError("is not UTF-8 text", field="body") from None
    except json.JSONDecodeError as exc:
        raise ValidationError(f"is not valid JSON: {exc.msg}", field="body") from None
    raise ValidationError(
        f"unsupported content type {kind!r}: send application/x-www-form-urlencoded, "
        "multipart/form-data or application/json",
        field="content-type",
    )


def _multipart(content_type: str, body: bytes) -> dict[str, Any]:
    import email.parser
    import email.policy

    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValidationError("is not a multipart/form-data body", field="body")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or part.get_filename():  # files are not a lead's
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        fields[str(name)] = payload.decode(part.get_content_charset() or "utf-8")
    return fields


def routes(crm: CRM) -> list[Any]:
    """``POST /api/leads``."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from crmkit.server import client_ip

    conf = settings(crm)
    limiter = RateLimiter(conf.per_minute)

    async def leads(request: Any) -> Any:
        wait = limiter.take(client_ip(request) or "-")
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return _error(
                429,
                f"too many leads from this address; try again in {seconds} s",
                **{"Retry-After": str(seconds)},
            )
        body = await _read_body(request, conf.max_bytes)
        if body is None:
            return _error(
                413,
                f"the body is larger than {conf.max_bytes} bytes",
                "body",
                Connection="close",
            )
        form = parse_body(request.headers.get("content-type", ""), body)
        for name in UTM_FIELDS:  # UTM tags may come in the query string of the form's action
            if form.get(name) in (None, "") and request.query_params.get(name):
                form[name] = request.query_params[name]
        secret = request.headers.get("x-api-key") or form.get("api_key")
        try:
            done = await run_in_threadpool(
                capture, request.app.state.crm, secret, form, request_id=uuid.uuid4().hex
            )
        except PermissionDenied as exc:
            if exc.field != "api_key":
                raise
            return JSONResponse(exc.to_dict(), status_code=401)
        if done is None:  # a bot filled the honeypot: as if accepted, nothing stored
            return JSONResponse({"client_id": None, "created": False}, status_code=202)
        return JSONResponse(done, status_code=201 if done["created"] else 200)

    return [Route("/api/leads", leads, methods=["POST"], name="leads")]
