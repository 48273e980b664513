"""Unit tests of service/edge/ (no server), one file per module."""
