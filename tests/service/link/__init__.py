"""Unit tests of service/link/ (no server), one file per module."""
