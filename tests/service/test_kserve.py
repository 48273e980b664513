"""The KServe v2 / Triton protocol through the official tritonclient (PyPI), against a
real server: sequences over ModelInfer and ModelStreamInfer give what lstm.v1 gives
on the same tokens, and what one onnxruntime call over the whole text gives."""
import numpy as np
import pytest

tritonclient = pytest.importorskip("tritonclient.grpc.aio")  # the [dev] extra
from tritonclient.grpc import InferInput, InferRequestedOutput  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from lstm_service.service.edge.kserve.sequence import session_id_for  # noqa: E402
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as lpb  # noqa: E402
from lstm_service.service.core.session_ids import is_valid  # noqa: E402

from svc_helpers import open_stream, serving, stream_step  # noqa: E402

TEXT = "ROMEO: But soft, what light through yonder window breaks?"
K = 4


def ids_input(tokens) -> InferInput:
    x = InferInput("INPUT_IDS", [1, len(tokens)], "INT64")
    x.set_data_from_numpy(np.asarray(tokens, dtype=np.int64)[None, :])
    return x


def text_input(text: str) -> InferInput:
    x = InferInput("TEXT", [1], "BYTES")
    x.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=np.object_))
    return x


def client_for(served):
    return tritonclient.InferenceServerClient(served.target)


async def lstm_v1_tops(served, tokens, k=K):
    """(ids [T, k], probs [T, k]) after each token, fed one at a time to an lstm.v1 stream."""
    call, _ = await open_stream(served.stub)
    ids, probs = [], []
    for token in tokens:
        (p,) = (await stream_step(call, [token], top_k=k)).predictions
        ids.append([c.token for c in p.top])
        probs.append([c.prob for c in p.top])
    await call.done_writing()
    return np.array(ids), np.array(probs, dtype=np.float32)


def tops(result):
    ids, probs = result.as_numpy("TOP_IDS"), result.as_numpy("TOP_PROBS")
    assert ids.shape == probs.shape == (1, 1, K) and ids.dtype == np.int64 and probs.dtype == np.float32
    return ids[0, 0], probs[0, 0]


async def test_model_infer_sequence_matches_lstm_v1_and_onnxruntime(tiny_model_dir, reference):
    tokens = list(TEXT.encode())
    want = reference.logprobs(tokens)
    async with serving(tiny_model_dir) as s:
        v1_ids, v1_probs = await lstm_v1_tops(s, tokens)
        async with client_for(s) as client:
            name = s.app.card.name
            for t, token in enumerate(tokens):
                r = await client.infer(name, [ids_input([token])], sequence_id=42, sequence_start=t == 0,
                                       sequence_end=t == len(tokens) - 1, parameters={"top_k": K}, request_id=f"r{t}")
                assert r.get_response().id == f"r{t}"
                ids, probs = tops(r)
                assert ids.tolist() == v1_ids[t].tolist(), f"position {t}"
                assert np.array_equal(probs, v1_probs[t])
                assert ids.tolist() == list(np.argsort(-want[t], kind="stable")[:K])
                assert np.allclose(probs, np.exp(want[t][ids]), atol=1e-5)
                if t == 3:  # mid-sequence, the session is there for lstm.v1 too, under the documented id
                    got = await s.stub.GetSession(lpb.GetSessionRequest(session_id=session_id_for(42)))
                    assert got.session.steps == 4
            # sequence_end freed it: continuing without a start is NOT_FOUND, saying how to begin
            with pytest.raises(InferenceServerException) as info:
                await client.infer(name, [ids_input([1])], sequence_id=42)
            assert info.value.status() == "StatusCode.NOT_FOUND"
            assert "sequence 42 is not active" in info.value.message()
            assert "sequence_start" in info.value.message()


