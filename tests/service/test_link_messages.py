"""Every link message type round-trips: encode -> the transport's msgpack -> decode gives
back what was sent, for its request and for its reply (link/messages.py), and every op
has its one type. No server: the codec is the thing under test."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lstm_service.service.api import errors
from lstm_service.service.api.options import GenerateOptions, SamplingOptions, StepOptions
from lstm_service.service.api.values import Caller, Generated, Kept, Remembrance, Scores, SessionInfo, StepResult
from lstm_service.service.link import messages as m
from lstm_service.service.link import wire_values as w
from lstm_service.service.link.transport import pack, unpack

ALICE = Caller("alice", False)
ADMIN = Caller("root", True)
IDS = np.array([3, 1, 4, 1, 5], np.int64)
OPTIONS = StepOptions(top_k=3, all_positions=True, logprobs=True)
GEN = GenerateOptions(12, SamplingOptions(0.7, 5, 0.9, 42), ("\n\n", "END"))
INFO = SessionInfo("abcdefghijklmnop", 7, 1.5, 0.25, 600.0, 599.75, True)
STATE = (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32))


def result(logprobs: bool = True) -> StepResult:
    rng = np.random.default_rng(0)
    top = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    lps = rng.standard_normal((2, 3)).astype(np.float32)
    every = rng.standard_normal((2, 8)).astype(np.float32) if logprobs else np.empty((0,), np.float32)
    return StepResult("abcdefghijklmnop", 9, 2, Scores(every, np.empty((0,), np.float32), top, lps, np.exp(lps)),
                      StepOptions(3, True, logprobs))


GENERATED = Generated(65, b"A", "A", -0.5, 10, "stop")
REMEMBER = Remembrance("3f1c-retry", b"\x01" * 32)

# One example request and one example reply per op.
EXAMPLES = {
    m.Op.PING: (m.Ping("front-1", [["Predict", "OK", 3]]), {"instance": "ab12", "store": True}),
    m.Op.OPEN_STREAM: (m.OpenStream("abcdefghijklmnop", True, 60.0, False, ALICE, REMEMBER), (5, INFO)),
    m.Op.HOLD: (m.Hold("", ADMIN), (6, 0)),
    m.Op.HOLD_YIELDING: (m.HoldYielding("abcdefghijklmnop", ALICE), (6, 12)),
    m.Op.RUN: (m.Run(6, IDS, OPTIONS, True, 4), result()),
    m.Op.READ_HELD_STATE: (m.ReadHeldState(6), STATE),
    m.Op.COMMIT: (m.Commit(6), None),
    m.Op.DEFERRED_COMMIT: (m.DeferredCommit(6, True, Remembrance("3f1c-retry", b"\x01" * 32, b"\x0a\x02ok")), None),
    m.Op.END_SESSION: (m.EndSession(6, "was ended by its stream"), None),
    m.Op.RELEASE: (m.Release(6), None),
    m.Op.RELEASE_UNUSED: (m.ReleaseUnused(6), None),
    m.Op.CANCEL: (m.Cancel(99), None),
    m.Op.PREDICT: (m.Predict("abcdefghijklmnop", IDS, StepOptions(), False, None, ALICE), (7, result(False))),
    m.Op.CREATE: (m.Create(None, 0.0, None, OPTIONS, ALICE), (8, None)),
    m.Op.CREATE_COMMIT: (m.CreateCommit(8, REMEMBER), INFO),
    m.Op.GEN_OPEN: (m.GenOpen("abcdefghijklmnop", IDS, GEN, 3, ADMIN, REMEMBER), 9),
    m.Op.GEN_NEXT: (m.GenNext(9), GENERATED),
    m.Op.CHARGE: (m.Charge(17, ALICE), None),
    m.Op.SLOT: (m.Slot(ALICE), 10),
    m.Op.GET_SESSION: (m.GetSession("abcdefghijklmnop", ALICE), INFO),
    m.Op.RESET_SESSION: (m.ResetSession("abcdefghijklmnop", ALICE), 11),
    m.Op.DELETE_SESSION: (m.DeleteSession("abcdefghijklmnop", ADMIN), 12),
    m.Op.FORK_SESSION: (m.ForkSession("abcdefghijklmnop", None, 30.0, ALICE), 13),
    m.Op.LIST_SESSIONS: (m.ListSessions(100, ADMIN), ([INFO, INFO], 2)),
    m.Op.EXPORT_SESSION: (m.ExportSession("abcdefghijklmnop", b"k" * 32, ALICE), (b"LSTB\x00blob", 7)),
    m.Op.IMPORT_SESSION: (m.ImportSession(b"LSTB\x00blob", b"k" * 32, None, 0.0, ALICE), 14),
    m.Op.RECORD_COMMIT: (m.RecordCommit(14), INFO),  # no request id: None on the wire
    m.Op.REWIND_SESSION: (m.RewindSession("abcdefghijklmnop", 5, ALICE), 15),
    m.Op.RECALL: (m.Recall("3f1c-retry", b"\x01" * 32, ALICE), Kept(b"\x0a\x02ok", INFO, [GENERATED], True)),
    m.Op.READ_STATE: (m.ReadState("abcdefghijklmnop", ALICE), (7, STATE)),
}


def same(a, b) -> bool:
    """Deep equality that compares numpy arrays by value, dtype and shape."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def through_the_wire(body):
    return unpack(pack(body))


def test_every_op_has_its_one_message_type():
    assert set(m.MESSAGES) == set(m.Op) == set(EXAMPLES)
    assert all(m.MESSAGES[op] is type(request) for op, (request, _) in EXAMPLES.items())


@pytest.mark.parametrize("op", list(m.Op), ids=lambda op: op.name)
def test_request_round_trips(op):
    request, _ = EXAMPLES[op]
    frame = through_the_wire([int(request.op), 1, request.encode()])
    assert frame[0] == op and frame[1] == 1
    assert same(m.MESSAGES[op].decode(frame[2]), request)


@pytest.mark.parametrize("op", list(m.Op), ids=lambda op: op.name)
def test_reply_round_trips(op):
    request, reply = EXAMPLES[op]
    cls = type(request)
    body = through_the_wire(cls.encode_reply(reply))
    assert same(cls.decode_reply(body), reply)  # (a result's scores.last stays in the engine: empty here)
    if cls.makes_key:
        key = reply if isinstance(reply, int) else reply[0]
        assert cls.key_of(body) == key


def test_a_result_without_logprobs_and_without_a_prompt():
    assert same(w.decode_optional_result(through_the_wire(w.encode_optional_result(None))), None)
    r = result(False)
    assert same(w.decode_result(through_the_wire(w.encode_result(r))), r)
    assert same(w.decode_ids(through_the_wire(w.encode_ids(None))), None)


@pytest.mark.parametrize("exc", [
    errors.InvalidArgument("bad", field="input"), errors.SessionBusy("busy", retry_after_ms=5),
    errors.CallEnded("ended"), errors.Unavailable("down", reason="ENGINE_UNAVAILABLE"),
    errors.FailedPrecondition("no", metadata={"steps": "3"}),
])
def test_service_errors_round_trip_as_themselves(exc):
    back = w.decode_error(through_the_wire(w.encode_error(exc)))
    assert type(back) is type(exc)
    assert (back.message, back.retry_after_ms, back.reason, back.field, back.metadata) == \
        (exc.message, exc.retry_after_ms, exc.reason, exc.field, exc.metadata)
