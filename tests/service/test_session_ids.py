"""Session ids and their routing keys: forks share their parent's key."""
import numpy as np
import pytest

from lstm_service.service.api.errors import InvalidArgument
from lstm_service.service.core.session_ids import fork_id, is_valid, new_session_id, route_key
from lstm_service.service.core.sessions import SessionStore, check_session_id


@pytest.mark.parametrize("good", ["a" * 16, "A-b_c" * 4, "x" * 128, "routeKey_0123456.sfx", "r.s" + "x" * 14])
def test_valid_ids(good):
    assert is_valid(good) and check_session_id(good) == good


@pytest.mark.parametrize("bad", ["a" * 15, "x" * 129, "a.b.c" + "x" * 12, "." + "x" * 16, "x" * 16 + ".",
                                 "has space 123456", "ünïcode_id_123456"])
def test_invalid_ids_say_what_is_allowed(bad):
    assert not is_valid(bad)
    with pytest.raises(InvalidArgument, match="16 to 128 characters"):
        check_session_id(bad)


def test_forks_share_the_route_of_the_root():
    root = new_session_id()
    child = fork_id(root)
    grandchild = fork_id(child)
    assert is_valid(child) and is_valid(grandchild)
    assert route_key(root) == route_key(child) == route_key(grandchild) == root
    assert len({root, child, grandchild}) == 3


def test_an_unnamed_fork_routes_like_its_parent():
    zero = (np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))
    store = SessionStore(zero, max_sessions=4, default_ttl=60, max_ttl=60)
    parent = store.create()
    fork = store.fork(parent.id)
    assert route_key(fork.id) == route_key(parent.id) and fork.id != parent.id
    assert all(a is b for a, b in zip(fork.state, parent.state))
