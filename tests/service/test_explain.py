"""The Explain RPC over a real server and channel: the returned gates obey the
cell equations, the prediction is the model's, sessions are left alone unless
`commit` is asked, and bad selections are refused with the allowed ranges."""
import json
import shutil

import grpc
import numpy as np
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from svc_helpers import serving

CELLS = ["lstm", "peephole", "coupled", "gru", "rnn"]
EQUATION_TOLERANCE = 1e-5


def channel_array(layer: pb.ExplainLayer, name: str, tokens: int) -> np.ndarray:
    """[T, U] values of one channel of one layer."""
    channel = next(c for c in layer.channels if c.name == name)
    return np.array(channel.values, np.float32).reshape(tokens, len(channel.units))


def check_equations(reply: pb.ExplainResponse, cell: str, first: int) -> None:
    """The cell equations, from the reply alone, for tokens first.. (token 0 needs the start state)."""
    T = len(reply.tokens)
    for layer in reply.layers:
        get = {name: channel_array(layer, name, T) for name in reply.available_channels}
        h = get["h"]
        if cell in ("lstm", "peephole", "coupled"):
            c = get["c"]
            c_prev = np.concatenate([np.zeros_like(c[:1]), c[:-1]])
            np.testing.assert_allclose(c[first:], (get["forget"] * c_prev + get["input"] * get["candidate"])[first:],
                                       atol=EQUATION_TOLERANCE)
            np.testing.assert_allclose(h, get["output"] * np.tanh(c), atol=EQUATION_TOLERANCE)
            if cell == "coupled":
                np.testing.assert_allclose(get["input"], 1 - get["forget"], atol=EQUATION_TOLERANCE)
        elif cell == "gru":
            h_prev = np.concatenate([np.zeros_like(h[:1]), h[:-1]])
            z = get["update"]
            np.testing.assert_allclose(h[first:], ((1 - z) * get["candidate"] + z * h_prev)[first:],
                                       atol=EQUATION_TOLERANCE)
        else:
            assert list(reply.available_channels) == ["h"] and np.all(np.abs(h) < 1)


@pytest.mark.parametrize("cell", CELLS)
async def test_cell_equations_hold_in_the_reply(make_tiny_model, cell):
    async with serving(make_tiny_model(cell)) as s:
        # From the zero state, every token (c_{-1} = 0) ...
        reply = await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text="To be, or not")))
        assert len(reply.tokens) == 13 and len(reply.layers) == 2
        check_equations(reply, cell, first=0)
        # ... and from a session's state, every token after the first.
        created = await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="Hamlet: ")))
        sid = created.session.id
        reply = await s.stub.Explain(pb.ExplainRequest(session_id=sid, input=pb.Input(text="to be")))
        check_equations(reply, cell, first=1)


async def test_prediction_and_final_state_are_the_models(make_tiny_model):
    async with serving(make_tiny_model("lstm")) as s:
        created = await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="Once ")))
        sid = created.session.id
        fork = (await s.stub.ForkSession(pb.ForkSessionRequest(session_id=sid))).session.id
        reply = await s.stub.Explain(pb.ExplainRequest(session_id=sid, input=pb.Input(text="upon"), top_k=4))
        predicted = await s.stub.Predict(pb.PredictRequest(
            session_id=fork, input=pb.Input(text="upon"), output=pb.OutputOptions(top_k=4, all_positions=True)))
        for token, prediction in zip(reply.tokens, predicted.result.predictions):
            assert [c.token for c in token.top] == [c.token for c in prediction.top]
            np.testing.assert_allclose([c.prob for c in token.top], [c.prob for c in prediction.top], atol=1e-5)
        assert [t.text for t in reply.tokens] == list("upon")


async def test_explain_changes_no_session_state_unless_commit(make_tiny_model):
    async with serving(make_tiny_model("lstm")) as s:
        store = s.engine.store
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="abc")))).session.id
        before = store.get(sid)
        state, steps, last = before.state, before.steps, before.last_logprobs
        for request in (pb.ExplainRequest(session_id=sid, input=pb.Input(text="defg")),
                        pb.ExplainRequest(session_id=sid, input=pb.Input(text="x"), top_units=3, layers=[1])):
            reply = await s.stub.Explain(request)
            assert reply.steps == 3 and not reply.committed
        after = store.get(sid)
        assert after.steps == steps and after.last_logprobs is last
        assert all(a is b for a, b in zip(after.state, state))  # the very same arrays
        # commit advances it exactly as Predict advances a fork taken now: the next step
        # (which waits for either call's commit to settle) predicts the same on both.
        fork = (await s.stub.ForkSession(pb.ForkSessionRequest(session_id=sid))).session.id
        reply = await s.stub.Explain(pb.ExplainRequest(session_id=sid, input=pb.Input(text="de"), commit=True))
        await s.stub.Predict(pb.PredictRequest(session_id=fork, input=pb.Input(text="de")))
        assert reply.committed and reply.steps == 5
        output = pb.OutputOptions(top_k=0, logprobs=True)
        after_explain, after_predict = [
            (await s.stub.Predict(pb.PredictRequest(session_id=i, input=pb.Input(text="z"), output=output))).result
            for i in (sid, fork)]
        assert after_explain.steps == after_predict.steps == 6
        assert list(after_explain.predictions[0].logprobs) == list(after_predict.predictions[0].logprobs)


