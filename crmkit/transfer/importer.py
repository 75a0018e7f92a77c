"""Bulk import of clients (with contacts) from CSV and JSON Lines, at the speed of the database.

The importer streams: it reads, checks and writes ``batch_size`` rows at a
time, so memory stays bounded whatever the file's size. Every batch is one
transaction (``on_error="skip"``: bad rows go to the errors file, good rows
are stored), or the whole file is (``on_error="abort"``: one bad row and
nothing is written, but every bad row is still reported).

The hot path does not build a domain object per row and does not go through
the ORM: rows become tuples that one ``executemany`` writes, segment
parameters are checked by a compiled JSON Schema validator
(:func:`crmkit.core.validation.fast_check`), and ``jsonschema`` is asked for
the reasons only when a row fails. Hooks are called once per batch
(``crmkit_records_imported``), never once per row.

Deduplication and idempotency: a row whose external id, or else email
(case-insensitive), matches a client already stored (or an earlier row of the
file) is the same client. It is merged with ``update_existing``; otherwise it
is *unchanged* when it carries nothing new, and rejected as a duplicate when it
does. Running an import twice therefore changes nothing the second time, and
rerunning an import that was killed midway completes it without doubles.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from attrs import define, field
from sqlalchemy import func, select, text

from crmkit.core.errors import ConfigError, ValidationError
from crmkit.core.validation import (
    _EMAIL,
    _PHONE,
    fast_check,
    schema_problems,
)

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.app import CRM
    from crmkit.core.store import Session

KINDS = ("clients",)
BATCH_SIZE = 5000

CLIENT_FIELDS = (
    "name",
    "kind",
    "email",
    "phone",
    "segment",
    "owner",
    "source",
    "external_id",
    "created_at",
)
CONTACT_FIELDS = ("name", "position", "email", "phone")
PREFIXES = ("param.", "requisite.", "contact.")


# -- results ---------------------------------------------------------------------------
@define
class RowError:
    """Why one row of the file was rejected."""

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.reason}"


@define
class ImportResult:
    """What an import did."""

    kind: str
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    batches: int = 0
    seconds: float = 0.0
    aborted: bool = False
    errors: list[RowError] = field(factory=list)  #: the first errors (all go to errors_to)

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0


# -- the mapping -----------------------------------------------------------------------
@define
class Mapping:
    """How the file's columns become crmkit fields (``--mapping MAP.toml``).

    .. code-block:: toml

        [columns]                  # source column = field
        "Company" = "name"
        "E-mail" = "email"
        "Turnover, RUB" = "param.turnover"
        "Manager" = "owner"
        "Contact person" = "contact.name"

        [values.owner]             # translations of values, per field
        "Anna Smirnova" = "anna"

        [dates]
        format = "%d.%m.%Y"        # strptime format of every date field
        created_at = "%d.%m.%Y %H:%M"

        [numbers]
        decimal = ","              # the decimal separator when a number is ambiguous

        [defaults]                 # values for fields the file does not have
        source = "import"
    """

    columns: dict[str, str] = field(factory=dict)
    values: dict[str, dict[str, str]] = field(factory=dict)
    dates: dict[str, str] = field(factory=dict)
    decimal: str | None = None
    defaults: dict[str, Any] = field(factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Mapping:
        """Read a mapping file; a malformed one raises :class:`ConfigError` naming the key."""
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the mapping: {exc.strerror}", field="mapping") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the mapping is not valid TOML: {exc}", field="mapping") from None
        problems = schema_problems(_MAPPING_SCHEMA, data, prefix="mapping")
        if problems:
            raise ConfigError(str(problems[0].reason), field=problems[0].field)
        return cls(
            columns=data.get("columns", {}),
            values=data.get("values", {}),
            dates=data.get("dates", {}),
            decimal=data.get("numbers", {}).get("decimal"),
            defaults=data.get("defaults", {}),
        )


_MAPPING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "columns": {"type": "object", "additionalProperties": {"type": "string"}},
        "values": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "dates": {"type": "object", "additionalProperties": {"type": "string"}},
        "numbers": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"decimal": {"enum": [",", "."]}},
        },
        "defaults": {"type": "object"},
    },
}


class RowFailure(str):
    """A row the reader could not even split into values (the text is the reason)."""


# -- reading ---------------------------------------------------------------------------
def read_rows(
    path: str | os.PathLike[str], *, encoding: str = "utf-8", file_format: str | None = None
) -> tuple[list[str], Iterator[tuple[int, Any]]]:
    """The file's columns, and its rows as ``(line number, values)``.

    A CSV row is a list in the header's order; a JSON Lines row is a dict; a
    row that cannot be read at all is a :class:`RowFailure` (its reason).

    CSV (``,`` or ``;`` separated, sniffed from the header) and JSON Lines
    (``.jsonl``/``.ndjson``, one object per line). A UTF-8 byte order mark is
    skipped. Raises :class:`ValidationError` for an empty file, a file with no
    rows, or bytes that are not in ``encoding``.
    """
    source = Path(path)
    fmt = file_format or ("jsonl" if source.suffix.lower() in (".jsonl", ".ndjson") else "csv")
    if fmt not in ("csv", "jsonl"):
        raise ValidationError(f"{fmt!r} is not csv or jsonl", field="format")
    try:
        handle = source.open(
            "r", encoding="utf-8-sig" if encoding == "utf-8" else encoding, newline=""
        )
    except OSError as exc:
        raise ValidationError(f"cannot open {source}: {exc.strerror}", field="file") from None
    except LookupError:
        raise ValidationError(f"unknown encoding {encoding!r}", field="encoding") from None
    try:
        first = handle.readline()
    except UnicodeDecodeError as exc:
        handle.close()
        raise _encoding_error(exc, encoding, 1) from None
    if not first.strip():
        handle.close()
        raise ValidationError(f"{source.name} is empty", field="file")
    if fmt == "jsonl":
        return _jsonl(handle, first, encoding)
    return _csv(handle, first, encoding, source.name)


def _encoding_error(exc: UnicodeDecodeError, encoding: str, line: int) -> ValidationError:
    return ValidationError(
        f"line {line} is not {encoding} (byte 0x{exc.object[exc.start]:02x}); "
        "give the file's encoding with --encoding, e.g. cp1251 or latin-1",
        field="encoding",
    )


def _csv(
    handle: IO[str], first: str, encoding: str, name: str
) -> tuple[list[str], Iterator[tuple[int, Any]]]:
    delimiter = ";" if first.count(";") > first.count(",") else ","
    header = next(csv.reader([first], delimiter=delimiter))
    header = [h.strip() for h in header]
    if not any(header):
        handle.close()
        raise ValidationError(f"{name} has no header row", field="file")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        handle.close()
        raise ValidationError(f"column {dupes[0]!r} appears twice in the header", field="file")

    def rows() -> Iterator[tuple[int, Any]]:
        reader = csv.reader(handle, delimiter=delimiter)
        line = 1
        seen_any = False
        try:
            with handle:
                for record in reader:
                    line = reader.line_num + 1
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue
                    seen_any = True
                    if len(record) != len(header):
                        reason = f"has {len(record)} values for {len(header)} columns"
                        yield line, RowFailure(reason)
                        continue
                    yield line, record  # a list in header order: no dict per row
        except UnicodeDecodeError as exc:
            raise _encoding_error(exc, encoding, line + 1) from None
        except csv.Error as exc:
            raise ValidationError(f"line {line}: {exc}", field="file") from None
        if not seen_any:
            raise ValidationError(f"{name} has a header but no rows", field="file")

    return header, rows()


def _jsonl(
    handle: IO[str], first: str, encoding: str
) -> tuple[list[str], Iterator[tuple[int, Any]]]:
    def rows() -> Iterator[tuple[int, Any]]:
        line = 0
        try:
            with handle:
                for line, text_line in enumerate(_chain(first, handle), start=1):
                    if not text_line.strip():
                        continue
                    try:
                        record = json.loads(text_line)
                    except ValueError as exc:
                        yield line, RowFailure(f"is not JSON: {exc.msg}")
                        continue
                    if not isinstance(record, dict):
                        yield line, RowFailure("is not a JSON object")
                        continue
                    yield line, _flatten_record(record)
        except UnicodeDecodeError as exc:
            raise _encoding_error(exc, encoding, line + 1) from None

    return [], rows()


def _chain(first: str, handle: IO[str]) -> Iterator[str]:
    yield first
    yield from handle


def _flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """JSON Lines objects may nest ``params``, ``requisites`` and ``contact``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("params", "requisites", "contact") and isinstance(value, dict):
            prefix = {"params": "param.", "requisites": "requisite.", "contact": "contact."}[key]
            for sub, item in value.items():
                flat[prefix + sub] = item
        else:
            flat[key] = value
    return flat


