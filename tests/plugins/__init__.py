"""Tests of the built-in plugins (plugins/); shared fixtures in tests/conftest.py, helpers in tests/helpers.py."""
