"""Unit tests of service/core/ (no server), one file per module."""
