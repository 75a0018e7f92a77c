"""Revisions of the ``segment_b2b`` Alembic branch.

This file makes the folder a package, so that setuptools ships the revision
files with the distribution; Alembic does not read it.
"""
