"""Every ErrorInfo reason the service sends, with its status code and when.

This is the one list: docs/errors.md's reason table is ``reasons_table()``
(``python -m lstm_service.service.api.reasons``), and
tests/service/test_reasons.py reads the raise sites of service/ and fails
when one names a reason missing here (or with another code), or when the
doc is stale. A client may switch on a reason; never rename one.
"""
from __future__ import annotations

from typing import Dict, Tuple

REASONS: Dict[str, Tuple[str, str]] = {
    # reason: (gRPC status code, when)
    "INVALID_ARGUMENT": ("INVALID_ARGUMENT", "bad tokens, options or selections (the message and BadRequest "
                                             "name the field)"),
    "MALFORMED_SESSION_ID": ("INVALID_ARGUMENT", "a session id outside the id rules (it can never name a session)"),
    "UNDECODABLE_REQUEST": ("INVALID_ARGUMENT", "the request bytes are not the method's protobuf message"),
    "REPLY_TOO_LARGE": ("INVALID_ARGUMENT", "the reply could exceed the cap (`--max-reply-bytes`); nothing ran"),
    "REQUEST_ID_REUSED": ("INVALID_ARGUMENT", "a request_id already used (in its window) for a different request"),
    "BLOB_INVALID": ("INVALID_ARGUMENT", "an ImportSession blob that is not a readable session blob"),
    "BLOB_SIGNATURE_MISMATCH": ("INVALID_ARGUMENT", "an ImportSession blob not signed with this server's "
                                                    "`--session-key-file` key (forged, altered or another key)"),
    "BLOB_VERSION": ("INVALID_ARGUMENT", "an ImportSession blob in a format version this server does not read"),
    "SESSION_NOT_FOUND": ("NOT_FOUND", "unknown, expired, evicted or deleted session, or an id of another "
                                       "principal's namespace"),
    "MODEL_NOT_FOUND": ("NOT_FOUND", "a model name or version that this server does not serve"),
    "SEQUENCE_NOT_FOUND": ("NOT_FOUND", "KServe: a sequence continued without sequence_start, or after it ended"),
    "SESSION_EXISTS": ("ALREADY_EXISTS", "a client-chosen id that is taken in the caller's namespace"),
    "SESSION_BUSY": ("ABORTED", "the session is in use by another request or stream (one writer at a time)"),
    "FAILED_PRECONDITION": ("FAILED_PRECONDITION", "the request cannot apply to the session as it is"),
    "STEPS_MISMATCH": ("FAILED_PRECONDITION", "`expected_steps` (or RewindSession's `steps`) is ahead of the "
                                              "session's steps (metadata `steps`: the actual count)"),
    "OUTSIDE_JOURNAL": ("FAILED_PRECONDITION", "`expected_steps` or RewindSession's `steps` is before the "
                                               "session's journal (metadata `reachable_from`, `reachable_to`)"),
    "NO_CONTEXT": ("FAILED_PRECONDITION", "Generate without a prompt on a session that has consumed no token"),
    "SESSION_ENDED": ("FAILED_PRECONDITION", "the session ended (deleted or sequence end) while held"),
    "NO_SESSION_KEY": ("FAILED_PRECONDITION", "ExportSession/ImportSession on a server without "
                                              "`--session-key-file`"),
    "OTHER_MODEL": ("FAILED_PRECONDITION", "a snapshot or blob saved by a server running another model"),
    "NO_EXPLAIN_GRAPH": ("FAILED_PRECONDITION", "Explain on a model exported without its explain graph"),
    "LIMIT_REACHED": ("RESOURCE_EXHAUSTED", "a server limit, named in the message"),
    "QUEUE_FULL": ("RESOURCE_EXHAUSTED", "the step queue is full (`--queue-size`); RetryInfo says when"),
    "MAX_SESSIONS": ("RESOURCE_EXHAUSTED", "`--max-sessions` reached and every session is in use"),
    "SESSION_SHARE": ("RESOURCE_EXHAUSTED", "`--max-sessions` reached and the caller holds its fair share"),
    "PRINCIPAL_SESSIONS": ("RESOURCE_EXHAUSTED", "`--max-sessions-per-principal` reached"),
    "PRINCIPAL_STREAMS": ("RESOURCE_EXHAUSTED", "`--max-streams-per-principal` reached"),
    "PRINCIPAL_RATE": ("RESOURCE_EXHAUSTED", "`--tokens-per-second-per-principal` spent; RetryInfo says when"),
    "STREAM_IDLE": ("RESOURCE_EXHAUSTED", "a stream sent nothing for `--stream-idle-timeout`; the session is kept"),
    "UNAUTHENTICATED": ("UNAUTHENTICATED", "no, a malformed or a wrong bearer token / client certificate"),
    "AMBIGUOUS_CREDENTIALS": ("UNAUTHENTICATED", "the call carries more than one `authorization` header"),
    "CREDENTIALS_REVOKED": ("UNAUTHENTICATED", "a reload of `--tokens-file` (SIGHUP) took away the token of this "
                                               "open Stream, Generate or ModelStreamInfer"),
    "SHUTTING_DOWN": ("UNAVAILABLE", "the server is draining for shutdown"),
    "LEASE_MOVED": ("UNAVAILABLE", "`--state-store`: the session's lease moved to another replica while this call "
                                   "ran (e.g. this one was paused); nothing was changed, retry"),
    "LEASE_HELD": ("UNAVAILABLE", "`--state-store`: another live replica holds the session and did not hand it over "
                                  "in time; retry"),
    "STATE_STORE_DOWN": ("UNAVAILABLE", "`--snapshot-every 1` (write-through) and the state store cannot be "
                                        "reached; nothing was changed, retry"),
    "ENGINE_UNAVAILABLE": ("UNAVAILABLE", "`--fronts`: the engine process is not answering (restarting?)"),
    "ENGINE_RESTARTED": ("UNAVAILABLE", "`--fronts`: the engine restarted or released this call's session; retry"),
    "CALL_ENDED": ("CANCELLED", "the call was cancelled or ran out of time before its result was kept "
                                "(seen as CANCELLED or DEADLINE_EXCEEDED)"),
    "UNIMPLEMENTED": ("UNIMPLEMENTED", "a KServe v2 method this server does not implement"),
    "INTERNAL": ("INTERNAL", "a bug; metadata `request_id` is in the server log with the details"),
}


def reasons_table() -> str:
    """docs/errors.md's table of reasons (checked by a test)."""
    rows = ["| code | reason (ErrorInfo) | when |", "|---|---|---|"]
    for reason, (code, when) in REASONS.items():
        rows.append(f"| {code} | `{reason}` | {when.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m lstm_service.service.api.reasons > the table in docs/errors.md
    print(reasons_table(), end="")
