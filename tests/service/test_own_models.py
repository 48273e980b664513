"""Serve your own model: users' torch modules (word_language_model's convention with LSTM
and GRU, a batch-first one) and a foreign ONNX file, exported or imported with the
commands a user runs, served by a real server, answer Predict{text} with the users' own
torch log-probs and words as candidate texts; a tokenizer.json model streams Generate
text equal to the tokenizers library's decode of the same ids."""
from __future__ import annotations

import numpy as np
import pytest

from lstm_service.model.card import load_card
from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from own_models import (EXAMPLE, SENTENCE, USER_MODULES, WORDS, bpe_tokenizer_file, example_class, export,
                        randomize, save_user_model, torch_logprobs, word_ids, write_foreign_onnx)
from svc_helpers import open_stream, serving, stream_step

TOP_K = 8


def rnn_model(rnn_type: str, seed: int):
    kwargs = dict(rnn_type=rnn_type, ntoken=len(WORDS), ninp=12, nhid=16, nlayers=2, dropout=0.2)
    return randomize(example_class()(**kwargs), seed), kwargs


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory):
    """model dirs + the users' torch modules, built once for the module's tests."""
    built = {}

    def make(which: str):
        if which in built:
            return built[which]
        root = tmp_path_factory.mktemp(which)
        if which in ("LSTM", "GRU"):
            module, kwargs = rnn_model(which, seed=len(which))
            files = save_user_model(root / "user", module, kwargs)
            rc = export("torch", "--module", f"{EXAMPLE}:RNNModel", "--kwargs", files["kwargs"],
                        "--checkpoint", files["checkpoint"], "--vocab", files["vocab"], "--out", root / "model")
        elif which == "batch-first":
            from user_modules import BatchFirstLM

            kwargs = dict(vocab=len(WORDS), size=16, layers=2)
            module = randomize(BatchFirstLM(**kwargs), seed=7)
            files = save_user_model(root / "user", module, kwargs)
            rc = export("torch", "--module", f"{USER_MODULES}:BatchFirstLM", "--kwargs", files["kwargs"],
                        "--checkpoint", files["checkpoint"], "--vocab", files["vocab"], "--batch-first",
                        "--out", root / "model")
        else:  # a foreign ONNX file: time-first, its own tensor names
            module, kwargs = rnn_model("LSTM", seed=11)
            files = save_user_model(root / "user", module, kwargs)
            write_foreign_onnx(root / "foreign.onnx", module)
            rc = export("onnx", "--onnx", root / "foreign.onnx", "--tokens", "input_ids", "--state",
                        "h_in=h_out,c_in=c_out", "--logits", "scores", "--time-first", "--vocab", files["vocab"],
                        "--out", root / "model")
        assert rc == 0
        built[which] = (root / "model", module)
        return built[which]

    return make


@pytest.mark.parametrize("which", ["LSTM", "GRU", "batch-first", "foreign-onnx"])
async def test_predict_text_gives_the_users_own_log_probs_and_words(word_lm, which):
    model_dir, module = word_lm(which)
    card = load_card(model_dir)
    assert card.vocab_kind == "words" and card.vocab_size == len(WORDS)
    assert card.has_cell_state == (which != "GRU")
    want = torch_logprobs(module, word_ids(SENTENCE), batch_first=which == "batch-first")[-1]
    async with serving(model_dir) as s:
        reply = await s.stub.Predict(pb.PredictRequest(input=pb.Input(text=SENTENCE),
                                                       output=pb.OutputOptions(top_k=TOP_K, logprobs=True)))
        got = np.array(reply.result.predictions[-1].logprobs)
        assert reply.result.consumed == len(SENTENCE.split())
        assert np.abs(got - want).max() <= 1e-4
        top = reply.result.predictions[-1].top
        assert [c.token for c in top] == list(np.argsort(-want, kind="stable")[:TOP_K])
        assert [c.text for c in top] == [("\n" if WORDS[c.token] == "<eos>" else WORDS[c.token]) for c in top]
        model = (await s.stub.GetModel(pb.GetModelRequest())).model
        assert (model.vocab_kind, model.vocab_size) == ("words", len(WORDS))


