"""Session ids as the client makes them (the rules: lstm.proto, Session.id).

New sessions get 128 random bits made here, sent both in the request and in
the ``x-session-id`` header, so a session-affine proxy creates the session
on the replica that later calls with the same header reach. Forks are named
by the server (from the parent's routing key) unless the caller names them.
"""
from __future__ import annotations

import secrets


def new_session_id() -> str:
    """128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)
