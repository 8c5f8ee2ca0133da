"""Tests of the inference core, training and the plugin machinery (core/); shared fixtures in tests/conftest.py, helpers in tests/helpers.py."""
