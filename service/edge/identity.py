"""Who is calling: bearer tokens, mutual TLS, and the principal a call acts as.

Tokens file (``--tokens-file``), one principal a line, reloaded on SIGHUP:

    # principal: sha256 of its bearer token [admin]
    alice: 2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90
    ops: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 admin

A client sends ``authorization: Bearer <token>``; only the sha256 is stored
on the server. With ``--tls-client-ca`` (mutual TLS) a client certificate
is required, and a call without a token acts as the certificate's common
name. With neither configured every call is the one ``anonymous``
principal (the service's behaviour without auth). Tokens never reach a log.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

import grpc

from ..api.errors import ConfigError, ServiceError
from .revocation import OpenCall, OpenCalls
from ..api.values import ANYONE, Caller
from .error_status import for_service_error

log = logging.getLogger("service.identity")
OPEN_METHODS = ("/grpc.health.v1.Health/",)  # probes need no credentials
NO_CREDENTIALS = "this server needs credentials: send 'authorization: Bearer <token>' metadata"
REFLECTION = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"
    default_reason = "UNAUTHENTICATED"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_tokens(path: Path) -> Dict[str, Tuple[str, bool]]:
    """sha256 hex -> (principal, admin), from a tokens file; ConfigError says which line is wrong."""
    entries: Dict[str, Tuple[str, bool]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the tokens file {path}: {exc.strerror}") from exc
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        principal, _, rest = line.partition(":")
        words = rest.split()
        if not principal.strip() or not words or len(words[0]) != 64 or words[1:] not in ([], ["admin"]):
            raise ConfigError(f"{path}:{number}: expected 'principal: <sha256 hex of the token> [admin]'")
        entries[words[0].lower()] = (principal.strip(), words[1:] == ["admin"])
    return entries


class Authenticator:
    def __init__(self, tokens_file: str = "", mutual_tls: bool = False, open_reflection: bool = False) -> None:
        self.tokens_file = tokens_file
        self.mutual_tls = mutual_tls
        self.open_reflection = open_reflection
        self.tokens: Dict[str, Tuple[str, bool]] = read_tokens(Path(tokens_file)) if tokens_file else {}
        self.open_calls = OpenCalls()  # long-lived calls, ended when a reload revokes their token

    @property
    def enabled(self) -> bool:
        return bool(self.tokens_file) or self.mutual_tls

    def reload(self) -> None:
        """Re-read the tokens file (SIGHUP); a bad file keeps the old tokens."""
        if not self.tokens_file:
            return
        try:
            self.tokens = read_tokens(Path(self.tokens_file))
        except ConfigError as exc:
            log.error("tokens file not reloaded, keeping the old tokens: %s", exc)
            return
        ended = self.open_calls.end_revoked(self.still_valid)
        log.info("tokens file reloaded: %d principals; %d open calls of revoked tokens ended", len(self.tokens), ended)

    def track(self, context) -> Optional[OpenCall]:
        """Track a long-lived call made with a bearer token (service/edge/revocation.py); None without one."""
        if not self.tokens_file:
            return None
        digest = bearer_digest(context.invocation_metadata())
        if digest is None:
            return None
        return self.open_calls.add(digest, self.from_token(context.invocation_metadata()))

    def from_token(self, metadata) -> Optional[Caller]:
        """The caller a bearer token names; None without a token; Unauthenticated for a bad one."""
        digest = bearer_digest(metadata)
        if digest is None:
            return None
        for known, (principal, admin) in self.tokens.items():
            if hmac.compare_digest(known, digest):
                return Caller(principal, admin)
        raise Unauthenticated("the bearer token is not valid here")

    def still_valid(self, digest: str, caller: Caller) -> bool:
        """Whether the token with ``digest`` still names ``caller`` (after a reload)."""
        return self.tokens.get(digest) == (caller.principal, caller.admin)

    def caller(self, context) -> Caller:
        """The principal of a call (see the module docstring); Unauthenticated if there is none."""
        if not self.enabled:
            return ANYONE
        found = self.from_token(context.invocation_metadata())
        if found is not None:
            return found
        if self.mutual_tls:
            names = (context.auth_context() or {}).get("x509_common_name") or []
            if names:
                return Caller(names[0].decode() if isinstance(names[0], bytes) else str(names[0]))
        raise Unauthenticated(NO_CREDENTIALS + (" or a client certificate" if self.mutual_tls else ""))


def bearer_digest(metadata) -> Optional[str]:
    """The sha256 of the call's bearer token; None without one. Two ``authorization`` headers
    are refused: which one a proxy or another server would read is anybody's guess."""
    headers = [value for key, value in metadata or () if key == "authorization"]
    if not headers:
        return None
    if len(headers) > 1:
        raise Unauthenticated(f"the call carries {len(headers)} authorization headers, which is ambiguous: "
                              "send exactly one, 'Bearer <token>'", reason="AMBIGUOUS_CREDENTIALS")
    scheme, _, token = str(headers[0]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
    return token_digest(token.strip())


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without valid credentials before any handler runs, for every service
    (lstm.v1, KServe v2, reflection unless --open-reflection); health stays open."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def intercept_service(self, continuation, details):
        method = details.method
        open_ = method.startswith(OPEN_METHODS) or (self.auth.open_reflection and method.startswith(REFLECTION))
        if not self.auth.enabled or open_:
            return await continuation(details)
        try:
            caller = self.auth.from_token(details.invocation_metadata)
        except Unauthenticated as exc:
            return _refusal(exc)
        if caller is None and not self.auth.mutual_tls:
            return _refusal(Unauthenticated(NO_CREDENTIALS))
        return await continuation(details)


def _refusal(exc: Unauthenticated) -> grpc.RpcMethodHandler:
    code, message, trailers = for_service_error(exc)  # ErrorInfo in grpc-status-details-bin, as on every error

    async def refuse(request_or_iterator, context):
        await context.abort(code, message, trailers)

    # A stream-stream handler serves every call shape: grpc reads no request before it runs.
    return grpc.stream_stream_rpc_method_handler(refuse)


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """TLS (and, with ``client_ca``, mutual TLS: a client certificate signed by it is required)."""
    try:
        pair = (Path(key).read_bytes(), Path(cert).read_bytes())
        ca = Path(client_ca).read_bytes() if client_ca else None
    except OSError as exc:
        raise ConfigError(f"cannot read a TLS file: {exc.filename}: {exc.strerror}") from exc
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca))
