"""Unit tests of service/persist/ (no server), one file per module."""