# -- converting values -----------------------------------------------------------------
_THOUSANDS = re.compile(r"[\s\u00a0\u202f'\u2019]")
_PLAIN_FLOAT = re.compile(r"-?\d+\.\d+$")


def parse_number(raw: Any, *, decimal: str | None = None, integer: bool = False) -> int | float:
    """A number from what spreadsheets write: ``1 234,50``, ``1,234.50``, ``1.234,5``, ``12.5``.

    Spaces and apostrophes group thousands. With both ``.`` and ``,`` the last
    one is the decimal separator. A lone ``,`` followed by exactly three digits
    (``1,234``) is ambiguous: it is refused unless ``decimal`` says which it is.
    """
    if raw.__class__ is str:  # the common cases first: "12", "12.5"
        try:
            return int(raw)
        except ValueError:
            pass
        if not integer and "," not in raw and "_" not in raw:
            try:
                number = float(raw)
            except ValueError:
                pass
            else:
                if number - number == 0:  # finite: not nan, not inf
                    return number
    if isinstance(raw, bool):
        raise ValueError("is a boolean, not a number")
    if isinstance(raw, int | float):
        value: int | float = raw
    else:
        text_value = _THOUSANDS.sub("", str(raw).strip())
        if not text_value:
            raise ValueError("is empty")
        commas, dots = text_value.count(","), text_value.count(".")
        if commas and dots:
            if text_value.rfind(",") > text_value.rfind("."):
                text_value = text_value.replace(".", "").replace(",", ".")
            else:
                text_value = text_value.replace(",", "")
        elif commas:
            decimals = len(text_value) - text_value.rfind(",") - 1
            if commas > 1 or (decimals == 3 and decimal != ","):
                if decimal == "," and commas == 1:
                    text_value = text_value.replace(",", ".")
                elif decimal == "." or commas > 1:
                    text_value = text_value.replace(",", "")
                else:
                    raise ValueError(
                        f"{raw!r} is ambiguous (thousands or decimals?); "
                        'set [numbers] decimal = "," or "." in the mapping'
                    )
            else:
                text_value = text_value.replace(",", ".")
        elif dots > 1:
            text_value = text_value.replace(".", "")
        try:
            value = int(text_value) if text_value.lstrip("+-").isdigit() else float(text_value)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise ValueError("must be a finite number")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{raw!r} is not a whole number")
        value = int(value)
    return value


