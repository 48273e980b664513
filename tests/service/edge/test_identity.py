"""Who a call is (service/identity.py) without a server: the tokens file, bearer metadata, and
the Authenticator's answer for a call, its reload and what a reload revokes."""
from __future__ import annotations

import pytest

from lstm_service.service.api.errors import ConfigError
from lstm_service.service.edge.identity import (ANYONE, Authenticator, Caller, Unauthenticated, bearer_digest,
                                           read_tokens, token_digest)


class Context:
    """What Authenticator.caller reads of a grpc.aio context: metadata and the TLS auth context."""

    def __init__(self, metadata=(), auth=None) -> None:
        self.metadata, self.auth = tuple(metadata), auth or {}

    def invocation_metadata(self):
        return self.metadata

    def auth_context(self):
        return self.auth


def tokens_file(tmp_path, *lines):
    path = tmp_path / "tokens"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_tokens_takes_comments_and_admin_and_names_a_bad_line(tmp_path):
    path = tokens_file(tmp_path, "# who: sha256 [admin]", f"alice: {token_digest('a').upper()}",
                       f"root: {token_digest('r')} admin  # the operator", "")
    assert read_tokens(path) == {token_digest("a"): ("alice", False), token_digest("r"): ("root", True)}
    bad = tokens_file(tmp_path, f"alice: {token_digest('a')}", "bob: not-a-digest")
    with pytest.raises(ConfigError, match=r"tokens:2: expected 'principal: <sha256 hex of the token> \[admin\]'"):
        read_tokens(bad)
    with pytest.raises(ConfigError, match="cannot read the tokens file"):
        read_tokens(tmp_path / "absent")


@pytest.mark.parametrize("metadata, says", [
    ([("authorization", "Basic abc")], "must be 'Bearer <token>'"),
    ([("authorization", "Bearer ")], "must be 'Bearer <token>'"),
    ([("authorization", "Bearer a"), ("authorization", "Bearer b")], "2 authorization headers"),
])
def test_bearer_metadata_that_is_not_one_bearer_token_is_refused(metadata, says):
    with pytest.raises(Unauthenticated, match=says):
        bearer_digest(metadata)


def test_bearer_digest_is_the_tokens_sha256_and_none_without_one():
    assert bearer_digest([("authorization", "bearer  s3cret ")]) == token_digest("s3cret")
    assert bearer_digest([("x-session-id", "abc")]) is None


def test_without_auth_every_call_is_anonymous():
    auth = Authenticator()
    assert not auth.enabled and auth.caller(Context()) is ANYONE


def test_a_token_names_its_principal_and_anything_else_is_unauthenticated(tmp_path):
    auth = Authenticator(str(tokens_file(tmp_path, f"alice: {token_digest('a')}", f"root: {token_digest('r')} admin")))
    assert auth.caller(Context([("authorization", "Bearer a")])) == Caller("alice", False)
    assert auth.caller(Context([("authorization", "Bearer r")])) == Caller("root", True)
    with pytest.raises(Unauthenticated, match="not valid here"):
        auth.caller(Context([("authorization", "Bearer nope")]))
    with pytest.raises(Unauthenticated, match="needs credentials"):
        auth.caller(Context())


def test_mutual_tls_takes_the_certificates_common_name():
    auth = Authenticator(mutual_tls=True)
    assert auth.caller(Context(auth={"x509_common_name": [b"carol"]})) == Caller("carol")
    with pytest.raises(Unauthenticated, match="or a client certificate"):
        auth.caller(Context())


def test_a_reload_takes_new_tokens_keeps_old_ones_on_a_bad_file_and_says_who_is_revoked(tmp_path):
    path = tokens_file(tmp_path, f"alice: {token_digest('a')}")
    auth = Authenticator(str(path))
    alice = Caller("alice")
    assert auth.still_valid(token_digest("a"), alice)
    path.write_text("garbage\n")
    auth.reload()  # refused: the old tokens stay
    assert auth.still_valid(token_digest("a"), alice)
    path.write_text(f"alice: {token_digest('b')}\n")
    auth.reload()
    assert not auth.still_valid(token_digest("a"), alice) and auth.still_valid(token_digest("b"), alice)
