"""Alembic revisions of the ``segment_b2b`` branch."""