_TRUE = {"true", "yes", "1", "y", "да", "так"}
_FALSE = {"false", "no", "0", "n", "нет", "ні"}


def _converter(prop: dict[str, Any], decimal: str | None) -> Callable[[Any], Any]:
    """Turn a CSV cell into the JSON type the segment's schema asks for."""
    kind = prop.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if kinds & {"integer", "number"}:
        integer = "number" not in kinds
        plain_float = _PLAIN_FLOAT.match

        def number(raw: Any) -> Any:
            if raw.__class__ is str and raw.isascii():  # the common cases without exceptions
                if raw.isdigit():
                    return int(raw)
                if not integer and plain_float(raw):
                    return float(raw)
            return parse_number(raw, decimal=decimal, integer=integer)

        return number
    if "boolean" in kinds:

        def boolean(raw: Any) -> bool:
            if isinstance(raw, bool):
                return raw
            low = str(raw).strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"{raw!r} is not yes or no")

        return boolean
    if kinds & {"array", "object"}:

        def structured(raw: Any) -> Any:
            if not isinstance(raw, str):
                return raw
            try:
                return json.loads(raw)
            except ValueError:
                if "array" in kinds:  # a spreadsheet list: "Samara; Kazan"
                    return [p.strip() for p in re.split(r"[;|]", raw) if p.strip()]
                raise ValueError(f"{raw!r} is not JSON") from None

        return structured
    return lambda raw: raw


def parse_datetime(raw: Any, fmt: str | None, tz: Any) -> dt.datetime:
    """A date or time from a file: ISO 8601, or the mapping's strptime format."""
    if isinstance(raw, dt.datetime):
        value = raw
    else:
        text_value = str(raw).strip()
        try:
            if fmt:
                value = dt.datetime.strptime(text_value, fmt)
            elif len(text_value) == 10:
                value = dt.datetime.combine(dt.date.fromisoformat(text_value), dt.time())
            else:
                value = dt.datetime.fromisoformat(text_value)
        except ValueError:
            expected = fmt or "ISO 8601 such as 2026-11-22 or 2026-11-22T15:30"
            raise ValueError(f"{raw!r} is not a date in the format {expected}") from None
    return value if value.tzinfo else value.replace(tzinfo=tz)


