"""Fuzzing the lstm.v1 service: hypothesis strategies over every request
message and over call sequences, run against a live server with a twin
session per fuzzed session (docs/fuzz.md)."""
