"""Validation helpers shared by the core and plugins.

JSON Schema checks use the ``jsonschema`` library (draft 2020-12, with format
checking), and every failure is turned into a :class:`Problem` whose field is
the dotted path of the value at fault (``params.turnover``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from functools import lru_cache
from typing import Any

from .errors import Problem, ValidationError

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
# digits, spaces and + ( ) . / -; at least five digits; at most 32 characters
_PHONE = re.compile(r"^(?=.{5,32}$)\+?[ ()./-]*(?:\d[ ()./-]*){5,}$")


def normalize_email(value: str | None, *, field: str = "email") -> str | None:
    """``value`` stripped, or None when blank; raises when it is not an email address."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > 254 or not _EMAIL.match(value) or ".." in value.split("@")[0]:
        raise ValidationError(f"{value!r} is not a valid email address", field=field)
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def normalize_phone(value: str | None, *, field: str = "phone") -> str | None:
    """``value`` stripped, or None when blank; raises unless it looks like a phone number."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _PHONE.match(value):
        raise ValidationError(
            f"{value!r} is not a phone number (digits, spaces, +, -, parentheses)", field=field
        )
    return value


def require_text(value: Any, *, field: str, max_length: int = 300) -> str:
    """A non-blank string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("must not be empty", field=field)
    text: str = value.strip()
    if len(text) > max_length:
        raise ValidationError(f"is longer than {max_length} characters", field=field)
    return text


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def check_schema(schema: dict[str, Any], *, field: str = "schema") -> None:
    """Raise :class:`ValidationError` unless ``schema`` is a valid JSON Schema."""
    from jsonschema.exceptions import SchemaError

    try:
        _validator(json.dumps(schema, sort_keys=True))
    except SchemaError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        raise ValidationError(
            f"is not a valid JSON Schema: {exc.message}", field=f"{field}.{path}" if path else field
        ) from None


def schema_problems(
    schema: dict[str, Any], instance: Any, *, prefix: str = "", explain: bool = False
) -> list[Problem]:
    """Every way ``instance`` breaks ``schema``, as problems with dotted field paths.

    With ``explain``, a broken value's reason ends with what its schema allows
    (``(allowed: a number >= 0, in RUB/year)``), from :func:`describe_schema`.
    """
    validator = _validator(json.dumps(schema, sort_keys=True))
    problems = [Problem(path, "must be a finite number") for path in _non_finite(instance, prefix)]
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        parts = [prefix] if prefix else []
        parts += [str(p) for p in error.absolute_path]
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - known):
                problems.append(Problem(".".join([*parts, extra]), "is not a known parameter"))
            continue
        if error.validator == "required":
            # jsonschema says "'x' is a required property": name x as the field.
            missing = error.message.split("'")[1] if "'" in error.message else None
            if missing:
                parts.append(missing)
            problems.append(Problem(".".join(parts) or None, "is required"))
            continue
        if error.validator == "type" and error.instance is None:
            problems.append(Problem(".".join(parts) or None, "is required (it is empty)"))
            continue
        reason = error.message
        if explain and error.absolute_path:
            allowed = describe_schema(error.schema)
            if allowed:
                reason = f"{reason} (allowed: {allowed})"
        problems.append(Problem(".".join(parts) or None, reason))
    return problems


