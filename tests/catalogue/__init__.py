"""Tests of the catalogue (catalogue/): its rooms and its server; shared fixtures in tests/conftest.py, helpers in tests/helpers.py."""
