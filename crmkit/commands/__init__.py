"""Command modules of the ``crmkit`` CLI that live outside ``crmkit/cli.py``.

Each module adds its commands to the root group when imported (at the end of
``crmkit.cli``); like every CLI module, it imports heavy libraries only inside
the command functions.
"""
