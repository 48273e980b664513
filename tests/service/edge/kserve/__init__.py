"""Unit tests of service/edge/kserve/ (no server), one file per module."""
