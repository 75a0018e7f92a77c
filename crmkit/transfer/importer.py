"""Bulk import of clients (with contacts), deals (with their stage history) and interactions.

Files are CSV or JSON Lines, imported at the speed of the database.

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

Deals and interactions follow the same rules (see :class:`_DealRows` and
:class:`_InteractionRows` for their fields). They are history: a deal's
imported stage history is checked against its pipeline's order but not
against the stages' entry gates, and an imported interaction does not apply
the outcome rules or the plugins' ``crmkit_interaction_logged`` effects (both
happened already, in the system the data comes from). Deals are matched by
external id, else by (client, pipeline, title, opened_at); interactions by
external id, else by (client, kind, occurred_at, user, topic, outcome).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal as dec
import json
import os
import re
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from attrs import define, field
from sqlalchemy import Integer, String, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from crmkit.core.errors import ConfigError, CrmError, ValidationError
from crmkit.core.lifecycle import carry_amount
from crmkit.core.model import best_segment
from crmkit.core.pipeline import LOST, TERMINAL, WON
from crmkit.core.schema import FUNNEL_INDEXES, whole_seconds
from crmkit.core.validation import (
    _EMAIL,
    _PHONE,
    fast_check,
    schema_problems,
)

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.app import CRM
    from crmkit.core.pipeline import Pipeline
    from crmkit.core.store import Session

KINDS = ("clients", "deals", "interactions")
BATCH_SIZE = 5000
#: A deals import drops the funnel's indexes of ``stage_changes`` after its first batch,
#: and creates them again at its end, when the rest of the file should insert at least
#: this many stage changes ...
DEFER_MIN_CHANGES = 50_000
#: ... and at least this share of the changes already stored (creating an index sorts
#: the whole table; maintaining it costs a random write per change): see
#: docs/performance.md, "What the stays cost an import"
DEFER_SHARE = 0.25

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
    "params",  # a JSON object, as `crmkit export` writes it in CSV
    "requisites",  # likewise
)
CONTACT_FIELDS = ("name", "position", "email", "phone")
PREFIXES = ("param.", "requisite.", "contact.")
#: a deal's client, and an interaction's: by id, external id or email
CLIENT_REFS = ("client_id", "client_external_id", "client_email")
DEAL_FIELDS = (
    *CLIENT_REFS,
    "pipeline",
    "title",
    "amount",
    "currency",
    "owner",
    "expected_close",
    "opened_at",
    "stage",
    "status",
    "outcome",  # the same as status
    "closed_at",
    "lost_reason",
    "external_id",
    "history",  # JSON Lines: [{"stage": ..., "at": ...}, ...]
)
INTERACTION_FIELDS = (
    *CLIENT_REFS,
    "deal_id",
    "deal_external_id",
    "kind",
    "topic",
    "outcome",
    "direction",
    "occurred_at",
    "at",  # the same as occurred_at
    "duration",  # minutes
    "duration_min",  # the same as duration (as exported)
    "user",
    "note",
    "external_id",
)
#: per kind: its fields, the prefixes of open-ended fields, and how the help names them
_KIND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "clients": (CLIENT_FIELDS, PREFIXES, ("param.NAME", "requisite.NAME", "contact.NAME")),
    "deals": (DEAL_FIELDS, ("stage.",), ("stage.NAME",)),
    "interactions": (INTERACTION_FIELDS, (), ()),
}


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
    #: the indexes it dropped and created again at its end (a large deals import)
    deferred_indexes: list[str] = field(factory=list)

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

    The same keys serve deals and interactions, with their own fields: e.g.
    ``"Qualified on" = "stage.qualification"`` (the date a deal entered that
    stage), ``[values.stage]`` translates stage names (of a ``stage`` column
    and of a JSON Lines ``history``), ``[values.user]`` logins, ``[dates]
    stage = "%d.%m.%Y"`` the format of every stage date.
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
        text_value = _number_text(raw, decimal)
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


def _number_text(raw: Any, decimal: str | None) -> str:
    """A spreadsheet's number as plain text (``1 234,50`` -> ``1234.50``); see parse_number."""
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
    return text_value


_PLAIN_AMOUNT = re.compile(r"\d+(?:\.\d{1,2})?$")
_CENT = dec.Decimal("0.01")
_TOO_LARGE = dec.Decimal("1e14")


def parse_amount(raw: Any, *, decimal: str | None = None) -> dec.Decimal:
    """An amount of money as spreadsheets write it (see :func:`parse_number`), exactly.

    The text is read as a :class:`~decimal.Decimal`, never through a float:
    zero or more, at most two decimals, below 10^14 (what ``Numeric(16, 2)``
    holds). The result has two decimal places.
    """
    if raw.__class__ is str and _PLAIN_AMOUNT.match(raw):  # the common case: "1500", "12.50"
        return dec.Decimal(raw).quantize(_CENT)
    if isinstance(raw, bool):
        raise ValueError("is a boolean, not an amount")
    if isinstance(raw, dec.Decimal | int):
        amount = dec.Decimal(raw)
    elif isinstance(raw, float):
        amount = dec.Decimal(repr(raw))  # a JSON number: the digits it was written with
    else:
        try:
            amount = dec.Decimal(_number_text(raw, decimal))
        except dec.InvalidOperation:
            raise ValueError(f"{raw!r} is not an amount of money") from None
    if not amount.is_finite():
        raise ValueError("must be a finite amount")
    if amount < 0:
        raise ValueError(f"{raw!r} is negative; an amount is zero or more")
    if amount != amount.quantize(_CENT):
        raise ValueError(f"{raw!r} has more than two decimals")
    if amount >= _TOO_LARGE:
        raise ValueError(f"{raw!r} is too large")
    return amount.quantize(_CENT)


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
    "potential_score",
    "potential_category",
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
    "potential_score",
    "potential_category",
)
_EMAIL_AT, _EXT_AT, _CREATED_AT = _ROW.index("email"), _ROW.index("external_id"), 10
_REQUISITES_AT, _SEGMENT_AT, _PARAMS_AT, _OWNER_AT = 4, 5, 6, 7
#: where a row that names no segment keeps its parameters as read, before classification
_RAW_PARAMS = " params as read"


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
        # the access policies, applied row by row with compiled checks (None: all allowed)
        self.guard = _Guard(session, "client")
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
            for column, target in _field_map(columns, self.mapping, "clients")
        ]

    def _bad(self, target: str, reason: str) -> _Bad:
        return _Bad(self.column_of.get(target, target), reason)

    def _json_object(self, name: str, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise self._bad(name, f"{name}: is not JSON") from None
        if not isinstance(value, dict):
            raise self._bad(name, f"{name}: must be a JSON object")
        return value

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
        for name, bucket in (("params", params), ("requisites", requisites)):
            if name in values:  # a whole object in one column (JSON text in CSV)
                bucket.update({**self._json_object(name, values.pop(name)), **bucket})
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
        if params and segment is None and self.segments:
            segment = self._classify(params)  # the segment the parameters fit, if any
            if segment is not None:  # a stored client's own segment may read them otherwise
                values[_RAW_PARAMS] = dict(params)
        params, potential = self.read_params(params, segment)
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
            None if potential is None else potential.score,
            None if potential is None else potential.category,
        )

    def read_params(
        self, params: dict[str, Any], segment: str | None, *, convert: bool = True
    ) -> tuple[dict[str, Any], Any]:
        """``(params, potential)``: ``params`` read with ``segment``'s converters (in place)
        and checked against its schema, and the potential they give; may raise ``_Bad``."""
        if segment is None:
            return params, None
        if params:
            converters = self.converters[segment] if convert else {}
            for key, raw in params.items():
                converter = converters.get(key)
                if converter is not None:
                    try:
                        params[key] = converter(raw)
                    except ValueError as exc:
                        raise self._bad(f"param.{key}", f"params.{key}: {exc}") from None
            if not self.checks[segment](params):
                problem = self.segments[segment].validate(params)[0]
                parts = (problem.field or "").split(".")
                raise self._bad(f"param.{parts[1]}" if len(parts) > 1 else "segment", str(problem))
        return params, self.segments[segment].potential(params)

    def _classify(self, params: dict[str, Any]) -> str | None:
        """The segment whose classifier fits ``params`` best, each read with its converters.

        As :meth:`crmkit.CRM.classify`: by the parameters' names; the row is then
        checked against the segment found, so that a bad value is refused.
        """
        scores = []
        for name, seg in self.segments.items():
            read = {}
            for key, raw in params.items():
                convert = self.converters[name].get(key)
                try:
                    read[key] = raw if convert is None else convert(raw)
                except ValueError:  # the segment's schema refuses it when the row is checked
                    read[key] = raw
            scores.append((seg.classify(read), name))
        return best_segment(scores)

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