# -- writing ---------------------------------------------------------------------------
class BulkInsert:
    """``executemany`` of tuples straight to the driver, with SQLAlchemy's value conversions.

    SQLAlchemy Core's executemany costs several microseconds per row in
    Python; this writer builds the statement once, applies only the bind
    processors the columns need (timestamps, JSON, money) and hands the
    driver plain tuples.
    """

    def __init__(
        self,
        session: Session,
        table_name: str,
        columns: Sequence[str],
        *,
        prebound: bool = False,
    ) -> None:
        """``prebound``: the rows come already converted (see :meth:`binder`)."""
        conn = session.connection
        dialect = conn.dialect
        table = session.table(table_name)
        quote = dialect.identifier_preparer.quote
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self.sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join(marker for _ in columns)})"
        )
        self.processors = (
            []
            if prebound
            else [(i, self.binder(session, table_name, name)) for i, name in enumerate(columns)]
        )
        self.processors = [(i, p) for i, p in self.processors if p is not _same]
        self.conn = conn

    @staticmethod
    def binder(session: Session, table_name: str, column: str) -> Callable[[Any], Any]:
        """The conversion a value of ``column`` needs before the driver takes it."""
        dialect = session.connection.dialect
        column_type = session.table(table_name).c[column].type
        if column_type._cached_bind_processor(dialect) is None:
            return _same
        return _fast_processor(column_type, dialect)

    def __call__(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.processors:  # column by column: the loops run in C (zip, map)
            columns = list(zip(*rows, strict=True))
            for i, proc in self.processors:
                columns[i] = tuple(map(proc, columns[i]))
            rows = list(zip(*columns, strict=True))
        self.conn.exec_driver_sql(self.sql, rows if isinstance(rows, list) else list(rows))


def _same(value: Any) -> Any:
    return value


def _fast_processor(column_type: Any, dialect: Any) -> Callable[[Any], Any]:
    """SQLAlchemy's bind processor for a column, made cheap for bulk rows.

    JSON is serialised directly (an empty object costs nothing), and the
    conversion of a timestamp is remembered while the same object repeats (an
    import stamps a whole batch with one time).
    """
    from sqlalchemy import JSON

    proc = column_type._cached_bind_processor(dialect)
    if isinstance(column_type.dialect_impl(dialect), JSON) or isinstance(
        getattr(column_type, "impl", None), JSON
    ):
        dumps = json.dumps

        def to_json(value: Any) -> Any:
            if value is None:
                return None
            if not value and value.__class__ in (dict, list):
                return "{}" if value.__class__ is dict else "[]"
            return dumps(value)

        return to_json
    last: list[Any] = [object(), None]

    def remembered(value: Any) -> Any:
        if value is last[0]:
            return last[1]
        out = proc(value)
        last[0], last[1] = value, out
        return out

    return remembered


def reserve_ids(session: Session, table_name: str, count: int) -> list[int]:
    """``count`` new ids for ``table_name``, reserved for this transaction.

    SQLite: the next ids after the largest (a write transaction holds the lock,
    so nobody else takes them). PostgreSQL: taken from the id sequence.
    """
    conn = session.connection
    table = session.table(table_name)
    if conn.dialect.name == "postgresql":
        ids = conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": count},
        ).scalars()
        return [int(i) for i in ids]
    first = int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()) + 1
    return list(range(first, first + count))


# -- clients ---------------------------------------------------------------------------
_CLIENT_COLUMNS = (
    "id",
    "kind",
    "name",
    "email",
    "phone",
    "requisites",
    "segment",
    "params",
    "owner_id",
    "source",
    "external_id",
    "created_at",
    "updated_at",
    "stage",
)
_MUTABLE = (
    "kind",
    "name",
    "email",
    "phone",
    "requisites",
    "segment",
    "params",
    "owner_id",
    "source",
)
#: the order of a converted client row
_ROW = (
    "kind",
    "name",
    "email",
    "phone",
    "requisites",
    "segment",
    "params",
    "owner_id",
    "source",
    "external_id",
    "created_at",
)
_EMAIL_AT, _EXT_AT, _CREATED_AT = _ROW.index("email"), _ROW.index("external_id"), 10
_REQUISITES_AT, _SEGMENT_AT, _PARAMS_AT, _OWNER_AT = 4, 5, 6, 7


