"""Helpers shared by every test folder (importable as ``support``: the root
``tests/conftest.py`` puts ``tests/`` on the import path)."""
