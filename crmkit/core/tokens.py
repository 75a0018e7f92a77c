"""API tokens: how scripts and the HTTP server sign in as a user.

A token is a random secret (``crmk_`` and 43 URL-safe characters) shown once,
when it is made; the database keeps only its SHA-256, so a copy of the
database does not hand out working tokens. A token acts as its user and is
checked every time it is used (:meth:`crmkit.CRM.authenticate`): revoking it,
letting it expire or deactivating its user ends every session that relies on
it at its next request.

``s.tokens`` (:class:`Tokens`) makes, lists and revokes tokens: every user
may manage their own, an admin anyone's.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import secrets
from typing import TYPE_CHECKING, Any

from attrs import frozen
from sqlalchemy import Connection, MetaData, and_, insert, select, update

from .errors import Conflict, NotFound, PermissionDenied, ValidationError
from .model import Role, User
from .schema import utcnow
from .validation import require_text

if TYPE_CHECKING:  # pragma: no cover
    from .store import Session

#: Every secret starts with this, so that a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "crmk_"
#: The longest life a token may be given, in days.
MAX_DAYS = 3650
#: The one refusal of :func:`authenticate`, whatever is wrong with the token.
INVALID_TOKEN = "the token is not valid (unknown, expired or revoked, or its user is deactivated)"


@frozen
class Token:
    """An API token as stored: everything but the secret, which is never stored.

    ``status`` is ``active``, ``expired`` or ``revoked``, as of when it was read.
    """

    id: int
    user_id: int
    user: str
    name: str
    status: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


def hash_token(secret: str) -> str:
    """The SHA-256 (hex) under which a token's secret is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    """A new secret: :data:`TOKEN_PREFIX` and 32 random bytes, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def authenticate(metadata: MetaData, conn: Connection, secret: Any) -> User:
    """The active user whose valid token ``secret`` is; records its use.

    Raises :class:`PermissionDenied` with the same message (:data:`INVALID_TOKEN`)
    for a malformed, unknown, revoked or expired token and for a deactivated
    user, so that a caller learns nothing about which tokens exist.
    """
    denied = PermissionDenied(INVALID_TOKEN, field="token")
    if not isinstance(secret, str):
        raise denied
    secret = secret.strip()
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        raise denied
    tokens, users = metadata.tables["api_tokens"], metadata.tables["users"]
    now = utcnow()
    row = conn.execute(
        select(
            tokens.c.id.label("token_id"),
            tokens.c.revoked_at.label("token_revoked_at"),
            tokens.c.expires_at.label("token_expires_at"),
            users,
        )
        .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
        .where(tokens.c.token_hash == hash_token(secret))
    ).first()
    if row is None or row.token_revoked_at is not None or not row.active:
        raise denied
    if row.token_expires_at is not None and row.token_expires_at <= now:
        raise denied
    # conditional, so that a revocation committed meanwhile (PostgreSQL re-checks the
    # row after waiting for its lock) still refuses the token
    used = conn.execute(
        update(tokens)
        .where(tokens.c.id == row.token_id, tokens.c.revoked_at.is_(None))
        .values(last_used_at=now)
    )
    if used.rowcount != 1:
        raise denied
    data = {c.name: row._mapping[c.name] for c in users.columns}
    return User(**{**data, "role": Role(data["role"])})


