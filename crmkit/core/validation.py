"""Validation helpers shared by the core and plugins.

JSON Schema checks use the ``jsonschema`` library (draft 2020-12, with format
checking), and every failure is turned into a :class:`Problem` whose field is
the dotted path of the value at fault (``params.turnover``).
"""

from __future__ import annotations

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
_PHONE = re.compile(r"^\+?[0-9 ()./-]{5,32}$")


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
    if not _PHONE.match(value) or sum(c.isdigit() for c in value) < 5:
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


def schema_problems(schema: dict[str, Any], instance: Any, *, prefix: str = "") -> list[Problem]:
    """Every way ``instance`` breaks ``schema``, as problems with dotted field paths."""
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
        problems.append(Problem(".".join(parts) or None, error.message))
    return problems


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