async def test_units_ranges_top_units_and_summaries(make_tiny_model):
    async with serving(make_tiny_model("lstm")) as s:
        text = pb.Input(text="the quick brown fox")
        T = 19
        full = await s.stub.Explain(pb.ExplainRequest(input=text))
        ranged = await s.stub.Explain(pb.ExplainRequest(input=text, unit_range=pb.UnitRange(start=2, end=5),
                                                        layers=[1], channels=["forget", "h"]))
        assert [layer.layer for layer in ranged.layers] == [1]
        assert [c.name for c in ranged.layers[0].channels] == ["forget", "h"]
        np.testing.assert_array_equal(channel_array(ranged.layers[0], "h", T),
                                      channel_array(full.layers[1], "h", T)[:, 2:5])
        top = await s.stub.Explain(pb.ExplainRequest(input=text, top_units=4, channels=["c"]))
        for layer_top, layer_full in zip(top.layers, full.layers):
            units = list(layer_top.channels[0].units)
            spread = channel_array(layer_full, "c", T).std(0)
            assert units == list(np.argsort(-spread, kind="stable")[:4])
            # Summaries cover all units of the layer, whatever was selected.
            np.testing.assert_allclose(layer_top.mean_forget, channel_array(layer_full, "forget", T).mean(1), atol=1e-6)
            np.testing.assert_allclose(layer_top.mean_input, channel_array(layer_full, "input", T).mean(1), atol=1e-6)
            c = np.concatenate([np.zeros((1, 32), np.float32), channel_array(layer_full, "c", T)])
            np.testing.assert_allclose(layer_top.state_change, np.linalg.norm(np.diff(c, axis=0), axis=1), atol=1e-5)


BAD = [
    (dict(layers=[2]), "0 to 1"),
    (dict(layers=[0, 0]), "distinct layer indices"),
    (dict(channels=["forget", "nope"]), "'nope' is unknown: ask for distinct names among input, forget, candidate, "
                                        "output, c, h"),
    (dict(channels=["h", "h"]), "channels repeat"),
    (dict(unit_range=pb.UnitRange(start=3, end=3)), "0 <= start < end <= 32"),
    (dict(unit_range=pb.UnitRange(start=0, end=33)), "0 <= start < end <= 32"),
    (dict(top_units=33), "1 to 32"),
    (dict(top_k=257), "0 to 256"),
    (dict(input=pb.Input(text="x" * 513)), "1 to 512"),
    (dict(input=pb.Input(tokens=[300])), "0 to 255"),
    (dict(commit=True, session_id=""), "commit needs a session"),
]


@pytest.mark.parametrize("fields,allowed", BAD, ids=[str(i) for i in range(len(BAD))])
async def test_bad_selections_are_refused_with_the_allowed_ranges(make_tiny_model, fields, allowed):
    async with serving(make_tiny_model("lstm")) as s:
        sid = (await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="abc")))).session.id
        before = s.engine.store.get(sid)
        state, steps = before.state, before.steps
        request = pb.ExplainRequest(session_id=sid, input=pb.Input(text="hello"), commit=True)
        request.MergeFrom(pb.ExplainRequest(**fields))
        if "input" in fields:
            request.input.CopyFrom(fields["input"])
        if "session_id" in fields:
            request.session_id = ""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.stub.Explain(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert allowed in caught.value.details()
        after = s.engine.store.get(sid)
        assert after.steps == steps and all(a is b for a, b in zip(after.state, state))


async def test_reply_size_is_limited_before_running(make_tiny_model):
    async with serving(make_tiny_model("lstm"), max_reply_bytes=40_000) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # 100 tokens x 2 x 6 x 32 values > 4000
            await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text="y" * 100)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "fewer layers, channels or units" in caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # 200 tokens x 256 candidates x 24 bytes > 40000
            await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text="y" * 200), layers=[0], channels=["h"],
                                                   unit_range=pb.UnitRange(start=0, end=1), top_k=256))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "smaller top_k" in caught.value.details()
        ok = await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text="y" * 100), layers=[0], channels=["h"],
                                                    unit_range=pb.UnitRange(start=0, end=8)))
        assert len(ok.layers[0].channels[0].values) == 800


async def test_a_model_without_explain_graph_says_so(make_tiny_model, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(make_tiny_model("gru"), directory)
    card = json.loads((directory / "model.json").read_text())
    del card["explain"]
    (directory / "model.json").write_text(json.dumps(card))
    async with serving(directory) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text="hi")))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "without an explain graph" in caught.value.details()


async def test_only_the_owner_can_explain_a_session(make_tiny_model, tmp_path):
    import hashlib

    tokens = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}
    path = tmp_path / "tokens"
    path.write_text("".join(f"{who}: {hashlib.sha256(t.encode()).hexdigest()}\n" for who, t in tokens.items()))
    as_ = {who: (("authorization", f"Bearer {t}"),) for who, t in tokens.items()}
    async with serving(make_tiny_model("lstm"), tokens_file=str(path)) as s:
        created = await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="abc")), metadata=as_["alice"])
        sid = created.session.id
        mine = await s.stub.Explain(pb.ExplainRequest(session_id=sid, input=pb.Input(text="d")), metadata=as_["alice"])
        assert mine.steps == 3
        for commit in (False, True):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await s.stub.Explain(pb.ExplainRequest(session_id=sid, input=pb.Input(text="d"), commit=commit),
                                     metadata=as_["bob"])
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
