"""Revisions of the ``email_tracking`` Alembic branch.

This file makes the folder a package, so that setuptools ships the revision
files with the distribution; Alembic does not read it.
"""
