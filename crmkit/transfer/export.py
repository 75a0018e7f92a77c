"""Export clients, deals and interactions to CSV or JSON Lines, streaming.

Everything is read through the acting user's :class:`~crmkit.core.store.Session`
and its repositories (never around them), so that what a user may see is what
they may export once access policies filter the repositories' queries. Rows are
fetched in batches by keyset pagination on ``id`` (``WHERE id > last ORDER BY id
LIMIT n``): memory stays bounded whatever the table size, and each batch is one
indexed range scan.

The columns are the domain objects' fields (:func:`crmkit.core.model.to_json`):

* JSON Lines: one ``to_json`` object per line, nested values kept nested.
* CSV: one column per field; nested values (a client's ``params`` and
  ``requisites``, an interaction's ``respondents``) as JSON text in their
  column; with ``flatten_params`` each client parameter also gets a
  ``param.NAME`` column (the shape ``crmkit import`` reads), its value as
  text (strings as they are, numbers and booleans in JSON notation, lists and
  objects as JSON text).

Example::

    with crm.session(as_user="anna", readonly=True) as s:
        rows = export(s, "clients", "clients.csv", flatten_params=True)
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs

from crmkit.core.errors import ValidationError
from crmkit.core.model import Client, Deal, Interaction, to_json

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.store import Session

#: What can be exported, and the domain class of each kind's rows.
KINDS: dict[str, type[Any]] = {"clients": Client, "deals": Deal, "interactions": Interaction}
#: File formats, and the file suffixes that select them.
FORMATS = ("csv", "jsonl")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DEFAULT_BATCH_SIZE = 1000
#: The prefix of flattened client parameter columns in CSV.
PARAM_PREFIX = "param."

Target = str | os.PathLike[str] | IO[str]


# -- reading, through the session's repositories ----------------------------------------
def iter_clients(
    session: Session, batch_size: int = DEFAULT_BATCH_SIZE, *, action: str = "export"
) -> Iterator[Client]:
    """Every client the session may export, in id order, ``batch_size`` rows per query."""
    return session.clients.iter(batch_size, action=action)


def iter_deals(
    session: Session, batch_size: int = DEFAULT_BATCH_SIZE, *, action: str = "export"
) -> Iterator[Deal]:
    """Every deal the session may export, in id order, ``batch_size`` rows per query."""
    return session.deals.iter(batch_size, action=action)


def iter_interactions(
    session: Session, batch_size: int = DEFAULT_BATCH_SIZE, *, action: str = "export"
) -> Iterator[Interaction]:
    """Every interaction the session may export, in id order, with its respondents.

    The respondents of a batch are read in one more query, never one per row.
    """
    return session.interactions.iter(batch_size, action=action)


_READERS = {"clients": iter_clients, "deals": iter_deals, "interactions": iter_interactions}
#: the access policies' resource of each kind of export
RESOURCES = {"clients": "client", "deals": "deal", "interactions": "interaction"}


def records(session: Session, kind: str, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Any]:
    """The domain objects of ``kind`` (``clients``, ``deals``, ``interactions``), streaming.

    Export is its own action in the access policies (by default only heads,
    for their teams, and admins have it): only what the session may export
    is read, filtered by the database.
    """
    check_kind(kind)
    if batch_size < 1:
        raise ValidationError("must be at least 1", field="batch_size")
    session.access.require_any("export", RESOURCES[kind])
    return _READERS[kind](session, batch_size)


# -- choosing ---------------------------------------------------------------------------
def check_kind(kind: str) -> str:
    """``kind`` if it can be exported; a :class:`ValidationError` naming the allowed ones."""
    if kind not in KINDS:
        raise ValidationError(f"cannot export {kind!r} (allowed: {', '.join(KINDS)})", field="kind")
    return kind


def columns(kind: str) -> list[str]:
    """The columns of an export of ``kind``: its domain class's fields, in order.

    ``hidden`` (the fields an access policy hides from the exporter) is not a
    column: a hidden field is exported empty, and JSON Lines rows then name
    the hidden fields under ``"hidden"``.
    """
    return [f.name for f in attrs.fields(KINDS[check_kind(kind)]) if f.name != "hidden"]


def file_format(target: Target, format: str | None = None) -> str:
    """The format to write: ``format`` if given, else the one the file's suffix names.

    ``.csv`` is CSV, ``.jsonl``/``.ndjson`` JSON Lines, each optionally
    followed by ``.gz``; stdout (``-``) and open files default to CSV.
    """
    if format is not None:
        if format not in FORMATS:
            raise ValidationError(
                f"unknown file format {format!r} (allowed: {', '.join(FORMATS)})",
                field="file_format",
            )
        return format
    if not isinstance(target, str | os.PathLike) or str(target) == "-":
        return "csv"
    path = check_target(target)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    found = SUFFIXES.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise ValidationError(
            f"cannot tell the format of {path.name!r} from its suffix "
            f"(use .csv or .jsonl, or give the file format: {' or '.join(FORMATS)})",
            field="file_format",
        )
    return found


def check_target(target: str | os.PathLike[str]) -> Path:
    """The file to write, if it can be written: not a folder, in a folder that exists."""
    path = Path(target)
    if path.is_dir():
        raise ValidationError(f"{path} is a folder", field="file")
    if not path.parent.is_dir():
        raise ValidationError(f"the folder {path.parent} does not exist", field="file")
    return path


# -- writing ----------------------------------------------------------------------------
def export(
    session: Session,
    kind: str,
    target: Target,
    *,
    format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    flatten_params: bool = False,
    encoding: str = "utf-8",
) -> int:
    """Write every ``kind`` row the session may read to ``target``; return the row count.

    ``target`` is a path (``-`` is stdout; a ``.gz`` suffix compresses) or an
    open text file. ``format`` is ``csv`` or ``jsonl`` (default: from the
    suffix). A path is written to a temporary file next to it and renamed at
    the end, so a failed export never leaves a half-written file behind.
    ``flatten_params`` (CSV, clients) adds a ``param.NAME`` column per
    client parameter; finding the names takes one more streaming pass.
    """
    check_kind(kind)
    fmt = file_format(target, format)
    if batch_size < 1:
        raise ValidationError("must be at least 1", field="batch_size")
    if flatten_params and (kind != "clients" or fmt != "csv"):
        raise ValidationError("applies only to a CSV export of clients", field="flatten_params")
    try:
        "".encode(encoding)
    except LookupError:
        raise ValidationError(f"unknown encoding {encoding!r}", field="encoding") from None
    resource = RESOURCES[kind]
    session.access.require_any("export", resource)
    params = param_names(session, batch_size=batch_size) if flatten_params else []
    try:
        with _opened(target, encoding) as out:
            rows = records(session, kind, batch_size=batch_size)
            if fmt == "jsonl":
                count = _write_jsonl(out, rows)
            else:
                count = _write_csv(out, kind, rows, params)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise ValidationError(
            f"{bad!r} cannot be written in {encoding!r} (use utf-8)", field="encoding"
        ) from None
    # every export is recorded: which records (the policy's condition), how many, where to
    condition = session.access.where("export", resource)
    session.audit(
        "export",
        resource,
        detail={
            "kind": kind,
            "rows": count,
            "format": fmt,
            "target": _describe(target),
            "condition": str(
                condition.compile(
                    dialect=session.connection.dialect, compile_kwargs={"literal_binds": True}
                )
            ),
        },
    )
    return count


def _describe(target: Target) -> str:
    if isinstance(target, str | os.PathLike):
        return str(target)
    return str(getattr(target, "name", "a stream"))


def param_names(session: Session, *, batch_size: int = DEFAULT_BATCH_SIZE) -> list[str]:
    """The client parameters in use: each segment's declared ones first, in schema order.

    Names found in the data but declared by no segment follow, sorted.
    """
    seen: set[str] = set()
    for client in iter_clients(session, batch_size):  # what the export will write
        seen.update(client.params)
    declared: list[str] = []
    for name in sorted(session.crm.segments):
        props = session.crm.segments[name].schema.get("properties") or {}
        declared += [p for p in props if p in seen and p not in declared]
    return declared + sorted(seen - set(declared))


def _write_jsonl(out: IO[str], rows: Iterator[Any]) -> int:
    count = 0
    for obj in rows:
        out.write(json.dumps(to_json(obj), ensure_ascii=False, default=str))
        out.write("\n")
        count += 1
    return count


def _write_csv(out: IO[str], kind: str, rows: Iterator[Any], params: list[str]) -> int:
    cols = columns(kind)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols + [PARAM_PREFIX + p for p in params])
    count = 0
    for obj in rows:
        data = to_json(obj)
        row = [cell(data.get(c)) for c in cols]
        if params:
            values = data.get("params") or {}
            row += [cell(values.get(p)) for p in params]
        writer.writerow(row)
        count += 1
    return count


def cell(value: Any) -> str:
    """A CSV cell: text as it is, None empty, anything else in JSON notation."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if kind is int:  # the common cases first: ids (bool is not int here)
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, str):  # a StrEnum member (kind, status, direction): its value
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


@contextlib.contextmanager
def _opened(target: Target, encoding: str) -> Iterator[IO[str]]:
    """A text stream to write to: stdout, the caller's file, or a temporary file renamed."""
    if not isinstance(target, str | os.PathLike):
        yield target
        return
    if str(target) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = check_target(target)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as raw:
            binary: Any = raw
            if path.suffix.lower() == ".gz":
                binary = gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0)
            with io.TextIOWrapper(binary, encoding=encoding, newline="") as text:
                yield text
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = [
    "FORMATS",
    "KINDS",
    "PARAM_PREFIX",
    "cell",
    "check_target",
    "columns",
    "export",
    "file_format",
    "iter_clients",
    "iter_deals",
    "iter_interactions",
    "param_names",
    "records",
]
