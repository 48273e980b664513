"""Stateful gRPC serving of the exported recurrent language model (no torch here)."""
