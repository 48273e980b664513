"""tritonclient's blocking client, as most Triton users write it: ModelInfer and the
callback streaming API (start_stream / async_stream_infer) against a real server
running in a thread of its own; the answers are lstm.v1's on the same tokens."""
import asyncio
import contextlib
import queue
import threading

import numpy as np
import pytest

tc = pytest.importorskip("tritonclient.grpc")  # the [dev] extra

from lstm_service.service.proc.app import App  # noqa: E402
from lstm_service.service.proc.config import Config  # noqa: E402
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as lpb  # noqa: E402

TEXT = b"O Romeo, Romeo! wherefore art thou Romeo?"
K = 3


@contextlib.contextmanager
def serving_in_thread(model_dir):
    """The service on 127.0.0.1 port 0 in a thread with its own event loop: (app, port)."""
    started: queue.Queue = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main():
        app = App(Config(model=str(model_dir), port=0, device="cpu"))
        started.put((app, await app.start()))
        await stop.wait()
        await app.stop(grace=0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    app, port = started.get(timeout=60)
    try:
        yield app, port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def ids_input(tokens) -> "tc.InferInput":
    x = tc.InferInput("INPUT_IDS", [1, len(tokens)], "INT64")
    x.set_data_from_numpy(np.asarray(tokens, dtype=np.int64)[None, :])
    return x


def lstm_v1_tops(channel_target: str):
    """Top-K ids after each token of TEXT, one token per lstm.v1 Predict on a fresh session."""
    import grpc

    from lstm_service.service.proto.lstm.v1 import lstm_pb2_grpc

    with grpc.insecure_channel(channel_target) as channel:
        stub = lstm_pb2_grpc.LstmServiceStub(channel)
        session = stub.CreateSession(lpb.CreateSessionRequest()).session.id
        out = []
        for token in TEXT:
            r = stub.Predict(lpb.PredictRequest(session_id=session, input=lpb.Input(tokens=[token]),
                                                output=lpb.OutputOptions(top_k=K)))
            out.append([c.token for c in r.result.predictions[0].top])
        return out


def test_blocking_client_infer_and_callback_stream_match_lstm_v1(tiny_model_dir):
    with serving_in_thread(tiny_model_dir) as (app, port):
        target, name = f"127.0.0.1:{port}", app.card.name
        want = lstm_v1_tops(target)
        client = tc.InferenceServerClient(target)
        got = []
        for t, token in enumerate(TEXT):
            r = client.infer(name, [ids_input([token])], sequence_id="blocking", sequence_start=t == 0,
                             sequence_end=t == len(TEXT) - 1, parameters={"top_k": K})
            got.append(r.as_numpy("TOP_IDS")[0, 0].tolist())
        assert got == want

        replies: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: replies.put((result, error)))
        try:
            for t, token in enumerate(TEXT):
                client.async_stream_infer(name, [ids_input([token])], request_id=str(t), sequence_id=99,
                                          sequence_start=t == 0, sequence_end=t == len(TEXT) - 1,
                                          parameters={"top_k": K})
            streamed = {}
            for _ in TEXT:
                result, error = replies.get(timeout=30)
                assert error is None, error
                streamed[int(result.get_response().id)] = result.as_numpy("TOP_IDS")[0, 0].tolist()
        finally:
            client.stop_stream()
            client.close()
        assert [streamed[t] for t in range(len(TEXT))] == want
        assert app.engine.session_count() == 1  # lstm_v1_tops's session; both sequences were freed