class _ClientRows:
    """Turns raw rows into client values, with everything looked up once per import.

    This is the hot path of a bulk import: the plan of which column feeds which
    field is made once, and each row costs a few dictionary look-ups, the
    checks, and one call of the compiled JSON Schema validator.
    """

    def __init__(self, session: Session, columns: list[str], mapping: Mapping) -> None:
        crm = session.crm
        self.tz = crm.tz
        self.mapping = mapping
        # CSV rows are lists: the plan reads them by index; JSON Lines rows are dicts,
        # whose plan is made once per distinct set of keys
        self.plan = self._plan(columns, by_index=True) if columns else []
        self._plans: dict[tuple[str, ...], list[tuple[Any, int, str, Any]]] = {}
        self.column_of = {target: column for column, target in mapping.columns.items()}
        self.defaults = dict(mapping.defaults)
        users = session.table("users")
        self.users = {
            login: (uid, active)
            for uid, login, active in session.connection.execute(
                select(users.c.id, users.c.login, users.c.active)
            )
        }
        self.default_owner = session.user.id
        self.channels = set(crm.channels)
        self.segments = crm.segments
        self.checks = {
            name: fast_check({k: v for k, v in seg.schema.items() if k != "required"})
            for name, seg in self.segments.items()
        }
        self.converters = {
            name: {
                prop: _converter(spec, mapping.decimal)
                for prop, spec in seg.schema.get("properties", {}).items()
            }
            for name, seg in self.segments.items()
        }
        self.date_format = mapping.dates.get("created_at", mapping.dates.get("format"))
        self.bind_time = BulkInsert.binder(session, "clients", "created_at")
        self.bind_json = BulkInsert.binder(session, "clients", "params")
        self.lifecycle = crm.lifecycle.first.name if crm.lifecycle is not None else None

    def _plan(self, columns: list[str], *, by_index: bool) -> list[tuple[Any, int, str, Any]]:
        """(column index or key, 0 field | 1 param | 2 requisite | 3 contact, key, translations)."""
        position = {c: i for i, c in enumerate(columns)}
        return [
            (
                position[column] if by_index else column,
                *_target(target),
                self.mapping.values.get(target),
            )
            for column, target in _field_map(columns, self.mapping, CLIENT_FIELDS)
        ]

    def _bad(self, target: str, reason: str) -> _Bad:
        return _Bad(self.column_of.get(target, target), reason)

    def convert(self, raw: Any) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any] | None]:
        """``(client row, the fields the file gave, contact or None)``; may raise ``_Bad``."""
        values: dict[str, Any] = {}
        params: dict[str, Any] = {}
        requisites: dict[str, Any] = {}
        contact: dict[str, Any] = {}
        buckets = (values, params, requisites, contact)
        if raw.__class__ is list:
            plan, get = self.plan, raw.__getitem__
        else:
            keys = tuple(raw)
            plan = self._plans.get(keys)
            if plan is None:
                plan = self._plans[keys] = self._plan(list(keys), by_index=False)
            get = raw.get
        for column, code, key, translations in plan:
            value = get(column)
            if value is None or value == "":
                continue
            if value.__class__ is str:
                value = value.strip()
                if not value:
                    continue
                if translations is not None:
                    value = translations.get(value, value)
            buckets[code][key] = value
        if self.defaults:
            for key, default in self.defaults.items():
                if key.startswith("param."):
                    params.setdefault(key[6:], default)
                else:
                    values.setdefault(key, default)
        client = self._client(values, params, requisites)
        return client, values, self._contact(contact) if contact else None

    def _client(
        self, values: dict[str, Any], params: dict[str, Any], requisites: dict[str, Any]
    ) -> tuple[Any, ...]:
        """The client's values in :data:`_ROW` order."""
        name = values.get("name")
        if name is None:
            raise self._bad("name", "name: is required")
        name = str(name)
        if len(name) > 300:
            raise self._bad("name", "name: is longer than 300 characters")
        kind = values.get("kind", "company")
        if kind != "company" and kind != "person":
            kind = str(kind).lower()
            if kind not in ("company", "person"):
                raise self._bad("kind", f"kind: {kind!r} is not company or person")
        email = values.get("email")
        if email is not None:
            email = str(email)
            if len(email) > 254 or not _EMAIL.match(email) or ".." in email:
                raise self._bad("email", f"email: {email!r} is not a valid email address")
            local, _, domain = email.rpartition("@")
            email = f"{local}@{domain.lower()}"
        phone = values.get("phone")
        if phone is not None:
            phone = str(phone)
            if not _PHONE.match(phone):
                raise self._bad("phone", f"phone: {phone!r} is not a phone number")
        segment = values.get("segment")
        if segment is not None and segment not in self.segments:
            known = ", ".join(sorted(self.segments)) or "none"
            raise self._bad("segment", f"segment: unknown segment {segment!r} (known: {known})")
        owner_id = self.default_owner
        login = values.get("owner")
        if login is not None:
            found = self.users.get(str(login))
            if found is None:
                raise self._bad("owner", f"owner: no user {login!r}")
            if not found[1]:
                raise self._bad("owner", f"owner: user {login!r} is not active")
            owner_id = found[0]
        source = values.get("source")
        if source is not None and source not in self.channels:
            raise self._bad("source", f"source: unknown channel {source!r}")
        external_id = values.get("external_id")
        if external_id is not None:
            external_id = str(external_id)
        created_at = values.get("created_at")
        if created_at is not None:
            try:
                created_at = parse_datetime(created_at, self.date_format, self.tz)
            except ValueError as exc:
                raise self._bad("created_at", f"created_at: {exc}") from None
        if params:
            converters = self.converters[segment] if segment is not None else {}
            for key, raw in params.items():
                convert = converters.get(key)
                if convert is not None:
                    try:
                        params[key] = convert(raw)
                    except ValueError as exc:
                        raise self._bad(f"param.{key}", f"params.{key}: {exc}") from None
            if segment is not None and not self.checks[segment](params):
                problem = self.segments[segment].validate(params)[0]
                parts = (problem.field or "").split(".")
                raise self._bad(f"param.{parts[1]}" if len(parts) > 1 else "segment", str(problem))
        return (
            kind,
            name,
            email,
            phone,
            requisites,
            segment,
            params,
            owner_id,
            source,
            external_id,
            created_at,
        )

    def _contact(self, contact: dict[str, Any]) -> dict[str, Any]:
        name = contact.get("name")
        if not name:
            raise self._bad(
                "contact.name", "contact.name: is required when other contact columns are given"
            )
        email = contact.get("email")
        if email is not None:
            email = str(email)
            if not _EMAIL.match(email):
                raise self._bad("contact.email", f"contact.email: {email!r} is not a valid email")
        phone = contact.get("phone")
        if phone is not None and not _PHONE.match(str(phone)):
            raise self._bad("contact.phone", f"contact.phone: {phone!r} is not a phone number")
        return {
            "name": str(name),
            "position": contact.get("position"),
            "email": email,
            "phone": None if phone is None else str(phone),
        }


