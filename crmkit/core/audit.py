"""The tamper-evident audit log: who was allowed or refused what, and every change.

Entries come from a session's buffer (:meth:`crmkit.core.store.Session.audit`,
and :meth:`~crmkit.core.store.Session.record` for changes) and are appended
to the ``audit_log`` table when the session ends. Each entry carries the
SHA-256 of its own contents and of the previous entry's hash
(``prev_hash``), so the entries form one chain: changing an entry breaks its
hash, removing one breaks the ids and the next entry's ``prev_hash``.
:func:`verify` walks the chain and names the first broken entry.

What is hashed is the canonical JSON (keys sorted, no spaces, UTF-8) of
``[id, at, user_id, login, kind, action, resource, allowed, record_ids,
detail, prev_hash]``, with ``at`` in UTC ISO 8601 with microseconds. The
values are normalised before they are stored, so that what is hashed is
exactly what reads back, on SQLite (JSON text) as on PostgreSQL (JSONB,
which reorders keys and rewrites numbers).

Appending is serialised: on PostgreSQL by a transaction-level advisory lock,
on SQLite by the write transaction itself (crmkit starts those with
``BEGIN IMMEDIATE``). The lock is taken as the session commits, so it is held
only for the few statements that append.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen
from sqlalchemy import Connection, Table, func, insert, select, text

if TYPE_CHECKING:  # pragma: no cover
    from .model import User
    from .store import AuditEntry

#: ``prev_hash`` of the first entry
GENESIS = "0" * 64
#: the key of PostgreSQL's advisory lock that serialises appends ("crmkit-audit" in ASCII)
LOCK_KEY = 0x63726D6B69746175
#: entries read per query by :func:`verify`
BATCH_SIZE = 5000
KINDS = ("access", "change")

_CHANGED = "its hash does not match its contents (the entry was changed)"


@frozen
class Verification:
    """What :func:`verify` found.

    ``checked`` entries were read; ``ok`` is False from the first broken one
    on, which ``broken_id`` names and ``reason`` explains. ``head`` is the
    hash of the last intact entry (``head_id``): keep it elsewhere, it is
    what shows that no entry after it has been removed (see
    :func:`verify`'s ``expect_head``).
    """

    checked: int
    ok: bool
    head: str
    head_id: int | None = None
    broken_id: int | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head": self.head,
            "head_id": self.head_id,
            "broken_id": self.broken_id,
            "reason": self.reason,
        }


@functools.cache
def table() -> Table:
    """The ``audit_log`` table (the core's definition; no plugin changes it)."""
    from .schema import core_metadata

    return core_metadata().tables["audit_log"]


def append(
    connection: Connection, user: User | None, entries: Sequence[AuditEntry]
) -> list[dict[str, Any]]:
    """Append ``entries`` made by ``user`` to the chain, in ``connection``'s transaction.

    Returns the rows as written (with ``id``, ``prev_hash`` and ``hash``).
    Writers are serialised until the transaction ends, so call this last,
    just before the commit.
    """
    if not entries:
        return []
    t = table()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    last = connection.execute(select(t.c.id, t.c.hash).order_by(t.c.id.desc()).limit(1)).first()
    last_id, prev = (int(last[0]), str(last[1])) if last is not None else (0, GENESIS)
    user_id = None if user is None else user.id
    login = None if user is None else user.login[:100]
    rows: list[dict[str, Any]] = []
    for offset, entry in enumerate(entries, start=1):
        row = {
            "id": last_id + offset,
            "at": entry.at.astimezone(dt.UTC),
            "user_id": user_id,
            "login": login,
            "kind": entry.kind[:10],
            "action": entry.action[:50],
            "resource": entry.resource[:50],
            "allowed": bool(entry.allowed),
            "record_ids": None if entry.record_ids is None else [int(i) for i in entry.record_ids],
            "detail": normalise(entry.detail),
            "prev_hash": prev,
        }
        prev = row["hash"] = entry_hash(row)
        rows.append(row)
    connection.execute(insert(t), rows)
    return rows


def entry_hash(row: Any) -> str:
    """The SHA-256 (hex) of an entry's contents and its ``prev_hash``.

    ``row`` is a mapping with the columns of ``audit_log`` (``hash`` aside).
    """
    at: dt.datetime = row["at"]
    if at.tzinfo is None:  # pragma: no cover - UTCDateTime always reads aware times
        at = at.replace(tzinfo=dt.UTC)
    contents = [
        row["id"],
        at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        row["user_id"],
        row["login"],
        row["kind"],
        row["action"],
        row["resource"],
        bool(row["allowed"]),
        row["record_ids"],
        row["detail"],
        row["prev_hash"],
    ]
    data = json.dumps(contents, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def normalise(value: Any) -> Any:
    """``value`` as JSON reads it back from either database (what is stored is what is hashed).

    Anything JSON has no type for becomes its ``str``; tuples become lists,
    keys strings; a float that JSON would write with a positive exponent
    (1e+16 and up, always a whole number) becomes the integer PostgreSQL's
    JSONB reads back, -0.0 becomes 0.0; NaN and the infinities become
    strings, and NUL in text U+FFFD (JSONB refuses both).
    """
    return _normal(json.loads(json.dumps(value, default=str)))


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0.0:
            return 0.0  # -0.0 too: JSONB has no negative zero
        text = repr(value)
        if "e+" in text:
            import decimal

            return int(decimal.Decimal(text))
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")  # JSONB refuses NUL
    return value


def verify(
    connection: Connection, *, expect_head: str | None = None, batch_size: int = BATCH_SIZE
) -> Verification:
    """Walk the chain from the first entry and stop at the first broken one.

    An entry is broken when its hash does not match its contents, when its
    id does not follow the previous entry's, or when its ``prev_hash`` is not
    the previous entry's hash. The entries are read ``batch_size`` at a time.
    With ``expect_head`` (a head hash recorded earlier), the chain must also
    contain an entry with that hash: otherwise the newest entries were
    removed (or the whole log replaced), which the chain alone cannot show.
    """
    checked = 0
    prev_id, prev_hash = 0, GENESIS
    seen_expected = expect_head is None
    for row in _rows(connection, batch_size):
        reason = None
        if entry_hash(row) != row["hash"]:
            reason = _CHANGED
        elif row["id"] != prev_id + 1:
            reason = (
                f"ids start at {row['id']}, not 1 (the first entries were removed)"
                if prev_id == 0
                else f"ids jump from {prev_id} to {row['id']} (entries were removed)"
            )
        elif row["prev_hash"] != prev_hash:
            reason = (
                "its prev_hash is not the genesis hash (the log's start was rewritten)"
                if prev_id == 0
                else f"its prev_hash does not match entry #{prev_id} "
                "(an entry before it was removed or changed)"
            )
        checked += 1
        if reason is not None:
            return Verification(
                checked=checked,
                ok=False,
                head=prev_hash,
                head_id=prev_id or None,
                broken_id=row["id"],
                reason=reason,
            )
        prev_id, prev_hash = row["id"], row["hash"]
        seen_expected = seen_expected or prev_hash == expect_head
    if not seen_expected:
        return Verification(
            checked=checked,
            ok=False,
            head=prev_hash,
            head_id=prev_id or None,
            reason=f"no entry has the expected head hash {expect_head} "
            "(entries after it were removed, or the log was replaced)",
        )
    return Verification(checked=checked, ok=True, head=prev_hash, head_id=prev_id or None)


def _rows(connection: Connection, batch_size: int) -> Iterator[dict[str, Any]]:
    """Every entry in id order, ``batch_size`` per query (keyset paging)."""
    t = table()
    last: int | None = None
    while True:
        query = select(t).order_by(t.c.id).limit(batch_size)
        if last is not None:
            query = query.where(t.c.id > last)
        batch = [dict(r._mapping) for r in connection.execute(query)]
        if not batch:
            return
        yield from batch
        last = batch[-1]["id"]


def head(connection: Connection) -> tuple[int, str] | None:
    """The id and hash of the newest entry, or None for an empty log."""
    t = table()
    row = connection.execute(select(t.c.id, t.c.hash).order_by(t.c.id.desc()).limit(1)).first()
    return None if row is None else (int(row[0]), str(row[1]))


def entries(
    connection: Connection,
    *,
    user_id: int | None = None,
    login: str | None = None,
    since: dt.datetime | None = None,
    resource: str | None = None,
    kind: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest ``limit`` entries that match every filter given, newest first.

    ``user_id`` or ``login`` select the acting user (``login`` also finds
    entries of a user whose row is gone), ``since`` a time (inclusive),
    ``resource`` what was accessed or changed (``client``, ``deal`` ...),
    ``kind`` ``access`` or ``change``.
    """
    t = table()
    query = select(t)
    if user_id is not None:
        query = query.where(t.c.user_id == user_id)
    if login is not None:
        query = query.where(t.c.login == login)
    if since is not None:
        query = query.where(t.c.at >= since)
    if resource is not None:
        query = query.where(t.c.resource == resource)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    rows = connection.execute(query.order_by(t.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


def count(connection: Connection) -> int:
    """How many entries the log holds."""
    t = table()
    return int(connection.execute(select(func.count()).select_from(t)).scalar_one())


__all__ = [
    "GENESIS",
    "Verification",
    "append",
    "count",
    "entries",
    "entry_hash",
    "head",
    "normalise",
    "verify",
]