def _field_map(columns: list[str], mapping: Mapping, kind: str) -> list[tuple[str, str]]:
    """``(source column, field)`` pairs for ``kind``; unknown fields in the mapping are refused.

    Columns that name no field are left out (a file may carry more than crmkit keeps),
    and so are the mapping's columns that the file does not have (one mapping may
    serve several files).
    """
    fields, prefixes, open_ended = _KIND_FIELDS[kind]
    present = set(columns)
    pairs: list[tuple[str, str]] = []
    for source, target in mapping.columns.items():
        if target not in fields and not (prefixes and target.startswith(prefixes)):
            allowed = ", ".join([*fields, *open_ended])
            raise ConfigError(
                f"column {source!r} maps to unknown field {target!r} (fields: {allowed})",
                field=f"mapping.columns.{source}",
            )
        if kind == "clients" and target.startswith("contact.") and target[8:] not in CONTACT_FIELDS:
            raise ConfigError(
                f"{target!r} is not a contact field ({', '.join(CONTACT_FIELDS)})",
                field=f"mapping.columns.{source}",
            )
        if source in present:
            pairs.append((source, target))
    mapped = set(mapping.columns)
    for column in columns:
        if column not in mapped and (
            column in fields or (prefixes and column.startswith(prefixes))
        ):
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
    defer_indexes: bool | None = None,
) -> ImportResult:
    """Import ``path`` (``kind``: clients, deals or interactions) into ``crm`` as ``as_user``.

    See the module's documentation.

    ``progress`` is called after every batch with the running totals.
    Raises :class:`ValidationError` for a file that cannot be read at all (and
    writes nothing); bad rows are reported in the result and in ``errors_to``.

    ``defer_indexes`` (deals): whether to drop the funnel's indexes of
    ``stage_changes`` after the first batch and create them again at the end.
    None decides from the sizes (:data:`DEFER_MIN_CHANGES`,
    :data:`DEFER_SHARE`), True always does it when there is more than one
    batch, False never. See :mod:`crmkit.core.indexes` for what happens when
    the import is killed before the end. With ``on_error="abort"`` the drop
    and the creation are part of the import's one transaction, on SQLite only
    (on PostgreSQL a dropped index would lock the table for every reader until
    the end).
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
        _require_columns(kind, columns, mapping)
    result = ImportResult(kind=kind)
    errors = _ErrorSink(errors_to)
    errors.header = columns
    started = time.perf_counter()
    plan = _IndexPlan(kind, path, defer_indexes)
    failed = True
    try:
        if on_error == "abort":
            _import_all_or_nothing(
                crm,
                kind,
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
                plan,
            )
        else:
            write = _WRITERS[kind]
            for batch in _batches(rows, batch_size):
                with crm.session(as_user=as_user) as s:
                    plan.before(s)
                    write(s, batch, columns, mapping, update_existing, result, errors, path)
                    if plan.deferral is not None:
                        plan.deferral.beat(s.connection)
                errors.flush()
                result.batches += 1
                plan.after_first(crm, batch, result)
                result.seconds = time.perf_counter() - started
                if progress is not None:
                    progress(result)
        failed = False
    finally:
        errors.close()
        try:
            plan.restore(result)
        except Exception as exc:
            if not failed:
                raise
            # the import's own error matters more; the indexes come back at the next session
            warnings.warn(f"could not create the dropped indexes again: {exc}", stacklevel=2)
        result.seconds = time.perf_counter() - started
    result.errors = errors.first
    return result


def _count_lines(path: str | os.PathLike[str]) -> int:
    """The lines of a file (read in blocks: about 1 s per GB)."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


class _IndexPlan:
    """Whether a deals import drops the funnel's indexes, decided after its first batch.

    The first batch says how many stage changes a row of this file makes
    (none when the file was imported already); the file's lines say how many
    rows follow; the table's highest id says about how many changes are
    stored. Per batch transactions (``on_error="skip"``) drop the indexes in
    a transaction of their own (:func:`crmkit.core.indexes.defer`), listed so
    that they come back even if the import is killed; the one transaction
    of ``on_error="abort"`` drops them inside itself (SQLite only).
    """

    def __init__(self, kind: str, path: str | os.PathLike[str], defer: bool | None) -> None:
        self.active = kind == "deals" and defer is not False
        self.force = defer is True
        self.path = path
        self.first_id: int | None = None  #: highest id of stage_changes before the first batch
        self.decided = False
        self.deferral: Any = None  #: a crmkit.core.indexes.Deferral
        self.dropped: list[Any] = []  #: the indexes dropped inside the one transaction

    def before(self, s: Session) -> None:
        if self.active and self.first_id is None:
            self.first_id = self._last_id(s.connection, s.table("stage_changes"))

    @staticmethod
    def _last_id(conn: Any, table: Any) -> int:
        return int(conn.execute(select(func.max(table.c.id))).scalar() or 0)

    def wanted(self, conn: Any, table: Any, batch: list[tuple[int, Any]]) -> bool:
        """Whether the rest of the file is worth dropping the indexes for."""
        last = self._last_id(conn, table)
        per_row = (last - (self.first_id or 0)) / len(batch)
        remaining = max(0, _count_lines(self.path) - batch[-1][0]) * per_row
        if self.force:
            return remaining > 0
        return remaining >= max(DEFER_MIN_CHANGES, DEFER_SHARE * last)

    def after_first(self, crm: CRM, batch: list[tuple[int, Any]], result: ImportResult) -> None:
        """After the first batch (committed): maybe drop the indexes, listed."""
        if not self.active or self.decided:
            return
        self.decided = True
        from crmkit.core.indexes import defer

        with crm.connect(readonly=True) as conn:
            if not self.wanted(conn, crm.metadata.tables["stage_changes"], batch):
                return
        try:
            self.deferral = defer(crm, "stage_changes", FUNNEL_INDEXES)
        except (SQLAlchemyError, CrmError) as exc:  # rolled back: the import keeps them
            warnings.warn(f"kept the funnel's indexes (could not drop them: {exc})", stacklevel=2)

    def drop_inside(self, s: Session, batch: list[tuple[int, Any]]) -> None:
        """After the first batch of the one transaction: maybe drop the indexes in it."""
        if not self.active or self.decided:
            return
        self.decided = True
        conn = s.connection
        if conn.dialect.name != "sqlite":
            return
        table = s.table("stage_changes")
        if not self.wanted(conn, table, batch):
            return
        from crmkit.core.indexes import index_of

        present = {ix["name"] for ix in inspect(conn).get_indexes("stage_changes")}
        for name in FUNNEL_INDEXES:
            index = index_of(s.crm, "stage_changes", name)
            if index is not None and name in present:  # not dropped by another import
                index.drop(conn)
                self.dropped.append(index)

    def create_inside(self, s: Session, result: ImportResult) -> None:
        """At the end of the one transaction: create the indexes it dropped."""
        for index in self.dropped:
            index.create(s.connection)
        result.deferred_indexes = [index.name for index in self.dropped]
        self.dropped = []

    def restore(self, result: ImportResult) -> None:
        """At the end of the import: create the indexes again and unlist them."""
        if self.deferral is not None:
            deferral, self.deferral = self.deferral, None
            deferral.restore()
            result.deferred_indexes = list(deferral.names)


def _require_columns(kind: str, columns: list[str], mapping: Mapping) -> None:
    """Refuse a CSV header that lacks what every row needs (JSON Lines rows are checked alone)."""
    _field_map(columns, mapping, kind)  # a mapping that names unknown fields fails first
    targets = {mapping.columns.get(c, c) for c in columns} | set(mapping.defaults)
    listed = ", ".join(columns)
    if kind != "clients":
        what = "deal" if kind == "deals" else "interaction"
        needs = [("client", CLIENT_REFS, f"the {what}'s client")]
        if kind == "deals":
            needs.append(("opened_at", ("opened_at",), "when the deal was opened"))
            if {"history", "external_id"} & targets or any(t.startswith("stage.") for t in targets):
                # the date of the first stage; or rows that only update stored deals
                targets.add("opened_at")
        else:
            needs += [
                ("kind", ("kind",), "the interaction's kind"),
                ("topic", ("topic",), "the interaction's topic"),
                ("outcome", ("outcome",), "the interaction's outcome"),
                ("occurred_at", ("occurred_at", "at"), "when the interaction took place"),
            ]
        for field_name, names, label in needs:
            if not targets.intersection(names):
                hint = " or ".join(repr(n) for n in names)
                if field_name == "opened_at":
                    hint += " or 'stage.NAME' (the date the deal entered that stage)"
                raise ValidationError(
                    f"no column gives {label} (columns: {listed}); "
                    f"name one {hint} or map it in the mapping's [columns]",
                    field=field_name,
                )
        return
    if "name" not in targets:
        raise ValidationError(
            f"no column gives the client's name (columns: {listed}); "
            "name one 'name' or map it in the mapping's [columns]",
            field="name",
        )