async def test_a_word_model_refuses_unknown_words_only_without_unk(word_lm):
    model_dir, module = word_lm("LSTM")
    async with serving(model_dir) as s:
        # WORDS has <unk>: an unknown word is read as <unk>, as the model was trained to see it
        reply = await s.stub.Predict(pb.PredictRequest(input=pb.Input(text="the moon"),
                                                       output=pb.OutputOptions(logprobs=True)))
        want = torch_logprobs(module, [WORDS.index("the"), WORDS.index("<unk>")])[-1]
        assert np.abs(np.array(reply.result.predictions[-1].logprobs) - want).max() <= 1e-4


async def test_stream_and_generate_on_a_word_model_carry_text(word_lm):
    model_dir, _ = word_lm("LSTM")
    async with serving(model_dir) as s:
        created = await s.stub.CreateSession(pb.CreateSessionRequest(prompt=pb.Input(text="the clouds")))
        sid = created.session.id
        out = [r async for r in s.stub.Generate(pb.GenerateRequest(
            session_id=sid, prompt=pb.Input(text="are in"), sampling=pb.SamplingParams(max_tokens=12, seed=3)))]
        expected = "".join("\n" if WORDS[r.token] == "<eos>" else " " + WORDS[r.token] for r in out)
        # words joined by one space each (the first too: it follows the prompt), <eos> as a newline
        expected = expected.replace("\n ", "\n")
        assert "".join(r.text for r in out) == expected


async def test_stream_steps_take_text_on_a_word_model(word_lm):
    model_dir, module = word_lm("GRU")
    async with serving(model_dir) as s:
        call, opened = await open_stream(s.stub, output=pb.OutputOptions(top_k=3, logprobs=True))
        await stream_step(call, text="the clouds")
        result = await stream_step(call, text="are in the")  # the state carried between steps
        await call.done_writing()
        assert result.steps == 5
        want = torch_logprobs(module, word_ids(SENTENCE))[-1]
        assert np.abs(np.array(result.predictions[-1].logprobs) - want).max() <= 1e-4


@pytest.mark.parametrize("which", ["LSTM", "GRU"])
async def test_explain_takes_text_on_a_word_model_exported_from_torch(word_lm, which):
    """The classic module shape (embedding -> nn.LSTM/GRU -> linear) gets an explain graph too."""
    model_dir, module = word_lm(which)
    assert load_card(model_dir).explain["file"] == "model.explain.onnx"
    want = torch_logprobs(module, word_ids(SENTENCE))
    async with serving(model_dir) as s:
        reply = await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text=SENTENCE), top_k=3))
        assert [t.text for t in reply.tokens] == SENTENCE.split()
        for t, token in enumerate(reply.tokens):
            assert [c.token for c in token.top] == list(np.argsort(-want[t], kind="stable")[:3])
            assert np.abs(np.array([c.logprob for c in token.top]) - want[t][[c.token for c in token.top]]).max() <= 1e-4
            assert [c.text for c in token.top] == [("\n" if WORDS[c.token] == "<eos>" else WORDS[c.token])
                                                  for c in token.top]


def first_stop(texts, stop: str) -> int:
    """Index of the piece after which the joined text first contains ``stop`` (what the server must do)."""
    return next(i for i in range(len(texts)) if stop in "".join(texts[: i + 1]))


async def generate_texts(stub, prompt: str, stop=(), max_tokens: int = 30, seed: int = 4):
    out = [r async for r in stub.Generate(pb.GenerateRequest(
        prompt=pb.Input(text=prompt), sampling=pb.SamplingParams(max_tokens=max_tokens, seed=seed, stop=stop)))]
    return [r.text for r in out], out[-1].finish_reason


async def test_stop_sequences_match_the_generated_words(word_lm):
    model_dir, _ = word_lm("LSTM")
    async with serving(model_dir) as s:
        texts, _ = await generate_texts(s.stub, SENTENCE)
        stop = texts[5] + texts[6]  # two words: the stop sequence spans pieces
        stopped, reason = await generate_texts(s.stub, SENTENCE, stop=[stop])
        assert reason == pb.FINISH_REASON_STOP
        assert stopped == texts[: first_stop(texts, stop) + 1]


