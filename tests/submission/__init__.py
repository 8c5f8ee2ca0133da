"""Tests of the bundle and the 2022 runtime's twin (submission/); shared fixtures in tests/conftest.py, helpers in tests/helpers.py."""