def _import_all_or_nothing(
    crm: CRM,
    kind: str,
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
    plan: _IndexPlan,
) -> None:
    """One transaction for the whole file: the first bad row rolls it all back."""

    class _Abort(Exception):
        pass

    write = _WRITERS[kind]
    try:
        with crm.session(as_user=as_user) as s:
            plan.before(s)
            for batch in _batches(rows, batch_size):
                # after the first bad row, the rest is only checked, so every bad row is listed
                write(
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
                errors.flush()
                result.batches += 1
                if not result.rejected:
                    plan.drop_inside(s, batch)
                result.seconds = time.perf_counter() - started
                if progress is not None:
                    progress(result)
            if result.rejected:
                raise _Abort  # rolls the transaction back: nothing is written (nor dropped)
            plan.create_inside(s, result)
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


def _never(view: Any) -> bool:
    return False


class _Guard:
    """The access policies on one resource, applied to the rows of a bulk import.

    Checks are compiled once (None: every record is allowed); stored records
    are looked at in one query per batch.
    """

    def __init__(self, session: Session, resource: str) -> None:
        access = session.access
        self.access = access
        self.resource = resource
        self.may_create = access.checker("create", resource)
        self.may_read = access.checker("read", resource)
        self.may_update = access.checker("update", resource)
        self.may_reassign = (
            access.checker("reassign", resource) if access.may("reassign", resource) else _never
        )
        self.view = access.view_maker(resource)

    def refusal(self, action: str, view: dict[str, Any]) -> str:
        """Why the policies refuse ``action`` on a row (the row's error)."""
        decision = self.access.decide(action, self.resource, view)
        what = f"{self.resource} #{view['id']}" if view.get("id") else f"this {self.resource}"
        return f"you may not {action} {what}: {decision.reason}"

    def create(self, values: dict[str, Any]) -> str | None:
        """None if a new record with these column values may be created, else why not."""
        if self.may_create is None:
            return None
        view = self.view(values)
        return None if self.may_create(view) else self.refusal("create", view)

    def change(self, stored: dict[str, Any] | None, changed: dict[str, Any]) -> str | None:
        """None if a stored record (its view) may get ``changed`` (column values), else why not."""
        if stored is None:  # gone meanwhile: nothing to reveal
            return f"no {self.resource} to update"
        if self.may_read is not None and not self.may_read(stored):
            return f"a {self.resource} you may not see already has this key"
        if not changed:
            return None
        if self.may_update is not None and not self.may_update(stored):
            return self.refusal("update", stored)
        if "owner_id" in changed and changed["owner_id"] != stored.get("owner_id"):
            after = {**stored, "owner_id": changed["owner_id"]}
            after = self.view(_columns_of(self.access, self.resource, after))
            for view in (stored, after):
                if not self.may_reassign(view):
                    return self.refusal("reassign", view)
        return None


def _columns_of(access: Any, resource: str, view: dict[str, Any]) -> dict[str, Any]:
    """A view's values under their column names (for a view of changed values)."""
    from crmkit.core.access import Col

    res = access.policies.resource(resource)
    out = dict(view)
    for name, attr in res.attributes.items():
        if isinstance(attr.source, Col):
            out[attr.source.name] = view.get(name)
    return out


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
    guard = rows.guard
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
            refused = guard.create(dict(zip(_ROW, row, strict=True)))
            if refused is not None:
                errors.add(RowError(line, None, refused), None)
                result.rejected += 1
                continue
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
                    *row[_CREATED_AT + 1 :],
                )
            )
            if contact is not None:
                contacts.append((len(inserts) - 1, contact))
            continue
        before = guard.view(match)
        hidden = guard.change(before, {})
        if hidden is not None:  # reveal nothing of a client the user may not read
            errors.add(RowError(line, None, hidden), None)
            result.rejected += 1
            continue
        values = dict(zip(_ROW, row, strict=True))
        try:
            _stored_segment(rows, values, given, match)
        except _Bad as bad:
            errors.add(RowError(line, bad.column, bad.reason), None)
            result.rejected += 1
            continue
        # only what the file gives counts: a missing column never clears a field
        present = {"owner_id" if k == "owner" else k for k in given}
        present |= {k for k in ("params", "requisites") if values[k]}
        if values["segment"] is not None and not match["segment"]:
            present.add("segment")  # classified from the parameters
        changed = {k: values[k] for k in _MUTABLE if k in present and values[k] != match[k]}
        if "params" in changed or "segment" in changed:
            changed["potential_score"] = values["potential_score"]
            changed["potential_category"] = values["potential_category"]
        if "email" in changed and changed["email"].lower() == (match["email"] or "").lower():
            del changed["email"]  # the same address in other letters
        if values["external_id"] and not match["external_id"]:
            changed["external_id"] = values["external_id"]
        refused = guard.change(before, changed) if update_existing else None
        if refused is not None:
            errors.add(RowError(line, None, refused), None)
            result.rejected += 1
        elif not changed:
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


def _stored_segment(
    rows: _ClientRows, values: dict[str, Any], given: dict[str, Any], match: dict[str, Any]
) -> None:
    """Fix a row's segment, parameters and potential in ``values`` for the stored ``match``.

    A row that names no segment but gives parameters is the stored client's
    segment when it has one: the parameters are read and checked under that
    segment, not under the one they would be classified into. A row that
    changes the segment but gives no parameters has the stored parameters
    checked (and scored) under the new segment.
    """
    stored = match["segment"]
    if stored and "segment" not in given and values["params"]:
        raw = given.get(_RAW_PARAMS, values["params"])
        params, potential = rows.read_params(dict(raw), stored)
        values["segment"], values["params"] = stored, params
    elif "segment" in given and not values["params"] and match["params"]:
        if values["segment"] == stored:
            return
        _, potential = rows.read_params(dict(match["params"]), values["segment"], convert=False)
    else:
        return
    values["potential_score"] = None if potential is None else potential.score
    values["potential_category"] = None if potential is None else potential.category


