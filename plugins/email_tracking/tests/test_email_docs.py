"""The plugin's page (docs/email.rst) describes every setting, command and classification."""

from __future__ import annotations

from pathlib import Path

import click
from crmkit_email_tracking.cli import email_group
from crmkit_email_tracking.settings import SETTINGS_SCHEMA
from crmkit_email_tracking.tables import CLASSIFICATIONS

PAGE = Path(__file__).resolve().parents[3] / "docs" / "email.rst"


def test_every_setting_is_described() -> None:
    text = PAGE.read_text("utf-8")
    for key, schema in SETTINGS_SCHEMA["properties"].items():
        nested = schema.get("properties")
        if nested:
            assert f"``[plugin.email_tracking.{key}]``" in text, key
            for inner in nested:
                assert f"``{inner}``" in text, f"{key}.{inner}"
        else:
            assert f"``{key}``" in text, key


def test_every_command_is_described() -> None:
    text = " ".join(PAGE.read_text("utf-8").split())

    def names(group: click.Group, prefix: str) -> list[str]:
        found = []
        for name, command in group.commands.items():
            found.append(f"{prefix} {name}")
            if isinstance(command, click.Group):
                found += names(command, f"{prefix} {name}")
        return found

    for name in names(email_group, "crmkit email"):
        assert name in text, name


def test_every_classification_is_described() -> None:
    text = PAGE.read_text("utf-8")
    for name in CLASSIFICATIONS:
        assert f"   * - ``{name}``" in text, name
