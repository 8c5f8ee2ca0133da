"""Tests of the tools and benches (tools/); shared fixtures in tests/conftest.py, helpers in tests/helpers.py."""