async def test_stream_interleaves_sequences_each_matching_one_run(tiny_model_dir, reference):
    """Two sequences (a uint64 id and a string id) on one stream, a request of each in
    flight at once, text and token inputs mixed: each is exact, replies match by id."""
    a, b = TEXT.encode(), "Wherefore art thou, Romeo?".encode()
    want = {1: reference.logprobs(a), "juliet": reference.logprobs(b)}
    async with serving(tiny_model_dir) as s, client_for(s) as client:
        name = s.app.card.name

        async def requests():
            for t in range(max(len(a), len(b))):
                for seq, data in ((1, a), ("juliet", b)):
                    if t < len(data):
                        x = text_input(chr(data[t])) if seq == 1 and data[t] < 128 else ids_input([data[t]])
                        yield dict(model_name=name, inputs=[x], request_id=f"{seq}:{t}", sequence_id=seq,
                                   sequence_start=t == 0, sequence_end=t == len(data) - 1,
                                   parameters={"top_k": K})

        seen = set()
        async for result, error in client.stream_infer(requests()):
            assert error is None, error
            rid = result.get_response().id
            seq, t = rid.split(":")
            seq, t = (int(seq) if seq.isdigit() else seq), int(t)
            ids, probs = tops(result)
            assert ids.tolist() == list(np.argsort(-want[seq][t], kind="stable")[:K]), rid
            assert np.allclose(probs, np.exp(want[seq][t][ids]), atol=1e-5)
            seen.add(rid)
        assert len(seen) == len(a) + len(b)
        await s.sync()
        assert s.engine.session_count() == 0  # both sequences ended and were freed


async def test_start_resets_a_live_sequence_and_prefill_returns_all_positions(tiny_model_dir, reference):
    tokens = list(TEXT.encode())[:12]
    want = reference.logprobs(tokens)
    async with serving(tiny_model_dir) as s, client_for(s) as client:
        name = s.app.card.name
        await client.infer(name, [ids_input([7, 8, 9])], sequence_id="x", sequence_start=True)
        # start again: the old state is dropped, the prefill is scored at every position
        r = await client.infer(name, [ids_input(tokens)], sequence_id="x", sequence_start=True,
                               parameters={"top_k": 2, "all_positions": True},
                               outputs=[InferRequestedOutput("TOP_IDS"), InferRequestedOutput("LOGPROBS")])
        assert r.as_numpy("TOP_PROBS") is None  # only what was asked for
        logprobs = r.as_numpy("LOGPROBS")
        assert logprobs.shape == (1, len(tokens), 256)
        assert np.abs(logprobs[0] - want).max() <= 1e-4
        assert r.as_numpy("TOP_IDS").shape == (1, len(tokens), 2)
        (info,) = [x for x in (await s.stub.ListSessions(lpb.ListSessionsRequest())).sessions]
        assert info.id == session_id_for("x") and info.steps == len(tokens)
        # a stateless request (no sequence id) keeps nothing
        r = await client.infer(name, [ids_input(tokens[:1])], parameters={"top_k": K})
        assert tops(r)[0].tolist() == list(np.argsort(-want[0], kind="stable")[:K])
        await s.sync()
        assert s.engine.session_count() == 1


async def test_metadata_config_and_statistics_satisfy_the_client(tiny_model_dir):
    async with serving(tiny_model_dir) as s, client_for(s) as client:
        name = s.app.card.name
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready(name) and not await client.is_model_ready("other")
        server = await client.get_server_metadata(as_json=True)
        assert server["name"] == "lstm-service" and "sequence" in server["extensions"]
        meta = await client.get_model_metadata(name, as_json=True)
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
            ("INPUT_IDS", "INT64", ["1", "-1"]), ("TEXT", "BYTES", ["1"])]
        assert [o["name"] for o in meta["outputs"]] == ["TOP_IDS", "TOP_PROBS", "LOGPROBS"]
        config = (await client.get_model_config(name, as_json=True))["config"]
        # proto3 JSON leaves out the enum's zero value, CONTROL_SEQUENCE_START
        controls = {c["name"]: c["control"][0].get("kind", "CONTROL_SEQUENCE_START")
                    for c in config["sequence_batching"]["control_input"]}
        assert controls == {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END",
                            "READY": "CONTROL_SEQUENCE_READY", "CORRID": "CONTROL_SEQUENCE_CORRID"}
        assert int(config["sequence_batching"]["max_sequence_idle_microseconds"]) == int(s.app.config.session_ttl * 1e6)
        await client.infer(name, [ids_input([1, 2])])
        stats = (await client.get_inference_statistics(name, as_json=True))["model_stats"][0]
        assert stats["name"] == name and int(stats["inference_count"]) == 1
        with pytest.raises(InferenceServerException) as info:
            await client.get_model_metadata("other")
        assert info.value.status() == "StatusCode.NOT_FOUND" and name in info.value.message()


