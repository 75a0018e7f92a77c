"""Tracking tokens: opaque, unforgeable, expiring, signed with rotating keys.

A token carries a purpose (:data:`OPEN`, :data:`CLICK`, :data:`DOCUMENT`,
:data:`VIEW`), the id of a message (or of a reading session), a link index
and an expiry, signed with HMAC-SHA256 under one of the deployment's keys
(table ``email_keys``). It is 46 URL-safe characters::

    base64url( kid:u16 | version:u8 purpose:u8 id:u64 link:u16 expires:u32 | mac[:16] )

Checking a token needs no database read but the keys (cached), so a flood of
forged tokens costs a hash each, nothing more. Malformed, forged, expired
tokens and tokens of another purpose all verify to ``None``; callers do not
say why.

Keys: the newest signs; every stored key verifies, so rotating
(``crmkit email keys rotate``) does not break the links of messages already
sent, and deleting a key ends every token signed with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from attrs import frozen
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from crmkit import ConfigError
from crmkit.core.schema import utcnow

from .tables import KEYS

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM

OPEN, CLICK, DOCUMENT, VIEW = 1, 2, 3, 4
PURPOSES = {OPEN: "open", CLICK: "click", DOCUMENT: "document", VIEW: "view"}
VERSION = 1
_BODY = struct.Struct(">HBBQHI")  # kid, version, purpose, id, link, expires
_MAC_BYTES = 16
#: The length of every token; anything else is refused before decoding.
TOKEN_LENGTH = len(base64.urlsafe_b64encode(b"\0" * (_BODY.size + _MAC_BYTES)).rstrip(b"="))


@frozen
class Claims:
    """What a valid token says."""

    purpose: int
    id: int
    link: int
    expires: int
    kid: int


class Keys:
    """The deployment's signing keys, read from ``email_keys`` and cached.

    An unknown key id makes it read the table again (at most once a second),
    so that a key made by ``crmkit email keys rotate`` in another process is
    picked up by a running server.
    """

    def __init__(self, crm: CRM) -> None:
        self.crm = crm
        self._keys: dict[int, bytes] = {}
        self._read_at = 0.0
        self._lock = threading.Lock()

    def _reload(self) -> None:
        table = self.crm.metadata.tables[KEYS]
        with self.crm.connect(readonly=True) as conn:
            rows = conn.execute(select(table.c.kid, table.c.secret)).all()
        self._keys = {int(kid): bytes.fromhex(secret) for kid, secret in rows}
        self._read_at = time.monotonic()

    def signing_key(self) -> tuple[int, bytes]:
        """The newest key (the plugin's migration makes the first one)."""
        with self._lock:
            if not self._keys:
                self._reload()
            if not self._keys:
                raise ConfigError(
                    "the deployment has no signing key for tracking links: "
                    "make one with 'crmkit email keys rotate'",
                    field="email_keys",
                )
            kid = max(self._keys)
            return kid, self._keys[kid]

    def key(self, kid: int) -> bytes | None:
        """The key ``kid``, or None when there is no such key."""
        found = self._keys.get(kid)
        if found is None and time.monotonic() - self._read_at > 1.0:
            with self._lock:
                self._reload()
            found = self._keys.get(kid)
        return found

    def rotate(self) -> int:
        """Make a new key, which signs from now on; return its id."""
        table = self.crm.metadata.tables[KEYS]
        for _ in range(5):
            with self.crm.connect() as conn:
                newest = conn.execute(select(table.c.kid).order_by(table.c.kid.desc())).scalar()
                kid = (newest or 0) + 1
                try:
                    conn.execute(
                        insert(table).values(
                            kid=kid, secret=secrets.token_hex(32), created_at=utcnow()
                        )
                    )
                except IntegrityError:  # another process made this key id at the same moment
                    continue
            break
        self._reload()
        return max(self._keys)

    def sign(self, purpose: int, ident: int, *, link: int = 0, ttl: float) -> str:
        """A token for ``purpose`` on ``ident`` (and ``link``), valid for ``ttl`` seconds."""
        kid, key = self.signing_key()
        expires = min(int(time.time() + ttl), 0xFFFFFFFF)
        body = _BODY.pack(kid, VERSION, purpose, ident, link, expires)
        mac = hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")

    def verify(self, token: Any, purpose: int, *, now: float | None = None) -> Claims | None:
        """The claims of ``token`` if it is well formed, genuine, unexpired and for ``purpose``."""
        if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "==")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _BODY.size + _MAC_BYTES:
            return None
        body, mac = raw[: _BODY.size], raw[_BODY.size :]
        kid, version, got_purpose, ident, link, expires = _BODY.unpack(body)
        if version != VERSION or got_purpose != purpose:
            return None
        key = self.key(kid)
        if key is None:
            return None
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]):
            return None
        if expires < (time.time() if now is None else now):
            return None
        return Claims(purpose=got_purpose, id=ident, link=link, expires=expires, kid=kid)


def keys(crm: CRM) -> Keys:
    """The deployment's :class:`Keys` (one per open :class:`~crmkit.CRM`)."""
    found = crm.__dict__.get("_email_tracking_keys")
    if found is None:
        found = crm.__dict__["_email_tracking_keys"] = Keys(crm)
    return found  # type: ignore[no-any-return]
