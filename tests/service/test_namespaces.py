"""Session ids are per principal (docs/security.md): Bob's ``x`` and Alice's ``x`` are two
sessions on every call that names one (lstm.v1 and KServe sequences), in memory and in the
Redis keys; a lookup in one's own namespace takes the same path whether or not another
principal uses the id; an admin addresses another's session as PRINCIPAL/ID.

Real parts: an in-process server on port 0 with a tokens file and a real channel (in both
modes: make test-fronts), a real redis-server for the snapshot keys."""
from __future__ import annotations

import asyncio
import re

import grpc
import numpy as np
import pytest
from redis import Redis

from lstm_service.service.proto.inference import grpc_service_pb2 as kpb
from lstm_service.service.proto.inference import grpc_service_pb2_grpc as kpb_grpc
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.persist.snapshot_format import Snapshot, encode_snapshot
from lstm_service.service.persist.snapshots import KEY_PREFIX, STORE_MAGIC
from lstm_service.service.persist.store_metrics import LOAD_KINDS
from redis_helpers import NEEDS_REDIS, running_redis
from svc_helpers import serving
from principals import as_, tokens_file
from test_security import key

SHARED = "shared-session-name-0001"


async def status_of(awaitable) -> grpc.StatusCode:
    try:
        await awaitable
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def steps_of(stub, session_id: str, who: str) -> int:
    return (await stub.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=as_(who))).session.steps


async def test_bob_can_use_every_id_alice_holds_and_their_sessions_stay_apart(tiny_model_dir, tmp_path):
    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path)),
                       session_key_file=str(key(tmp_path))) as s:
        stub = s.stub
        ids = {name: f"{name}-alice-holds-0001" for name in ("create", "stream", "import", "fork")}
        for session_id in ids.values():
            await stub.CreateSession(pb.CreateSessionRequest(session_id=session_id, prompt=pb.Input(text="alice")),
                                     metadata=as_("alice"))
        # Bob, with each id Alice holds, on each call that names a new session: all OK.
        made = await stub.CreateSession(pb.CreateSessionRequest(session_id=ids["create"], prompt=pb.Input(text="b")),
                                        metadata=as_("bob"))
        assert made.session.id == ids["create"]
        stream = stub.Stream(metadata=as_("bob"))
        await stream.write(pb.StreamRequest(open=pb.OpenStream(session_id=ids["stream"], create=True,
                                                               end_with_stream=False)))
        opened = await stream.read()
        assert opened.opened.id == ids["stream"]
        await stream.done_writing()
        while await stream.read() != grpc.aio.EOF:
            pass
        blob = (await stub.ExportSession(pb.ExportSessionRequest(session_id=ids["create"]), metadata=as_("bob"))).blob
        imported = await stub.ImportSession(pb.ImportSessionRequest(blob=blob, session_id=ids["import"]),
                                            metadata=as_("bob"))
        assert imported.session.id == ids["import"] and imported.session.steps == 1
        forked = await stub.ForkSession(pb.ForkSessionRequest(session_id=ids["create"], new_session_id=ids["fork"]),
                                        metadata=as_("bob"))
        assert forked.session.id == ids["fork"]
        # Two sessions per id: Alice's untouched by anything Bob did.
        for session_id in ids.values():
            assert await steps_of(stub, session_id, "alice") == len("alice")
        assert [await steps_of(stub, ids[n], "bob") for n in ("create", "stream", "import", "fork")] == [1, 0, 1, 1]
        # Taken in one's own namespace is still ALREADY_EXISTS.
        again = stub.CreateSession(pb.CreateSessionRequest(session_id=ids["create"]), metadata=as_("bob"))
        assert await status_of(again) == grpc.StatusCode.ALREADY_EXISTS
        # Bob deleting his "x" leaves Alice's "x".
        await stub.DeleteSession(pb.DeleteSessionRequest(session_id=ids["create"]), metadata=as_("bob"))
        assert await steps_of(stub, ids["create"], "alice") == len("alice")


