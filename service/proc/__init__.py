"""Processes and their wiring: the entry point, the single-process app, the engine process, the
supervisor of ``--fronts N``, config, logs, metrics, the port claim, grpc's log relay, certs and
the healthcheck. The only room that may import every other.
"""
