"""Mixed batches (service/core/sequence_lens.py, exactness.py, runtime.py, batch_runner.py):
steps of different lengths from many sessions, run together through the batch runner,
give every session bitwise what it gets when each of its steps runs alone, for every
cell the exporter supports; the runtime mixes lengths in one call exactly where its
load-time probe shows that exact, and says why not elsewhere."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from lstm_service.model.card import load_card
from lstm_service.service.core import exactness
from lstm_service.service.core.batch_runner import BatchRunner, StepRequest, bucket
from lstm_service.service.core.runtime import WIDE_MIN_ROWS, Runtime
from lstm_service.service.core.sequence_lens import NAME, with_sequence_lens

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "shakespeare"
CELLS = ["lstm", "gru", "rnn", "peephole", "coupled"]
NATIVE = {"lstm", "gru", "rnn"}  # exported as ONNX LSTM/GRU/RNN ops; the others as a Loop


def sessions(seed: int, n: int, vocab: int):
    """Each session's steps: decode steps, short messages and prefill chunks, most sharing a length bucket."""
    rng = random.Random(seed)
    lengths = [1, 1, 1, 2, 3, 4, 5, 8, 13, 16, 33, 40, 64]
    return [[np.array([rng.randrange(vocab) for _ in range(rng.choice(lengths))], np.int64) for _ in range(3)]
            for _ in range(n)]


def alone(runner: BatchRunner, rt: Runtime, steps):
    """One session's steps, each in a model call of its own."""
    state, outs = rt.zero_state, []
    for i, ids in enumerate(steps):
        (out,) = runner.execute([StepRequest(ids, state, i % 2 == 0, 1 + i % 4)])
        outs.append(out)
        state = out.state
    return outs


def together(runner: BatchRunner, rt: Runtime, all_steps):
    """Every session's i-th step in one execute (the batch the scheduler would hand over)."""
    states = [rt.zero_state] * len(all_steps)
    outs = [[] for _ in all_steps]
    for i in range(len(all_steps[0])):
        batch = runner.execute([StepRequest(steps[i], states[s], i % 2 == 0, 1 + i % 4)
                                for s, steps in enumerate(all_steps)])
        for s, out in enumerate(batch):
            outs[s].append(out)
            states[s] = out.state
    return outs


def same(a, b) -> bool:
    fields = ("logprobs", "last", "top_ids", "top_logprobs", "top_probs")
    return (all(np.array_equal(getattr(a.scores, f), getattr(b.scores, f)) for f in fields)
            and all(np.array_equal(x, y) for x, y in zip(a.state, b.state)))


def check(rt: Runtime, n: int, seed: int) -> BatchRunner:
    steps = sessions(seed, n, rt.card.vocab_size)
    want = [alone(BatchRunner(rt, max_batch=1), rt, s) for s in steps]
    runner = BatchRunner(rt, max_batch=64)
    got = together(runner, rt, steps)
    for s, (w, g) in enumerate(zip(want, got)):
        for i, (a, b) in enumerate(zip(w, g)):
            assert same(a, b), f"session {s} step {i} ({len(steps[s][i])} tokens) differs from it run alone"
    return runner


@pytest.mark.parametrize("cell", CELLS)
def test_mixed_batches_equal_each_session_alone_bitwise(make_tiny_model, cell):
    rt = Runtime.load(load_card(make_tiny_model(cell)), "fp32", "cpu")
    runner = check(rt, 24, seed=CELLS.index(cell))
    if cell in NATIVE:
        assert rt.mixes, rt.why_not
        assert runner.stats.mixed >= 3, "no call held steps of different lengths"
    else:  # a Loop runs every padded step: lengths are grouped instead, and the reason is kept
        assert not rt.mixes and runner.stats.mixed == 0
        assert "Loop" in rt.why_not["mixes"]
    if cell == "rnn":  # onnxruntime's one-row RNN path rounds differently: a lone row runs as two copies
        assert not rt.lone_exact


def test_the_shipped_model_mixes_exactly():
    rt = Runtime.load(load_card(SHIPPED), "fp32", "cpu")
    assert rt.mixes and rt.lone_exact, rt.why_not
    assert check(rt, 10, seed=7).stats.mixed >= 3


def test_the_two_thread_session_gives_the_same_bits(tiny_model_dir):
    rt = Runtime.load(load_card(tiny_model_dir), "fp32", "cpu")
    if rt.wide is None:
        pytest.skip(f"no two-thread session here: {rt.why_not['wide']}")
    rng = np.random.default_rng(3)
    layers, hidden = rt.state_shape
    b = WIDE_MIN_ROWS * 2
    ids = rng.integers(0, 256, (b, 1)).astype(np.int64)
    state = tuple(rng.standard_normal((layers, b, hidden)).astype(np.float32) for _ in rt.card.state_names)
    assert rt.wide_for(b, 1) and not rt.wide_for(1, 1) and not rt.wide_for(b, 8)
    one = rt._feed(ids, state)
    two = rt.run(ids, state)  # through the two-thread session
    assert np.array_equal(one[0], two[0]) and all(np.array_equal(x, y) for x, y in zip(one[1], two[1]))


def test_the_probes_catch_a_row_that_depends_on_its_batch(tiny_model_dir):
    rt = Runtime.load(load_card(tiny_model_dir), "fp32", "cpu")

    def batch_sized(tokens, state, lengths=None):  # the last bit of every logit depends on B
        logits, new = rt.run(tokens, state, lengths)
        return np.nextafter(logits, np.inf) if len(tokens) > 1 else logits, new

    assert exactness.lone_rows_exact(rt.run, rt, True) and exactness.mixed_rows_exact(rt.run, rt)
    assert not exactness.lone_rows_exact(batch_sized, rt, True)
    assert not exactness.mixed_rows_exact(batch_sized, rt)
    assert not exactness.same_results(rt.run, batch_sized, rt, True)


def test_length_buckets_pad_at_most_twofold():
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 64)] == [0, 1, 2, 2, 3, 3, 4, 4, 5, 6]


def test_int8_does_not_mix_and_says_why(tiny_model_dir):
    rt = Runtime.load(load_card(tiny_model_dir), "int8", "cpu")
    assert not rt.mixes and "DynamicQuantizeLSTM" in rt.why_not["mixes"]
    assert "rows depend on the rest of their batch" in rt.why_not["rows"]


def test_mixing_can_be_turned_off(tiny_model_dir):
    rt = Runtime.load(load_card(tiny_model_dir), "fp32", "cpu", mix=False)
    assert not rt.mixes and NAME not in [i.name for i in rt.session.get_inputs()]
    assert check(rt, 8, seed=1).stats.mixed == 0
    with pytest.raises(ValueError, match="does not mix"):
        zeros = tuple(np.zeros((rt.state_shape[0], 2, rt.state_shape[1]), np.float32) for _ in rt.card.state_names)
        rt.run(np.zeros((2, 3), np.int64), zeros, np.array([1, 3], np.int32))


def test_sequence_lens_is_wired_into_native_ops_only(make_tiny_model):
    import onnx

    for cell in CELLS:
        raw = (make_tiny_model(cell) / "model.onnx").read_bytes()
        edited = with_sequence_lens(raw)
        if cell not in NATIVE:
            assert edited is None
            continue
        model = onnx.load_from_string(edited)
        onnx.checker.check_model(model)
        ops = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
        assert ops and all(n.input[4] == NAME for n in ops)
        assert [i.name for i in model.graph.input][-1] == NAME
        assert with_sequence_lens(edited) is None  # the name is taken: never wired twice
    assert with_sequence_lens(b"not a model \xff") is None