async def test_an_admin_addresses_another_principals_session_as_principal_slash_id(tiny_model_dir, tmp_path):
    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path))) as s:
        stub = s.stub
        for who, text in (("alice", "alice's"), ("bob", "bob")):
            await stub.CreateSession(pb.CreateSessionRequest(session_id=SHARED, prompt=pb.Input(text=text)),
                                     metadata=as_(who))
        assert await steps_of(stub, f"alice/{SHARED}", "ops") == len("alice's")
        assert await steps_of(stub, f"bob/{SHARED}", "ops") == len("bob")
        routed = as_("ops") + (("x-session-id", SHARED),)  # what a proxy hashes: the bare id, as Alice's calls
        got = await stub.GetSession(pb.GetSessionRequest(session_id=f"alice/{SHARED}"), metadata=routed)
        assert got.session.id == f"alice/{SHARED}"
        assert await status_of(stub.GetSession(pb.GetSessionRequest(session_id=SHARED),
                                               metadata=as_("ops"))) == grpc.StatusCode.NOT_FOUND  # ops' own: none
        listed = await stub.ListSessions(pb.ListSessionsRequest(), metadata=as_("ops"))
        assert sorted(x.id for x in listed.sessions) == [f"alice/{SHARED}", f"bob/{SHARED}"]
        # A non-admin cannot reach into another namespace: the "/" makes the id malformed.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetSession(pb.GetSessionRequest(session_id=f"alice/{SHARED}"), metadata=as_("bob"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "only an admin" in refused.value.details()
        await stub.DeleteSession(pb.DeleteSessionRequest(session_id=f"bob/{SHARED}"), metadata=as_("ops"))
        assert await status_of(stub.GetSession(pb.GetSessionRequest(session_id=SHARED),
                                               metadata=as_("bob"))) == grpc.StatusCode.NOT_FOUND
        assert await steps_of(stub, SHARED, "alice") == len("alice's")


def _kserve_start(sequence_id: int, text: str, start: bool) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="tiny-lstm")
    request.parameters["sequence_id"].uint64_param = sequence_id
    request.parameters["sequence_start"].bool_param = start
    tensor = request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(text.encode())
    return request


async def test_kserve_sequence_ids_are_per_principal_too(tiny_model_dir, tmp_path):
    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path))) as s:
        kserve = kpb_grpc.GRPCInferenceServiceStub(s.channel)
        name = (await s.stub.ListModels(pb.ListModelsRequest(), metadata=as_("alice"))).models[0].name
        for who, text in (("alice", "abcdef"), ("bob", "xy")):
            request = _kserve_start(42, text, start=True)
            request.model_name = name
            await kserve.ModelInfer(request, metadata=as_(who))  # "in use by another client" before
        listed = {who: (await s.stub.ListSessions(pb.ListSessionsRequest(), metadata=as_(who))).sessions
                  for who in ("alice", "bob")}
        assert [x.steps for x in listed["alice"]] == [6] and [x.steps for x in listed["bob"]] == [2]
        assert listed["alice"][0].id == listed["bob"][0].id  # the same sequence id, two sessions


# -- the snapshot store ------------------------------------------------------------------

@pytest.fixture
def redis_server(tmp_path):
    yield from running_redis(tmp_path)


def mget_calls(redis) -> int:
    """Store lookups so far: MGET (a load) and EVALSHA (the lease's take, which reads the snapshot;
    the servers here beat their heartbeat once a minute, so none falls in a test's window)."""
    stats = redis.command("INFO", "commandstats").decode()
    return sum(int(found.group(1)) for found in re.finditer(r"cmdstat_(?:mget|evalsha):calls=(\d+)", stats))


async def wait_for_key(redis, key: str, present: bool = True) -> None:
    """Until the background writer has (or no longer has) ``key`` in Redis (bounded)."""
    for _ in range(200):
        if (redis.get(key) is not None) == present:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{key} {'never appeared' if present else 'never went'}")