async def test_unimplemented_calls_say_so(tiny_model_dir):
    async with serving(tiny_model_dir) as s, client_for(s) as client:
        for call in (client.get_model_repository_index(), client.load_model("x"),
                     client.get_system_shared_memory_status(), client.get_log_settings()):
            with pytest.raises(InferenceServerException) as info:
                await call
            assert info.value.status() == "StatusCode.UNIMPLEMENTED"
            assert "is not implemented by this server" in info.value.message()
            assert "ModelStreamInfer" in info.value.message()  # says what is there


def test_sequence_ids_map_to_valid_distinct_session_ids():
    ids = [session_id_for(1), session_id_for(2**64 - 1), session_id_for("1"), session_id_for("é" * 42),
           session_id_for("a"), session_id_for("b")]
    assert all(is_valid(i) for i in ids) and len(set(ids)) == len(ids)
    assert session_id_for(42) == "kserve-seq-int-00000000000000000042" == session_id_for(42)


def test_reflection_pool_holds_every_served_service():
    """The KServe protos live in their own descriptor pool; reflection needs one pool with all."""
    from grpc_health.v1 import health_pb2

    from lstm_service.service.edge.kserve import SERVICE_NAME, reflection_pool

    names = ["lstm.v1.LstmService", health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, SERVICE_NAME,
             "grpc.reflection.v1.ServerReflection"]  # the last is an alias in no pool: left out, no error
    pool = reflection_pool(names)
    for name in [*names[:3], "grpc.reflection.v1alpha.ServerReflection"]:  # reflection itself, always
        assert pool.FindServiceByName(name).full_name == name
    assert pool.FindFileContainingSymbol("inference.ModelConfig").name == "model_config.proto"


async def test_a_sequence_belongs_to_the_principal_that_started_it_and_ids_are_per_principal(tiny_model_dir, tmp_path):
    import hashlib

    tokens = {"alice": "alice-kserve-token", "bob": "bob-kserve-token"}
    path = tmp_path / "tokens"
    path.write_text("".join(f"{who}: {hashlib.sha256(t.encode()).hexdigest()}\n" for who, t in tokens.items()))
    alice, bob = ({"authorization": f"Bearer {tokens[w]}"} for w in ("alice", "bob"))
    async with serving(tiny_model_dir, tokens_file=str(path)) as s, client_for(s) as client:
        name = s.app.card.name
        with pytest.raises(InferenceServerException) as info:
            await client.infer(name, [ids_input([1])], sequence_id=5, sequence_start=True)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        await client.infer(name, [ids_input([1, 2])], sequence_id=5, sequence_start=True, headers=alice)
        with pytest.raises(InferenceServerException) as info:  # Bob's sequence 5 is not Alice's
            await client.infer(name, [ids_input([3])], sequence_id=5, headers=bob)
        assert info.value.status() == "StatusCode.NOT_FOUND" and "sequence 5 is not active" in info.value.message()
        await client.infer(name, [ids_input([3])], sequence_id=5, sequence_start=True, headers=bob)  # his own
        assert s.engine.session_count() == 2
        for who in (alice, bob):
            r = await client.infer(name, [ids_input([3])], sequence_id=5, sequence_end=True, headers=who)
            assert r.as_numpy("TOP_IDS").shape == (1, 1, 5)
        await s.sync()
        assert s.engine.session_count() == 0
