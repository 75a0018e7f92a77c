"""Alembic revisions of the crmkit-vip plugin (its branch: ``vip``)."""