def _target(target: str) -> tuple[int, str]:
    """A mapped field as (0 field | 1 param | 2 requisite | 3 contact, key)."""
    for code, prefix in enumerate(PREFIXES, start=1):
        if target.startswith(prefix):
            return code, target[len(prefix) :]
    return 0, target


class _Bad(Exception):
    def __init__(self, column: str | None, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


def _field_map(
    columns: list[str], mapping: Mapping, fields: Sequence[str]
) -> list[tuple[str, str]]:
    """``(source column, field)`` pairs; unknown fields in the mapping are refused."""
    pairs: list[tuple[str, str]] = []
    for source, target in mapping.columns.items():
        if target not in fields and not target.startswith(PREFIXES):
            allowed = ", ".join([*fields, "param.NAME", "requisite.NAME", "contact.NAME"])
            raise ConfigError(
                f"column {source!r} maps to unknown field {target!r} (fields: {allowed})",
                field=f"mapping.columns.{source}",
            )
        if target.startswith("contact.") and target[8:] not in CONTACT_FIELDS:
            raise ConfigError(
                f"{target!r} is not a contact field ({', '.join(CONTACT_FIELDS)})",
                field=f"mapping.columns.{source}",
            )
        pairs.append((source, target))
    mapped = set(mapping.columns)
    for column in columns:
        if column not in mapped and (column in fields or column.startswith(PREFIXES)):
            pairs.append((column, column))
    return pairs


# -- the import ------------------------------------------------------------------------
def import_file(
    crm: CRM,
    kind: str,
    path: str | os.PathLike[str],
    *,
    as_user: str | int | None = None,
    mapping: Mapping | str | os.PathLike[str] | None = None,
    on_error: str = "skip",
    errors_to: str | os.PathLike[str] | None = None,
    update_existing: bool = False,
    batch_size: int = BATCH_SIZE,
    encoding: str = "utf-8",
    file_format: str | None = None,
    progress: Callable[[ImportResult], None] | None = None,
) -> ImportResult:
    """Import ``path`` into ``crm`` as ``as_user``; see the module's documentation.

    ``progress`` is called after every batch with the running totals.
    Raises :class:`ValidationError` for a file that cannot be read at all (and
    writes nothing); bad rows are reported in the result and in ``errors_to``.
    """
    if kind not in KINDS:
        raise ValidationError(f"cannot import {kind!r} (one of: {', '.join(KINDS)})", field="kind")
    if on_error not in ("skip", "abort"):
        raise ValidationError(f"{on_error!r} is not skip or abort", field="on_error")
    if batch_size < 1:
        raise ValidationError("must be at least 1", field="batch_size")
    if not isinstance(mapping, Mapping):
        mapping = Mapping.load(mapping) if mapping is not None else Mapping()
    columns, rows = read_rows(path, encoding=encoding, file_format=file_format)
    if columns:
        _require_columns(columns, mapping)
    result = ImportResult(kind=kind)
    errors = _ErrorSink(errors_to)
    errors.header = columns
    started = time.perf_counter()
    try:
        if on_error == "abort":
            _import_all_or_nothing(
                crm,
                rows,
                columns,
                mapping,
                as_user,
                update_existing,
                batch_size,
                result,
                errors,
                progress,
                started,
            )
        else:
            for batch in _batches(rows, batch_size):
                with crm.session(as_user=as_user) as s:
                    _write_batch(s, batch, columns, mapping, update_existing, result, errors, path)
                result.batches += 1
                result.seconds = time.perf_counter() - started
                if progress is not None:
                    progress(result)
    finally:
        errors.close()
        result.seconds = time.perf_counter() - started
    result.errors = errors.first
    return result


def _require_columns(columns: list[str], mapping: Mapping) -> None:
    _field_map(columns, mapping, CLIENT_FIELDS)  # a mapping that names unknown fields fails first
    targets = {mapping.columns.get(c, c) for c in columns} | set(mapping.defaults)
    if "name" not in targets:
        raise ValidationError(
            f"no column gives the client's name (columns: {', '.join(columns)}); "
            "name one 'name' or map it in the mapping's [columns]",
            field="name",
        )


def _import_all_or_nothing(
    crm: CRM,
    rows: Iterator[tuple[int, dict[str, Any]]],
    columns: list[str],
    mapping: Mapping,
    as_user: str | int | None,
    update_existing: bool,
    batch_size: int,
    result: ImportResult,
    errors: _ErrorSink,
    progress: Callable[[ImportResult], None] | None,
    started: float,
) -> None:
    """One transaction for the whole file: the first bad row rolls it all back."""

    class _Abort(Exception):
        pass

    try:
        with crm.session(as_user=as_user) as s:
            for batch in _batches(rows, batch_size):
                # after the first bad row, the rest is only checked, so every bad row is listed
                _write_batch(
                    s,
                    batch,
                    columns,
                    mapping,
                    update_existing,
                    result,
                    errors,
                    None,
                    dry=result.rejected > 0,
                )
                result.batches += 1
                result.seconds = time.perf_counter() - started
                if progress is not None:
                    progress(result)
            if result.rejected:
                raise _Abort  # rolls the transaction back: nothing is written
    except _Abort:
        result.aborted = True
        result.inserted = result.updated = result.unchanged = 0


def _batches(
    rows: Iterator[tuple[int, dict[str, Any]]], size: int
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    batch: list[tuple[int, dict[str, Any]]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_batch(
    s: Session,
    batch: list[tuple[int, dict[str, Any]]],
    columns: list[str],
    mapping: Mapping,
    update_existing: bool,
    result: ImportResult,
    errors: _ErrorSink,
    path: Any,
    *,
    dry: bool = False,
) -> None:
    """Check one batch and (unless ``dry``) write its good rows in the session's transaction."""
    rows = s.__dict__.get("_import_rows")
    if rows is None:
        rows = s.__dict__["_import_rows"] = _ClientRows(s, columns, mapping)
    result.read += len(batch)
    good: list[tuple[int, tuple[Any, ...], dict[str, Any], dict[str, Any] | None]] = []
    convert = rows.convert
    for line, raw in batch:
        if raw.__class__ is RowFailure:
            errors.add(RowError(line, None, str(raw)), None)
            result.rejected += 1
            continue
        try:
            good.append((line, *convert(raw)))
        except _Bad as bad:
            errors.add(RowError(line, bad.column, bad.reason), raw)
            result.rejected += 1
    if not good:
        return
    # -- deduplicate: within the batch, then against what is stored
    by_ext: dict[str, int] = {}
    by_email: dict[str, int] = {}
    unique: list[tuple[int, tuple[Any, ...], dict[str, Any], dict[str, Any] | None]] = []
    for item in good:
        line, row = item[0], item[1]
        ext, email = row[_EXT_AT], row[_EMAIL_AT]
        earlier = by_ext.get(ext) if ext else None
        if earlier is None and email:
            email = email.lower()
            earlier = by_email.get(email)
        if earlier is not None:
            errors.add(RowError(line, None, f"duplicate of line {earlier} in this file"), None)
            result.rejected += 1
            continue
        if ext:
            by_ext[ext] = line
        if email:
            by_email[email] = line
        unique.append(item)
    existing = _existing_clients(s, by_ext, by_email) if (by_ext or by_email) else {}
    now = dt.datetime.now(dt.UTC)
    inserts: list[tuple[Any, ...]] = []
    contacts: list[tuple[int, dict[str, Any]]] = []
    updates: list[dict[str, Any]] = []
    stage = rows.lifecycle
    # the insert's values are converted here, once, rather than column by column later
    bind_time, bind_json = rows.bind_time, rows.bind_json
    now_bound = bind_time(now)
    for line, row, given, contact in unique:
        match = None
        if existing:
            if row[_EXT_AT]:
                match = existing.get(("ext", row[_EXT_AT]))
            if match is None and row[_EMAIL_AT]:
                match = existing.get(("email", row[_EMAIL_AT].lower()))
        if match is None:
            created = row[_CREATED_AT]
            inserts.append(
                (
                    *row[:_REQUISITES_AT],
                    bind_json(row[_REQUISITES_AT]),
                    row[_SEGMENT_AT],
                    bind_json(row[_PARAMS_AT]),
                    *row[_OWNER_AT:_CREATED_AT],
                    now_bound if created is None else bind_time(created),
                    now_bound,
                    stage,
                )
            )
            if contact is not None:
                contacts.append((len(inserts) - 1, contact))
            continue
        values = dict(zip(_ROW, row, strict=True))
        # only what the file gives counts: a missing column never clears a field
        present = {"owner_id" if k == "owner" else k for k in given}
        present |= {k for k in ("params", "requisites") if values[k]}
        changed = {k: values[k] for k in _MUTABLE if k in present and values[k] != match[k]}
        if "email" in changed and changed["email"].lower() == (match["email"] or "").lower():
            del changed["email"]  # the same address in other letters
        if values["external_id"] and not match["external_id"]:
            changed["external_id"] = values["external_id"]
        if not changed:
            result.unchanged += 1
        elif update_existing:
            updates.append({"id": match["id"], **changed})
        else:
            label = ", ".join(sorted(changed))
            errors.add(
                RowError(
                    line,
                    None,
                    f"client #{match['id']} {match['name']!r} already exists "
                    f"and differs in {label}; use --update-existing to merge",
                ),
                None,
            )
            result.rejected += 1
    if dry:
        return
    _store(s, inserts, contacts, updates, rows.lifecycle, now, path)
    result.inserted += len(inserts)
    result.updated += len(updates)


def _existing_clients(
    s: Session, by_ext: dict[str, int], by_email: dict[str, int]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Stored clients whose external id or email matches a row of the batch (two queries)."""
    t = s.table("clients")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    cols = [t.c.id, t.c.external_id, t.c.email, *[t.c[c] for c in _MUTABLE if c != "email"]]
    for key, column, values in (
        ("ext", t.c.external_id, list(by_ext)),
        ("email", func.lower(t.c.email), list(by_email)),
    ):
        if not values:
            continue
        for row in s.connection.execute(select(*cols).where(_in(s, column, values))):
            data = dict(row._mapping)
            found[(key, row.external_id if key == "ext" else row.email.lower())] = data
    return found


def _in(s: Session, column: Any, values: list[str]) -> Any:
    """``column IN values`` with one bound parameter, however many values (a batch has many)."""
    if s.connection.dialect.name == "postgresql":
        from sqlalchemy import ARRAY, String, any_, bindparam

        return column == any_(bindparam("values", values, type_=ARRAY(String)))
    json_each = text("SELECT value FROM json_each(:values)").bindparams(values=json.dumps(values))
    return column.in_(json_each)


def _store(
    s: Session,
    inserts: list[tuple[Any, ...]],
    contacts: list[tuple[int, dict[str, Any]]],
    updates: list[dict[str, Any]],
    first_stage: str | None,
    now: dt.datetime,
    path: Any,
) -> None:
    inserted_ids: list[int] = []
    if inserts:
        inserted_ids = reserve_ids(s, "clients", len(inserts))
        BulkInsert(s, "clients", _CLIENT_COLUMNS, prebound=True)(
            [(new_id, *row) for new_id, row in zip(inserted_ids, inserts, strict=True)]
        )
        if contacts:
            BulkInsert(
                s, "contacts", ("client_id", "name", "position", "email", "phone", "created_at")
            )(
                [
                    (inserted_ids[i], c["name"], c["position"], c["email"], c["phone"], now)
                    for i, c in contacts
                ]
            )
    if updates:
        t = s.table("clients")
        for change in updates:  # merges are few; each keeps its own statement
            s.connection.execute(
                t.update()
                .where(t.c.id == change["id"])
                .values({k: v for k, v in change.items() if k != "id"} | {"updated_at": now})
            )
    updated_ids = [u["id"] for u in updates]
    if inserted_ids or updated_ids:
        s.record(
            "import",
            inserted_ids[0] if inserted_ids else updated_ids[0],
            "clients_imported",
            {
                "file": None if path is None else str(path),
                "inserted": [inserted_ids[0], inserted_ids[-1]] if inserted_ids else None,
                "updated": updated_ids,
            },
        )
        s.crm.plugins.records_imported(
            session=s, kind="clients", inserted_ids=inserted_ids, updated_ids=updated_ids
        )


class _ErrorSink:
    """Rejected rows: the first hundred kept for the summary, all written to ``errors_to``."""

    KEEP = 100

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.first: list[RowError] = []
        self.handle: IO[str] | None = None
        self.writer: Any = None
        if path is not None:
            self.handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self.writer = csv.writer(self.handle)
            self.writer.writerow(["line", "column", "reason", "row"])

    header: list[str] = []  #: the CSV header, to name the values of list rows

    def add(self, error: RowError, raw: Any) -> None:
        if len(self.first) < self.KEEP:
            self.first.append(error)
        if self.writer is not None:
            if raw.__class__ is list:
                raw = dict(zip(self.header, raw, strict=False))
            row = "" if raw is None else json.dumps(raw, ensure_ascii=False, default=str)
            self.writer.writerow([error.line, error.column or "", error.reason, row])

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


__all__ = [
    "BulkInsert",
    "ImportResult",
    "Mapping",
    "RowError",
    "import_file",
    "parse_datetime",
    "parse_number",
    "read_rows",
    "reserve_ids",
]