def _existing_clients(
    s: Session, by_ext: dict[str, int], by_email: dict[str, int]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Stored clients whose external id or email matches a row of the batch (two queries)."""
    t = s.table("clients")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    cols = [t.c.id, t.c.external_id, t.c.email, *[t.c[c] for c in _MUTABLE if c != "email"]]
    cols += [t.c.stage, t.c.potential_score, t.c.potential_category]  # what policies may ask
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


def _in(
    s: Session, column: Any, values: Sequence[Any], name: str = "values", type_: Any = String
) -> Any:
    """``column IN values`` with one bound parameter, however many values (a batch has many).

    ``name`` tells the parameters of two such conditions in one statement apart.
    """
    if s.connection.dialect.name == "postgresql":
        from sqlalchemy import ARRAY, any_, bindparam

        return column == any_(bindparam(name, list(values), type_=ARRAY(type_)))
    json_each = text(f"SELECT value FROM json_each(:{name})").bindparams(
        **{name: json.dumps(list(values))}
    )
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
            ids=inserted_ids + updated_ids,  # one audit entry for the batch, naming every client
        )
        s.crm.plugins.records_imported(
            session=s, kind="clients", inserted_ids=inserted_ids, updated_ids=updated_ids
        )


# -- deals and interactions: shared parts ----------------------------------------------
class _Values:
    """A row's values by field, translated by the mapping; the plan is made once per import.

    ``stage.NAME`` columns (a deal's entered-stage dates) are kept apart, as
    ``(NAME, value, source column, field)`` in the file's order.
    """

    def __init__(self, columns: list[str], mapping: Mapping, kind: str) -> None:
        self.mapping = mapping
        self.kind = kind
        self.plan = self._plan(columns, by_index=True) if columns else []
        self._plans: dict[tuple[str, ...], list[tuple[Any, str, Any, str, str | None]]] = {}

    def _plan(
        self, columns: list[str], *, by_index: bool
    ) -> list[tuple[Any, str, Any, str, str | None]]:
        position = {c: i for i, c in enumerate(columns)}
        return [
            (
                position[column] if by_index else column,
                target,
                self.mapping.values.get(target),
                column,
                target[6:] if target.startswith("stage.") else None,
            )
            for column, target in _field_map(columns, self.mapping, self.kind)
        ]

    def __call__(self, raw: Any) -> tuple[dict[str, Any], list[tuple[str, Any, str, str]]]:
        if raw.__class__ is list:
            plan, get = self.plan, raw.__getitem__
        else:
            keys = tuple(raw)
            plan = self._plans.get(keys)
            if plan is None:
                plan = self._plans[keys] = self._plan(list(keys), by_index=False)
            get = raw.get
        values: dict[str, Any] = {}
        stages: list[tuple[str, Any, str, str]] = []
        for column, target, translations, source, stage in plan:
            value = get(column)
            if value is None or value == "":
                continue
            if value.__class__ is str:
                value = value.strip()
                if not value:
                    continue
                if translations is not None:
                    value = translations.get(value, value)
            if stage is not None:
                stages.append((stage, value, source, target))
            else:
                values[target] = value
        return values, stages


def _date_parser(fmt: str | None, tz: Any) -> Callable[[Any], dt.datetime]:
    """:func:`parse_datetime` with a memory: the dates of a file repeat (bounded cache)."""
    cache: dict[str, dt.datetime] = {}

    def parse(raw: Any) -> dt.datetime:
        if raw.__class__ is not str:
            return parse_datetime(raw, fmt, tz)
        value = cache.get(raw)
        if value is None:
            if len(cache) >= 50_000:
                cache.clear()
            value = cache[raw] = parse_datetime(raw, fmt, tz)
        return value

    return parse


def _cached_binder(session: Session, table: str, column: str) -> Callable[[Any], Any]:
    """A column's bind conversion, remembered per value (a batch repeats its dates)."""
    proc = BulkInsert.binder(session, table, column)
    if proc is _same:
        return proc
    cache: dict[Any, Any] = {}

    def bind(value: Any) -> Any:
        if value is None:
            return None
        out = cache.get(value)
        if out is None:
            if len(cache) >= 50_000:
                cache.clear()
            out = cache[value] = proc(value)
        return out

    return bind


class _Rows:
    """What deals and interactions share: users, client references, dates, messages."""

    kind = ""

    def __init__(self, session: Session, columns: list[str], mapping: Mapping) -> None:
        self.tz = session.crm.tz
        self.mapping = mapping
        self.values = _Values(columns, mapping, self.kind)
        self.column_of = {target: column for column, target in mapping.columns.items()}
        self.defaults = {k: v for k, v in mapping.defaults.items() if not k.startswith("stage.")}
        users = session.table("users")
        self.users = {
            login: (uid, active)
            for uid, login, active in session.connection.execute(
                select(users.c.id, users.c.login, users.c.active)
            )
        }
        self.user_id = session.user.id
        self._parsers: dict[str, Callable[[Any], dt.datetime]] = {}
        # the column named in "client: is required" when a row gives none
        present = {target for *_, target in _field_map(columns, mapping, self.kind)}
        self.client_column = next((self._column(f) for f in CLIENT_REFS if f in present), None)

    def _column(self, target: str) -> str:
        return self.column_of.get(target, target)

    def _bad(self, target: str, reason: str) -> _Bad:
        return _Bad(self.column_of.get(target, target), f"{target}: {reason}")

    def _parser(self, target: str) -> Callable[[Any], dt.datetime]:
        """The parser of ``target``'s dates: the mapping's format for it (cached per format)."""
        parse = self._parsers.get(target)
        if parse is None:
            dates = self.mapping.dates
            group = "stage" if target.startswith("stage.") or target == "history" else target
            fmt = dates.get(target) or dates.get(group) or dates.get("format")
            parse = self._parsers[target] = _date_parser(fmt, self.tz)
        return parse

    def _date(self, target: str, raw: Any, *, column: str | None = None) -> dt.datetime:
        """``raw`` as a time, in the format the mapping gives ``target``."""
        parse = self._parsers.get(target) or self._parser(target)
        try:
            return parse(raw)
        except ValueError as exc:
            raise _Bad(column or self._column(target), f"{target}: {exc}") from None

    def _text(self, values: dict[str, Any], target: str, limit: int) -> str | None:
        value = values.get(target)
        if value is None:
            return None
        value = str(value)
        if len(value) > limit:
            raise self._bad(target, f"is longer than {limit} characters")
        return value

    def _refs(self, values: dict[str, Any]) -> list[tuple[str, Any]]:
        """The client references a row gives: ``[(field, id | external id | lower email)]``."""
        refs: list[tuple[str, Any]] = []
        for target in CLIENT_REFS:
            value = values.get(target)
            if value is None:
                continue
            if target == "client_id":
                value = _whole(value, self._bad, target)
            elif target == "client_email":
                value = str(value).lower()
            else:
                value = str(value)
            refs.append((target, value))
        if not refs:
            raise _Bad(
                self.client_column,
                "client: is required (give client_id, client_external_id or client_email)",
            )
        return refs

    def _login(self, values: dict[str, Any], target: str, *, active: bool) -> int:
        login = values.get(target)
        if login is None:
            return self.user_id
        found = self.users.get(str(login))
        if found is None:
            raise self._bad(target, f"no user {login!r}")
        if active and not found[1]:
            raise self._bad(target, f"user {login!r} is not active")
        return int(found[0])

    def _show(self, when: dt.datetime) -> str:
        """A time as the file most likely wrote it: the date alone at midnight."""
        local = when.astimezone(self.tz)
        if local.time() == dt.time():
            return local.date().isoformat()
        return local.replace(tzinfo=None).isoformat(" ", "seconds")


def _whole(value: Any, bad: Callable[[str, str], _Bad], target: str) -> int:
    if value.__class__ is int:
        return int(value)
    try:
        return int(parse_number(value, integer=True))
    except ValueError:
        raise bad(target, f"{value!r} is not a whole number") from None


def _resolve_clients(
    s: Session,
    items: list[Any],
    errors: _ErrorSink,
    result: ImportResult,
    column_of: Callable[[str], str],
) -> list[Any]:
    """Give each row (``.refs``) its ``client_id`` and ``client_name``; one query per batch.

    Rows whose client is not found, or whose references disagree, are rejected.
    """
    ids: set[int] = set()
    exts: set[str] = set()
    emails: set[str] = set()
    for item in items:
        for target, value in item.refs:
            if target == "client_id":
                ids.add(value)
            elif target == "client_external_id":
                exts.add(value)
            else:
                emails.add(value)
    t = s.table("clients")
    found: dict[tuple[str, Any], tuple[int, str]] = {}
    for target, column, values, type_ in (
        ("client_id", t.c.id, ids, Integer),
        ("client_external_id", t.c.external_id, exts, String),
        ("client_email", func.lower(t.c.email), emails, String),
    ):
        if not values:
            continue
        query = select(t.c.id, t.c.name, column.label("ref")).where(
            _in(s, column, sorted(values), target, type_)
        )
        # a client the user may not read is "not found", exactly like a missing one
        query = s.access.filter(query, "read", "client")
        for client_id, name, ref in s.connection.execute(query):
            found[(target, ref)] = (client_id, name)
    kept = []
    what = {"client_id": "id", "client_external_id": "external id", "client_email": "email"}
    for item in items:
        client: tuple[int, str] | None = None
        first: tuple[str, Any] | None = None
        try:
            for target, value in item.refs:
                match = found.get((target, value))
                if match is None:
                    shown = value if target == "client_id" else repr(value)
                    raise _Bad(
                        column_of(target), f"{target}: no client with {what[target]} {shown}"
                    )
                if client is None:
                    client, first = match, (target, value)
                elif match[0] != client[0]:
                    assert first is not None
                    raise _Bad(
                        column_of(target),
                        f"{target}: {value!r} is client #{match[0]}, but {first[0]} "
                        f"{first[1]!r} is client #{client[0]}",
                    )
        except _Bad as bad:
            errors.add(RowError(item.line, bad.column, bad.reason), item.raw)
            result.rejected += 1
            continue
        assert client is not None
        item.client_id, item.client_name = client
        kept.append(item)
    return kept


def _convert_all(
    convert: Callable[[Any], Any],
    batch: list[tuple[int, Any]],
    errors: _ErrorSink,
    result: ImportResult,
) -> list[Any]:
    """The batch's rows converted; bad ones go to the errors."""
    good = []
    for line, raw in batch:
        if raw.__class__ is RowFailure:
            errors.add(RowError(line, None, str(raw)), None)
            result.rejected += 1
            continue
        try:
            item = convert(raw)
        except _Bad as bad:
            errors.add(RowError(line, bad.column, bad.reason), raw)
            result.rejected += 1
            continue
        item.line, item.raw = line, raw
        good.append(item)
    return good


def _reject(
    errors: _ErrorSink, result: ImportResult, item: Any, reason: str, column: str | None = None
) -> None:
    errors.add(RowError(item.line, column, reason), item.raw)
    result.rejected += 1


def _time_range(s: Session, table: str, column: str, times: list[dt.datetime]) -> tuple[Any, Any]:
    """``column BETWEEN`` the earliest and the latest of ``times``, as bound parameters."""
    col = s.table(table).c[column]
    return col >= min(times), col <= max(times)


def _finish_batch(
    s: Session,
    kind: str,
    inserted_ids: list[int],
    updated_ids: list[int],
    path: Any,
) -> None:
    """One event and one ``crmkit_records_imported`` call for the batch."""
    if not inserted_ids and not updated_ids:
        return
    s.record(
        "import",
        inserted_ids[0] if inserted_ids else updated_ids[0],
        f"{kind}_imported",
        {
            "file": None if path is None else str(path),
            "inserted": [inserted_ids[0], inserted_ids[-1]] if inserted_ids else None,
            "updated": updated_ids,
        },
        ids=inserted_ids + updated_ids,  # one audit entry for the batch, naming every record
    )
    s.crm.plugins.records_imported(
        session=s, kind=kind, inserted_ids=inserted_ids, updated_ids=updated_ids
    )


# -- deals -----------------------------------------------------------------------------
class _Flow:
    """A deal pipeline, prepared for checking many histories quickly."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.name = pipeline.name
        self.order = {s.name: s.order for s in pipeline.stages}
        self.order[WON] = len(pipeline.stages) + 1
        self.order[LOST] = len(pipeline.stages) + 2
        self.first = pipeline.first.name
        self.last = pipeline.stages[-1].name
        self.allow_skip = pipeline.allow_skip
        self.reasons = frozenset(pipeline.lost_reasons) or None
        self.allowed = ", ".join([*pipeline.stage_names, *TERMINAL])


class _Deal:
    """One converted deal row."""

    __slots__ = (
        "amount",
        "client_id",
        "client_name",
        "closed_at",
        "currency",
        "expected_close",
        "external_id",
        "flow",
        "given",
        "history",
        "line",
        "lost_reason",
        "opened_at",
        "owner_id",
        "raw",
        "refs",
        "status",
        "title",
    )

    line: int
    raw: Any
    refs: list[tuple[str, Any]]
    client_id: int
    client_name: str
    flow: _Flow
    title: str | None
    amount: dec.Decimal
    currency: str
    owner_id: int
    expected_close: dt.date | None
    opened_at: dt.datetime | None
    #: the stages entered, won/lost last (None: the row gives no dates, it may only update)
    history: list[tuple[str, dt.datetime]] | None
    status: str
    closed_at: dt.datetime | None
    lost_reason: str | None
    external_id: str | None
    given: set[str]  #: what the file gives ("history": any stage date, stage or status)


class _DealRows(_Rows):
    """Turns raw rows into deals with their stage history, looked up once per import.

    Fields: ``client_id`` / ``client_external_id`` / ``client_email`` (the
    client, one is enough), ``pipeline`` (default: the first deal pipeline),
    ``title`` (default: the client's name), ``amount`` (as spreadsheets write
    it, two decimals at most), ``currency`` (default: the deployment's),
    ``owner`` (an active user's login; default: the acting user),
    ``expected_close``, ``opened_at``, ``status`` (or ``outcome``: open, won,
    lost) with ``closed_at`` and ``lost_reason`` (from the pipeline's list),
    ``stage`` (where the deal is: checked against the history), ``external_id``.

    The stage history: ``stage.NAME`` columns hold the date the deal entered
    stage NAME (``stage.won``/``stage.lost`` the date it closed); in JSON
    Lines, ``history`` is a list of ``{"stage": ..., "at": ...}``. It must
    start in the pipeline's first stage and go forward one stage at a time
    (further only when the pipeline allows skipping), with dates that never go
    back; ``opened_at`` (default: the first date) is not after it; a won deal
    has reached the last stage (unless skipping is allowed). Without any
    dates, the deal entered ``stage`` (default: the first) at ``opened_at``;
    a row with an external id and no dates at all may only update a stored deal.
    The stages' entry gates are *not* checked and ``crmkit_stage_changed`` is
    not called: the history happened already (plugins see each batch through
    ``crmkit_records_imported``).
    """

    kind = "deals"

    def __init__(self, session: Session, columns: list[str], mapping: Mapping) -> None:
        super().__init__(session, columns, mapping)
        crm = session.crm
        self.flows = {name: _Flow(p) for name, p in crm.pipelines.items() if p.entity == "deal"}
        self.default_flow = next(iter(self.flows.values()), None)
        self.currency = crm.config.currency
        self.decimal = mapping.decimal
        self.stage_names = mapping.values.get("stage")
        self.bind_time = BulkInsert.binder(session, "deals", "opened_at")
        self.bound_times: dict[dt.datetime, Any] = {}
        self.bind_amount = BulkInsert.binder(session, "deals", "amount")
        self.bind_date = _cached_binder(session, "deals", "expected_close")
        self.guard = _Guard(session, "deal")

    def convert(self, raw: Any) -> _Deal:
        """The row as a :class:`_Deal`; raises ``_Bad`` naming the column and the reason."""
        values, stages = self.values(raw)
        if self.defaults:
            for key, default in self.defaults.items():
                values.setdefault(key, default)
        bad = self._bad
        deal = _Deal()
        deal.refs = self._refs(values)
        name = values.get("pipeline")
        if name is None:
            if self.default_flow is None:
                raise bad("pipeline", "no deal pipeline is configured")
            flow = self.default_flow
        else:
            found = self.flows.get(str(name))
            if found is None:
                known = ", ".join(self.flows) or "none"
                raise bad("pipeline", f"{name!r} is not a deal pipeline (allowed: {known})")
            flow = found
        deal.flow = flow
        deal.title = self._text(values, "title", 300)
        amount = values.get("amount")
        if amount is None:
            deal.amount = _CENT * 0
        else:
            try:
                deal.amount = parse_amount(amount, decimal=self.decimal)
            except ValueError as exc:
                raise bad("amount", str(exc)) from None
        currency = values.get("currency")
        if currency is None:
            deal.currency = self.currency
        else:
            code = str(currency).upper()
            if len(code) != 3 or not code.isalpha():
                raise bad("currency", f"{currency!r} is not a 3-letter currency code")
            deal.currency = code
        deal.owner_id = self._login(values, "owner", active=True)
        close_by = values.get("expected_close")
        deal.expected_close = (
            None if close_by is None else self._date("expected_close", close_by).date()
        )
        deal.external_id = self._text(values, "external_id", 200)
        deal.given = set(values)
        self._history(deal, values, stages, flow)
        return deal

    def _history(
        self,
        deal: _Deal,
        values: dict[str, Any],
        stages: list[tuple[str, Any, str, str]],
        flow: _Flow,
    ) -> None:
        """Check the stage history and set the deal's history, status and dates."""
        bad = self._bad
        order = flow.order
        # (stage, entered at, column, field) in the order the deal went through them
        entries: list[tuple[str, dt.datetime, str, str]] = []
        if stages:
            parsers = self._parsers
            ranked = []
            for name, value, column, target in stages:
                rank = order.get(name)
                if rank is None:
                    raise _Bad(
                        column,
                        f"{target}: {name!r} is not a stage of pipeline {flow.name!r} "
                        f"(allowed: {flow.allowed})",
                    )
                parse = parsers.get(target) or self._parser(target)
                try:
                    when = parse(value)
                except ValueError as exc:
                    raise _Bad(column, f"{target}: {exc}") from None
                ranked.append((rank, name, when, column, target))
            if len(ranked) > 1:
                ranked.sort()  # in the pipeline's order, whatever the columns' order
                if ranked[-2][1] == WON:  # won and lost: both sort last
                    raise _Bad(ranked[-1][3], f"{ranked[-1][4]}: a deal is either won or lost")
            entries = [(name, when, column, target) for _, name, when, column, target in ranked]
        listed = values.get("history")
        if listed is not None:
            if entries:
                raise bad(
                    "history",
                    "give the stage history as stage.NAME columns or as a history list, not both",
                )
            entries = self._listed(listed, flow)
        status = values.get("status", values.get("outcome"))
        status_field = "status" if "status" in values else "outcome"
        if status is not None:
            status = str(status).lower()
            if status not in ("open", WON, LOST):
                raise bad(status_field, f"{values[status_field]!r} is not open, won or lost")
        stage = values.get("stage")
        if stage is not None:
            stage = str(stage)
            if stage in TERMINAL:
                if status is not None and status != stage:
                    raise bad("stage", f"{stage!r}, but {status_field} is {status!r}")
                status, status_field, stage = stage, "stage", None
            elif stage not in order:
                raise bad(
                    "stage",
                    f"{stage!r} is not a stage of pipeline {flow.name!r} (allowed: {flow.allowed})",
                )
        opened_at = values.get("opened_at")
        if opened_at is not None:
            opened_at = self._date("opened_at", opened_at)
        closed_at = values.get("closed_at")
        if closed_at is not None:
            closed_at = self._date("closed_at", closed_at)
        lost_reason = self._text(values, "lost_reason", 63)
        # the end: won or lost at closed_at, or open
        end: tuple[str, dt.datetime, str, str] | None = None
        if entries and entries[-1][0] in TERMINAL:
            end = entries.pop()
            if status is not None and status != end[0]:
                raise bad(status_field, f"{status!r}, but {end[3]} says the deal was {end[0]}")
            if closed_at is not None and closed_at != end[1]:
                raise bad(
                    "closed_at",
                    f"{self._show(closed_at)} differs from {end[3]} ({self._show(end[1])})",
                )
            status, closed_at = end[0], end[1]
        elif status in (WON, LOST):
            if closed_at is None:
                raise bad("closed_at", f"is required for a {status} deal")
            end = (status, closed_at, self._column(status_field), status_field)
        else:
            if closed_at is not None:
                raise bad("closed_at", "an open deal has no closed_at (give status won or lost)")
            status = "open"
        if lost_reason is not None and status != LOST:
            raise bad("lost_reason", f"only a lost deal has a lost reason (this one is {status})")
        if not entries:  # no dates: the deal entered its stage when it was opened
            if opened_at is None:
                if deal.external_id and end is None and stage is None and status != LOST:
                    # no history at all: the row may only update a stored deal (see _write_deals)
                    deal.history, deal.status, deal.opened_at = None, status, None
                    deal.closed_at = deal.lost_reason = None
                    return
                raise bad("opened_at", _NO_DATE)
            target = "stage" if stage is not None else "opened_at"
            entries = [(stage or flow.first, opened_at, self._column(target), target)]
        else:
            if stage is not None and stage != entries[-1][0]:
                raise bad("stage", f"{stage!r}, but the stage history ends in {entries[-1][0]!r}")
            if opened_at is None:
                opened_at = entries[0][1]
            elif opened_at > entries[0][1]:
                raise bad(
                    "opened_at",
                    f"{self._show(opened_at)} is after the deal entered {entries[0][0]!r} "
                    f"({self._show(entries[0][1])})",
                )
        # the order: forward, one stage at a time unless the pipeline allows skipping
        prev, prev_at, column, target = entries[0]
        if prev != flow.first and not flow.allow_skip:
            skipped = flow.pipeline.stage_names[: order.get(prev, 1) - 1]
            if prev in TERMINAL:
                reason = f"a deal starts in a stage of {flow.name!r}, not {prev!r}"
            else:
                reason = (
                    f"pipeline {flow.name!r} does not allow skipping stages "
                    f"({', '.join(skipped)} {'comes' if len(skipped) == 1 else 'come'} first)"
                )
            raise _Bad(column, f"{target}: {reason}")
        if end is not None:
            entries.append(end)
        history = [(prev, prev_at)]
        skip, reasons = flow.allow_skip, flow.reasons
        for name, at, column, target in entries[1:]:
            here = order[prev]
            if prev in TERMINAL:
                ok = False
            elif name == LOST:
                ok = lost_reason is not None and (reasons is None or lost_reason in reasons)
            elif name == WON:
                ok = skip or prev == flow.last
            else:
                there = order[name]
                ok = there == here + 1 or (skip and there > here)
            if not ok:
                problem = flow.pipeline.move_problems(prev, name, lost_reason=lost_reason)[0]
                if problem.field == "reason":
                    raise bad("lost_reason", problem.reason)
                raise _Bad(column, f"{target}: {problem.reason}")
            if at < prev_at:
                raise _Bad(
                    column,
                    f"{target}: {self._show(at)} is before the deal entered {prev!r} "
                    f"({self._show(prev_at)})",
                )
            history.append((name, at))
            prev, prev_at = name, at
        deal.history = history
        deal.status = status
        deal.opened_at = opened_at
        deal.closed_at = closed_at
        deal.lost_reason = lost_reason
        if (
            stages
            or listed is not None
            or stage is not None
            or "status" in values
            or "outcome" in values
            or "closed_at" in values
            or lost_reason is not None
        ):
            deal.given.add("history")

    def _listed(self, listed: Any, flow: _Flow) -> list[tuple[str, dt.datetime, str, str]]:
        """A JSON Lines ``history``: ``[{"stage": ..., "at": ...}, ...]`` in the order lived."""
        column = self._column("history")
        if isinstance(listed, str):
            try:
                listed = json.loads(listed)
            except ValueError:
                raise _Bad(column, "history: is not a JSON list") from None
        if not isinstance(listed, list):
            raise _Bad(column, 'history: must be a list of {"stage": ..., "at": ...}')
        entries = []
        for i, item in enumerate(listed, start=1):
            target = f"history.{i}"
            if not isinstance(item, dict) or "stage" not in item or "at" not in item:
                raise _Bad(column, f'{target}: must be an object {{"stage": ..., "at": ...}}')
            name = str(item["stage"]).strip()
            if self.stage_names is not None:
                name = self.stage_names.get(name, name)
            if name not in flow.order:
                raise _Bad(
                    column,
                    f"{target}: {name!r} is not a stage of pipeline {flow.name!r} "
                    f"(allowed: {flow.allowed})",
                )
            entries.append((name, self._date("history", item["at"], column=column), column, target))
        return entries


_NO_DATE = "is required (or stage.NAME columns: the dates the deal entered its stages)"
_DEAL_COLUMNS = (
    "id",
    "client_id",
    "pipeline",
    "stage",
    "status",
    "title",
    "amount",
    "currency",
    "owner_id",
    "expected_close",
    "lost_reason",
    "opened_at",
    "stage_entered_at",
    "closed_at",
    "created_by",
    "external_id",
)
_CHANGE_COLUMNS = (
    "entity",
    "entity_id",
    "pipeline",
    "from_stage",
    "to_stage",
    "at",
    "user_id",
    "cause",
    "note",
    "left_at",
    "next_stage",
    "stay_seconds",
    "lost_reason",
    "deal_amount",
    "deal_opened_at",
)
#: deal fields an import may change (with update_existing); the rest is history
_DEAL_MUTABLE = ("title", "amount", "currency", "owner_id", "expected_close")


def _write_deals(
    s: Session,
    batch: list[tuple[int, Any]],
    columns: list[str],
    mapping: Mapping,
    update_existing: bool,
    result: ImportResult,
    errors: _ErrorSink,
    path: Any,
    *,
    dry: bool = False,
) -> None:
    """Check one batch of deals and (unless ``dry``) write the good ones with their history."""
    rows = s.__dict__.get("_import_deals")
    if rows is None:
        rows = s.__dict__["_import_deals"] = _DealRows(s, columns, mapping)
    result.read += len(batch)
    good = _convert_all(rows.convert, batch, errors, result)
    if good:
        good = _resolve_clients(s, good, errors, result, rows._column)
    if not good:
        return
    # -- deduplicate: within the batch (by external id, else by the natural key) ...
    by_ext: dict[str, int] = {}
    by_key: dict[tuple[Any, ...], int] = {}
    unique: list[_Deal] = []
    for deal in good:
        if deal.title is None:
            deal.title = deal.client_name[:300]
        key = (deal.client_id, deal.flow.name, deal.title, deal.opened_at)
        ext = deal.external_id
        earlier = by_ext.get(ext) if ext else by_key.get(key)
        if earlier is not None:
            _reject(errors, result, deal, f"duplicate of line {earlier} in this file")
            continue
        if ext:
            by_ext[ext] = deal.line
        by_key.setdefault(key, deal.line)
        unique.append(deal)
    # ... and against what is stored
    stored = _existing_deals(s, unique)
    guard = rows.guard
    views = guard.access.views("deal", [m["id"] for m in stored if m is not None])
    histories = _stored_histories(
        s, [m["id"] for d, m in zip(unique, stored, strict=True) if m and "history" in d.given]
    )
    inserts: list[_Deal] = []
    updates: list[dict[str, Any]] = []
    for deal, match in zip(unique, stored, strict=True):
        if match is None:
            if deal.history is None:
                reason = f"opened_at: {_NO_DATE} for a new deal"
                _reject(errors, result, deal, reason, rows._column("opened_at"))
                continue
            refused = guard.create(
                {
                    "client_id": deal.client_id,
                    "pipeline": deal.flow.name,
                    "stage": deal.history[-1][0] if deal.history else None,
                    "status": deal.status,
                    "title": deal.title,
                    "amount": deal.amount,
                    "currency": deal.currency,
                    "owner_id": deal.owner_id,
                }
            )
            if refused is not None:
                _reject(errors, result, deal, refused)
                continue
            inserts.append(deal)
            continue
        hidden = guard.change(views.get(match["id"]), {})
        if hidden is not None:  # reveal nothing of a deal the user may not read
            _reject(errors, result, deal, hidden)
            continue
        fixed = []
        if match["client_id"] != deal.client_id:
            fixed.append("client")
        if "pipeline" in deal.given and match["pipeline"] != deal.flow.name:
            fixed.append("pipeline")
        if "opened_at" in deal.given and match["opened_at"] != deal.opened_at:
            fixed.append("opened_at")
        if "history" in deal.given and (
            histories.get(match["id"]) != deal.history or match["lost_reason"] != deal.lost_reason
        ):
            fixed.append("stage history")
        if fixed:
            _reject(
                errors,
                result,
                deal,
                f"deal #{match['id']} {match['title']!r} already exists and differs in "
                f"{', '.join(fixed)}; an import does not rewrite a stored deal's client, "
                "pipeline or stage history",
            )
            continue
        values = {
            "title": deal.title,
            "amount": deal.amount,
            "currency": deal.currency,
            "owner_id": deal.owner_id,
            "expected_close": deal.expected_close,
        }
        present = {"owner_id" if k == "owner" else k for k in deal.given}
        changed = {k: values[k] for k in _DEAL_MUTABLE if k in present and values[k] != match[k]}
        if deal.external_id and not match["external_id"]:
            changed["external_id"] = deal.external_id
        refused = guard.change(views.get(match["id"]), changed) if update_existing else None
        if refused is not None:
            _reject(errors, result, deal, refused)
        elif not changed:
            result.unchanged += 1
        elif update_existing:
            updates.append({"id": match["id"], **changed})
        else:
            label = ", ".join("owner" if k == "owner_id" else k for k in sorted(changed))
            _reject(
                errors,
                result,
                deal,
                f"deal #{match['id']} {match['title']!r} already exists and differs in {label}; "
                "use --update-existing to merge",
            )
    if dry:
        return
    _store_deals(s, rows, inserts, updates, path)
    result.inserted += len(inserts)
    result.updated += len(updates)


def _existing_deals(s: Session, deals: list[_Deal]) -> list[dict[str, Any] | None]:
    """The stored deal each row is (or None): by external id, else by the natural key.

    One query by external id; one more, for the rows it did not place, by
    client and opening time (a deal stored without an external id is the
    same deal as a row whose external id is new, when their keys agree).
    """
    if not deals:
        return []
    t = s.table("deals")
    cols = [
        t.c.id,
        t.c.external_id,
        t.c.client_id,
        t.c.pipeline,
        t.c.title,
        t.c.opened_at,
        t.c.lost_reason,
        *[t.c[c] for c in _DEAL_MUTABLE if c != "title"],
    ]
    matches: list[dict[str, Any] | None] = [None] * len(deals)
    exts = [d.external_id for d in deals if d.external_id]
    if exts:
        found = {
            r.external_id: _money(dict(r._mapping))
            for r in s.connection.execute(select(*cols).where(_in(s, t.c.external_id, exts)))
        }
        if found:
            for i, deal in enumerate(deals):
                if deal.external_id:
                    matches[i] = found.get(deal.external_id)
    todo = [i for i, m in enumerate(matches) if m is None and deals[i].opened_at is not None]
    if todo:
        clients = sorted({deals[i].client_id for i in todo})
        low, high = _time_range(s, "deals", "opened_at", [deals[i].opened_at for i in todo])
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        query = select(*cols).where(_in(s, t.c.client_id, clients, "clients", Integer), low, high)
        if all(deals[i].external_id for i in todo):
            # a row with a new external id can only be a deal stored without one
            query = query.where(t.c.external_id.is_(None))
        for r in s.connection.execute(query.order_by(t.c.id)):
            key = (r.client_id, r.pipeline, r.title, r.opened_at)
            by_key.setdefault(key, []).append(_money(dict(r._mapping)))
        for i in todo:
            deal = deals[i]
            candidates = by_key.get((deal.client_id, deal.flow.name, deal.title, deal.opened_at))
            for candidate in candidates or ():
                # a row with an external id is another deal than one stored with another
                if not deal.external_id or not candidate["external_id"]:
                    matches[i] = candidate
                    break
    return matches


def _money(row: dict[str, Any]) -> dict[str, Any]:
    row["amount"] = dec.Decimal(str(row["amount"])).quantize(_CENT)
    return row


def _stored_histories(s: Session, deal_ids: list[int]) -> dict[int, list[tuple[str, dt.datetime]]]:
    """The stored stage history of these deals: ``{id: [(stage, entered at), ...]}``."""
    if not deal_ids:
        return {}
    t = s.table("stage_changes")
    found: dict[int, list[tuple[str, dt.datetime]]] = {}
    query = (
        select(t.c.entity_id, t.c.to_stage, t.c.at)
        .where(t.c.entity == "deal", _in(s, t.c.entity_id, deal_ids, "deals", Integer))
        .order_by(t.c.entity_id, t.c.at, t.c.id)
    )
    for deal_id, stage, at in s.connection.execute(query):
        found.setdefault(deal_id, []).append((stage, at))
    return found


def _store_deals(
    s: Session,
    rows: _DealRows,
    inserts: list[_Deal],
    updates: list[dict[str, Any]],
    path: Any,
) -> None:
    """Insert the new deals and their stage changes (two executemany), apply the merges."""
    inserted_ids: list[int] = []
    if inserts:
        inserted_ids = reserve_ids(s, "deals", len(inserts))
        bind_time, bind_amount, bind_date = rows.bind_time, rows.bind_amount, rows.bind_date
        bound = rows.bound_times  # time -> what the driver takes: the dates of a file repeat
        if len(bound) > 50_000:
            bound.clear()
        known = bound.get
        user_id = s.user.id
        deals: list[tuple[Any, ...]] = []
        changes: list[tuple[Any, ...]] = []
        append_change = changes.append
        for deal_id, deal in zip(inserted_ids, inserts, strict=True):
            history = deal.history
            assert history is not None  # a row without a history only updates
            pipeline = deal.flow.name
            lost_reason = deal.lost_reason
            before = None
            at_bound = None
            last = len(history) - 1
            amount = bind_amount(deal.amount)
            opened = known(deal.opened_at)
            if opened is None:
                opened = bound[deal.opened_at] = bind_time(deal.opened_at)
            for i, (name, at) in enumerate(history):
                at_bound = known(at)
                if at_bound is None:
                    at_bound = bound[at] = bind_time(at)
                if i < last:  # the stay ends at the next change (see close_stays)
                    next_stage, left_at = history[i + 1]
                    left_bound = known(left_at)
                    if left_bound is None:
                        left_bound = bound[left_at] = bind_time(left_at)
                    stay = whole_seconds(at, left_at)
                else:
                    next_stage = left_bound = stay = None
                append_change(
                    (
                        "deal",
                        deal_id,
                        pipeline,
                        before,
                        name,
                        at_bound,
                        user_id,
                        "import",
                        lost_reason if name == LOST else None,
                        left_bound,
                        next_stage,
                        stay,
                        lost_reason if next_stage == LOST else None,
                        amount,
                        opened,
                    )
                )
                before = name
            deals.append(
                (
                    deal_id,
                    deal.client_id,
                    pipeline,
                    before,  # the last stage entered: won or lost when closed
                    deal.status,
                    deal.title,
                    amount,
                    deal.currency,
                    deal.owner_id,
                    None if deal.expected_close is None else bind_date(deal.expected_close),
                    lost_reason,
                    opened,
                    at_bound,  # when it entered that stage
                    None if deal.closed_at is None else at_bound,  # closing is the last entry
                    user_id,
                    deal.external_id,
                )
            )
        BulkInsert(s, "deals", _DEAL_COLUMNS, prebound=True)(deals)
        BulkInsert(s, "stage_changes", _CHANGE_COLUMNS, prebound=True)(changes)
    if updates:
        t = s.table("deals")
        for change in updates:  # merges are few; each keeps its own statement
            s.connection.execute(
                t.update()
                .where(t.c.id == change["id"])
                .values({k: v for k, v in change.items() if k != "id"})
            )
            if "amount" in change:
                carry_amount(s, change["id"], change["amount"])
    _finish_batch(s, "deals", inserted_ids, [u["id"] for u in updates], path)


# -- interactions ----------------------------------------------------------------------
class _Interaction:
    """One converted interaction row."""

    __slots__ = (
        "client_id",
        "client_name",
        "deal",
        "deal_id",
        "direction",
        "duration_min",
        "external_id",
        "given",
        "kind",
        "line",
        "note",
        "occurred_at",
        "outcome",
        "raw",
        "refs",
        "topic",
        "user_id",
    )

    line: int
    raw: Any
    refs: list[tuple[str, Any]]
    client_id: int
    client_name: str
    deal: list[tuple[str, Any]]  #: the deal references: [("deal_id", 5), ...]
    deal_id: int | None
    kind: str
    topic: str
    outcome: str
    direction: str | None
    occurred_at: dt.datetime
    duration_min: int | None
    user_id: int
    note: str | None
    external_id: str | None
    given: set[str]


class _InteractionRows(_Rows):
    """Turns raw rows into interactions, with everything looked up once per import.

    Fields: the client (``client_id`` / ``client_external_id`` /
    ``client_email``), the deal (``deal_id`` or ``deal_external_id``; it must
    be the client's), ``kind``, ``topic`` and ``outcome`` (from the kind's
    formal lists; ``[values.*]`` in the mapping translates the file's words),
    ``direction`` (inbound or outbound: required where the kind says so),
    ``occurred_at`` (or ``at``), ``duration`` (minutes, or ``duration_min``),
    ``user`` (a login, of a former employee too; default: the acting user),
    ``note``, ``external_id``.

    Imported interactions are history: the outcome rules and the plugins'
    ``crmkit_interaction_logged`` effects (stage moves, tasks) are not applied.
    """

    kind = "interactions"

    def __init__(self, session: Session, columns: list[str], mapping: Mapping) -> None:
        super().__init__(session, columns, mapping)
        self.kinds = session.crm.interaction_kinds
        self.bind_time = _cached_binder(session, "interactions", "occurred_at")
        self.guard = _Guard(session, "interaction")

    def convert(self, raw: Any) -> _Interaction:
        """The row as an :class:`_Interaction`; raises ``_Bad`` naming the column and reason."""
        values, _ = self.values(raw)
        if self.defaults:
            for key, default in self.defaults.items():
                values.setdefault(key, default)
        bad = self._bad
        item = _Interaction()
        item.refs = self._refs(values)
        kind = values.get("kind")
        if kind is None:
            raise bad("kind", "is required")
        spec = self.kinds.get(str(kind))
        if spec is None:
            allowed = ", ".join(sorted(self.kinds)) or "none"
            raise bad("kind", f"unknown interaction kind {kind!r} (allowed: {allowed})")
        item.kind = spec.name
        for target, allowed_values in (("topic", spec.topics), ("outcome", spec.outcomes)):
            value = values.get(target)
            if value is None:
                raise bad(target, "is required")
            if value.__class__ is not str or value not in allowed_values:
                listed = ", ".join(allowed_values) or "none"
                raise bad(
                    target,
                    f"{value!r} is not a known {spec.name} {target} (allowed: {listed})",
                )
        item.topic, item.outcome = str(values["topic"]), str(values["outcome"])
        direction = values.get("direction")
        if direction is None:
            if spec.direction_required:
                raise bad("direction", f"is required for a {spec.name} (inbound or outbound)")
        else:
            direction = str(direction).lower()
            if direction not in ("inbound", "outbound"):
                raise bad("direction", f"{values['direction']!r} is not inbound or outbound")
        item.direction = direction
        target = "occurred_at" if "occurred_at" in values else "at"
        when = values.get(target)
        if when is None:
            raise bad("occurred_at", "is required")
        item.occurred_at = self._date(target, when)
        target = "duration" if "duration" in values else "duration_min"
        duration = values.get(target)
        if duration is None:
            item.duration_min = None
        else:
            minutes = _whole(duration, bad, target)
            if not 0 <= minutes <= 24 * 60:
                raise bad(target, "must be between 0 and 1440 minutes")
            item.duration_min = minutes
        item.user_id = self._login(values, "user", active=False)
        note = values.get("note")
        item.note = None if note is None else str(note)
        item.external_id = self._text(values, "external_id", 200)
        deal: list[tuple[str, Any]] = []
        if "deal_id" in values:
            deal.append(("deal_id", _whole(values["deal_id"], bad, "deal_id")))
        if "deal_external_id" in values:
            deal.append(("deal_external_id", str(values["deal_external_id"])))
        item.deal = deal
        item.deal_id = None
        given = set(values)
        if "at" in given:
            given.add("occurred_at")
        if "duration" in given:
            given.add("duration_min")
        item.given = given
        return item


_INTERACTION_COLUMNS = (
    "id",
    "client_id",
    "deal_id",
    "user_id",
    "kind",
    "direction",
    "occurred_at",
    "duration_min",
    "topic",
    "outcome",
    "note",
    "created_at",
    "external_id",
)
#: what an import may change in a stored interaction (with update_existing)
_INTERACTION_MUTABLE = (
    "deal_id",
    "user_id",
    "kind",
    "direction",
    "occurred_at",
    "duration_min",
    "topic",
    "outcome",
    "note",
)
_GIVEN_AS = {"deal_id": ("deal_id", "deal_external_id"), "user_id": ("user",)}


def _write_interactions(
    s: Session,
    batch: list[tuple[int, Any]],
    columns: list[str],
    mapping: Mapping,
    update_existing: bool,
    result: ImportResult,
    errors: _ErrorSink,
    path: Any,
    *,
    dry: bool = False,
) -> None:
    """Check one batch of interactions and (unless ``dry``) write the good ones."""
    rows = s.__dict__.get("_import_interactions")
    if rows is None:
        rows = s.__dict__["_import_interactions"] = _InteractionRows(s, columns, mapping)
    result.read += len(batch)
    good = _convert_all(rows.convert, batch, errors, result)
    if good:
        good = _resolve_clients(s, good, errors, result, rows._column)
    if good:
        good = _resolve_deals(s, good, errors, result, rows._column)
    if not good:
        return
    by_ext: dict[str, int] = {}
    by_key: dict[tuple[Any, ...], int] = {}
    unique: list[_Interaction] = []
    for item in good:
        key = _interaction_key(item)
        ext = item.external_id
        earlier = by_ext.get(ext) if ext else by_key.get(key)
        if earlier is not None:
            _reject(errors, result, item, f"duplicate of line {earlier} in this file")
            continue
        if ext:
            by_ext[ext] = item.line
        by_key.setdefault(key, item.line)
        unique.append(item)
    stored = _existing_interactions(s, unique)
    guard = rows.guard
    views = guard.access.views("interaction", [m["id"] for m in stored if m is not None])
    inserts: list[_Interaction] = []
    updates: list[dict[str, Any]] = []
    for item, match in zip(unique, stored, strict=True):
        if match is None:
            refused = guard.create(
                {
                    "client_id": item.client_id,
                    "deal_id": item.deal_id,
                    "user_id": item.user_id,
                    "kind": item.kind,
                    "direction": item.direction,
                    "topic": item.topic,
                    "outcome": item.outcome,
                }
            )
            if refused is not None:
                _reject(errors, result, item, refused)
                continue
            inserts.append(item)
            continue
        hidden = guard.change(views.get(match["id"]), {})
        if hidden is not None:  # reveal nothing of an interaction the user may not read
            _reject(errors, result, item, hidden)
            continue
        if match["client_id"] != item.client_id:
            _reject(
                errors,
                result,
                item,
                f"interaction #{match['id']} with external id {item.external_id!r} belongs to "
                f"client #{match['client_id']}; an import does not move it to another client",
            )
            continue
        changed = {}
        for key in _INTERACTION_MUTABLE:
            if not item.given.intersection(_GIVEN_AS.get(key, (key,))):
                continue  # what the file does not give is kept
            value = getattr(item, key)
            if value != match[key]:
                changed[key] = value
        if item.external_id and not match["external_id"]:
            changed["external_id"] = item.external_id
        refused = guard.change(views.get(match["id"]), changed) if update_existing else None
        if refused is not None:
            _reject(errors, result, item, refused)
        elif not changed:
            result.unchanged += 1
        elif update_existing:
            updates.append({"id": match["id"], **changed})
        else:
            label = ", ".join(
                {"deal_id": "deal", "user_id": "user", "duration_min": "duration"}.get(k, k)
                for k in sorted(changed)
            )
            _reject(
                errors,
                result,
                item,
                f"interaction #{match['id']} already exists and differs in {label}; "
                "use --update-existing to merge",
            )
    if dry:
        return
    _store_interactions(s, rows, inserts, updates, path)
    result.inserted += len(inserts)
    result.updated += len(updates)


def _interaction_key(item: _Interaction) -> tuple[Any, ...]:
    return (item.client_id, item.kind, item.occurred_at, item.user_id, item.topic, item.outcome)


def _resolve_deals(
    s: Session,
    items: list[_Interaction],
    errors: _ErrorSink,
    result: ImportResult,
    column_of: Callable[[str], str],
) -> list[_Interaction]:
    """Give each row its ``deal_id``: the deal must exist and be the client's (one query)."""
    ids = {v for item in items for k, v in item.deal if k == "deal_id"}
    exts = {v for item in items for k, v in item.deal if k == "deal_external_id"}
    if not ids and not exts:
        return items
    t = s.table("deals")
    found: dict[tuple[str, Any], tuple[int, int]] = {}
    for target, column, values, type_ in (
        ("deal_id", t.c.id, ids, Integer),
        ("deal_external_id", t.c.external_id, exts, String),
    ):
        if values:
            query = select(t.c.id, t.c.client_id, column.label("ref")).where(
                _in(s, column, sorted(values), target, type_)
            )
            for deal_id, client_id, ref in s.connection.execute(query):
                found[(target, ref)] = (deal_id, client_id)
    kept = []
    for item in items:
        try:
            for target, value in item.deal:
                match = found.get((target, value))
                if match is None:
                    what = f"id {value}" if target == "deal_id" else f"external id {value!r}"
                    raise _Bad(column_of(target), f"{target}: no deal with {what}")
                if match[1] != item.client_id:
                    raise _Bad(
                        column_of(target),
                        f"{target}: deal #{match[0]} belongs to client #{match[1]}, "
                        f"not to client #{item.client_id}",
                    )
                if item.deal_id is not None and item.deal_id != match[0]:
                    raise _Bad(
                        column_of(target),
                        f"{target}: {value!r} is deal #{match[0]}, but deal_id is {item.deal_id}",
                    )
                item.deal_id = match[0]
        except _Bad as bad:
            errors.add(RowError(item.line, bad.column, bad.reason), item.raw)
            result.rejected += 1
            continue
        kept.append(item)
    return kept


def _existing_interactions(s: Session, items: list[_Interaction]) -> list[dict[str, Any] | None]:
    """The stored interaction each row is (or None): by external id, else by the natural key."""
    if not items:
        return []
    t = s.table("interactions")
    cols = [t.c.id, t.c.external_id, t.c.client_id, *[t.c[c] for c in _INTERACTION_MUTABLE]]
    matches: list[dict[str, Any] | None] = [None] * len(items)
    exts = [i.external_id for i in items if i.external_id]
    if exts:
        found = {
            r.external_id: dict(r._mapping)
            for r in s.connection.execute(select(*cols).where(_in(s, t.c.external_id, exts)))
        }
        if found:
            for n, item in enumerate(items):
                if item.external_id:
                    matches[n] = found.get(item.external_id)
    todo = [n for n, m in enumerate(matches) if m is None]
    if todo:
        clients = sorted({items[n].client_id for n in todo})
        low, high = _time_range(
            s, "interactions", "occurred_at", [items[n].occurred_at for n in todo]
        )
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        query = select(*cols).where(_in(s, t.c.client_id, clients, "clients", Integer), low, high)
        if all(items[n].external_id for n in todo):
            query = query.where(t.c.external_id.is_(None))
        for r in s.connection.execute(query.order_by(t.c.id)):
            key = (r.client_id, r.kind, r.occurred_at, r.user_id, r.topic, r.outcome)
            by_key.setdefault(key, []).append(dict(r._mapping))
        for n in todo:
            item = items[n]
            for candidate in by_key.get(_interaction_key(item)) or ():
                if not item.external_id or not candidate["external_id"]:
                    matches[n] = candidate
                    break
    return matches


def _store_interactions(
    s: Session,
    rows: _InteractionRows,
    inserts: list[_Interaction],
    updates: list[dict[str, Any]],
    path: Any,
) -> None:
    inserted_ids: list[int] = []
    if inserts:
        inserted_ids = reserve_ids(s, "interactions", len(inserts))
        bind_time = rows.bind_time
        now = bind_time(dt.datetime.now(dt.UTC))
        BulkInsert(s, "interactions", _INTERACTION_COLUMNS, prebound=True)(
            [
                (
                    new_id,
                    i.client_id,
                    i.deal_id,
                    i.user_id,
                    i.kind,
                    i.direction,
                    bind_time(i.occurred_at),
                    i.duration_min,
                    i.topic,
                    i.outcome,
                    i.note,
                    now,
                    i.external_id,
                )
                for new_id, i in zip(inserted_ids, inserts, strict=True)
            ]
        )
    if updates:
        t = s.table("interactions")
        for change in updates:
            s.connection.execute(
                t.update()
                .where(t.c.id == change["id"])
                .values({k: v for k, v in change.items() if k != "id"})
            )
    _finish_batch(s, "interactions", inserted_ids, [u["id"] for u in updates], path)


class _ErrorSink:
    """Rejected rows: the first hundred kept for the summary, all written to ``errors_to``.

    A batch's errors are put in line order (:meth:`flush`) before they are kept.
    """

    KEEP = 100

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.first: list[RowError] = []
        self.pending: list[tuple[RowError, Any]] = []
        self.handle: IO[str] | None = None
        self.writer: Any = None
        if path is not None:
            self.handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self.writer = csv.writer(self.handle)
            self.writer.writerow(["line", "column", "reason", "row"])

    header: list[str] = []  #: the CSV header, to name the values of list rows

    def add(self, error: RowError, raw: Any) -> None:
        self.pending.append((error, raw))

    def flush(self) -> None:
        """Keep and write the errors added since the last flush, by line."""
        self.pending.sort(key=lambda item: item[0].line)
        for error, raw in self.pending:
            if len(self.first) < self.KEEP:
                self.first.append(error)
            if self.writer is not None:
                if raw.__class__ is list:
                    raw = dict(zip(self.header, raw, strict=False))
                row = "" if raw is None else json.dumps(raw, ensure_ascii=False, default=str)
                self.writer.writerow([error.line, error.column or "", error.reason, row])
        self.pending = []

    def close(self) -> None:
        self.flush()
        if self.handle is not None:
            self.handle.close()


_WRITERS: dict[str, Callable[..., None]] = {
    "clients": _write_batch,
    "deals": _write_deals,
    "interactions": _write_interactions,
}

__all__ = [
    "BulkInsert",
    "ImportResult",
    "Mapping",
    "RowError",
    "import_file",
    "parse_amount",
    "parse_datetime",
    "parse_number",
    "read_rows",
    "reserve_ids",
]
