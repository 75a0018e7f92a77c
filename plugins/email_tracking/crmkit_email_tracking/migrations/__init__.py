"""Alembic migrations of the email_tracking plugin (the ``versions`` folder)."""