async def test_a_tokenizer_model_streams_the_tokenizers_decode(tmp_path):
    from tokenizers import Tokenizer
    from user_modules import BatchFirstLM

    tokenizer_path = bpe_tokenizer_file(tmp_path / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    kwargs = dict(vocab=tokenizer.get_vocab_size(), size=16)
    module = randomize(BatchFirstLM(**kwargs), seed=5, scale=0.6)
    files = save_user_model(tmp_path / "user", module, kwargs)
    assert export("torch", "--module", f"{USER_MODULES}:BatchFirstLM", "--kwargs", files["kwargs"],
                  "--checkpoint", files["checkpoint"], "--tokenizer", tokenizer_path, "--batch-first",
                  "--out", tmp_path / "model") == 0
    prompt = "the clouds are in the"
    async with serving(tmp_path / "model") as s:
        for seed in range(3):
            out = [r async for r in s.stub.Generate(pb.GenerateRequest(
                prompt=pb.Input(text=prompt), sampling=pb.SamplingParams(max_tokens=40, seed=seed)))]
            ids = [r.token for r in out]
            assert "".join(r.text for r in out) == tokenizer.decode(ids)
            # what has streamed is never taken back: after each piece, the text so far begins the
            # decode of the ids so far (a character still incomplete is held back, not sent broken)
            for k in range(len(out)):
                assert tokenizer.decode(ids[: k + 1]).startswith("".join(r.text for r in out[: k + 1]))
        reply = await s.stub.Predict(pb.PredictRequest(input=pb.Input(text=prompt),
                                                       output=pb.OutputOptions(logprobs=True)))
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        want = torch_logprobs(module, ids, batch_first=True)[-1]
        assert np.abs(np.array(reply.result.predictions[-1].logprobs) - want).max() <= 1e-4
        model = (await s.stub.GetModel(pb.GetModelRequest())).model
        assert (model.vocab_kind, model.vocab_size) == ("tokenizer", tokenizer.get_vocab_size())
        texts, _ = await generate_texts(s.stub, prompt, seed=1)
        stop = "".join(texts[3:6])[1:4] or "".join(texts)[-3:]  # some text inside the generated pieces
        stopped, reason = await generate_texts(s.stub, prompt, stop=[stop], seed=1)
        assert reason == pb.FINISH_REASON_STOP and stopped == texts[: first_stop(texts, stop) + 1]


def test_a_vocabulary_file_changed_after_export_stops_the_server_at_start(word_lm, tmp_path):
    import shutil

    from lstm_service.service.proc.app import App
    from lstm_service.service.proc.config import Config
    from lstm_service.service.api.errors import ConfigError

    model_dir, _ = word_lm("LSTM")
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    with open(copy / "vocab.txt", "a") as f:
        f.write("another\n")
    with pytest.raises(ConfigError, match="its vocabulary cannot be loaded: .*vocab.txt has sha256"):
        App(Config(model=str(copy), port=0, device="cpu"))


async def test_kserve_text_input_is_read_by_the_word_vocabulary(word_lm):
    grpc_client = pytest.importorskip("tritonclient.grpc.aio")  # the [dev] extra
    from tritonclient.grpc import InferInput

    model_dir, module = word_lm("LSTM")
    want = torch_logprobs(module, word_ids(SENTENCE))[-1]
    async with serving(model_dir) as s:
        text = InferInput("TEXT", [1], "BYTES")
        text.set_data_from_numpy(np.array([SENTENCE.encode()], dtype=np.object_))
        async with grpc_client.InferenceServerClient(s.target) as client:
            result = await client.infer(s.app.card.name, [text], parameters={"top_k": 4})
        ids, probs = result.as_numpy("TOP_IDS")[0, -1], result.as_numpy("TOP_PROBS")[0, -1]
        assert ids.tolist() == list(np.argsort(-want, kind="stable")[:4])
        assert np.allclose(probs, np.exp(want[ids]), atol=1e-5)