class Tokens:
    """The API tokens of users (``s.tokens``): yours, or anyone's for an admin."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.t = session.tables["api_tokens"]

    def create(
        self, user: str | int, *, name: str, expires_in_days: int | None = None
    ) -> tuple[str, Token]:
        """Make a token for ``user``; returns ``(secret, token)``.

        The secret is returned here only: the database keeps its SHA-256.
        ``expires_in_days`` (1 to 3650; default: never) limits its life. A
        user may make tokens for themselves, an admin for any active user.
        """
        owner = self._user(user, field="user")
        if not owner.active:
            raise ValidationError(f"user {owner.login!r} is deactivated", field="user")
        name = require_text(name, field="name", max_length=100)
        if expires_in_days is not None and (
            isinstance(expires_in_days, bool)
            or not isinstance(expires_in_days, int)
            or not 1 <= expires_in_days <= MAX_DAYS
        ):
            raise ValidationError(
                f"must be a whole number of days from 1 to {MAX_DAYS}", field="expires_in_days"
            )
        secret = new_secret()
        now = utcnow()
        expires_at = None if expires_in_days is None else now + dt.timedelta(days=expires_in_days)
        token_id = self.s.connection.execute(
            insert(self.t)
            .values(
                user_id=owner.id,
                name=name,
                token_hash=hash_token(secret),
                created_at=now,
                expires_at=expires_at,
            )
            .returning(self.t.c.id)
        ).scalar_one()
        self.s.record(
            "token",
            token_id,
            "created",
            {
                "user": owner.login,
                "name": name,
                "expires_at": None if expires_at is None else expires_at.isoformat(),
            },
        )
        return secret, self.get(token_id)

    def get(self, token_id: int) -> Token:
        """The token with this id (yours, or anyone's for an admin); raises :class:`NotFound`."""
        row = self.s.connection.execute(self._select().where(self.t.c.id == token_id)).first()
        if row is None or not self._may_manage(row.user_id):
            raise NotFound(f"no token with id {token_id}", field="token")
        return _token(row, utcnow())

    def list(self, user: str | int | None = None) -> builtins.list[Token]:
        """Tokens by id: ``user``'s, or else yours (an admin's: everyone's).

        Revoked and expired ones are listed too, with their ``status``.
        """
        q = self._select().order_by(self.t.c.id)
        if user is not None:
            q = q.where(self.t.c.user_id == self._user(user, field="user").id)
        elif self.s.user.role != Role.ADMIN:
            q = q.where(self.t.c.user_id == self.s.user.id)
        now = utcnow()
        return [_token(r, now) for r in self.s.connection.execute(q)]

    def revoke(self, token_id: int) -> Token:
        """Revoke a token: it stops working at once. Revoking twice is a :class:`Conflict`."""
        token = self.get(token_id)
        if token.revoked_at is not None:
            raise Conflict(f"token #{token.id} is already revoked", field="token")
        self.s.connection.execute(
            update(self.t).where(self.t.c.id == token.id).values(revoked_at=utcnow())
        )
        self.s.record("token", token.id, "revoked", {"user": token.user, "name": token.name})
        return self.get(token.id)

    def revoke_all(self, user_id: int) -> int:
        """Revoke every token of the user ``user_id`` still in force; returns how many.

        One statement; no events (the caller records why). Used by
        :meth:`crmkit.core.store.Users.deactivate`.
        """
        if not self._may_manage(user_id):
            raise PermissionDenied(
                f"user {self.s.user.login!r} may revoke only their own tokens", field="user"
            )
        result = self.s.connection.execute(
            update(self.t)
            .where(and_(self.t.c.user_id == user_id, self.t.c.revoked_at.is_(None)))
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount)

    # -- internals ---------------------------------------------------------
    def _user(self, ref: str | int, *, field: str) -> User:
        found = self.s.users.get(ref, field=field)
        if not self._may_manage(found.id):
            raise PermissionDenied(
                f"user {self.s.user.login!r} ({self.s.user.role.value}) may manage only "
                f"their own tokens; those of {found.login!r} need an admin",
                field=field,
            )
        return found

    def _may_manage(self, user_id: int) -> bool:
        return self.s.user.role == Role.ADMIN or user_id == self.s.user.id

    def _select(self) -> Any:
        users = self.s.tables["users"]
        return select(self.t, users.c.login.label("user")).select_from(
            self.t.join(users, users.c.id == self.t.c.user_id)
        )


def _token(row: Any, now: dt.datetime) -> Token:
    data = dict(row._mapping)
    data.pop("token_hash")
    if data["revoked_at"] is not None:
        status = "revoked"
    elif data["expires_at"] is not None and data["expires_at"] <= now:
        status = "expired"
    else:
        status = "active"
    return Token(**data, status=status)