@NEEDS_REDIS
async def test_with_a_state_store_a_foreign_id_takes_the_same_lookup_path_as_an_unused_one(
        tiny_model_dir, tmp_path, redis_server):
    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path)),
                       state_store=redis_server.url, lease_ms=60000,
                       snapshot_every=1) as s:
        stub = s.stub
        await stub.CreateSession(pb.CreateSessionRequest(session_id=SHARED, prompt=pb.Input(text="secret")),
                                 metadata=as_("alice"))
        await wait_for_key(redis_server, f"{KEY_PREFIX}alice/{SHARED}")  # the snapshot key is namespaced
        counts = s.engine.durability.snapshots.counts
        paths = []
        for session_id in (SHARED, "never-used-session-0001"):
            before_calls, before_counts = mget_calls(redis_server), dict(counts)
            code = await status_of(stub.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=as_("bob")))
            changed = {k: counts[k] - before_counts.get(k, 0) for k in LOAD_KINDS
                       if counts[k] != before_counts.get(k, 0)}  # loads only: writes land on their own
            paths.append((code, mget_calls(redis_server) - before_calls, changed))
        assert paths[0] == paths[1] == (grpc.StatusCode.NOT_FOUND, 1, {"miss": 1})  # one store round trip each


def old_snapshot(engine, session_id: str, owner: str, steps: int) -> bytes:
    state = tuple(np.full(part.shape, 0.5, np.float32) for part in engine.zeros)
    return encode_snapshot(Snapshot(session_id, owner, steps, state, None, 600.0, engine.model_sha256), STORE_MAGIC)


@NEEDS_REDIS
async def test_old_format_keys_are_moved_to_their_owners_namespace_when_the_store_opens(
        tiny_model_dir, tmp_path, redis_server):
    async with serving(tiny_model_dir) as plain:  # no store: only to learn the model's sha256 and shapes
        engine = plain.engine
        values = {"alice": old_snapshot(engine, SHARED, "alice", 7),
                  "bob": old_snapshot(engine, "bobs-old-session-0001", "bob", 3)}
    with Redis.from_url(redis_server.url) as writer:  # as a server from before namespaces left them
        writer.set(KEY_PREFIX + SHARED, values["alice"], px=600_000)
        writer.set(KEY_PREFIX + "bobs-old-session-0001", values["bob"])
        writer.set(KEY_PREFIX + "unreadable-old-key-01", b"not a snapshot")
        async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path)),
                           state_store=redis_server.url, lease_ms=60000) as s:
            await wait_for_key(redis_server, f"{KEY_PREFIX}alice/{SHARED}")
            await wait_for_key(redis_server, f"{KEY_PREFIX}bob/bobs-old-session-0001")
            await wait_for_key(redis_server, KEY_PREFIX + SHARED, present=False)
            assert 0 < writer.pttl(f"{KEY_PREFIX}alice/{SHARED}") <= 600_000  # the TTL came along
            assert writer.get(KEY_PREFIX + "unreadable-old-key-01") == b"not a snapshot"  # left alone
            before = mget_calls(redis_server)
            assert await status_of(s.stub.GetSession(pb.GetSessionRequest(session_id=SHARED),
                                                     metadata=as_("bob"))) == grpc.StatusCode.NOT_FOUND
            assert mget_calls(redis_server) - before == 1
            assert await steps_of(s.stub, SHARED, "alice") == 7
            assert await steps_of(s.stub, "bobs-old-session-0001", "bob") == 3


@NEEDS_REDIS
async def test_a_snapshot_under_the_old_key_is_read_by_its_owner_only_and_moved(
        tiny_model_dir, tmp_path, redis_server):
    async with serving(tiny_model_dir, tokens_file=str(tokens_file(tmp_path)), state_store=redis_server.url,
                       lease_ms=60000) as s:
        with Redis.from_url(redis_server.url) as writer:  # written after the open's pass: read, then moved
            writer.set(KEY_PREFIX + SHARED, old_snapshot(s.engine, SHARED, "alice", 9))
        assert await status_of(s.stub.GetSession(pb.GetSessionRequest(session_id=SHARED),
                                                 metadata=as_("bob"))) == grpc.StatusCode.NOT_FOUND
        assert await steps_of(s.stub, SHARED, "alice") == 9
        await wait_for_key(redis_server, f"{KEY_PREFIX}alice/{SHARED}")
        await wait_for_key(redis_server, KEY_PREFIX + SHARED, present=False)
