"""Session ids, and the routing key a proxy hashes to find a session's replica.

An id is ``ROUTE`` or ``ROUTE.SUFFIX``: 16 to 128 characters from
[A-Za-z0-9_-] with at most one dot. A proxy in front of several replicas
hashes only ROUTE (deploy/nginx.conf.template), so a fork named
``<parent's ROUTE>.<random>`` lands on the replica that holds its parent's
state, which is where ForkSession made it.

Ids are per principal: each principal has its own namespace, so Bob's
``x`` and Alice's ``x`` are two sessions (a ``SessionName``: owner and
id), and nothing Bob does can tell whether Alice uses ``x``. An admin
addresses another principal's session as ``PRINCIPAL/ID``: the separator
``/`` can never occur in an id, so the last ``/`` splits the two whatever
the principal's name holds. A bare id is always the caller's own namespace.
"""
from __future__ import annotations

import re
import secrets
from typing import Callable, NamedTuple

from ..api.errors import InvalidArgument, quote

ID_PATTERN = re.compile(r"(?=[A-Za-z0-9_.-]{16,128}\Z)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")
ID_RULE = "16 to 128 characters from [A-Za-z0-9_-], optionally ROUTE.SUFFIX with one dot"
MAX_ID = 128
MIN_SUFFIX = 6  # 36 random bits; a collision with a live id is checked and retried
SEPARATOR = "/"  # PRINCIPAL/ID: an admin naming another principal's session (never in an id)


class SessionName(NamedTuple):
    """Which session: the principal whose namespace holds it, and its id there."""

    owner: str
    id: str

    def shown_to(self, principal: str) -> str:
        """The id as ``principal`` names it: bare in its own namespace, PRINCIPAL/ID in another's."""
        return self.id if self.owner == principal else f"{self.owner}{SEPARATOR}{self.id}"


def address(session_id: str, principal: str, admin: bool, field: str = "session_id") -> SessionName:
    """The session a caller names: ``ID`` in its own namespace; ``PRINCIPAL/ID`` (admins only)
    in PRINCIPAL's. The id itself is checked where it is used (a malformed one is refused)."""
    owner, separator, bare = session_id.rpartition(SEPARATOR)
    if not separator:
        return SessionName(principal, session_id)
    if not admin or not owner:
        raise InvalidArgument(
            f"{field} {quote(session_id)} is not allowed: an id has no {SEPARATOR!r}; "
            f"only an admin names another principal's session, as PRINCIPAL{SEPARATOR}ID",
            field=field, reason="MALFORMED_SESSION_ID")
    return SessionName(owner, bare)


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