_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "text",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def describe_schema(schema: Any) -> str:
    """What a property's schema allows, in words: ``a whole number >= 1, in m²``.

    Reads ``type``, ``enum``/``const``, the numeric bounds, string and list
    lengths, ``format`` and the ``x-unit`` (or ``unit``) annotation; an empty
    string when the schema says none of these.
    """
    if not isinstance(schema, dict):
        return ""
    words: list[str] = []
    if "const" in schema:
        words.append(f"exactly {json.dumps(schema['const'], ensure_ascii=False)}")
    elif "enum" in schema:
        words.append(
            "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
        )
    else:
        types = schema.get("type")
        names = [types] if isinstance(types, str) else list(types or [])
        if names:
            words.append(" or ".join(_TYPE_WORDS.get(n, n) for n in names))
    bounds = [
        f"{op} {schema[key]}"
        for key, op in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    if bounds:  # "a number >= 0 and <= 100", the bounds joined to the type
        range_text = " and ".join(bounds)
        if words:
            words[-1] += f" {range_text}"
        else:
            words.append(range_text)
    for key, what in (
        ("minLength", "at least {} character"),
        ("maxLength", "at most {} character"),
        ("minItems", "at least {} item"),
        ("maxItems", "at most {} item"),
    ):
        if key in schema:
            words.append(what.format(schema[key]) + ("" if schema[key] == 1 else "s"))
    if schema.get("uniqueItems"):
        words.append("each item once")
    if "format" in schema:
        words.append(f"format {schema['format']}")
    unit = schema.get("x-unit", schema.get("unit"))
    if unit:
        words.append(f"in {unit}")
    return ", ".join(words)


def _non_finite(value: Any, path: str) -> list[str]:
    """Paths of NaN and infinite numbers: JSON has no such values."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}.{i}")]
    return []


def parse_value(raw: str, prop_schema: dict[str, Any] | None = None) -> Any:
    """Turn a command-line ``key=value`` value into JSON data.

    JSON literals (numbers, ``true``, lists ...) are decoded, unless the
    property's schema says it is a string, in which case the text is kept as
    typed (so ``inn=0123`` stays ``"0123"``).
    """
    types = (prop_schema or {}).get("type")
    if types == "string" or (isinstance(types, list) and types == ["string"]):
        return raw
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: keep the text as typed


_RELATIVE = re.compile(r"^([+-])(\d+)([mhdw])$")


def parse_when(
    value: Any,
    tz: Any,
    *,
    field: str,
    now: dt.datetime | None = None,
    end_of_day: bool = False,
) -> dt.datetime:
    """A timezone-aware datetime from what a person or a file gives.

    Accepts aware or naive datetimes and dates (naive ones are in ``tz``),
    ISO 8601 text (``2026-11-22``, ``2026-11-22T15:30``, ``...+03:00``), and
    ``now``, ``today``, ``tomorrow``, ``+3d``, ``-2h``, ``+30m``, ``+1w``.
    A date alone means its start, or its end with ``end_of_day`` (deadlines).
    """
    now = now or dt.datetime.now(dt.UTC)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, dt.date):
        return _day(value, tz, end_of_day)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("must be a date or a date and time", field=field)
    text = value.strip().lower()
    if text == "now":
        return now
    if text in ("today", "tomorrow"):
        day = now.astimezone(tz).date() + dt.timedelta(days=1 if text == "tomorrow" else 0)
        return _day(day, tz, end_of_day)
    match = _RELATIVE.match(text)
    if match:
        sign, amount, unit = match.groups()
        delta = dt.timedelta(
            **{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: int(amount)}
        )
        return now + delta if sign == "+" else now - delta
    try:
        if len(text) == 10:
            return _day(dt.date.fromisoformat(text), tz, end_of_day)
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            f"{value!r} is not a date or time (use ISO 8601 such as 2026-11-22 or "
            "2026-11-22T15:30, or now, today, tomorrow, +3d, -2h)",
            field=field,
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def _day(day: dt.date, tz: Any, end_of_day: bool) -> dt.datetime:
    time = dt.time(23, 59, 59) if end_of_day else dt.time(0, 0)
    return dt.datetime.combine(day, time, tzinfo=tz)


def parse_date(value: Any, *, field: str) -> dt.date | None:
    """A date from a date, a datetime or ISO text (``2026-12-31``); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValidationError(f"{value!r} is not a date (use YYYY-MM-DD)", field=field) from None


def parse_money(value: Any, *, field: str = "amount") -> decimal.Decimal:
    """A non-negative amount with at most two decimals."""
    try:
        amount = decimal.Decimal(str(value).strip().replace(" ", "").replace(",", "."))
    except (decimal.InvalidOperation, ValueError):
        raise ValidationError(f"{value!r} is not an amount of money", field=field) from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError("must be a finite amount of zero or more", field=field)
    if amount != amount.quantize(decimal.Decimal("0.01")):
        raise ValidationError("has more than two decimals", field=field)
    if amount >= decimal.Decimal("1e14"):
        raise ValidationError("is too large", field=field)
    return amount.quantize(decimal.Decimal("0.01"))


def choose(value: Any, allowed: Any, *, field: str, what: str) -> str:
    """``value`` if it is one of ``allowed``; the error lists them."""
    if value in allowed:
        return str(value)
    listed = ", ".join(allowed) or "none"
    raise ValidationError(f"{value!r} is not a known {what} (allowed: {listed})", field=field)


@lru_cache(maxsize=256)
def _fast(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - jsonschema-rs is a dependency; keep a way out
        return _validator(schema_json).is_valid
    return jsonschema_rs.validator_for(schema, validate_formats=True).is_valid


def fast_check(schema: dict[str, Any]) -> Any:
    """A compiled ``is_valid(instance) -> bool`` for hot paths (bulk import).

    It uses ``jsonschema-rs`` and gives the same verdict as
    :func:`schema_problems`; when it says no, ask :func:`schema_problems`
    for the reasons.
    """
    return _fast(json.dumps(schema, sort_keys=True))
