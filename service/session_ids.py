"""Session ids, and the routing key a proxy hashes to find a session's replica.

An id is ``ROUTE`` or ``ROUTE.SUFFIX``: 16 to 128 characters from
[A-Za-z0-9_-] with at most one dot. A proxy in front of several replicas
hashes only ROUTE (deploy/nginx.conf.template), so a fork named
``<parent's ROUTE>.<random>`` lands on the replica that holds its parent's
state, which is where ForkSession made it.
"""
from __future__ import annotations

import re
import secrets
from typing import Callable

from .errors import InvalidArgument

ID_PATTERN = re.compile(r"(?=[A-Za-z0-9_.-]{16,128}\Z)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")
ID_RULE = "16 to 128 characters from [A-Za-z0-9_-], optionally ROUTE.SUFFIX with one dot"
MAX_ID = 128
MIN_SUFFIX = 6  # 36 random bits; a collision with a live id is checked and retried


def new_session_id() -> str:
    """128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def is_valid(session_id: str) -> bool:
    return ID_PATTERN.fullmatch(session_id) is not None


def route_key(session_id: str) -> str:
    """The part of the id a session-affine proxy hashes."""
    return session_id.split(".", 1)[0]


def fork_id(parent_id: str, taken: Callable[[str], bool] = lambda _: False) -> str:
    """A fresh id that routes to the same replica as ``parent_id``: its ROUTE,
    a dot and a random suffix cut to fit the 128-character limit."""
    route = route_key(parent_id)
    room = min(22, MAX_ID - len(route) - 1)
    if room < MIN_SUFFIX:
        raise InvalidArgument(
            f"the session's routing key is {len(route)} characters, too long for a server-named fork "
            f"(at most {MAX_ID - 1 - MIN_SUFFIX}); name the fork with new_session_id",
            field="new_session_id",
        )
    while True:
        candidate = f"{route}.{new_session_id()[:room]}"
        if is_valid(candidate) and not taken(candidate):
            return candidate
