"""Unit tests of service/proc/ (no server), one file per module."""
