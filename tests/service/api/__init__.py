"""Unit tests of service/api/ (no server), one file per module."""
